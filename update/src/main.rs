use clap::Parser;

#[global_allocator]
static ALLOC: rlcode_policy::HugePageAlloc = rlcode_policy::HugePageAlloc;

fn main() -> std::process::ExitCode {
    // candle's CPU backend runs element-wise ops on a pool of threads that spin while they wait.
    // A training step is hundreds of small element-wise ops, and on this 2-core machine the
    // spinning cost more than the parallelism gave: one SFT step of the tiny model took 3.4 s of
    // CPU with the pool and 1.3 s without (docs/policy.md). Matrix products keep their own
    // threads (RAYON_NUM_THREADS). Set CANDLE_NUM_THREADS to override.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: first thing in main, before any other thread exists.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { rlcode_policy::tune_process() };
    let cli = rl_update::Cli::parse();
    rlcode_core::cli::main_with(rl_update::PROGRAM, || {
        rl_update::run(&cli, std::io::stdout().lock())
    })
}
