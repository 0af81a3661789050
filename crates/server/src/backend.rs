//! What the HTTP layer needs of an engine, as a trait: the real [`EngineHandle`] behind it in
//! production, a stub in the handler tests (no model), and remote OpenAI-compatible engines
//! (`ingot api --remote`, implemented by the binary). The free functions are the parts any
//! backend that holds the model's tokenizer and template answers the same way.
//!
//! Every method is blocking (validation renders and tokenizes; see [`crate::workers`]) except
//! that events arrive through the sinks given, on the engine's own schedule.

use ingot_core::template::{prompt_opens_thinking, ChatTemplate, ToolFormat};
use ingot_core::tokenizer::Tokenizer;
use ingot_engine::{ChatRequest, EngineError, EngineHandle, MediaKind, PromptRequest, QueueStats};

use crate::sink::ChannelSink;

/// A queued request.
pub struct Submitted {
    /// The prompt as the model sees it.
    pub prompt_ids: Vec<u32>,
    /// Samples queued (sinks made).
    pub samples: usize,
}

/// The scores of a score request, delivered on the engine's thread.
pub type ScoresDone = Box<dyn FnOnce(Result<Vec<f32>, EngineError>) + Send>;

pub trait Backend: Send + Sync + 'static {
    /// Validates and queues a chat request; sample `i`'s events go to `sinks(i)`.
    fn submit_chat(&self, req: ChatRequest, sinks: &mut dyn FnMut(usize) -> ChannelSink) -> Result<Submitted, EngineError>;
    /// Validates and queues a raw prompt.
    fn submit_prompt(&self, req: PromptRequest, sinks: &mut dyn FnMut(usize) -> ChannelSink) -> Result<Submitted, EngineError>;
    /// The prompt a chat request renders to and its ids, validated but not queued.
    fn apply_template(&self, req: ChatRequest) -> Result<(String, Vec<u32>), EngineError>;
    /// Tokenizes texts to score and queues them; `done` gets the scores.
    fn submit_scores(&self, texts: &[String], max_length: Option<usize>, done: ScoresDone) -> Result<(), EngineError>;
    /// Requests waiting for a place in the batch.
    fn queue_depth(&self) -> usize;
    /// Queue times and refused requests, for `/metrics` (none by default: an engine
    /// without a queue of its own).
    fn queue_stats(&self) -> QueueStats {
        QueueStats::default()
    }
    /// Text tokenized as a prompt is (special-token text becomes its id), BOS first when
    /// `add_special` and the model wants one.
    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError>;
    /// Ids back to text, special tokens kept; an id outside the vocabulary is
    /// [`EngineError::Invalid`] naming `tokens[i]`.
    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError>;
    /// The bytes token `id` prints (its vocabulary text for control tokens).
    fn piece(&self, id: u32) -> Vec<u8>;
    /// Whether the model takes images.
    fn takes_images(&self) -> bool;
    /// Whether the model takes media of `kind` (a model that takes images only, unless told).
    fn takes(&self, kind: MediaKind) -> bool {
        kind == MediaKind::Image && self.takes_images()
    }
    /// The model's context length, in tokens.
    fn context_length(&self) -> usize;
    /// How replies to a prompt are read: the template's tool format, and whether the prompt
    /// ends inside a thinking block.
    fn reply_format(&self, prompt_ids: &[u32]) -> (ToolFormat, bool);
    /// The LoRA adapters a request's `model` may name (each runs over the base model); a
    /// backend without adapters serves none.
    fn adapters(&self) -> &[String] {
        &[]
    }
}

impl Backend for EngineHandle {
    fn submit_chat(&self, req: ChatRequest, sinks: &mut dyn FnMut(usize) -> ChannelSink) -> Result<Submitted, EngineError> {
        let valid = self.validate_chat(req)?;
        let (prompt_ids, samples) = (valid.prompt_ids().to_vec(), valid.samples());
        self.submit(valid, sinks)?;
        Ok(Submitted { prompt_ids, samples })
    }

    fn submit_prompt(&self, req: PromptRequest, sinks: &mut dyn FnMut(usize) -> ChannelSink) -> Result<Submitted, EngineError> {
        let valid = self.validate_prompt(req)?;
        let (prompt_ids, samples) = (valid.prompt_ids().to_vec(), valid.samples());
        self.submit(valid, sinks)?;
        Ok(Submitted { prompt_ids, samples })
    }

    fn apply_template(&self, req: ChatRequest) -> Result<(String, Vec<u32>), EngineError> {
        let valid = self.validate_chat(req)?;
        Ok((valid.prompt_text().unwrap_or_default().to_owned(), valid.prompt_ids().to_vec()))
    }

    fn submit_scores(&self, texts: &[String], max_length: Option<usize>, done: ScoresDone) -> Result<(), EngineError> {
        EngineHandle::submit_scores(self, texts, max_length, done)
    }

    fn queue_depth(&self) -> usize {
        EngineHandle::queue_depth(self)
    }

    fn queue_stats(&self) -> QueueStats {
        EngineHandle::queue_stats(self)
    }

    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        Ok(self.tokenizer().encode(text, add_special)?)
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        detokenize(self.tokenizer(), self.model_config().vocab_size, ids)
    }

    fn piece(&self, id: u32) -> Vec<u8> {
        piece(self.tokenizer(), id)
    }

    fn takes_images(&self) -> bool {
        EngineHandle::takes_images(self)
    }

    fn takes(&self, kind: MediaKind) -> bool {
        EngineHandle::takes(self, kind)
    }

    fn context_length(&self) -> usize {
        EngineHandle::context_length(self)
    }

    fn reply_format(&self, prompt_ids: &[u32]) -> (ToolFormat, bool) {
        reply_format(self.template(), self.tokenizer(), prompt_ids)
    }

    fn adapters(&self) -> &[String] {
        EngineHandle::adapters(self)
    }
}

/// [`Backend::detokenize`] for any backend that holds the model's tokenizer: ids of a
/// vocabulary of `vocab` tokens back to text.
pub fn detokenize(tokenizer: &Tokenizer, vocab: usize, ids: &[u32]) -> Result<String, EngineError> {
    if let Some(i) = ids.iter().position(|&id| id as usize >= vocab) {
        return Err(EngineError::invalid(format!("tokens[{i}]"), format!("token id {} is outside the vocabulary (size {vocab})", ids[i])));
    }
    Ok(tokenizer.decode(ids, false)?)
}

/// [`Backend::piece`] from the model's tokenizer.
pub fn piece(tokenizer: &Tokenizer, id: u32) -> Vec<u8> {
    tokenizer.text_bytes(id).or_else(|| tokenizer.id_to_token(id).map(|s| s.as_bytes().to_vec())).unwrap_or_default()
}

/// [`Backend::reply_format`] from the model's template and tokenizer.
pub fn reply_format(template: Option<&ChatTemplate>, tokenizer: &Tokenizer, prompt_ids: &[u32]) -> (ToolFormat, bool) {
    let tools = template.map_or(ToolFormat::Default, |t| t.tool_format());
    // The thinking marker is among the prompt's last tokens.
    let tail = tokenizer.decode(&prompt_ids[prompt_ids.len().saturating_sub(8)..], false).unwrap_or_default();
    (tools, prompt_opens_thinking(&tail))
}
