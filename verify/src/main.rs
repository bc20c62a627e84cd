use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = rl_verify::Cli::parse();
    rlcode_core::cli::main_with(rl_verify::PROGRAM, || {
        rl_verify::run_cli(&cli, std::io::stdout().lock())
    })
}
