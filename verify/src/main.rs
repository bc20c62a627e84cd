use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = rl_verify::Args::parse();
    rlcode_core::cli::main_with(rl_verify::PROGRAM, || {
        rl_verify::run(&args, std::io::stdout().lock())
    })
}
