//! Tool calling in the four text formats LLaMA Factory knows (`tool_utils.py`): how tool
//! definitions are written into a prompt, how an assistant's calls are written back into a
//! conversation, and how calls are found in a model's reply, in one piece ([`ToolFormat::parse`])
//! or while it streams ([`ToolCallStream`]).
//!
//! | format | a call in the reply |
//! |---|---|
//! | `qwen` (Hermes) | `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, one block per call |
//! | `llama3` | `{"name": …, "parameters": {…}}` (a list for several), after `<|python_tag|>` or alone |
//! | `mistral` | `[TOOL_CALLS] [{"name": …, "arguments": {…}}, …]` |
//! | `default` | `Action: name` / `Action Input: {…}`, repeated for several |
//!
//! Extraction rules, the same for every format (they are what [`ToolFormat::parse`] documents):
//! - A reply is a tool-call reply when, from the first complete call marker on, it is nothing but
//!   well-formed calls (and whitespace). The text before the marker is the content, without its
//!   trailing whitespace; several calls in one reply are kept in order.
//! - Anything malformed (bad JSON, no `name`, arguments that are not an object, text after the
//!   calls) makes the whole reply plain content. Extraction never fails.
//! - The bare JSON rule: a reply that is only JSON call objects `{"name": …, "arguments": …}` (or
//!   `"parameters"`, or a list of them), possibly inside one ```` ```json ```` fence, is a call
//!   reply when every name is one of the given tools. Small models answer a tool prompt this way
//!   (the shipped Qwen2.5-Coder-0.5B does), and Mistral's `[TOOL_CALLS]` and Llama's
//!   `<|python_tag|>` are special tokens that decoding usually drops, leaving exactly this.
//! - Arguments come back as a JSON object string written as Python's `json.dumps` writes it
//!   (`{"city": "Paris"}`), as LLaMA Factory returns them; absent or `null` arguments are `{}`,
//!   and arguments given as a string holding a JSON object are that object.
//! - Every call gets a fresh random id `call_<32 hex digits>`.

use serde_json::{json, Value as Json};

use super::pyjson;

mod choice;
pub use choice::{CallRules, ToolChoice};

/// How tool definitions and calls are written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolFormat {
    /// LLaMA Factory's ReAct-style `Action:` / `Action Input:` format.
    Default,
    /// Qwen 2.5 / Hermes: JSON inside `<tool_call>` tags.
    Qwen,
    /// Llama 3.x JSON-based tool calling (`name` / `parameters`).
    Llama3,
    /// Mistral v0.3: `[AVAILABLE_TOOLS]` and `[TOOL_CALLS]`.
    Mistral,
}

/// One tool call found in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// `call_` and 32 random hex digits.
    pub id: String,
    pub name: String,
    /// The arguments, a JSON object as text.
    pub arguments: String,
}

/// A reply split into its text and its tool calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedReply {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

/// Tool definitions or calls that cannot be written in a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("tools[{index}]: {message}")]
    Definition { index: usize, message: String },
    #[error("tool_calls[{index}]: {message}")]
    Call { index: usize, message: String },
    /// A `tool_choice` that cannot be honoured with the tools given.
    #[error("tool_choice: {0}")]
    Choice(String),
}

// The prompt texts below are LLaMA Factory's, byte for byte: a model fine-tuned with LLaMA
// Factory saw exactly these. `{…}` marks where the tools go.
const DEFAULT_PROMPT_HEAD: &str = "You have access to the following tools:\n";
const DEFAULT_PROMPT_FORMAT: &str =
    "Use the following format if using a tool:\n```\nAction: tool name (one of [";
const DEFAULT_PROMPT_TAIL: &str =
    "])\nAction Input: the input to the tool, in a JSON format representing the kwargs \
     (e.g. ```{\"input\": \"hello world\", \"num_beams\": 5}```)\n```\n";
const QWEN_PROMPT_HEAD: &str =
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
     You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
const QWEN_PROMPT_TAIL: &str =
    "\n</tools>\n\nFor each function call, return a json object with function name and \
     arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \
     \"arguments\": <args-json-object>}\n</tool_call>";
const LLAMA3_PROMPT_HEAD: &str = "Cutting Knowledge Date: December 2023\nToday Date: ";
const LLAMA3_PROMPT_BODY: &str = "\n\nYou have access to the following functions. To call a function, please respond \
     with JSON for a function call. Respond in the format {\"name\": function name, \"parameters\": dictionary of \
     argument name and its value}. Do not use variables.\n\n";

const QWEN_OPEN: &str = "<tool_call>";
const QWEN_CLOSE: &str = "</tool_call>";
const MISTRAL_MARKER: &str = "[TOOL_CALLS]";
const LLAMA3_MARKER: &str = "<|python_tag|>";
const ACTION: &str = "Action:";
const ACTION_INPUT: &str = "Action Input:";
const FENCE: &str = "```";

impl ToolFormat {
    /// All formats, for listing.
    pub const ALL: [ToolFormat; 4] = [Self::Default, Self::Qwen, Self::Llama3, Self::Mistral];

    /// LLaMA Factory's name of the format (`--tool_format`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Qwen => "qwen",
            Self::Llama3 => "llama3",
            Self::Mistral => "mistral",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The format a model's own Jinja chat template writes calls in, judged by the markers its
    /// source mentions; `Default` when it mentions none.
    pub fn detect(jinja_source: &str) -> Self {
        if jinja_source.contains(QWEN_OPEN) {
            Self::Qwen
        } else if jinja_source.contains(MISTRAL_MARKER) {
            Self::Mistral
        } else if jinja_source.contains(LLAMA3_MARKER) || jinja_source.contains("ipython") {
            Self::Llama3
        } else {
            Self::Default
        }
    }

    /// The text describing `tools` (JSON-schema definitions, `{"type": "function", "function":
    /// {…}}` or the bare function object) that LLaMA Factory appends to the system prompt;
    /// empty for no tools. `date_string` is the llama3 format's "Today Date" (LLaMA Factory
    /// writes today's date, `%d %b %Y`).
    pub fn render_tools(
        self,
        tools: &[Json],
        date_string: Option<&str>,
    ) -> Result<String, ToolError> {
        if tools.is_empty() {
            return Ok(String::new());
        }
        let dumps = |index, value: &Json, indent| {
            pyjson::dumps(value, indent).map_err(|e| ToolError::Definition {
                index,
                message: e.to_string(),
            })
        };
        match self {
            Self::Default => render_default_tools(tools),
            Self::Qwen => {
                let mut text = QWEN_PROMPT_HEAD.to_owned();
                for (index, tool) in tools.iter().enumerate() {
                    text.push('\n');
                    text.push_str(&dumps(index, &wrap_function(tool), None)?);
                }
                text.push_str(QWEN_PROMPT_TAIL);
                Ok(text)
            }
            Self::Llama3 => {
                let date = date_string
                    .map_or_else(|| super::strftime::strftime_now("%d %b %Y"), str::to_owned);
                let mut text = format!("{LLAMA3_PROMPT_HEAD}{date}{LLAMA3_PROMPT_BODY}");
                for (index, tool) in tools.iter().enumerate() {
                    text.push_str(&dumps(index, &wrap_function(tool), Some(4))?);
                    text.push_str("\n\n");
                }
                Ok(text)
            }
            Self::Mistral => {
                let wrapped = Json::Array(tools.iter().map(wrap_function).collect());
                Ok(format!(
                    "[AVAILABLE_TOOLS] {}[/AVAILABLE_TOOLS]",
                    dumps(0, &wrapped, None)?
                ))
            }
        }
    }

    /// An assistant's tool calls as the format writes them (LLaMA Factory's
    /// `function_formatter`). Each call is `{"name": …, "arguments": …}`, optionally wrapped as
    /// `{"type": "function", "function": {…}}` (OpenAI / Hugging Face messages); arguments are an
    /// object or a string holding one.
    pub fn render_calls(self, calls: &[Json]) -> Result<String, ToolError> {
        let mut parsed = Vec::with_capacity(calls.len());
        for (index, call) in calls.iter().enumerate() {
            let error = |message: &str| ToolError::Call {
                index,
                message: message.to_owned(),
            };
            let function = call
                .get("function")
                .filter(|f| f.is_object())
                .unwrap_or(call);
            let name = function
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| error("no function name"))?;
            let arguments = arguments_value(function.get("arguments"))
                .ok_or_else(|| error("arguments are not a JSON object"))?;
            parsed.push((name, arguments));
        }
        let dumps = |value: &Json| {
            pyjson::dumps(value, None).map_err(|e| ToolError::Call {
                index: 0,
                message: e.to_string(),
            })
        };
        let text = match self {
            Self::Default => parsed
                .iter()
                .map(|(name, args)| Ok(format!("{ACTION} {name}\n{ACTION_INPUT} {}", dumps(args)?)))
                .collect::<Result<Vec<_>, ToolError>>()?
                .join("\n"),
            Self::Qwen => parsed
                .iter()
                .map(|(name, args)| {
                    let call = json!({"name": name, "arguments": args});
                    Ok(format!("{QWEN_OPEN}\n{}\n{QWEN_CLOSE}", dumps(&call)?))
                })
                .collect::<Result<Vec<_>, ToolError>>()?
                .join("\n"),
            Self::Llama3 => {
                let mut objects: Vec<Json> = parsed
                    .iter()
                    .map(|(name, args)| json!({"name": name, "parameters": args}))
                    .collect();
                // One call is written as an object, several as a list.
                if objects.len() == 1 {
                    dumps(&objects.remove(0))?
                } else {
                    dumps(&Json::Array(objects))?
                }
            }
            Self::Mistral => dumps(&Json::Array(
                parsed
                    .iter()
                    .map(|(name, args)| json!({"name": name, "arguments": args}))
                    .collect(),
            ))?,
        };
        Ok(text)
    }

    /// Splits a complete reply into content and tool calls by the rules in the module doc.
    /// `tool_names` are the names of the tools offered, for the bare JSON rule.
    pub fn parse<S: AsRef<str>>(self, text: &str, tool_names: &[S]) -> ParsedReply {
        if let Some(calls) = parse_bare(text, tool_names) {
            return ParsedReply {
                content: String::new(),
                tool_calls: with_ids(calls),
            };
        }
        let marker = self.first_marker(text);
        if let Some(calls) = marker.and_then(|at| self.parse_marked(&text[at..])) {
            return ParsedReply {
                content: text[..marker.unwrap_or(0)].trim_end().to_owned(),
                tool_calls: with_ids(calls),
            };
        }
        ParsedReply {
            content: text.to_owned(),
            tool_calls: Vec::new(),
        }
    }

    /// The first byte at which a call marker fully matches.
    fn first_marker(self, text: &str) -> Option<usize> {
        self.candidates(text, 0)
            .find(|&at| self.marker_status(&text[at..]) == Status::Yes)
    }

    /// Positions from `from` on where a marker could begin.
    fn candidates(self, text: &str, from: usize) -> impl Iterator<Item = usize> + '_ {
        let first = match self {
            Self::Default => 'A',
            Self::Qwen | Self::Llama3 => '<',
            Self::Mistral => '[',
        };
        text[from..]
            .match_indices(first)
            .map(move |(i, _)| from + i)
    }

    /// Whether `rest` (text from a candidate position to the end of what is known) begins with
    /// this format's call marker: surely (`Yes`), not (`No`, whatever follows), or not yet known.
    fn marker_status(self, rest: &str) -> Status {
        match self {
            Self::Qwen => literal_status(rest, QWEN_OPEN),
            Self::Mistral => literal_status(rest, MISTRAL_MARKER),
            Self::Llama3 => literal_status(rest, LLAMA3_MARKER),
            Self::Default => action_status(rest),
        }
    }

    /// Calls from a marker to the end of the reply; `None` if any part is malformed.
    fn parse_marked(self, text: &str) -> Option<Vec<(String, String)>> {
        let mut calls = Vec::new();
        let mut rest = text.trim_start();
        match self {
            Self::Qwen => {
                while !rest.is_empty() {
                    let body = rest.strip_prefix(QWEN_OPEN)?;
                    // A last block cut off before its closing tag still counts if its JSON is whole.
                    let (inner, after) = body.find(QWEN_CLOSE).map_or((body, ""), |end| {
                        (&body[..end], &body[end + QWEN_CLOSE.len()..])
                    });
                    calls.extend(calls_in(&serde_json::from_str(inner.trim()).ok()?)?);
                    rest = after.trim_start();
                }
            }
            Self::Mistral => {
                while !rest.is_empty() {
                    let (values, used) = json_values(rest.strip_prefix(MISTRAL_MARKER)?, false);
                    for value in &values {
                        calls.extend(calls_in(value)?);
                    }
                    rest = rest[MISTRAL_MARKER.len() + used..].trim_start();
                }
            }
            Self::Llama3 => {
                let body = rest.strip_prefix(LLAMA3_MARKER)?;
                let (values, used) = json_values(body, true);
                if !body[used..].trim().is_empty() {
                    return None;
                }
                for value in &values {
                    calls.extend(calls_in(value)?);
                }
            }
            Self::Default => {
                while !rest.is_empty() {
                    let (name, input) = split_action(rest)?;
                    // LLaMA Factory strips backticks around the input; a ```json fence too.
                    let input = input.trim_start();
                    let fenced = input.starts_with(FENCE);
                    let input = input.trim_start_matches('`');
                    let input = input.strip_prefix("json").unwrap_or(input).trim_start();
                    let mut values = serde_json::Deserializer::from_str(input).into_iter::<Json>();
                    let arguments = arguments_string(Some(&values.next()?.ok()?))?;
                    let mut after = input[values.byte_offset()..].trim_start();
                    if fenced {
                        after = after.strip_prefix(FENCE)?.trim_start();
                    }
                    calls.push((name.to_owned(), arguments));
                    rest = after;
                }
            }
        }
        (!calls.is_empty()).then_some(calls)
    }
}

/// Whether a marker starts at a position, as far as the text seen so far tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    No,
    Partial,
    Yes,
}

fn literal_status(rest: &str, marker: &str) -> Status {
    if rest.starts_with(marker) {
        Status::Yes
    } else if marker.starts_with(rest) {
        Status::Partial
    } else {
        Status::No
    }
}

/// `Action:`, spaces, a tool name, spaces, `Action Input:` (LLaMA Factory's regex, with the
/// name characters OpenAI allows).
fn action_status(rest: &str) -> Status {
    let Some(after) = rest.strip_prefix(ACTION) else {
        return literal_status(rest, ACTION);
    };
    let after = after.trim_start();
    let name_len = after
        .find(|c: char| !is_name_char(c))
        .unwrap_or(after.len());
    if name_len == after.len() {
        return Status::Partial;
    }
    if name_len == 0 {
        return Status::No;
    }
    literal_status(after[name_len..].trim_start(), ACTION_INPUT)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// `Action: name … Action Input:` at the start of `text` → the name and the text after the colon.
fn split_action(text: &str) -> Option<(&str, &str)> {
    if action_status(text) != Status::Yes {
        return None;
    }
    let after = text[ACTION.len()..].trim_start();
    let name_len = after.find(|c: char| !is_name_char(c))?;
    let input = after[name_len..].trim_start().strip_prefix(ACTION_INPUT)?;
    Some((&after[..name_len], input))
}

/// The bare JSON rule of the module doc, on a whole reply.
fn parse_bare<S: AsRef<str>>(text: &str, tool_names: &[S]) -> Option<Vec<(String, String)>> {
    let text = text.trim();
    let body = match text.strip_prefix(FENCE) {
        Some(rest) => {
            let rest = rest.strip_prefix("json").unwrap_or(rest);
            if !rest.starts_with(char::is_whitespace) {
                return None;
            }
            let rest = rest.trim();
            rest.strip_suffix(FENCE).unwrap_or(rest).trim_end()
        }
        None => text,
    };
    let (values, used) = json_values(body, false);
    if used != body.len() || values.is_empty() {
        return None;
    }
    let mut calls = Vec::new();
    for value in &values {
        calls.extend(known_calls_in(value, tool_names)?);
    }
    Some(calls)
}

/// [`calls_in`], only if every call names one of `tool_names`.
fn known_calls_in<S: AsRef<str>>(value: &Json, tool_names: &[S]) -> Option<Vec<(String, String)>> {
    let calls = calls_in(value)?;
    calls
        .iter()
        .all(|(name, _)| tool_names.iter().any(|t| t.as_ref() == name))
        .then_some(calls)
}

/// JSON values (objects or arrays) one after another from the start of `text`, separated by
/// whitespace (and `;` when `semicolons`): the values and the byte length they span. Stops
/// before anything that is not such a value (callers decide whether leftovers are allowed).
fn json_values(text: &str, semicolons: bool) -> (Vec<Json>, usize) {
    let (mut values, mut used) = (Vec::new(), 0);
    loop {
        let skipped = text[used..]
            .find(|c: char| !(c.is_whitespace() || (semicolons && c == ';')))
            .map_or(text.len(), |i| used + i);
        if !text[skipped..].starts_with(['{', '[']) {
            return (values, used);
        }
        let mut stream = serde_json::Deserializer::from_str(&text[skipped..]).into_iter::<Json>();
        match stream.next() {
            Some(Ok(value)) => values.push(value),
            _ => return (values, used),
        }
        used = skipped + stream.byte_offset();
    }
}

/// The calls a JSON value holds: an object with a string `name` and arguments (`arguments` or
/// `parameters`), or a non-empty list of such objects.
fn calls_in(value: &Json) -> Option<Vec<(String, String)>> {
    match value {
        Json::Array(items) if !items.is_empty() => items.iter().map(call_in).collect(),
        Json::Object(_) => Some(vec![call_in(value)?]),
        _ => None,
    }
}

fn call_in(value: &Json) -> Option<(String, String)> {
    let name = value.get("name")?.as_str()?;
    let arguments = value.get("arguments").or_else(|| value.get("parameters"));
    Some((name.to_owned(), arguments_string(arguments)?))
}

/// Arguments as an object: absent or `null` is `{}`, a string must hold a JSON object.
fn arguments_value(arguments: Option<&Json>) -> Option<Json> {
    match arguments {
        None | Some(Json::Null) => Some(json!({})),
        Some(object @ Json::Object(_)) => Some(object.clone()),
        Some(Json::String(text)) => serde_json::from_str::<Json>(text)
            .ok()
            .filter(Json::is_object),
        Some(_) => None,
    }
}

fn arguments_string(arguments: Option<&Json>) -> Option<String> {
    pyjson::dumps(&arguments_value(arguments)?, None).ok()
}

fn with_ids(calls: Vec<(String, String)>) -> Vec<ToolCall> {
    calls
        .into_iter()
        .map(|(name, arguments)| ToolCall {
            id: format!("call_{:032x}", rand::random::<u128>()),
            name,
            arguments,
        })
        .collect()
}

/// `{"type": "function", "function": f}` for a bare function object, the tool itself otherwise.
fn wrap_function(tool: &Json) -> Json {
    if is_function_wrapper(tool) {
        tool.clone()
    } else {
        json!({"type": "function", "function": tool})
    }
}

fn is_function_wrapper(tool: &Json) -> bool {
    tool.get("type").and_then(Json::as_str) == Some("function")
}

/// LLaMA Factory's default tool prompt: each tool's name, description and arguments as a list.
fn render_default_tools(tools: &[Json]) -> Result<String, ToolError> {
    let mut text = DEFAULT_PROMPT_HEAD.to_owned();
    let mut names = Vec::new();
    for (index, tool) in tools.iter().enumerate() {
        let error = |message: &str| ToolError::Definition {
            index,
            message: message.to_owned(),
        };
        let function = if is_function_wrapper(tool) {
            tool.get("function")
                .ok_or_else(|| error("`function` is missing"))?
        } else {
            tool
        };
        let name = function
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| error("the function has no `name` string"))?;
        let parameters = function.get("parameters");
        let required = parameters
            .and_then(|p| p.get("required"))
            .and_then(Json::as_array);
        let mut args = String::new();
        if let Some(properties) = parameters
            .and_then(|p| p.get("properties"))
            .and_then(Json::as_object)
        {
            for (arg, param) in properties {
                let is_required =
                    required.is_some_and(|r| r.iter().any(|n| n.as_str() == Some(arg)));
                let mut line = format!(
                    "  - {arg} ({}{}): {}",
                    py_str(param.get("type")),
                    if is_required { ", required" } else { "" },
                    py_str(param.get("description"))
                );
                if let Some(choices) = param
                    .get("enum")
                    .and_then(Json::as_array)
                    .filter(|e| !e.is_empty())
                {
                    let choices: Vec<String> = choices.iter().map(|c| py_str(Some(c))).collect();
                    line.push_str(&format!(", should be one of [{}]", choices.join(", ")));
                }
                if let Some(items) = param.get("items").filter(|i| truthy(i)) {
                    line.push_str(&format!(
                        ", where each item should be {}",
                        py_str(items.get("type"))
                    ));
                }
                args.push_str(&line);
                args.push('\n');
            }
        }
        text.push_str(&format!(
            "> Tool Name: {name}\nTool Description: {}\nTool Args:\n{args}\n",
            py_str(function.get("description"))
        ));
        names.push(name);
    }
    text.push_str(DEFAULT_PROMPT_FORMAT);
    text.push_str(&names.join(", "));
    text.push_str(DEFAULT_PROMPT_TAIL);
    Ok(text)
}

/// How Python's `str.format` shows a schema field: strings as they are, absent as empty, other
/// values as JSON.
fn py_str(value: Option<&Json>) -> String {
    match value {
        None => String::new(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => pyjson::dumps(other, None).unwrap_or_default(),
    }
}

/// Python truthiness of a JSON value.
fn truthy(value: &Json) -> bool {
    match value {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64() != Some(0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

/// Finds tool calls in a reply while it streams: content is passed on as soon as it cannot be
/// part of a call, and the calls come out at the end.
///
/// Invariant: for any split of a reply into deltas, the strings returned by
/// [`push`](Self::push) followed by the content of [`finish`](Self::finish) are exactly
/// [`ToolFormat::parse`]'s content for the whole reply, and `finish`'s calls are its calls
/// (up to their random ids).
///
/// What is held back, and for how long: whitespace at the end of the text so far (content
/// before a call loses it); a possible beginning of a call marker (`<tool_…`, `[TOOL_…`,
/// `Action: name`) until it is one or is not; everything from a complete marker on, to the end;
/// and, while a reply that so far is only whitespace, a ```` ```json ```` fence and JSON objects
/// could still turn out to be a bare JSON call, all of it.
#[derive(Debug, Clone)]
pub struct ToolCallStream {
    format: ToolFormat,
    tool_names: Vec<String>,
    text: String,
    /// Bytes of `text` already returned as content.
    emitted: usize,
    /// Every candidate marker position before this one has been ruled out.
    scan: usize,
    bare_ruled_out: bool,
    /// A complete marker was seen: nothing more is content until the end.
    marker_seen: bool,
}

impl ToolCallStream {
    pub fn new<S: AsRef<str>>(format: ToolFormat, tool_names: &[S]) -> Self {
        Self {
            format,
            tool_names: tool_names.iter().map(|n| n.as_ref().to_owned()).collect(),
            text: String::new(),
            emitted: 0,
            scan: 0,
            bare_ruled_out: false,
            marker_seen: false,
        }
    }

    /// Adds a delta of the reply; returns the content it makes certain (often empty).
    pub fn push(&mut self, delta: &str) -> String {
        self.text.push_str(delta);
        let safe = self.safe_len();
        if safe <= self.emitted {
            return String::new();
        }
        let out = self.text[self.emitted..safe].to_owned();
        self.emitted = safe;
        out
    }

    /// Ends the reply: the content not yet returned by [`push`](Self::push), and the calls.
    pub fn finish(self) -> ParsedReply {
        let mut parsed = self.format.parse(&self.text, &self.tool_names);
        // `push` only ever returned a prefix of the final content (see the type's invariant).
        parsed.content = parsed
            .content
            .get(self.emitted..)
            .unwrap_or_default()
            .to_owned();
        parsed
    }

    /// Length of the prefix of the text that is content whatever follows.
    fn safe_len(&mut self) -> usize {
        if self.marker_seen {
            return self.emitted;
        }
        if !self.bare_ruled_out {
            if bare_status(self.text.trim_start(), &self.tool_names) != Status::No {
                return 0;
            }
            self.bare_ruled_out = true;
        }
        let mut end = self.text.len();
        for at in self.format.candidates(&self.text, self.scan) {
            match self.format.marker_status(&self.text[at..]) {
                Status::No => continue,
                Status::Partial => {}
                Status::Yes => self.marker_seen = true,
            }
            end = at;
            break;
        }
        self.scan = end;
        self.text[..end].trim_end().len()
    }
}

/// Whether a reply beginning with `text` (leading whitespace removed) can still be a bare JSON
/// call reply ([`parse_bare`]): `No` once it cannot, `Partial` otherwise.
fn bare_status(text: &str, tool_names: &[String]) -> Status {
    let (body, fenced) = match text.strip_prefix(FENCE) {
        None if FENCE.starts_with(text) => return Status::Partial,
        None => (text, false),
        Some(rest) => {
            if "json".starts_with(rest) {
                return Status::Partial;
            }
            let rest = rest.strip_prefix("json").unwrap_or(rest);
            if !rest.starts_with(char::is_whitespace) {
                return Status::No;
            }
            (rest, true)
        }
    };
    let (mut at, mut found_value) = (0, false);
    loop {
        let rest = body[at..].trim_start();
        at = body.len() - rest.len();
        if rest.is_empty() {
            return Status::Partial;
        }
        if rest.starts_with(['{', '[']) {
            let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Json>();
            match stream.next() {
                Some(Ok(value)) if known_calls_in(&value, tool_names).is_some() => {
                    at += stream.byte_offset();
                    found_value = true;
                }
                Some(Err(e)) if e.is_eof() => return Status::Partial,
                _ => return Status::No,
            }
        } else if fenced && found_value && rest.starts_with('`') {
            let closing = rest.strip_prefix(FENCE);
            return match closing {
                Some(after) if after.trim().is_empty() => Status::Partial,
                None if FENCE.starts_with(rest) => Status::Partial,
                _ => Status::No,
            };
        } else {
            return Status::No;
        }
    }
}

#[cfg(test)]
mod tests;
