//! The one type for generation parameters, as every front end gives them: LLaMA Factory's
//! names with OpenAI's (and vLLM's) as serde aliases, every field optional. The OpenAI request
//! bodies flatten it, the YAML config and the CLI flags convert into it, so a new field is
//! declared here and honoured in `resolve` (and, if it changes sampling, in the core
//! sampler): nowhere else.
//!
//! Precedence, field by field, merged once per request: the request, then the front end's
//! settings ([`crate::EngineConfig::params`]), then the model's `generation_config.json`, then
//! the engine's defaults ([`GenParams::llama_factory`] unless the front end says otherwise).
//! Resolution validates everything before anything is queued; every error is an
//! [`EngineError::Invalid`] naming the field and its limit.

use ingot_core::constraint::ResponseFormat;
use ingot_core::hf_files::GenerationDefaults;
use ingot_core::sampling::{SamplingParams, MAX_TOP_LOGPROBS};
use ingot_core::template::ToolChoice;
use serde::{Deserialize, Deserializer};

use crate::EngineError;

/// Generation parameters with LLaMA Factory's names and meaning; `None` means "not given".
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct GenParams {
    /// `false` means greedy decoding, whatever the temperature.
    pub do_sample: Option<bool>,
    /// 0 means greedy decoding.
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// 0 disables top-k.
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Samples per request (`n`); sample `i` is seeded with `seed + i`.
    #[serde(alias = "n")]
    pub num_return_sequences: Option<usize>,
    #[serde(alias = "max_tokens")]
    pub max_new_tokens: Option<usize>,
    /// Prompt plus generated tokens; `max_new_tokens` wins when both are given.
    pub max_length: Option<usize>,
    /// Stop strings, honoured (the text ends just before the first one); one string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub stop: Vec<String>,
    /// Token ids that end generation besides the tokenizer's end-of-generation ids (vLLM's
    /// `stop_token_ids`).
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past end-of-generation tokens (vLLM's `ignore_eos`; benchmarks). A
    /// constrained sequence still ends at one, which its grammar allows only once complete.
    pub ignore_eos: Option<bool>,
    pub skip_special_tokens: Option<bool>,
    pub seed: Option<u64>,
    /// OpenAI's structured output (`{"type": "json_object"}`, `{"type": "json_schema",
    /// "json_schema": {"name", "schema", "strict"}}`, `{"type": "text"}`): enforced by
    /// constrained decoding, see [`ingot_core::constraint`]. The schema is compiled once per
    /// request (an invalid one is [`crate::EngineError::Invalid`] naming
    /// `response_format...`), and every sample gets its own copy of the grammar state.
    pub response_format: Option<ResponseFormat>,
    /// llama.cpp's `grammar`: a GBNF grammar every reply follows, by constrained decoding
    /// (translated for llguidance, see [`ingot_core::constraint::ConstraintCompiler::compile_gbnf`]).
    /// It excludes a `response_format` and a forcing `tool_choice`; an invalid grammar is
    /// [`crate::EngineError::Invalid`] naming `grammar`.
    pub grammar: Option<String>,
    /// OpenAI's `tool_choice` (`"none"`, `"auto"`, `"required"`, `{"type": "function",
    /// "function": {"name": …}}`; a front end deserializes the request's field straight into
    /// [`ToolChoice`]). `"required"` and a named function force a well-formed call to the
    /// chat request's [`tools`](crate::ChatRequest::tools), written in the template's tool
    /// format, by constrained decoding (see [`ingot_core::template::ToolChoice`]); the reply
    /// then parses with the template's [`ToolFormat::parse`](ingot_core::template::ToolFormat::parse)
    /// into calls whose arguments validate against their tools' schemas. `"none"` and `"auto"`
    /// change nothing here: whether calls are extracted from the reply (never for `"none"`)
    /// is the front end's decision, except that `"auto"` with tools and a `response_format`
    /// admits either calls or schema-valid text. A forced call is the whole reply (a
    /// `response_format` applies to a later text turn). A forcing choice that cannot be
    /// honoured (no tools, a function not among them, a prompt request) is
    /// [`crate::EngineError::Invalid`] naming `tool_choice`.
    pub tool_choice: Option<ToolChoice>,
    /// Report each generated token's log-probability and this many most likely alternatives
    /// (0 to [`MAX_TOP_LOGPROBS`]) as [`crate::Event::Logprobs`]: the model's own distribution
    /// (`log_softmax` of its logits, before penalties, temperature, filters or a grammar), as
    /// OpenAI and vLLM report them. `/v1/completions`' `logprobs: N`; chat's `logprobs: true`
    /// with `top_logprobs: N` becomes `Some(N)`.
    pub logprobs: Option<usize>,
    /// OpenAI's `parallel_tool_calls`: `false` admits at most one call where the grammar
    /// constrains calls (a forcing `tool_choice`, or `auto` with a `response_format`; see
    /// [`crate::ChatRequest`]); a front end also keeps only the first call it parses.
    pub parallel_tool_calls: Option<bool>,
    /// The LoRA adapter to run with, by its `--lora` name (`None`: the base model). Set by
    /// front ends (a request's `model`, `--use-lora`), never read from a request body or YAML.
    #[serde(skip)]
    pub adapter: Option<String>,
}

impl GenParams {
    /// LLaMA Factory's generating defaults (`GeneratingArguments`).
    pub fn llama_factory() -> Self {
        Self {
            do_sample: Some(true),
            temperature: Some(0.95),
            top_p: Some(0.7),
            top_k: Some(50),
            min_p: Some(0.0),
            repetition_penalty: Some(1.0),
            presence_penalty: Some(0.0),
            frequency_penalty: Some(0.0),
            num_return_sequences: Some(1),
            max_new_tokens: Some(1024),
            max_length: None,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: Some(false),
            skip_special_tokens: Some(true),
            seed: None,
            response_format: None,
            grammar: None,
            tool_choice: None,
            logprobs: None,
            parallel_tool_calls: None,
            adapter: None,
        }
    }

    /// Greedy decoding of one sequence (tests, benchmarks, batch runs that must be exact).
    pub fn greedy() -> Self {
        Self { do_sample: Some(false), ..Self::default() }
    }

    /// Fills every field not given here from `fallback`.
    pub fn or(mut self, fallback: &GenParams) -> Self {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = fallback.$f.clone(); } )* };
        }
        fill!(
            do_sample, temperature, top_p, top_k, min_p, repetition_penalty, presence_penalty,
            frequency_penalty, num_return_sequences, max_new_tokens, max_length, skip_special_tokens, seed,
            response_format, grammar, tool_choice, ignore_eos, logprobs, parallel_tool_calls, adapter
        );
        if self.stop.is_empty() {
            self.stop = fallback.stop.clone();
        }
        if self.stop_token_ids.is_empty() {
            self.stop_token_ids = fallback.stop_token_ids.clone();
        }
        self
    }

    /// The sampling parameters these give (unset fields neutral), validated: every error
    /// names the field and its limit.
    pub fn sampling(&self) -> Result<SamplingParams, EngineError> {
        let greedy = self.do_sample == Some(false);
        let params = SamplingParams {
            temperature: if greedy { 0.0 } else { self.temperature.unwrap_or(1.0) },
            top_p: self.top_p.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            seed: self.seed,
        };
        params.validate().map_err(|e| match &e {
            ingot_core::sampling::SamplingError::OutOfRange { field, .. } => EngineError::invalid(*field, e.to_string()),
        })?;
        Ok(params)
    }

    /// The fields a checkpoint's `generation_config.json` sets.
    pub fn from_generation_config(g: &GenerationDefaults) -> Self {
        Self {
            do_sample: g.do_sample,
            temperature: g.temperature,
            top_p: g.top_p,
            top_k: g.top_k,
            repetition_penalty: g.repetition_penalty,
            max_new_tokens: g.max_new_tokens,
            max_length: g.max_length,
            ..Self::default()
        }
    }
}

/// Most stop strings a request may give (OpenAI allows 4; llama.cpp and vLLM more).
pub const MAX_STOP: usize = 16;
/// Longest stop string, in bytes: the stream holds back up to this much text while it might
/// still be the start of one.
pub const MAX_STOP_BYTES: usize = 1024;

/// Parameters resolved for one prompt: what every sample of the request runs with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    /// One entry per sample, seeds already offset.
    pub samples: Vec<SamplingParams>,
    pub max_new_tokens: usize,
    pub stop: Vec<String>,
    pub stop_ids: Vec<u32>,
    pub skip_special_tokens: bool,
    pub ignore_eos: bool,
    pub logprobs: Option<usize>,
}

/// Limits the engine enforces on every request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The model's context, in tokens.
    pub context: usize,
    /// Positions the KV cache budget holds for one sequence.
    pub budget: usize,
    pub max_n: usize,
    pub vocab: usize,
}

impl Limits {
    /// The tighter of the context and the KV budget, and how to name it in errors.
    fn room(&self) -> (usize, String) {
        if self.budget < self.context {
            (self.budget, format!("the KV cache budget of {} tokens (raise --kv-cache-mb)", self.budget))
        } else {
            (self.context, format!("the context of {} tokens", self.context))
        }
    }
}

/// Resolves `merged` (the request with every default merged in) for a prompt of `prompt_len`
/// tokens. `explicit` is what the caller set (the request over the front end's settings): a
/// token limit set there is checked strictly, while a default one is shortened to fit.
pub(crate) fn resolve(explicit: &GenParams, merged: &GenParams, prompt_len: usize, limits: Limits) -> Result<Resolved, EngineError> {
    let n = merged.num_return_sequences.unwrap_or(1);
    if n == 0 || n > limits.max_n {
        return Err(EngineError::invalid(
            "num_return_sequences",
            format!("num_return_sequences (n) must be between 1 and {}, got {n}", limits.max_n),
        ));
    }
    let (limit, limit_name) = limits.room();
    let room = limit.saturating_sub(prompt_len);
    if room == 0 {
        return Err(EngineError::invalid(
            "messages",
            format!("the prompt has {prompt_len} tokens, which leaves no room in {limit_name}"),
        ));
    }
    let strict = |field: &str, new: usize| {
        if new == 0 {
            return Err(EngineError::invalid(field, format!("{field} must leave at least 1 new token")));
        }
        if prompt_len + new > limit {
            return Err(EngineError::invalid(
                field,
                format!("the prompt ({prompt_len} tokens) plus {new} new tokens ({field}) exceeds {limit_name}"),
            ));
        }
        Ok(new)
    };
    let max_new_tokens = match (explicit.max_new_tokens, explicit.max_length) {
        (Some(m), _) => strict("max_new_tokens", m)?,
        (None, Some(total)) => {
            if total <= prompt_len {
                return Err(EngineError::invalid(
                    "max_length",
                    format!("max_length ({total}) must exceed the prompt's {prompt_len} tokens"),
                ));
            }
            strict("max_length", total - prompt_len)?
        }
        (None, None) => match (merged.max_new_tokens, merged.max_length) {
            (Some(m), _) => m.min(room),
            (None, Some(total)) => total.saturating_sub(prompt_len).clamp(1, room),
            (None, None) => room,
        },
    };
    if max_new_tokens == 0 {
        return Err(EngineError::invalid("max_new_tokens", "max_new_tokens must be at least 1"));
    }

    let base = merged.sampling()?;
    let samples = (0..n as u64).map(|i| SamplingParams { seed: base.seed.map(|s| s.wrapping_add(i)), ..base.clone() }).collect();
    if merged.stop.len() > MAX_STOP {
        return Err(EngineError::invalid("stop", format!("at most {MAX_STOP} stop strings, got {}", merged.stop.len())));
    }
    if let Some(i) = merged.stop.iter().position(String::is_empty) {
        return Err(EngineError::invalid(format!("stop[{i}]"), format!("stop[{i}] is an empty string")));
    }
    if let Some(i) = merged.stop.iter().position(|s| s.len() > MAX_STOP_BYTES) {
        return Err(EngineError::invalid(
            format!("stop[{i}]"),
            format!("stop[{i}] is {} bytes, over the limit of {MAX_STOP_BYTES} bytes", merged.stop[i].len()),
        ));
    }
    if let Some(i) = merged.stop_token_ids.iter().position(|&id| id as usize >= limits.vocab) {
        return Err(EngineError::invalid(
            format!("stop_token_ids[{i}]"),
            format!("stop_token_ids[{i}] = {} is outside the vocabulary (size {})", merged.stop_token_ids[i], limits.vocab),
        ));
    }
    if let Some(n) = merged.logprobs.filter(|&n| n > MAX_TOP_LOGPROBS) {
        return Err(EngineError::invalid("logprobs", format!("at most {MAX_TOP_LOGPROBS} alternatives per token (logprobs), got {n}")));
    }
    Ok(Resolved {
        samples,
        max_new_tokens,
        stop: merged.stop.clone(),
        stop_ids: merged.stop_token_ids.clone(),
        skip_special_tokens: merged.skip_special_tokens.unwrap_or(true),
        ignore_eos: merged.ignore_eos.unwrap_or(false),
        logprobs: merged.logprobs,
    })
}

/// `"stop"`: one string or a list of them (OpenAI's shapes; null is none).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { context: 100, budget: 1000, max_n: 4, vocab: 50 };

    fn run(p: GenParams, prompt_len: usize) -> Result<Resolved, String> {
        let merged = p.clone().or(&GenParams::llama_factory());
        resolve(&p, &merged, prompt_len, LIMITS).map_err(|e| format!("{}: {e}", e.field().unwrap_or("-")))
    }

    #[test]
    fn defaults_are_llama_factorys_and_fit_the_context() {
        let r = run(GenParams::default(), 10).expect("valid");
        assert_eq!(r.samples.len(), 1);
        assert_eq!(r.samples[0].temperature, 0.95);
        assert_eq!(r.samples[0].top_p, 0.7);
        assert_eq!(r.samples[0].top_k, 50);
        // The default 1024 is shortened to what the context leaves.
        assert_eq!(r.max_new_tokens, 90);
        assert!(r.skip_special_tokens);
    }

    #[test]
    fn do_sample_false_or_temperature_zero_is_greedy() {
        assert!(run(GenParams { do_sample: Some(false), temperature: Some(0.7), ..Default::default() }, 5).expect("valid").samples[0]
            .is_greedy());
        assert!(run(GenParams { temperature: Some(0.0), ..Default::default() }, 5).expect("valid").samples[0].is_greedy());
    }

    #[test]
    fn samples_get_consecutive_seeds() {
        let r = run(GenParams { num_return_sequences: Some(3), seed: Some(7), ..Default::default() }, 5).expect("valid");
        let seeds: Vec<_> = r.samples.iter().map(|s| s.seed).collect();
        assert_eq!(seeds, [Some(7), Some(8), Some(9)]);
    }

    #[test]
    fn token_limits() {
        let p = |max_new_tokens, max_length| GenParams { max_new_tokens, max_length, ..Default::default() };
        assert_eq!(run(p(None, Some(30)), 10).expect("valid").max_new_tokens, 20);
        assert_eq!(run(p(Some(5), Some(30)), 10).expect("valid").max_new_tokens, 5, "max_new_tokens wins");
        let e = run(p(Some(95), None), 10).expect_err("invalid");
        assert!(e.starts_with("max_new_tokens:") && e.contains("context of 100"), "{e}");
        let e = run(p(None, Some(10)), 10).expect_err("invalid");
        assert!(e.starts_with("max_length:") && e.contains("max_length (10)"), "{e}");
        let e = run(p(Some(0), None), 10).expect_err("invalid");
        assert!(e.contains("max_new_tokens"), "{e}");
        let e = run(GenParams::default(), 100).expect_err("invalid");
        assert!(e.starts_with("messages:") && e.contains("no room"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_field_and_limit() {
        let cases = [
            (GenParams { num_return_sequences: Some(0), ..Default::default() }, "num_return_sequences: num_return_sequences (n) must be between 1 and 4"),
            (GenParams { num_return_sequences: Some(5), ..Default::default() }, "num_return_sequences: num_return_sequences (n) must be between 1 and 4"),
            (GenParams { top_p: Some(1.5), ..Default::default() }, "top_p: top_p must be in (0, 1]"),
            (GenParams { temperature: Some(-1.0), ..Default::default() }, "temperature: temperature must be finite and >= 0"),
            (GenParams { stop: vec!["".into()], ..Default::default() }, "stop[0]: stop[0]"),
            (GenParams { stop: vec!["x".into(); 17], ..Default::default() }, "stop: at most 16 stop strings, got 17"),
            (GenParams { logprobs: Some(21), ..Default::default() }, "logprobs: at most 20 alternatives per token (logprobs), got 21"),
            (GenParams { stop: vec!["x".into(), "y".repeat(1025)], ..Default::default() }, "stop[1]: stop[1] is 1025 bytes, over the limit of 1024"),
        ];
        for (p, want) in cases {
            let e = run(p.clone(), 5).expect_err("invalid");
            assert!(e.contains(want), "{p:?}: {e}");
        }
    }

    #[test]
    fn request_beats_generation_config_beats_engine_defaults() {
        let gen = GenParams { temperature: Some(0.3), top_k: Some(20), ..Default::default() };
        let req = GenParams { top_k: Some(5), ..Default::default() };
        let merged = req.clone().or(&gen.or(&GenParams::llama_factory()));
        let r = resolve(&req, &merged, 5, LIMITS).expect("valid");
        assert_eq!((r.samples[0].temperature, r.samples[0].top_k, r.samples[0].top_p), (0.3, 5, 0.7));
    }

    #[test]
    fn openai_names_and_shapes_deserialize() {
        let p: GenParams = serde_json::from_str(r#"{"n": 2, "stop": ["x"], "max_tokens": 9}"#).expect("valid");
        assert_eq!((p.num_return_sequences, p.stop, p.max_new_tokens), (Some(2), vec!["x".to_string()], Some(9)));
        let p: GenParams = serde_json::from_str(r#"{"stop": "END", "stop_token_ids": [3], "ignore_eos": true}"#).expect("valid");
        assert_eq!((p.stop, p.stop_token_ids, p.ignore_eos), (vec!["END".to_string()], vec![3], Some(true)));
        let p: GenParams = serde_json::from_str(r#"{"stop": null}"#).expect("valid");
        assert!(p.stop.is_empty());
        let e = serde_json::from_str::<GenParams>(r#"{"temperature": "hot"}"#).expect_err("invalid").to_string();
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn the_tighter_of_context_and_budget_is_named() {
        let limits = Limits { context: 100, budget: 40, max_n: 1, vocab: 50 };
        let p = GenParams { max_new_tokens: Some(35), ..Default::default() };
        let e = resolve(&p, &p.clone().or(&GenParams::llama_factory()), 10, limits).expect_err("over the budget");
        assert_eq!(e.field(), Some("max_new_tokens"));
        assert!(e.to_string().contains("KV cache budget of 40 tokens"), "{e}");
        let bad = GenParams { stop_token_ids: vec![50], ..Default::default() };
        let e = resolve(&bad, &bad.clone().or(&GenParams::llama_factory()), 10, LIMITS).expect_err("out of vocabulary");
        assert_eq!(e.field(), Some("stop_token_ids[0]"));
    }
}
