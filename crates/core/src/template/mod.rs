//! Chat templates: turning a conversation into the prompt text a model was trained on.
//!
//! Two sources, one rendering path:
//! - a model's own Jinja template (`tokenizer_config.json` / GGUF `tokenizer.chat_template`),
//!   rendered exactly as transformers' `apply_chat_template(..., tokenize=False)` does;
//! - a LLaMA-Factory-style named template ([`ChatTemplate::named`], see [`named`]) for models
//!   without one, itself generated as Jinja.
//!
//! Replies go the other way: [`ToolFormat`] (the template's, [`ChatTemplate::tool_format`]) finds
//! tool calls in them, [`split_reasoning`] separates `<think>` blocks; both also while streaming.
//!
//! Invariants (what "exactly as transformers" means here):
//! - jinja2 settings `trim_blocks`, `lstrip_blocks`, loop controls, no autoescape, and a single
//!   trailing newline of the template source dropped (jinja2's `keep_trailing_newline=False`).
//! - Variables: `messages` and `tools` (none when absent) are passed through unchanged as JSON
//!   values, `documents` is none, `add_generation_prompt`, `bos_token`/`eos_token`, then the
//!   caller's extra variables (`enable_thinking`, `date_string`, more special tokens, ...), which
//!   may override the special tokens as in transformers.
//! - Globals and filters transformers adds: `raise_exception(msg)` (a
//!   [`TemplateError::Raised`] carrying `msg`), `strftime_now(fmt)` and a `tojson` that is
//!   Python's `json.dumps(ensure_ascii=False)` ([`pyjson`]); Python string/dict/list methods
//!   (`.strip()`, `.startswith()`, `.items()`, ...) via minijinja-contrib's pycompat.
//! - Compile once ([`ChatTemplate::from_jinja`] reports syntax errors with the line), render many
//!   times; nothing here panics on a bad template or bad input: every failure is a
//!   [`TemplateError`].
//! - Rendering is bounded ([`limits`]): at most [`FUEL`] minijinja instructions, recursion depth
//!   [`MAX_RECURSION`], [`MAX_OUTPUT_BYTES`] of output, [`MAX_TEMPLATE_BYTES`] of source and
//!   builtin widths/counts up to [`MAX_WIDTH`]; past one, [`TemplateError::LimitExceeded`].

mod limits;
mod named;
mod pyjson;
mod reasoning;
mod strftime;
#[cfg(test)]
mod tests;
mod tools;

pub use limits::{Limit, FUEL, MAX_OUTPUT_BYTES, MAX_RECURSION, MAX_TEMPLATE_BYTES, MAX_WIDTH};
pub use reasoning::{prompt_opens_thinking, split_reasoning, ReasoningDelta, ReasoningStream};
pub use tools::{CallRules, ParsedReply, ToolCall, ToolCallStream, ToolChoice, ToolError, ToolFormat};

use std::sync::OnceLock;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, ErrorKind, Value};
use serde_json::Map;

/// Name under which a model's own template is compiled; it appears in error messages.
const MODEL_TEMPLATE_NAME: &str = "chat_template";

/// Variables the renderer itself sets; callers' extra variables may not shadow them.
const RESERVED_VARIABLES: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template does not compile.
    #[error("chat template `{template}` has a syntax error{}: {message}", at_line(*.line))]
    Syntax {
        template: String,
        line: Option<usize>,
        message: String,
    },
    /// The template called `raise_exception(message)`, typically to reject a conversation it
    /// cannot format (roles not alternating, unsupported tool calls, ...).
    #[error("chat template `{template}` rejected the conversation: {message}")]
    Raised { template: String, message: String },
    /// Rendering failed otherwise (an operation on the wrong types, a bad filter argument, ...).
    #[error("chat template `{template}` failed to render{}: {message}", at_line(*.line))]
    Render {
        template: String,
        line: Option<usize>,
        message: String,
    },
    /// Rendering ran into one of the [`limits`] (a hostile or broken template).
    #[error("chat template `{template}` exceeded its {limit}")]
    LimitExceeded { template: String, limit: Limit },
    #[error("unknown chat template `{name}`; known templates: {}", ChatTemplate::names().join(", "))]
    UnknownName { name: String },
    /// The arguments to render are malformed (messages not an array, reserved variable names).
    #[error("invalid chat template input: {0}")]
    InvalidInput(String),
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

/// One chat message with plain-text content. Richer messages (multimodal content lists, tool
/// calls, reasoning) go through [`ChatTemplate::render_json`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A compiled chat template with its special tokens bound.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template's name inside `env` (and in error messages).
    name: String,
    source: String,
    bos_token: String,
    eos_token: String,
    stop_strings: Vec<String>,
    tool_format: ToolFormat,
}

impl ChatTemplate {
    /// Compiles a model's own Jinja template (HF `chat_template` / GGUF
    /// `tokenizer.chat_template`). `bos_token`/`eos_token` are the tokenizer's special-token
    /// texts, bound to the variables of the same names.
    pub fn from_jinja(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, TemplateError> {
        Self::compile(
            MODEL_TEMPLATE_NAME,
            source.to_owned(),
            bos_token,
            eos_token,
            Vec::new(),
            ToolFormat::detect(source),
        )
    }

    /// A named template (see [`ChatTemplate::names`] and the [`named`] module for the formats).
    /// Named templates never start the text with BOS: the tokenizer adds it.
    pub fn named(name: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let spec = named::NAMED_TEMPLATES
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| TemplateError::UnknownName {
                name: name.to_owned(),
            })?;
        let mut stop_strings: Vec<String> =
            spec.stop_words.iter().map(|s| (*s).to_owned()).collect();
        if spec.stops_at_eos() && !eos_token.is_empty() {
            stop_strings.push(eos_token.to_owned());
        }
        let mut template = Self::compile(
            spec.name,
            spec.jinja_source(),
            bos_token,
            eos_token,
            stop_strings,
            spec.tool_format,
        )?;
        add_named_functions(&mut template.env, spec.tool_format);
        Ok(template)
    }

    /// Names accepted by [`ChatTemplate::named`].
    pub fn names() -> &'static [&'static str] {
        static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
        NAMES.get_or_init(|| named::NAMED_TEMPLATES.iter().map(|t| t.name).collect())
    }

    /// The Jinja source this template renders (for a named template, the generated one).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders plain-text messages; `tools` are JSON-schema tool definitions.
    pub fn render(
        &self,
        messages: &[Message],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let messages = serde_json::to_value(messages)
            .map_err(|e| TemplateError::InvalidInput(format!("messages: {e}")))?;
        let tools = tools.map(|t| serde_json::Value::Array(t.to_vec()));
        self.render_json(
            &messages,
            tools.as_ref(),
            add_generation_prompt,
            &Map::new(),
        )
    }

    /// Renders like transformers' `apply_chat_template(messages, tools=tools,
    /// add_generation_prompt=..., tokenize=False, **kwargs)`. `messages` must be an array of
    /// message objects and is passed to the template unchanged (content lists, `tool_calls`,
    /// `content: null`, ...); `kwargs` become extra template variables and must not use the names
    /// `messages`, `tools`, `documents` or `add_generation_prompt`.
    pub fn render_json(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        kwargs: &Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        if !messages.is_array() {
            return Err(TemplateError::InvalidInput(
                "messages must be a JSON array".to_owned(),
            ));
        }
        if let Some(key) = RESERVED_VARIABLES.iter().find(|k| kwargs.contains_key(**k)) {
            return Err(TemplateError::InvalidInput(format!(
                "`{key}` is set by the renderer and cannot be passed as an extra template variable"
            )));
        }
        let mut context = std::collections::BTreeMap::new();
        context.insert("bos_token".to_owned(), Value::from(self.bos_token.as_str()));
        context.insert("eos_token".to_owned(), Value::from(self.eos_token.as_str()));
        for (key, value) in kwargs {
            context.insert(key.clone(), Value::from(Serde(value)));
        }
        context.insert("messages".to_owned(), Value::from(Serde(messages)));
        context.insert(
            "tools".to_owned(),
            tools.map_or(Value::from(()), |t| Value::from(Serde(t))),
        );
        context.insert("documents".to_owned(), Value::from(()));
        context.insert(
            "add_generation_prompt".to_owned(),
            Value::from(add_generation_prompt),
        );

        let template = self
            .env
            .get_template(&self.name)
            .map_err(|e| self.render_error(e))?;
        let mut out = limits::OutputBuffer::default();
        match template.render_captured_to(Value::from(context), &mut out) {
            Err(_) if out.overflowed => Err(self.limit_error(Limit::Output)),
            Err(e) => Err(self.render_error(e)),
            // minijinja writes whole `str`s.
            Ok(_) => String::from_utf8(out.bytes).map_err(|e| TemplateError::Render {
                template: self.name.clone(),
                line: None,
                message: e.to_string(),
            }),
        }
    }

    /// Extra stop strings a named template ends its turns with (LLaMA Factory's `stop_words`,
    /// plus EOS where the format writes it into the text); empty for a model's own template,
    /// whose turn ends are the tokenizer's end-of-generation tokens.
    pub fn stop_strings(&self) -> &[String] {
        &self.stop_strings
    }

    /// The format tool calls are written in: a named template's own, or for a model's template
    /// the one its source mentions ([`ToolFormat::detect`]). Replies are parsed with it.
    pub fn tool_format(&self) -> ToolFormat {
        self.tool_format
    }

    fn compile(
        name: &str,
        source: String,
        bos_token: &str,
        eos_token: &str,
        stop_strings: Vec<String>,
        tool_format: ToolFormat,
    ) -> Result<Self, TemplateError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError::LimitExceeded {
                template: name.to_owned(),
                limit: Limit::TemplateSize,
            });
        }
        let mut env = Environment::new();
        limits::bound(&mut env);
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| syntax_error(name, &e))?;
        env.set_syntax(syntax);
        // transformers renders with autoescape off whatever the template is called.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.add_filter("tojson", pyjson::tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |format: &str| {
            strftime::strftime_now(format)
        });
        env.add_template_owned(name.to_owned(), source.clone())
            .map_err(|e| syntax_error(name, &e))?;
        Ok(Self {
            env,
            name: name.to_owned(),
            source,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            stop_strings,
            tool_format,
        })
    }

    fn limit_error(&self, limit: Limit) -> TemplateError {
        TemplateError::LimitExceeded {
            template: self.name.clone(),
            limit,
        }
    }

    fn render_error(&self, err: minijinja::Error) -> TemplateError {
        if let Some(limit) = limits::limit_of(&err) {
            return self.limit_error(limit);
        }
        if let Some(raised) = find_source::<RaisedException>(&err) {
            return TemplateError::Raised {
                template: self.name.clone(),
                message: raised.0.clone(),
            };
        }
        if err.kind() == ErrorKind::SyntaxError {
            return syntax_error(&self.name, &err);
        }
        TemplateError::Render {
            template: self.name.clone(),
            line: err.line(),
            message: describe(&err),
        }
    }
}

/// The functions named templates call (see [`named`]): the tool format's renderers and LLaMA
/// Factory's `remove_thought`. Model templates do not get them, so that they render exactly as
/// in transformers.
fn add_named_functions(env: &mut Environment<'static>, format: ToolFormat) {
    fn json_list(value: &Value, what: &str) -> Result<Vec<serde_json::Value>, minijinja::Error> {
        match serde_json::to_value(value) {
            Ok(serde_json::Value::Array(items)) => Ok(items),
            _ => Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("{what} must be a list"),
            )),
        }
    }
    let tool_error =
        |e: ToolError| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string());
    env.add_function(
        "format_tools",
        move |tools: Value, date_string: Option<String>| {
            format
                .render_tools(&json_list(&tools, "tools")?, date_string.as_deref())
                .map_err(tool_error)
        },
    );
    env.add_function("format_tool_calls", move |calls: Value| {
        format
            .render_calls(&json_list(&calls, "tool_calls")?)
            .map_err(tool_error)
    });
    env.add_function("remove_thought", |content: &str| {
        reasoning::remove_thought(content)
    });
}

/// The error `raise_exception` raises, kept as the minijinja error's source so that it can be
/// told apart from the engine's own errors.
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

fn raise_exception(message: Value) -> Result<Value, minijinja::Error> {
    let message = message
        .as_str()
        .map_or_else(|| message.to_string(), str::to_owned);
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(RaisedException(message)),
    )
}

fn find_source<E: std::error::Error + 'static>(err: &minijinja::Error) -> Option<&E> {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(found) = s.downcast_ref::<E>() {
            return Some(found);
        }
        source = s.source();
    }
    None
}

fn syntax_error(template: &str, err: &minijinja::Error) -> TemplateError {
    TemplateError::Syntax {
        template: template.to_owned(),
        line: err.line(),
        message: describe(err),
    }
}

/// The error's kind and detail, without the location (reported separately).
fn describe(err: &minijinja::Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}
