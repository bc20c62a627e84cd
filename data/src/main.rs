use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = rl_data::cli::Cli::parse();
    rlcode_core::cli::main_with(rl_data::PROGRAM, || {
        rl_data::cli::run(cli, std::io::stdout().lock())
    })
}
