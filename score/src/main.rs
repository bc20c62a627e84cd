use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = rl_score::Args::parse();
    rlcode_core::cli::main_with(rl_score::PROGRAM, || {
        let input = rlcode_core::JsonlReader::open(&args.input.inputs)?;
        rl_score::run(&args, input, std::io::stdout().lock())
    })
}
