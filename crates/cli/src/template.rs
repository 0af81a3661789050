//! `ingot template`: prints the prompt a conversation renders to, byte for byte as
//! transformers' `apply_chat_template(messages, tools=..., add_generation_prompt=...,
//! tokenize=False, **kwargs)` would, or its token ids. Nothing is added to the output (no
//! trailing newline), so it can be diffed against a reference.
//!
//! Only the tokenizer and chat template of the model are loaded, never its weights.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use ingot_core::load::{load_prompting, models_dir, Prompting, DEFAULT_MODEL_FILE};
use ingot_core::template::ChatTemplate;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct TemplateArgs {
    /// Model file or checkpoint directory whose template and tokenizer to use (default: the
    /// fetched Qwen2.5-Coder-0.5B-Instruct).
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// A Jinja chat template file to use instead of the model's.
    #[arg(long, conflicts_with = "template")]
    pub chat_template: Option<PathBuf>,
    /// A named template (LLaMA Factory's names) to use instead of the model's.
    #[arg(long)]
    pub template: Option<String>,
    /// JSON file holding the array of messages.
    #[arg(long)]
    pub messages: PathBuf,
    /// JSON file holding the array of tool definitions.
    #[arg(long)]
    pub tools: Option<PathBuf>,
    /// Extra template variables as a JSON object, e.g. '{"enable_thinking": false}'; they
    /// override the model's (`bos_token`, `eos_token`, `add_generation_prompt`, ...).
    #[arg(long)]
    pub kwargs: Option<String>,
    /// Render without the assistant turn's opening.
    #[arg(long)]
    pub no_generation_prompt: bool,
    /// Print the prompt's token ids (a JSON array) instead of its text.
    #[arg(long)]
    pub ids: bool,
}

fn read_json(path: &Path, what: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
    if !value.is_array() {
        bail!("{}: {what} must be a JSON array", path.display());
    }
    Ok(value)
}

pub fn run(args: TemplateArgs) -> anyhow::Result<()> {
    let messages = read_json(&args.messages, "the messages")?;
    let tools = args.tools.as_deref().map(|p| read_json(p, "the tools")).transpose()?;
    let mut kwargs = match &args.kwargs {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str(text).context("--kwargs: not valid JSON")? {
            Value::Object(map) => map,
            _ => bail!("--kwargs must be a JSON object"),
        },
    };
    // Like apply_chat_template's keyword argument, `add_generation_prompt` may come in --kwargs.
    let generation_prompt = match kwargs.remove("add_generation_prompt") {
        None => !args.no_generation_prompt,
        Some(Value::Bool(b)) => b,
        Some(other) => bail!("--kwargs: add_generation_prompt must be true or false, got {other}"),
    };
    let path = args.model.clone().unwrap_or_else(|| models_dir().join(DEFAULT_MODEL_FILE));
    let Prompting { tokenizer, chat_template } =
        load_prompting(&path).with_context(|| format!("{} (hint: pass --model)", path.display()))?;
    let (bos, eos) = (tokenizer.bos_token(), tokenizer.eos_token());
    let template = match (&args.chat_template, &args.template, chat_template) {
        (Some(file), _, _) => {
            let source = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            ChatTemplate::from_jinja(&source, bos, eos).with_context(|| file.display().to_string())?
        }
        (None, Some(name), _) => ChatTemplate::named(name, bos, eos)?,
        (None, None, Some(source)) => {
            ChatTemplate::from_jinja(&source, bos, eos).with_context(|| format!("{}: chat template", path.display()))?
        }
        (None, None, None) => bail!(
            "{} has no chat template; pass --template NAME (one of: {}) or --chat-template FILE",
            path.display(),
            ChatTemplate::names().join(", ")
        ),
    };
    let prompt = template.render_json(&messages, tools.as_ref(), generation_prompt, &kwargs)?;
    let mut out = std::io::stdout().lock();
    if args.ids {
        let ids = tokenizer.encode_prompt(&prompt)?;
        writeln!(out, "{}", serde_json::to_string(&ids)?)?;
    } else {
        out.write_all(prompt.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}
