use clap::Parser;

#[global_allocator]
static ALLOC: rlcode_policy::HugePageAlloc = rlcode_policy::HugePageAlloc;

fn main() -> std::process::ExitCode {
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { rlcode_policy::tune_process() };
    let args = rl_sample::Args::parse();
    rlcode_core::cli::main_with(rl_sample::PROGRAM, || {
        rl_sample::run(&args, std::io::stdout().lock())
    })
}
