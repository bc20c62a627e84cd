use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = rl_eval::Cli::parse();
    rlcode_core::cli::main_with(rl_eval::PROGRAM, || {
        rl_eval::main(&cli, std::io::stdout().lock())
    })
}
