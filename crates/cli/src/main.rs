//! `ingot`: chat with, serve and measure language models, and score texts with reward models.
//!
//! Flags are parsed by clap into raw values, turned into validated engine requests, and
//! every front end talks to the engine through its handle only.

mod api;
mod bench;
mod bleu_rouge;
mod chat;
mod dataset;
mod infer;
mod infer_config;
mod media;
mod model_args;
mod remote;
mod score;
mod template;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ingot", version, about = "Serve and chat with large language models on CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat in the terminal (reads one user turn per line when stdin is not a terminal).
    Chat(chat::ChatArgs),
    /// Serve the OpenAI-compatible API and the web chat page.
    Api(api::ApiArgs),
    /// Measure prefill and decode speed, time to first token and peak memory.
    Bench(bench::BenchArgs),
    /// Run a model over a dataset: one prediction per row, in order, resumable.
    Infer(infer::InferArgs),
    /// Score texts with a reward model (a checkpoint directory with value_head.safetensors).
    Score(score::ScoreArgs),
    /// Print the prompt a conversation renders to (or its token ids), exactly.
    Template(template::TemplateArgs),
}

fn main() {
    // The raw matches are kept because config files need to know which flags were given
    // explicitly (those win over the file), which the parsed structs cannot tell.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sub = matches.subcommand().map(|(_, m)| m).unwrap_or(&matches);
    // A kernel path forced through INGOT_KERNELS that is misspelt or beyond this CPU is an
    // error here rather than a silent fallback deep in the first matmul.
    if let Err(e) = ingot_core::kernels::Backend::requested() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let result = match cli.command {
        Command::Chat(mut args) => args.apply_config(sub).and_then(|()| chat::run(args)),
        Command::Api(mut args) => args.apply_config(sub).and_then(|()| api::run(args)),
        Command::Infer(mut args) => args.apply_config(sub).and_then(|()| infer::run(args)),
        Command::Bench(args) => bench::run(args),
        Command::Score(mut args) => args.apply_config(sub).and_then(|()| score::run(args)),
        Command::Template(args) => template::run(args),
    };
    if let Err(e) = result {
        // One line, with the causes chained: errors are for people, not backtraces.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
