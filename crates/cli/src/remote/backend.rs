//! Remote engines behind ingot's own front ends: `ingot api --remote URL` serves the HTTP API
//! through them (as an [`ingot_server::Backend`]) and `ingot chat --remote URL` chats through
//! them.
//!
//! ingot keeps everything but the sampling: requests are rendered with `--model`'s tokenizer
//! and LLaMA Factory template (and the front end's system prompt, template variables and
//! generation settings), validated here, and the prompt goes as token ids (or the rendered
//! text) to the servers' `/v1/completions`; replies are read by the same tool-call parser
//! and reasoning split as a local model's. Structured output (`response_format`) goes to a
//! server in the JSON-schema field it was found to enforce at start; when some server
//! enforces none, such a request is a 400 naming the field. What needs ingot's own decoder
//! is refused the same way: a forcing `tool_choice`, per-token `logprobs`, and scoring.
//! Media parts are refused too (the servers get token ids, which carry no pixels).

use std::sync::Arc;
use std::time::Duration;

use ingot_core::constraint::ResponseFormat;
use ingot_core::template::ToolFormat;
use ingot_engine::{Cancel, ChatRequest, EngineConfig, EngineError, Event, EventSink, GenParams, MediaKind, Prompt, PromptRequest, Prompter, Stream};
use ingot_server::backend::{self, ScoresDone, Submitted};
use ingot_server::sink::ChannelSink;
use ingot_server::Backend;
use serde_json::{json, Value};

use super::relay::{relay, Job, Servers};
use super::{connect_all, openai_params};

/// Context length assumed when no server reports one in `/v1/models`.
const UNKNOWN_CONTEXT: usize = 4096;

/// Remote servers with the prompter that renders for them.
pub struct RemoteEngine {
    prompter: Prompter,
    servers: Arc<Servers>,
    /// The front end's generation settings, under each request's own.
    defaults: GenParams,
    context: usize,
}

impl RemoteEngine {
    /// Checks every server (see [`connect_all`]) for a front end rendering with `prompter`
    /// and `cfg`'s settings; `timeout` bounds each request, its stream included.
    pub fn connect(urls: &[String], prompter: Prompter, cfg: &EngineConfig, timeout: Duration, who: &str) -> anyhow::Result<Self> {
        let endpoints = connect_all(urls, &prompter, timeout, who)?;
        let context = endpoints.iter().filter_map(|e| e.context).min().unwrap_or(UNKNOWN_CONTEXT);
        Ok(Self { prompter, servers: Arc::new(Servers::new(endpoints)), defaults: cfg.params.clone(), context })
    }

    /// The prompt a chat request renders to.
    pub fn render_chat(&self, req: &ChatRequest) -> Result<String, EngineError> {
        Ok(self.prompter.render(req)?.text)
    }

    /// Streams one sample of a chat request on a plain thread, as [`ingot_engine::EngineHandle::stream_chat`] does.
    pub fn stream_chat(&self, req: ChatRequest) -> Result<Stream, EngineError> {
        let req = ChatRequest { params: GenParams { num_return_sequences: Some(1), ..req.params }, ..req };
        let (tx, events) = crossbeam_channel::unbounded();
        let cancel = Cancel::default();
        let sink = CancelSink { tx, cancel: cancel.clone() };
        self.start(self.chat_job(req)?, vec![sink])?;
        Ok(Stream::new(events, cancel))
    }

    /// Renders and validates a chat request into a job.
    fn chat_job(&self, req: ChatRequest) -> Result<Job, EngineError> {
        if let Some(m) = req.media.first() {
            return Err(EngineError::invalid("messages", format!("--remote engines get token ids, which carry no {}s", MediaKind::of(m).name())));
        }
        let params = req.params.clone().or(&self.defaults);
        if params.tool_choice.as_ref().is_some_and(|c| c.forces_call()) {
            return Err(EngineError::invalid("tool_choice", "a forcing tool_choice needs ingot's own constrained decoding; --remote engines take `auto` or `none`"));
        }
        if req.tools.as_ref().is_some_and(|t| !t.is_empty()) && params.response_format.as_ref().is_some_and(|f| *f != ResponseFormat::Text) {
            return Err(EngineError::invalid("response_format", "tools with a response_format need ingot's own constrained decoding; --remote engines take one or the other"));
        }
        let rendered = self.prompter.render(&req)?;
        let mut params = params;
        params.stop.extend(rendered.stop);
        self.job(params, rendered.ids, rendered.text, "messages")
    }

    /// A job of `ids` (which `text` tokenizes to) with `params`, validated here.
    fn job(&self, mut params: GenParams, ids: Vec<u32>, text: String, field: &'static str) -> Result<Job, EngineError> {
        params.sampling()?;
        if params.logprobs.is_some() {
            return Err(EngineError::invalid("logprobs", "--remote engines' replies are relayed as text: logprobs are not available"));
        }
        if let (None, Some(total)) = (params.max_new_tokens, params.max_length) {
            let room = total.checked_sub(ids.len()).filter(|&n| n > 0);
            params.max_new_tokens = Some(room.ok_or_else(|| EngineError::invalid("max_length", format!("max_length ({total}) must exceed the prompt's {} tokens", ids.len())))?);
        }
        let schema = match params.response_format.take() {
            None | Some(ResponseFormat::Text) => None,
            Some(ResponseFormat::JsonObject { schema }) => Some(schema.unwrap_or_else(|| json!({"type": "object"}))),
            Some(ResponseFormat::JsonSchema { json_schema }) => Some(json_schema.schema.unwrap_or_else(|| json!({}))),
        };
        if schema.is_some() && !self.servers.all_take_schemas() {
            let none: Vec<&str> = self.servers.endpoints.iter().filter(|e| e.schema_field.is_none()).map(|e| e.url.as_str()).collect();
            return Err(EngineError::invalid("response_format", format!("--remote {} enforces no JSON schema on /v1/completions", none.join(", "))));
        }
        let mut body = openai_params(&params);
        body.insert("n".into(), json!(params.num_return_sequences.unwrap_or(1)));
        Ok(Job { body: Value::Object(body), ids, text, schema, field })
    }

    /// Opens the job's stream (a 4xx or every server failing is the caller's error) and
    /// relays it into `sinks` on a thread of its own.
    fn start<S: EventSink + 'static>(&self, job: Job, sinks: Vec<S>) -> Result<(), EngineError> {
        let opened = self.servers.open(&job)?;
        let servers = self.servers.clone();
        std::thread::Builder::new()
            .name("remote-relay".into())
            .spawn(move || relay(&servers, &job, opened, sinks))
            .map_err(EngineError::Start)?;
        Ok(())
    }

    fn submit(&self, job: Job, sinks: &mut dyn FnMut(usize) -> ChannelSink) -> Result<Submitted, EngineError> {
        let samples = job.body["n"].as_u64().unwrap_or(1) as usize;
        let prompt_ids = job.ids.clone();
        self.start(job, (0..samples).map(sinks).collect())?;
        Ok(Submitted { prompt_ids, samples })
    }
}

impl Backend for RemoteEngine {
    fn submit_chat(&self, req: ChatRequest, sinks: &mut dyn FnMut(usize) -> ChannelSink) -> Result<Submitted, EngineError> {
        let job = self.chat_job(req)?;
        self.submit(job, sinks)
    }

    fn submit_prompt(&self, req: PromptRequest, sinks: &mut dyn FnMut(usize) -> ChannelSink) -> Result<Submitted, EngineError> {
        let (ids, text) = match req.prompt {
            Prompt::Text(text) => (self.prompter.tokenizer().encode_prompt(&text)?, text),
            Prompt::Ids(ids) => {
                let text = backend::detokenize(self.prompter.tokenizer(), self.prompter.tokenizer().vocab_size(), &ids)?;
                (ids, text)
            }
        };
        let job = self.job(req.params.or(&self.defaults), ids, text, "prompt")?;
        self.submit(job, sinks)
    }

    fn apply_template(&self, req: ChatRequest) -> Result<(String, Vec<u32>), EngineError> {
        let r = self.prompter.render(&req)?;
        Ok((r.text, r.ids))
    }

    fn submit_scores(&self, _texts: &[String], _max_length: Option<usize>, _done: ScoresDone) -> Result<(), EngineError> {
        Err(EngineError::invalid("input", "scoring needs a local reward model: --remote engines only generate"))
    }

    fn queue_depth(&self) -> usize {
        0
    }

    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        Ok(self.prompter.tokenizer().encode(text, add_special)?)
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        backend::detokenize(self.prompter.tokenizer(), self.prompter.tokenizer().vocab_size(), ids)
    }

    fn piece(&self, id: u32) -> Vec<u8> {
        backend::piece(self.prompter.tokenizer(), id)
    }

    fn takes_images(&self) -> bool {
        false
    }

    fn context_length(&self) -> usize {
        self.context
    }

    fn reply_format(&self, prompt_ids: &[u32]) -> (ToolFormat, bool) {
        backend::reply_format(self.prompter.template(), self.prompter.tokenizer(), prompt_ids)
    }
}

/// A chat stream's sink: closed once the stream is cancelled or dropped.
struct CancelSink {
    tx: crossbeam_channel::Sender<Event>,
    cancel: Cancel,
}

impl EventSink for CancelSink {
    fn send(&mut self, event: Event) -> Result<(), ingot_engine::Closed> {
        self.tx.send(event).map_err(|_| ingot_engine::Closed)
    }

    fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }
}
