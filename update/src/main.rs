use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = rl_update::Cli::parse();
    rlcode_core::cli::main_with(rl_update::PROGRAM, || {
        rl_update::run(&cli, std::io::stdout().lock())
    })
}
