//! Structured output by constrained decoding: OpenAI's `response_format` (`json_object`,
//! `json_schema`) turned into a grammar that masks the logits at every step, so the text a
//! sequence generates always parses (and validates against the schema) when it ends with
//! finish reason "stop".
//!
//! The grammar engine is Microsoft's `llguidance` (the one llama.cpp and vLLM use): it
//! compiles a JSON schema into an Earley grammar over a lazily built lexer and computes the
//! allowed-token set per step by walking a byte trie of the vocabulary (`toktrie`), so no
//! per-schema precomputation over the vocabulary is needed.
//!
//! Use:
//! 1. [`ConstraintCompiler::for_tokenizer`] once per tokenizer (it indexes the vocabulary:
//!    each id's exact text bytes from [`Tokenizer::text_bytes`]; control, unknown and unused
//!    tokens are not text, so the grammar never allows them; the end-of-generation ids are
//!    the "grammar complete" tokens). It costs a few hundred milliseconds on a 150k
//!    vocabulary, so an engine builds it on the first constrained request.
//! 2. [`ConstraintCompiler::compile`] per request: parses and compiles the schema (an invalid
//!    or unsupported schema is an error here, before anything runs) into a [`Constraint`];
//!    [`Constraint::clone`] gives each sample of the request its own independent copy
//!    (a deep copy: samples share no lexer state, so none can affect another).
//! 3. Per step, before sampling: [`Constraint::mask_logits`] sets every token the grammar does
//!    not allow to `-inf` (logits past the tokenizer's vocabulary too); once the grammar is
//!    complete only the end-of-generation tokens remain. After sampling a token that is not
//!    end-of-generation: [`Constraint::advance`].
//!
//! llama.cpp's `grammar` field: [`ConstraintCompiler::compile_gbnf`] translates GBNF into
//! llguidance's Lark syntax ([`gbnf`]) and compiles that.
//!
//! Tool calls: [`ConstraintCompiler::compile_tool_choice`] compiles OpenAI's `tool_choice`
//! (`"required"` or a named function) into a constraint that admits only well-formed calls to
//! the offered tools in a template's [`ToolFormat`], with arguments valid against each tool's
//! `parameters` schema: a Lark grammar embedding the schemas (the shapes are listed at
//! [`ToolChoice`]).
//!
//! JSON layout: the generated JSON uses fixed separators (`", "` and `": "`) and no other
//! whitespace, so a small model cannot spin in whitespace until it runs out of tokens. A schema
//! may override this with llguidance's own `"x-guidance"` key (e.g.
//! `{"whitespace_flexible": true}`). `strict` is accepted and ignored: the schema is always
//! enforced. Supported JSON-schema keywords are llguidance's (types, `properties`,
//! `required`, `additionalProperties`, `enum`, `const`, `items`, `prefixItems`,
//! `minItems`/`maxItems`, string lengths and `pattern`, numeric bounds, `anyOf`/`oneOf`/
//! `allOf`, local `$ref`/`$defs`, common `format`s); anything else is a compile error naming
//! the keyword.
//!
//! Numbers are bounded as llama.cpp's schema converter bounds them: at most
//! [`MAX_DIGITS`] digits in the integer part, the fraction and the exponent ([`digits`]), so
//! an unbounded `number` cannot fill the token budget. Strings are not bounded beyond the
//! schema's `maxLength` (as in llama.cpp): only `max_new_tokens` ends a runaway string.
//!
//! Tools and structured output together, as OpenAI defines them
//! ([`ConstraintCompiler::compile_tool_choice`] with a [`ToolRules`]): a forced call is the
//! whole reply (the format is for a later text turn); under `"auto"` with tools and a
//! `response_format` the reply is either calls or schema-valid JSON; `parallel_tool_calls:
//! false` admits one call.
//!
//! A sequence cut short by `max_new_tokens` (finish reason "length") is a prefix of valid
//! JSON, not valid JSON, as with OpenAI.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, InferenceCapabilities, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::earley::SlicedBiasComputer;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};

use crate::template::{CallRules, ToolChoice, ToolError, ToolFormat};

mod digits;
mod gbnf;
pub use gbnf::{GbnfError, MAX_NESTING as MAX_GBNF_NESTING, MAX_REPEAT as MAX_GBNF_REPEAT};
use digits::{DigitGuard, DigitTable};
pub use digits::MAX_DIGITS;
use crate::tokenizer::Tokenizer;

/// OpenAI's `response_format` request field.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text: no constraint.
    Text,
    /// Any JSON object; with `schema` (llama.cpp's server's extension), JSON valid against it.
    JsonObject {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<Value>,
    },
    /// JSON valid against a schema: `{"type": "json_schema", "json_schema": {"name", "schema",
    /// "strict"}}`.
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// The `json_schema` member of a `json_schema` response format.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    /// Required by OpenAI: 1 to 64 of `a-z A-Z 0-9 _ -`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema; absent means any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Accepted for compatibility; the schema is always enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Why a constraint could not be built or followed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConstraintError {
    /// The request's format is unusable; `field` names it (`response_format.json_schema.schema`).
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    /// The vocabulary cannot carry a grammar.
    #[error("constrained decoding: {0}")]
    Vocabulary(String),
    /// Tools, or a `tool_choice` they cannot honour.
    #[error(transparent)]
    Tools(#[from] ToolError),
    /// The grammar engine failed mid-generation (a limit of its lexer, or a token it did not
    /// allow).
    #[error("constrained decoding failed: {0}")]
    Step(String),
}

/// The grammar engine's view of one vocabulary; compiles response formats into constraints.
pub struct ConstraintCompiler {
    factory: ParserFactory,
    /// Ids the trie knows: logits at or past this index are never allowed.
    vocab_size: usize,
    digits: Arc<DigitTable>,
}

impl std::fmt::Debug for ConstraintCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintCompiler").field("vocab_size", &self.vocab_size).finish_non_exhaustive()
    }
}

impl ConstraintCompiler {
    /// Indexes a tokenizer's vocabulary; its end-of-generation ids end a complete grammar.
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Result<Self, ConstraintError> {
        let tokens: Vec<Option<Vec<u8>>> = (0..tokenizer.vocab_size())
            .map(|id| u32::try_from(id).ok().and_then(|id| tokenizer.text_bytes(id)))
            .collect();
        Self::new(&tokens, &tokenizer.eog_ids())
    }

    /// Indexes a vocabulary given as each id's text bytes (`None`: not text, never allowed
    /// unless it is one of `eos`, the ids allowed once the grammar is complete).
    pub fn new(tokens: &[Option<Vec<u8>>], eos: &[u32]) -> Result<Self, ConstraintError> {
        let vocab_size = u32::try_from(tokens.len())
            .map_err(|_| ConstraintError::Vocabulary(format!("{} tokens is too many", tokens.len())))?;
        let (&first_eos, _) = eos
            .split_first()
            .ok_or_else(|| ConstraintError::Vocabulary("the tokenizer has no end-of-generation token".into()))?;
        if let Some(id) = eos.iter().find(|&&id| id >= vocab_size) {
            return Err(ConstraintError::Vocabulary(format!("end-of-generation id {id} is outside the vocabulary ({vocab_size})")));
        }
        // toktrie's convention: a word starting with 0xFF is a special token, matched only
        // where a grammar names it; `[id]` after the marker keeps the words distinct.
        let words: Vec<Vec<u8>> = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| match t {
                Some(bytes) => bytes.clone(),
                None => [&[TokTrie::SPECIAL_TOKEN_MARKER][..], format!("[{id}]").as_bytes()].concat(),
            })
            .collect();
        let info = TokRxInfo::new(vocab_size, first_eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(eos);
        let env: Arc<dyn TokenizerEnv + Sync> = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new(&env, InferenceCapabilities::default(), &SlicedBiasComputer::general_slices())
            .map_err(|e| ConstraintError::Vocabulary(e.to_string()))?;
        // Errors go back to the caller, never to stderr; they need not carry the parser state.
        factory.quiet();
        factory.limits_mut().verbose_errors = false;
        Ok(Self { factory, vocab_size: tokens.len(), digits: Arc::new(DigitTable::new(tokens)) })
    }

    /// The constraint for a response format (`None` for `text`). Errors name the field.
    pub fn compile(&self, format: &ResponseFormat) -> Result<Option<Constraint>, ConstraintError> {
        match schema_of(format)? {
            None => Ok(None),
            Some((field, schema)) => self.build(field, TopLevelGrammar::from_json_schema(schema)).map(Some),
        }
    }

    /// The constraint for a llama.cpp GBNF grammar (a request's `grammar`, see [`gbnf`]).
    /// Errors name `grammar`: GBNF that does not parse, or a grammar llguidance rejects.
    pub fn compile_gbnf(&self, grammar: &str) -> Result<Constraint, ConstraintError> {
        let lark = gbnf::to_lark(grammar).map_err(|e| ConstraintError::Invalid { field: "grammar", message: e.to_string() })?;
        self.build("grammar", TopLevelGrammar::from_lark(lark))
    }

    /// The constraint that forces the tool calls `choice` asks for, written in `format`, under
    /// `rules` (see the module doc); `None` when nothing is constrained (`none`; `auto`
    /// without a response format). `tools` are the request's definitions. Errors name
    /// `tool_choice` (a choice the tools cannot honour), `tools` (a definition, or a
    /// `parameters` schema the grammar engine does not support) or the response format.
    pub fn compile_tool_choice(
        &self,
        format: ToolFormat,
        tools: &[Value],
        choice: &ToolChoice,
        rules: ToolRules<'_>,
    ) -> Result<Option<Constraint>, ConstraintError> {
        let text = match rules.response_format {
            Some(f) => schema_of(f)?.map(|(_, schema)| schema),
            None => None,
        };
        let call_rules = CallRules { single_call: rules.single_call, text_schema: text.as_ref() };
        let Some(grammar) = format.call_grammar(tools, choice, call_rules)? else {
            return Ok(None);
        };
        self.build("tools", TopLevelGrammar::from_lark(grammar)).map(Some)
    }

    /// Compiles a grammar; its errors are `field`'s.
    fn build(&self, field: &'static str, grammar: TopLevelGrammar) -> Result<Constraint, ConstraintError> {
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| ConstraintError::Invalid { field, message: e.to_string() })?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Invalid { field, message: e });
        }
        Ok(Constraint { matcher: Box::new(matcher), vocab_size: self.vocab_size, digits: DigitGuard::new(self.digits.clone()) })
    }
}

/// What shapes a reply besides `tool_choice`: OpenAI's `parallel_tool_calls` and
/// `response_format`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToolRules<'a> {
    /// `parallel_tool_calls: false`: at most one call.
    pub single_call: bool,
    /// The format text replies follow (only under `"auto"`; a forced call ignores it).
    pub response_format: Option<&'a ResponseFormat>,
}

/// A response format's JSON schema with the layout options (`None` for `text`), and the field
/// its errors name.
fn schema_of(format: &ResponseFormat) -> Result<Option<(&'static str, Value)>, ConstraintError> {
    const SCHEMA: &str = "response_format.json_schema.schema";
    let (field, mut schema) = match format {
            ResponseFormat::Text => return Ok(None),
            ResponseFormat::JsonObject { schema: None } => ("response_format", json!({"type": "object"})),
            ResponseFormat::JsonObject { schema: Some(s @ (Value::Object(_) | Value::Bool(_))) } => ("response_format.schema", s.clone()),
            ResponseFormat::JsonObject { schema: Some(other) } => {
                return Err(ConstraintError::Invalid {
                    field: "response_format.schema",
                    message: format!("a JSON schema is an object or a boolean, not {other}"),
                })
            }
            ResponseFormat::JsonSchema { json_schema } => {
                let name = &json_schema.name;
                let name_ok = (1..=64).contains(&name.len())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !name_ok {
                    return Err(ConstraintError::Invalid {
                        field: "response_format.json_schema.name",
                        message: format!("{name:?} must be 1 to 64 characters of a-z, A-Z, 0-9, _ or -"),
                    });
                }
                match &json_schema.schema {
                    None => (SCHEMA, json!({})),
                    Some(s @ (Value::Object(_) | Value::Bool(_))) => (SCHEMA, s.clone()),
                    Some(other) => {
                        return Err(ConstraintError::Invalid {
                            field: SCHEMA,
                            message: format!("a JSON schema is an object or a boolean, not {other}"),
                        })
                    }
                }
            }
        };
    if let Value::Object(map) = &mut schema {
        map.entry("x-guidance")
            .or_insert_with(|| json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}));
    }
    Ok(Some((field, schema)))
}

/// One sequence's grammar state. Cloning gives an independent copy in the same state.
pub struct Constraint {
    /// Boxed: the parser state is large, and requests carrying a constraint are moved around.
    matcher: Box<Matcher>,
    vocab_size: usize,
    digits: DigitGuard,
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Self { matcher: Box::new(self.matcher.deep_clone()), vocab_size: self.vocab_size, digits: self.digits.clone() }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("complete", &self.is_complete()).finish_non_exhaustive()
    }
}

impl Constraint {
    /// Sets the logit of every token the grammar does not allow next to `-inf`: every id at
    /// or past the vocabulary, and every id but end-of-generation once the grammar is complete.
    /// At least one token stays allowed.
    pub fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        let mask = self.matcher.compute_mask_or_eos().map_err(step_error)?;
        let known = logits.len().min(self.vocab_size);
        let (inside, outside) = logits.split_at_mut(known);
        outside.fill(f32::NEG_INFINITY);
        let words = mask.as_slice();
        let mut any = false;
        for (i, chunk) in inside.chunks_mut(32).enumerate() {
            let word = words.get(i).copied().unwrap_or(0);
            if word == u32::MAX && chunk.len() == 32 {
                any = true;
                continue;
            }
            for (bit, logit) in chunk.iter_mut().enumerate() {
                if word & (1 << bit) == 0 {
                    *logit = f32::NEG_INFINITY;
                } else {
                    any = true;
                }
            }
        }
        if any {
            self.digits.mask(inside);
            Ok(())
        } else {
            Err(ConstraintError::Step("the grammar allows no token".into()))
        }
    }

    /// Moves past a sampled token (one [`Constraint::mask_logits`] allowed; not an
    /// end-of-generation token).
    pub fn advance(&mut self, id: u32) -> Result<(), ConstraintError> {
        self.matcher.consume_token(id).map_err(step_error)?;
        self.digits.advance(id);
        Ok(())
    }

    /// Whether the grammar is complete: nothing but end of generation can follow.
    pub fn is_complete(&self) -> bool {
        self.matcher.is_stopped()
    }
}

/// llguidance's message, without the marker it appends in place of the parser state.
fn step_error(e: impl std::fmt::Display) -> ConstraintError {
    let message = e.to_string();
    ConstraintError::Step(message.trim_end_matches("<non-verbose/>").trim_end().to_owned())
}

#[cfg(test)]
mod tests;
