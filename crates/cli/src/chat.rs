//! `ingot chat`: a streaming terminal chat, like `llamafactory-cli chat`.
//!
//! On a terminal: line editing and history (rustyline), Ctrl-C stops the current reply and
//! keeps the session, Ctrl-D or `exit` quits, `clear` empties the history. With stdin not a
//! terminal, every line is one user turn, so the chat can be scripted.
//!
//! Images (models with a vision encoder): `--image PATH` and the `/image PATH` command attach
//! images to the next user turn, where they go before its text unless the text places them
//! with `<image>`. Earlier turns keep their images, so the conversation stays as the model saw it.
//!
//! With `--remote URL` the replies come from remote OpenAI-compatible engines, streamed token
//! by token; `--model` still gives the tokenizer and template (see [`RemoteEngine`]).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{ArgMatches, Args};
use ingot_core::template::{prompt_opens_thinking, Message, ReasoningDelta, ReasoningStream};
use ingot_engine::{Cancel, ChatRequest, EngineConfig, EngineError, EngineHandle, Event, FinishReason, GenParams, Media, MediaKind, Prompter, Stream};

use crate::media::MediaReading;

use crate::infer_config::{fill, ConfigArgs, InferConfig};
use crate::model_args::ModelArgs;
use crate::remote::{RemoteArgs, RemoteEngine};

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// An image for the first turn (repeatable; models with a vision encoder). In the chat,
    /// `/image PATH` attaches one to the next turn.
    #[arg(long = "image", value_name = "PATH")]
    pub images: Vec<std::path::PathBuf>,
    /// A video for the first turn (repeatable; Qwen2-VL-family models): a video file, or a
    /// directory of frame images taken at `--video-fps`. In the chat, `/video PATH`.
    #[arg(long = "video", value_name = "PATH|DIR")]
    pub videos: Vec<std::path::PathBuf>,
    /// An audio clip for the first turn (repeatable; Qwen2-Audio): WAV, FLAC, MP3 or
    /// OGG/Vorbis. In the chat, `/audio PATH`.
    #[arg(long = "audio", value_name = "PATH")]
    pub audios: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
}

impl ChatArgs {
    /// Takes the settings of the config file and overrides where no flag was given for them.
    pub fn apply_config(&mut self, matches: &ArgMatches) -> anyhow::Result<()> {
        let mut cfg = self.config.resolve()?;
        cfg.ignored.append(&mut cfg.server_keys);
        self.apply_resolved(cfg, matches);
        Ok(())
    }

    /// Takes the model and prompt settings of an already resolved config (`api` resolves it
    /// itself, for its server keys); its dataset keys are reported as ignored.
    pub fn apply_resolved(&mut self, mut cfg: InferConfig, matches: &ArgMatches) {
        cfg.ignored.append(&mut cfg.data_keys);
        cfg.warn_ignored();
        self.model.apply_config(&cfg, matches);
        self.prompt.apply_config(&cfg, matches);
    }
}

/// How conversations become prompts and replies, for every command that chats (chat, api,
/// infer): the template, the default system prompt and the generation flags.
#[derive(Args, Debug, Clone, Default)]
pub struct PromptArgs {
    /// Named chat template, for models without one (or to override theirs).
    #[arg(long)]
    pub template: Option<String>,
    /// System prompt, for conversations that bring none.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub gen: GenArgs,
    /// Run with the LoRA adapter served as NAME (`--lora NAME=DIR`) instead of the base
    /// model (chat and infer; API requests pick one by `model`).
    #[arg(long, value_name = "NAME")]
    pub use_lora: Option<String>,
    /// The config file's generation keys, below the flags.
    #[arg(skip)]
    pub config_params: GenParams,
}

impl PromptArgs {
    /// The engine settings these flags give on top of the model's: the template, the system
    /// prompt, `enable_thinking` and the generation settings.
    pub fn engine_config(&self, model: &ModelArgs) -> EngineConfig {
        EngineConfig {
            template: self.template.clone(),
            default_system: self.system.clone(),
            template_kwargs: self.gen.template_kwargs(),
            params: self.params(),
            ..model.engine_config()
        }
    }

    /// The generation settings: flags given, then the config file's keys.
    pub fn params(&self) -> GenParams {
        GenParams { adapter: self.use_lora.clone(), ..GenParams::from(&self.gen) }.or(&self.config_params)
    }

    /// Takes the config's settings where no flag was given for them.
    pub fn apply_config(&mut self, cfg: &InferConfig, matches: &ArgMatches) {
        fill(&mut self.template, cfg.template.clone().map(Some), matches, "template");
        fill(&mut self.system, cfg.system.clone().map(Some), matches, "system");
        fill(&mut self.use_lora, cfg.use_lora.clone().map(Some), matches, "use_lora");
        fill(&mut self.gen.enable_thinking, cfg.enable_thinking.map(Some), matches, "enable_thinking");
        self.config_params = cfg.params.clone();
    }
}

/// Sampling flags. Unset ones come from the model's generation_config.json, then from
/// LLaMA Factory's defaults (temperature 0.95, top-p 0.7, top-k 50, 1024 new tokens).
#[derive(Args, Debug, Clone, Default)]
pub struct GenArgs {
    /// 0 means greedy decoding.
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_p: Option<f32>,
    /// 0 disables top-k.
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub min_p: Option<f32>,
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Seed for sampling: the same seed gives the same reply.
    #[arg(long)]
    pub seed: Option<u64>,
    /// For reasoning models (Qwen3 and the like): `false` asks the template for an answer
    /// without thinking (LLaMA Factory's `enable_thinking`).
    #[arg(long, value_name = "BOOL")]
    pub enable_thinking: Option<bool>,
}

impl GenArgs {
    /// Template variables these flags set, for the engine's defaults.
    pub fn template_kwargs(&self) -> serde_json::Map<String, serde_json::Value> {
        self.enable_thinking.map(|on| ("enable_thinking".to_owned(), on.into())).into_iter().collect()
    }
}

/// The flags' one conversion into the engine's parameters type (flags not given stay unset).
impl From<&GenArgs> for GenParams {
    fn from(a: &GenArgs) -> Self {
        GenParams {
            temperature: a.temperature,
            top_p: a.top_p,
            top_k: a.top_k,
            min_p: a.min_p,
            repetition_penalty: a.repetition_penalty,
            max_new_tokens: a.max_new_tokens,
            seed: a.seed,
            ..GenParams::default()
        }
    }
}

/// What a chat session needs of whatever generates its replies: the local engine, or remote
/// engines (`--remote`).
trait ChatEngine {
    fn render_chat(&self, req: &ChatRequest) -> Result<String, EngineError>;
    fn stream_chat(&self, req: ChatRequest) -> Result<Stream, EngineError>;
    fn takes(&self, kind: MediaKind) -> bool;
}

impl ChatEngine for EngineHandle {
    fn render_chat(&self, req: &ChatRequest) -> Result<String, EngineError> {
        EngineHandle::render_chat(self, req)
    }

    fn stream_chat(&self, req: ChatRequest) -> Result<Stream, EngineError> {
        EngineHandle::stream_chat(self, req)
    }

    fn takes(&self, kind: MediaKind) -> bool {
        EngineHandle::takes(self, kind)
    }
}

impl ChatEngine for RemoteEngine {
    fn render_chat(&self, req: &ChatRequest) -> Result<String, EngineError> {
        RemoteEngine::render_chat(self, req)
    }

    fn stream_chat(&self, req: ChatRequest) -> Result<Stream, EngineError> {
        RemoteEngine::stream_chat(self, req)
    }

    /// The servers get token ids, which carry no media.
    fn takes(&self, _kind: MediaKind) -> bool {
        false
    }
}

/// The engine `args` ask for: remote engines with `--remote`, else the model loaded here.
fn chat_engine(args: &ChatArgs) -> anyhow::Result<Box<dyn ChatEngine>> {
    let cfg = args.prompt.engine_config(&args.model);
    if args.remote.urls.is_empty() {
        return Ok(Box::new(args.model.start_chat_engine(cfg)?));
    }
    anyhow::ensure!(args.prompt.use_lora.is_none(), "--use-lora: adapters run on a local model, not with --remote");
    let prompter = Prompter::new(args.model.load_prompting()?, &cfg)?;
    Ok(Box::new(RemoteEngine::connect(&args.remote.urls, prompter, &cfg, args.remote.timeout(), "chat")?))
}

struct Session {
    engine: Box<dyn ChatEngine>,
    history: Vec<Message>,
    /// The media of the turns in `history`, in placeholder order.
    history_media: Vec<Media>,
    /// Media attached to the next turn.
    pending: Vec<Media>,
    /// How media files are read.
    reading: MediaReading,
    /// The running reply's canceller, for the Ctrl-C handler.
    current: Arc<Mutex<Option<Cancel>>>,
}

impl Session {
    /// Sends one user turn and streams the reply to stdout.
    fn turn(&mut self, user: &str) -> anyhow::Result<()> {
        let text = user;
        let user = place_pending(text, &self.pending);
        let turns = self.history.iter().map(|m| (m.role.as_str(), m.content.as_str())).chain([("user", user.as_str())]);
        // The system prompt and the generation settings are the engine's (`--system`, flags).
        let mut request = ChatRequest::from_turns(turns, GenParams::default());
        // Media the text does not place goes in as content parts before it, as transformers'
        // chat template renders them (Qwen2-Audio's writes `Audio 1: ` before a clip); the
        // history keeps the placeholders.
        if let (Some(last), Some(parts)) = (request.messages.last_mut(), leading_parts(text, &self.pending)) {
            last["content"] = parts;
        }
        request.media = self.history_media.iter().chain(&self.pending).cloned().collect();
        let mut thinking = ReasoningStream::new(prompt_opens_thinking(&self.engine.render_chat(&request)?));
        let stream = self.engine.stream_chat(request)?;
        *lock(&self.current) = Some(stream.canceller());
        let mut out = std::io::stdout().lock();
        write!(out, "Assistant: ")?;
        out.flush()?;
        let mut reply = String::new();
        let mut result: Result<(), ingot_engine::EngineError> = Ok(());
        let dim = std::io::stdout().is_terminal();
        let mut show = |out: &mut std::io::StdoutLock<'_>, d: ReasoningDelta| -> std::io::Result<()> {
            match (d.reasoning.is_empty(), dim) {
                (true, _) => {}
                (false, true) => write!(out, "\x1b[2m{}\x1b[0m", d.reasoning)?,
                (false, false) => write!(out, "{}", d.reasoning)?,
            }
            write!(out, "{}", d.content)?;
            reply.push_str(&d.content);
            out.flush()
        };
        let mut stopped = false;
        for event in stream.events.iter() {
            match event {
                Event::Text(t) => show(&mut out, thinking.push(&t))?,
                Event::Logprobs(_) => {}
                Event::Done(usage) => {
                    stopped = usage.finish_reason == FinishReason::Cancelled;
                    break;
                }
                Event::Error(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        show(&mut out, thinking.finish())?;
        if stopped {
            write!(out, " [stopped]")?;
        }
        writeln!(out)?;
        *lock(&self.current) = None;
        result?;
        self.history.push(Message { role: "user".into(), content: user });
        self.history_media.append(&mut self.pending);
        self.history.push(Message { role: "assistant".into(), content: reply });
        Ok(())
    }

    /// Reads a media file for the next turn; a bad file is reported and the session goes on.
    fn attach(&mut self, kind: MediaKind, path: &std::path::Path) {
        if !self.engine.takes(kind) {
            eprintln!("error: this model does not take {}s", kind.name());
            return;
        }
        match read_media(kind, path, &self.reading) {
            Ok(media) => {
                eprintln!("Attached {} to your next message.", path.display());
                self.pending.push(media);
            }
            Err(e) => eprintln!("error: {e:#}"),
        }
    }

    /// Handles one input line; returns false when the session should end.
    fn line(&mut self, line: &str) -> bool {
        match line.trim() {
            "exit" => return false,
            "clear" => {
                self.history.clear();
                self.history_media.clear();
                self.pending.clear();
                println!("History has been removed.");
            }
            cmd if ["/image", "/video", "/audio"].iter().any(|c| cmd.split_whitespace().next() == Some(*c)) => {
                let (command, path) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
                let kind = MediaKind::ALL.into_iter().find(|k| command == format!("/{}", k.name())).unwrap_or(MediaKind::Image);
                match path.trim() {
                    "" => eprintln!("usage: {command} PATH (attaches a{} {} to your next message)", if kind == MediaKind::Image { "n" } else { "" }, kind.name()),
                    path => self.attach(kind, std::path::Path::new(path)),
                }
            }
            "" => {}
            text => {
                if let Err(e) = self.turn(text) {
                    // A failed turn (say, a prompt over the context) keeps the session going.
                    eprintln!("error: {e:#}");
                }
            }
        }
        true
    }
}

/// One media file of the given modality.
fn read_media(kind: MediaKind, path: &std::path::Path, reading: &MediaReading) -> anyhow::Result<Media> {
    match kind {
        MediaKind::Image => crate::media::read_image(path),
        MediaKind::Video => crate::media::read_video(path, reading),
        MediaKind::Audio => crate::media::read_audio(path, reading),
    }
}

/// The turn's text with placeholders for its attached media in front, for each modality the
/// text does not place itself (LLaMA Factory's order: audios, videos, images, then the text).
fn place_pending(user: &str, pending: &[Media]) -> String {
    let mut text = user.to_string();
    for kind in MediaKind::ALL {
        let n = pending.iter().filter(|m| MediaKind::of(m) == kind).count();
        if n > 0 && !user.contains(kind.placeholder()) {
            text = kind.placeholder().repeat(n) + &text;
        }
    }
    text
}

/// Content parts for the attached media the text does not place (audios, videos, images,
/// LLaMA Factory's order), then the text; `None` when there are none.
fn leading_parts(user: &str, pending: &[Media]) -> Option<serde_json::Value> {
    let mut parts = Vec::new();
    for kind in MediaKind::ALL.into_iter().rev() {
        let n = pending.iter().filter(|m| MediaKind::of(m) == kind).count();
        if !user.contains(kind.placeholder()) {
            parts.extend(std::iter::repeat_n(serde_json::json!({"type": kind.name()}), n));
        }
    }
    if parts.is_empty() {
        return None;
    }
    parts.push(serde_json::json!({"type": "text", "text": user}));
    Some(serde_json::Value::Array(parts))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded value is a plain flag slot; a panic elsewhere cannot leave it inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    // Checked before loading: a failed turn only prints its error and keeps the session going.
    args.prompt.params().sampling()?;
    // Media given on the command line is read before the model loads, so a bad path fails fast.
    let reading = args.model.media_reading()?;
    let given = [(MediaKind::Image, &args.images), (MediaKind::Video, &args.videos), (MediaKind::Audio, &args.audios)];
    let mut pending = Vec::new();
    for (kind, paths) in given {
        for p in paths {
            pending.push(read_media(kind, p, &reading)?);
        }
    }
    let engine = chat_engine(&args)?;
    if let Some(kind) = MediaKind::ALL.into_iter().find(|&k| pending.iter().any(|m| MediaKind::of(m) == k) && !engine.takes(k)) {
        anyhow::bail!("--{}: this model does not take {}s", kind.name(), kind.name());
    }
    let current: Arc<Mutex<Option<Cancel>>> = Arc::new(Mutex::new(None));
    let interactive = std::io::stdin().is_terminal();
    {
        let current = current.clone();
        ctrlc::set_handler(move || match lock(&current).as_ref() {
            Some(cancel) => cancel.cancel(),
            // No reply running: outside the line editor, Ctrl-C means quit.
            None => std::process::exit(130),
        })
        .context("installing the Ctrl-C handler")?;
    }
    let mut session = Session { engine, history: Vec::new(), history_media: Vec::new(), pending, reading, current };
    let attach: Vec<String> = MediaKind::ALL.into_iter().filter(|&k| session.engine.takes(k)).map(|k| format!("`/{} PATH`", k.name())).collect();
    let attach = if attach.is_empty() { String::new() } else { format!(", {} attach media", attach.join(", ")) };
    eprintln!("Welcome to ingot chat: `clear` removes the history, `exit` quits{attach}.");
    if interactive {
        let mut editor = rustyline::DefaultEditor::new()?;
        loop {
            match editor.readline("User: ") {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    if !session.line(&line) {
                        break;
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            }
        }
    } else {
        for line in std::io::stdin().lock().lines() {
            if !session.line(&line.context("reading stdin")?) {
                break;
            }
        }
    }
    Ok(())
}
