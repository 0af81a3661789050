//! The edge of the engine: what callers ask for ([`ChatRequest`], [`PromptRequest`]) becomes
//! one [`ValidRequest`], validated once, here and nowhere else.
//!
//! Validation runs in the caller's thread: the chat template is rendered, the prompt
//! tokenized (media preprocessed and laid out), the generation parameters merged with the
//! defaults and resolved, the prompt checked against the context and the KV budget, and a
//! `response_format` or forced `tool_choice` compiled into a grammar. The scheduler only ever
//! receives `ValidRequest`s, whose fields nothing outside this crate can set, so past this
//! point every input can be trusted.
//!
//! Structured output: a `response_format` (OpenAI's `json_object` / `json_schema`) compiles,
//! once per request, into a grammar ([`ingot_core::constraint`]); each sample's sequence owns
//! a copy and masks its own logits row to what the grammar allows, so the reply parses
//! whenever it finishes with "stop". `tool_choice` `"required"` or a named function compiles
//! the chat request's `tools` and the template's tool format into a grammar that admits only
//! well-formed calls to those tools; under `"auto"` with a `response_format` the reply is
//! either such calls or schema-valid text (OpenAI's semantics: the format constrains text
//! replies only), and `parallel_tool_calls: false` admits one call.

use std::sync::Arc;

use std::sync::OnceLock;

use ingot_core::config::ModelConfig;
use ingot_core::constraint::{Constraint, ConstraintCompiler, ConstraintError, ResponseFormat, ToolRules};
use ingot_core::media::Media;
use ingot_core::sampling::SamplingParams;
use ingot_core::template::{ChatTemplate, ToolChoice};
use ingot_core::tokenizer::Tokenizer;
use serde_json::{Map, Value};

use crate::lora::{AdapterId, AdapterNames};
use crate::media::{count_kinds, place_media, refuse_untaken, MediaPrompt, MediaSupport};
use crate::params::{self, GenParams, Limits};
use crate::EngineError;

/// One chat turn to answer.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// Hugging Face style message objects, given to the chat template as they are
    /// (`{"role", "content"}`, assistant `tool_calls`, `tool` results, ...).
    pub messages: Vec<Value>,
    /// System prompt; prepended as a system message (the engine's default system prompt is
    /// used when neither this nor the messages give one).
    pub system: Option<String>,
    /// JSON-schema tool definitions for the template (and for a forcing
    /// [`GenParams::tool_choice`]).
    pub tools: Option<Vec<Value>>,
    /// Extra template variables, e.g. `enable_thinking` (over the engine's defaults).
    pub template_kwargs: Map<String, Value>,
    pub params: GenParams,
    /// Images, in the order of the messages' `<image>` placeholders (or image content parts);
    /// when the messages have none, they go before the first user message's text.
    pub media: Vec<Media>,
}

impl ChatRequest {
    /// A request for plain text messages given as (role, content) pairs.
    pub fn from_turns<'a>(turns: impl IntoIterator<Item = (&'a str, &'a str)>, params: GenParams) -> Self {
        let messages = turns.into_iter().map(|(role, content)| serde_json::json!({"role": role, "content": content})).collect();
        Self { messages, params, ..Self::default() }
    }
}

/// A prompt given as it is: no template, no template stop words, no tools.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Text, tokenized as a rendered prompt is (special-token text becomes its id).
    Text(String),
    /// Token ids, used as they are.
    Ids(Vec<u32>),
}

/// A completion of a raw prompt.
#[derive(Debug, Clone)]
pub struct PromptRequest {
    pub prompt: Prompt,
    pub params: GenParams,
}

/// A request past the edge: its prompt tokenized, its media laid out, one resolved sampling
/// setting per sample, its grammar compiled. Only this module makes one.
#[derive(Debug)]
pub struct ValidRequest {
    pub(crate) prompt_ids: Vec<u32>,
    /// The rendered chat template (media as placeholders); `None` for raw prompts.
    text: Option<String>,
    pub(crate) media: Option<Arc<MediaPrompt>>,
    /// One per sample, seeds already offset.
    pub(crate) samples: Vec<SamplingParams>,
    pub(crate) max_new_tokens: usize,
    /// Stop strings: generation ends before the first occurrence, which is not emitted. The
    /// first `own_stops` are the request's; the template's follow.
    pub(crate) stop: Vec<String>,
    pub(crate) own_stops: usize,
    /// Token ids that end generation besides the tokenizer's end-of-generation ids.
    pub(crate) stop_ids: Vec<u32>,
    pub(crate) skip_special_tokens: bool,
    pub(crate) ignore_eos: bool,
    /// Report each generated token's log-probability and this many alternatives.
    pub(crate) logprobs: Option<usize>,
    /// The grammar every sampled token must follow, in its start state; each sample gets a
    /// copy. `None` costs nothing per step.
    pub(crate) constraint: Option<Constraint>,
    /// The LoRA adapter the request runs with (`None`: the base model).
    pub(crate) adapter: Option<AdapterId>,
}

impl ValidRequest {
    /// The prompt as the model sees it (media placeholders expanded).
    pub fn prompt_ids(&self) -> &[u32] {
        &self.prompt_ids
    }

    /// The rendered chat prompt (media as placeholders); `None` for a raw prompt.
    pub fn prompt_text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// How many samples (`num_return_sequences`) the request asks for.
    pub fn samples(&self) -> usize {
        self.samples.len()
    }

    pub fn max_new_tokens(&self) -> usize {
        self.max_new_tokens
    }

    /// The prefix-cache key of each prompt token (its id, or for media tokens a key tied to
    /// the media item's bytes).
    pub(crate) fn prefix_keys(&self) -> Vec<u64> {
        match &self.media {
            Some(m) => m.keys(&self.prompt_ids),
            None => self.prompt_ids.iter().map(|&id| u64::from(id)).collect(),
        }
    }
}

/// What requests are validated against: the model's tokenizer, template and limits, and the
/// chain of defaults. Shared by every handle (read-only, but for the grammar compiler built on
/// first use).
pub(crate) struct Validator {
    pub tokenizer: Tokenizer,
    /// Placeholder tokens and preprocessors of a model that takes media.
    pub media: Option<MediaSupport>,
    /// The template chat requests are rendered with: the configured named one, else the model's.
    pub template: Option<ChatTemplate>,
    pub config: ModelConfig,
    /// The context requests get: the model's, or a shorter one the engine was given.
    pub context: usize,
    pub reward_model: bool,
    /// The front end's settings, which beat the model's generation config.
    pub params: GenParams,
    /// The model's generation config over the engine's defaults.
    pub defaults: GenParams,
    pub default_system: Option<String>,
    pub template_kwargs: Map<String, Value>,
    pub max_n: usize,
    /// Largest prompt plus `max_new_tokens` the KV budget can hold.
    pub budget_positions: usize,
    /// The vocabulary indexed for constrained decoding, built by the first request that needs
    /// one (about a second on a 150k vocabulary; once per engine).
    pub constraints: OnceLock<Result<ConstraintCompiler, ConstraintError>>,
    /// The LoRA adapters requests may name ([`GenParams::adapter`]).
    pub adapters: AdapterNames,
}

impl Validator {
    /// The prompt text a chat request renders to (see [`render_chat`]).
    pub fn render_chat(&self, req: &ChatRequest) -> Result<String, EngineError> {
        let media = self.media.as_ref().map(|m| (m, &self.tokenizer));
        render_chat(self.template.as_ref(), self.default_system.as_ref(), &self.template_kwargs, media, req)
    }

    /// Renders, tokenizes and validates a chat request.
    pub fn validate_chat(&self, req: ChatRequest) -> Result<ValidRequest, EngineError> {
        let s = self;
        if s.reward_model {
            return Err(EngineError::RewardModel);
        }
        let text = self.render_chat(&req)?;
        let (ids, media) = match &s.media {
            Some(support) if !req.media.is_empty() => {
                let (ids, media) = support.build_prompt(&s.tokenizer, &text, &req.media)?;
                (ids, Some(Arc::new(media)))
            }
            _ => (s.tokenizer.encode_prompt(&text)?, None),
        };
        let template_stops = s.template.as_ref().map_or(&[][..], |t| t.stop_strings());
        let tools = req.tools.as_deref().unwrap_or_default();
        let mut valid = self.resolve(ids, &req.params, Some(tools))?;
        valid.stop.extend(template_stops.iter().filter(|t| !t.is_empty()).cloned());
        valid.text = Some(text);
        valid.media = media;
        Ok(valid)
    }

    /// Tokenizes and validates a raw prompt (a forcing `tool_choice` is refused: there are no
    /// tools).
    pub fn validate_prompt(&self, req: PromptRequest) -> Result<ValidRequest, EngineError> {
        if self.reward_model {
            return Err(EngineError::RewardModel);
        }
        let ids = match req.prompt {
            Prompt::Text(text) => self.tokenizer.encode_prompt(&text)?,
            Prompt::Ids(ids) => ids,
        };
        self.resolve(ids, &req.params, None)
    }

    /// Checks the prompt and resolves the parameters against the one chain of defaults.
    /// `tools`: a chat request's tool definitions (`None` for a raw prompt, which has none).
    fn resolve(&self, prompt_ids: Vec<u32>, params: &GenParams, tools: Option<&[Value]>) -> Result<ValidRequest, EngineError> {
        let s = self;
        if prompt_ids.is_empty() {
            return Err(EngineError::invalid("prompt", "the prompt is empty"));
        }
        let vocab = s.config.vocab_size;
        if let Some(id) = prompt_ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::invalid("prompt", format!("token id {id} is outside the vocabulary (size {vocab})")));
        }
        let explicit = params.clone().or(&s.params);
        let merged = explicit.clone().or(&s.defaults);
        let limits = Limits { context: s.context, budget: s.budget_positions, max_n: s.max_n, vocab };
        let r = params::resolve(&explicit, &merged, prompt_ids.len(), limits)?;
        let constraint = self.constraint_for(&merged, tools)?;
        let adapter = merged.adapter.as_deref().map(|name| self.adapter_id(name)).transpose()?;
        Ok(ValidRequest {
            prompt_ids,
            text: None,
            media: None,
            samples: r.samples,
            max_new_tokens: r.max_new_tokens,
            own_stops: r.stop.len(),
            stop: r.stop,
            stop_ids: r.stop_ids,
            skip_special_tokens: r.skip_special_tokens,
            ignore_eos: r.ignore_eos,
            logprobs: r.logprobs,
            constraint,
            adapter,
        })
    }

    /// The id of the LoRA adapter called `name`.
    pub(crate) fn adapter_id(&self, name: &str) -> Result<AdapterId, EngineError> {
        self.adapters.id(name).ok_or_else(|| {
            let served = match self.adapters.names() {
                [] => "none".to_string(),
                names => names.join(", "),
            };
            EngineError::invalid("lora", format!("no LoRA adapter is called '{name}' (adapters served: {served})"))
        })
    }

    /// The grammar a request's replies follow. With the chat request's tools and the template's
    /// tool format: a forcing `tool_choice` (the calls are the whole reply; a `response_format`
    /// waits for a later text turn), or under `auto` with a `response_format` calls or
    /// schema-valid text; `parallel_tool_calls: false` admits one call. Otherwise the
    /// `response_format` alone, or a GBNF `grammar` (which excludes both).
    fn constraint_for(&self, params: &GenParams, tools: Option<&[Value]>) -> Result<Option<Constraint>, EngineError> {
        let format = params.response_format.as_ref().filter(|f| **f != ResponseFormat::Text);
        let choice = params.tool_choice.clone().unwrap_or(ToolChoice::Auto);
        let rules = ToolRules { single_call: params.parallel_tool_calls == Some(false), response_format: format };
        if let Some(grammar) = &params.grammar {
            if format.is_some() || choice.forces_call() {
                return Err(EngineError::invalid(
                    "grammar",
                    "grammar: give either a grammar or a response_format / forcing tool_choice, not both",
                ));
            }
            return Ok(Some(self.constraint_compiler()?.compile_gbnf(grammar)?));
        }
        let calls_or_text = choice == ToolChoice::Auto && format.is_some() && tools.is_some_and(|t| !t.is_empty());
        if choice.forces_call() || calls_or_text {
            let (Some(tools), Some(template)) = (tools, self.template.as_ref()) else {
                return Err(EngineError::invalid(
                    "tool_choice",
                    "tool_choice: forcing a tool call needs a chat request (its tools and chat template)",
                ));
            };
            return Ok(self.constraint_compiler()?.compile_tool_choice(template.tool_format(), tools, &choice, rules)?);
        }
        match format {
            Some(f) => Ok(self.constraint_compiler()?.compile(f)?),
            None => Ok(None),
        }
    }

    /// The vocabulary's grammar compiler, built on first use.
    fn constraint_compiler(&self) -> Result<&ConstraintCompiler, EngineError> {
        self.constraints
            .get_or_init(|| ConstraintCompiler::for_tokenizer(&self.tokenizer))
            .as_ref()
            .map_err(|e| EngineError::Constraint(e.clone()))
    }
}

/// The prompt text a chat request renders to with `template`: `default_system` applies when
/// neither the request nor its messages give a system prompt, `template_kwargs` under the
/// request's own. For a model that takes images (`takes_media`), image content parts become
/// `<image>` placeholders (prepended to the first user message when the messages have none
/// and images are given); they are expanded into the model's vision tokens only when the
/// prompt is tokenized. Shared by the engine's validation and the weightless
/// [`crate::prompter::Prompter`], so both render alike.
pub(crate) fn render_chat(
    template: Option<&ChatTemplate>,
    default_system: Option<&String>,
    template_kwargs: &Map<String, Value>,
    media: Option<(&MediaSupport, &Tokenizer)>,
    req: &ChatRequest,
) -> Result<String, EngineError> {
    let template = template.ok_or(EngineError::NoTemplate)?;
    if req.messages.is_empty() {
        return Err(EngineError::invalid("messages", "messages must not be empty"));
    }
    for (i, m) in req.messages.iter().enumerate() {
        if !m.get("role").is_some_and(Value::is_string) {
            return Err(EngineError::invalid(format!("messages[{i}].role"), format!("messages[{i}] needs a string `role`")));
        }
    }
    let has_system = req.messages[0]["role"] == "system";
    let system = req.system.as_ref().or(default_system.filter(|_| !has_system));
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    match system {
        Some(_) if has_system && req.system.is_some() => {
            return Err(EngineError::invalid("system", "the system prompt is given twice (`system` and a system message)"))
        }
        Some(text) => messages.push(serde_json::json!({"role": "system", "content": text})),
        None => {}
    }
    messages.extend(req.messages.iter().cloned());
    let given = count_kinds(&req.media);
    refuse_untaken(media.map(|(support, _)| support), given)?;
    if let Some((support, tokenizer)) = media {
        place_media(&mut messages, given, &support.template_kinds(tokenizer, template.source()))?;
    }
    let tools = req.tools.clone().map(Value::Array);
    let mut kwargs = template_kwargs.clone();
    kwargs.extend(req.template_kwargs.iter().map(|(k, v)| (k.clone(), v.clone())));
    // A final assistant turn with text is continued, not answered (see `prefill`).
    match crate::prefill::final_assistant_text(&messages) {
        Some(text) => {
            let rendered = template.render_json(&Value::Array(messages), tools.as_ref(), false, &kwargs)?;
            crate::prefill::continue_final(rendered, &text)
        }
        None => Ok(template.render_json(&Value::Array(messages), tools.as_ref(), true, &kwargs)?),
    }
}

#[cfg(test)]
impl ValidRequest {
    /// A greedy request of raw ids that runs for exactly `max_new_tokens` tokens
    /// (end-of-generation ignored), for scheduler tests without a handle.
    pub(crate) fn greedy(prompt_ids: Vec<u32>, max_new_tokens: usize) -> Self {
        Self {
            prompt_ids,
            text: None,
            media: None,
            samples: vec![SamplingParams::greedy()],
            max_new_tokens,
            stop: Vec::new(),
            own_stops: 0,
            stop_ids: Vec::new(),
            skip_special_tokens: true,
            ignore_eos: true,
            logprobs: None,
            constraint: None,
            adapter: None,
        }
    }
}
