use clap::{Parser, Subcommand};
use rlcode_core::JsonlReader;
use rlcode_core::cli::{InputArgs, main_with};

/// Problems in: import HumanEval, make reference, stub or mutant samples, generate the synthetic
/// tasks.
#[derive(Parser)]
#[command(name = "rl-data", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a public dataset to problems JSONL.
    Import {
        #[command(subcommand)]
        source: Source,
    },
    /// One sample per problem: its reference program (`model: "reference"`).
    References {
        #[command(flatten)]
        input: InputArgs,
    },
    /// One sample per problem whose body is `pass` (`model: "stub"`); it never passes every test.
    Stubs {
        #[command(flatten)]
        input: InputArgs,
    },
    /// Mutated references (`model: "mutant"`): one small change each (a flipped comparison, an
    /// operator, an off-by-one constant), the kind of slip that passes some tests but not all.
    Mutants {
        #[command(flatten)]
        input: InputArgs,
        /// Mutants per problem (at different sites), at most.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Chooses the sites; the same seed gives the same bytes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Problems of the synthetic world of small Python functions (see docs/tasks.md).
    Synth {
        /// Which problems: `train`, or the held-out `test` problems (the two never overlap).
        #[arg(long, value_enum)]
        split: rl_data::synth::Split,
        /// How many problems (the split's size at most).
        #[arg(long)]
        count: usize,
        /// Chooses which problems and their order; the same seed gives the same bytes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Only these families, comma-separated (default: all; docs/tasks.md lists them).
        #[arg(long, value_delimiter = ',')]
        families: Vec<String>,
    },
    /// An SFT corpus of full programs for train problems, correct or near-miss.
    SynthCorpus {
        /// How many programs.
        #[arg(long)]
        count: usize,
        /// Chooses the programs; the same seed gives the same bytes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The share of correct programs; the rest are near-misses that pass some tests but
        /// not all.
        #[arg(long, default_value_t = 0.6)]
        correct_fraction: f64,
        /// Only programs of these families, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        families: Vec<String>,
    },
    /// Convert a llama-architecture GGUF model (llama.cpp) into a Hugging Face checkpoint
    /// directory: config.json, f32 model.safetensors, tokenizer.json, tokenizer_config.json
    /// (with the chat template). See docs/models.md.
    ConvertGguf {
        /// The .gguf file.
        #[arg(value_name = "FILE")]
        gguf: std::path::PathBuf,
        /// The checkpoint directory to write (replaced atomically if it exists).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum Source {
    /// HumanEval (`HumanEval.jsonl.gz` or plain JSONL): one assert test per top-level assert
    /// of `check`.
    Humaneval {
        #[command(flatten)]
        input: InputArgs,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    main_with(rl_data::PROGRAM, || {
        let out = std::io::stdout().lock();
        match cli.command {
            Command::Import {
                source: Source::Humaneval { input },
            } => {
                rl_data::import_humaneval(JsonlReader::open(&input.inputs)?, input.keep_going, out)
            }
            Command::References { input } => {
                rl_data::references(JsonlReader::open(&input.inputs)?, input.keep_going, out)
            }
            Command::Stubs { input } => {
                rl_data::stubs(JsonlReader::open(&input.inputs)?, input.keep_going, out)
            }
            Command::Mutants { input, count, seed } => rl_data::mutants(
                JsonlReader::open(&input.inputs)?,
                input.keep_going,
                count,
                seed,
                out,
            ),
            Command::Synth {
                split,
                count,
                seed,
                families,
            } => rl_data::synth(split, count, seed, &families, out),
            Command::SynthCorpus {
                count,
                seed,
                correct_fraction,
                families,
            } => rl_data::synth_corpus(count, seed, correct_fraction, &families, out),
            Command::ConvertGguf { gguf, out } => rl_data::convert_gguf(&gguf, &out),
        }
    })
}
