use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = rl_eval::Args::parse();
    rlcode_core::cli::main_with(rl_eval::PROGRAM, || {
        let input = rlcode_core::JsonlReader::open(&args.input.inputs)?;
        rl_eval::run(&args, input, std::io::stdout().lock())
    })
}
