//! `ingot score`: a reward model's score for each text of a JSONL file, like LLaMA Factory's
//! reward-model inference (`get_scores`).
//!
//! Each non-blank line is a JSON string or an object with a string `text` field, already in
//! the chat format the reward model was trained on (no template is applied). The whole file
//! is read and checked before the model loads, so a bad line costs no compute; scores are
//! printed one per line in input order, as each batch finishes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use clap::{ArgMatches, Args};
use ingot_engine::EngineConfig;
use serde_json::Value;

use crate::infer_config::ConfigArgs;
use crate::model_args::ModelArgs;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL file: one JSON string, or object with a `text` field, per line.
    #[arg(long)]
    pub input: PathBuf,
    /// Texts scored together in one forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Texts longer than this many tokens are cut to their first N, as LLaMA Factory does
    /// (default: the model's context).
    #[arg(long)]
    pub max_length: Option<usize>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

impl ScoreArgs {
    /// Takes the model settings of the config file and overrides where no flag was given;
    /// its generation and dataset keys mean nothing to scoring and are reported as ignored.
    pub fn apply_config(&mut self, matches: &ArgMatches) -> anyhow::Result<()> {
        let mut cfg = self.config.resolve()?;
        cfg.ignored.append(&mut cfg.generation_keys);
        cfg.ignored.append(&mut cfg.data_keys);
        cfg.ignored.append(&mut cfg.server_keys);
        cfg.warn_ignored();
        self.model.apply_config(&cfg, matches);
        Ok(())
    }
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    let texts = read_texts(&args.input)?;
    let path = args.model.model_path()?;
    let engine = args.model.start_engine(EngineConfig { max_seqs: args.batch_size, ..args.model.engine_config() })?;
    let mut out = std::io::stdout().lock();
    for chunk in texts.chunks(args.batch_size) {
        let scores = engine.get_scores(chunk.to_vec(), args.max_length).with_context(|| path.display().to_string())?;
        for s in scores {
            writeln!(out, "{s}")?;
        }
        out.flush()?;
    }
    Ok(())
}

/// The texts of a JSONL file, in order; blank lines are skipped. Errors name the file and
/// the (1-based) line.
fn read_texts(path: &Path) -> anyhow::Result<Vec<String>> {
    let content = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut texts = Vec::new();
    for (i, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let value: Value = serde_json::from_str(line).with_context(|| format!("{}: invalid JSON", at()))?;
        let text = match value {
            Value::String(s) => s,
            Value::Object(mut o) => match o.remove("text") {
                Some(Value::String(s)) => s,
                _ => anyhow::bail!("{}: the object has no string field \"text\"", at()),
            },
            _ => anyhow::bail!("{}: expected a JSON string or an object with a \"text\" field", at()),
        };
        texts.push(text);
    }
    Ok(texts)
}
