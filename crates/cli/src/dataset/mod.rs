//! Datasets for `ingot infer`, read the way LLaMA Factory reads them.
//!
//! A dataset is a JSON array or a JSONL file of rows in one of three shapes:
//! - **alpaca**: `instruction`, `input`, `output`, optional `system` and `history` (a list of
//!   `[prompt, response]` pairs). The user turn is the non-empty of instruction and input
//!   joined by a newline.
//! - **sharegpt**: `conversations`, a list of `{"from", "value"}` turns (`human`, `gpt`,
//!   `function_call`, `observation`, and `system` as the first turn only), optional `system` and
//!   `tools` (a JSON string or list of tool schemas).
//! - **openai**: `messages`, a list of `{"role", "content"}` messages (`user`, `assistant` with
//!   optional `tool_calls`, `tool`, `system` first), optional `tools`.
//!
//! The shape is named with `--format` or told from each row's keys. A dataset name is looked up
//! in `dataset_info.json` (LLaMA Factory's: `file_name`, `formatting`, `columns`, `tags`), whose
//! columns and tags rename the keys; as in LLaMA Factory, giving `columns` (or `tags`) leaves the
//! ones not listed unset.
//!
//! Every row becomes a [`Row`]: the messages of the prompt (Hugging Face message objects, ready
//! for a chat template), the label (the final assistant turn, as the dataset has it), the system
//! prompt and the tools. Unlike LLaMA Factory, which requires it, the final assistant turn may be
//! missing: the row is then unlabelled (label `""`), which is what a plain prompt set looks like.
//! A row that cannot be turned into a prompt is kept as an error with its line (JSONL) or row
//! (JSON array) number, so the caller can report it and go on; a file that cannot be read or a
//! JSON array that does not parse is an error for the whole dataset.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

mod media;
pub use media::{MediaColumns, RowMedia, VideoRef};

/// The row shapes, for `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Alpaca,
    Sharegpt,
    Openai,
}

/// Where a row sits in its file, for error messages: JSONL rows have lines, JSON arrays rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Line(usize),
    Row(usize),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Line(n) => write!(f, "line {n}"),
            Place::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// One example, ready for a chat template.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The conversation up to the turn to predict (no system message: see `system`).
    pub messages: Vec<Value>,
    /// The reference answer: the final assistant turn's text ("" when the row has none).
    pub label: String,
    pub system: Option<String>,
    /// Tool schemas as `{"type": "function", "function": {...}}`.
    pub tools: Option<Vec<Value>>,
    /// Media paths as the row gives them (LLaMA Factory's `images`, `videos`, `audios`
    /// columns), relative to the media directory unless absolute; each modality in the order
    /// of the messages' placeholders.
    pub media: RowMedia,
}

/// A dataset's rows in order, each converted or with the reason it could not be.
pub struct Dataset {
    /// The file the rows come from.
    pub path: PathBuf,
    pub rows: Vec<(Place, Result<Row, String>)>,
}

/// Column names of an alpaca dataset (`None`: the dataset has no such column).
#[derive(Debug, Clone, PartialEq)]
struct AlpacaColumns {
    prompt: Option<String>,
    query: Option<String>,
    response: Option<String>,
    history: Option<String>,
    system: Option<String>,
    tools: Option<String>,
    media: MediaColumns,
}

/// Column and role names of a conversation (sharegpt or openai) dataset.
#[derive(Debug, Clone, PartialEq)]
struct ConversationColumns {
    messages: Option<String>,
    system: Option<String>,
    tools: Option<String>,
    media: MediaColumns,
    role: Option<String>,
    content: Option<String>,
    user: Option<String>,
    assistant: Option<String>,
    observation: Option<String>,
    function: Option<String>,
    system_tag: Option<String>,
}

/// How the rows of one dataset are read.
#[derive(Debug, Clone, PartialEq)]
enum Schema {
    Alpaca(AlpacaColumns),
    Conversation(ConversationColumns),
}

/// The `columns` keys of LLaMA Factory's `DatasetAttr` (the preference ones are read by
/// training only, and accepted here so such datasets still predict).
const KNOWN_COLUMNS: [&str; 13] =
    ["prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios", "chosen", "rejected", "kto_tag"];

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

impl Schema {
    /// The keys a file of this format uses when no `dataset_info.json` renames them.
    fn default_for(format: Format) -> Schema {
        match format {
            Format::Alpaca => Schema::Alpaca(AlpacaColumns {
                prompt: some("instruction"),
                query: some("input"),
                response: some("output"),
                history: some("history"),
                system: some("system"),
                tools: some("tools"),
                media: MediaColumns::defaults(),
            }),
            Format::Sharegpt => Schema::Conversation(ConversationColumns {
                messages: some("conversations"),
                system: some("system"),
                tools: some("tools"),
                media: MediaColumns::defaults(),
                role: some("from"),
                content: some("value"),
                user: some("human"),
                assistant: some("gpt"),
                observation: some("observation"),
                function: some("function_call"),
                system_tag: some("system"),
            }),
            Format::Openai => Schema::Conversation(ConversationColumns {
                messages: some("messages"),
                system: some("system"),
                tools: some("tools"),
                media: MediaColumns::defaults(),
                role: some("role"),
                content: some("content"),
                user: some("user"),
                assistant: some("assistant"),
                observation: some("tool"),
                function: some("function"),
                system_tag: some("system"),
            }),
        }
    }

    /// A `dataset_info.json` entry's schema, as LLaMA Factory's `DatasetAttr`: LLaMA Factory's
    /// defaults (sharegpt's from/value tags for both conversation formats), and when `columns`
    /// or `tags` is given, exactly the keys it lists.
    fn from_info(name: &str, entry: &Map<String, Value>) -> anyhow::Result<Schema> {
        let formatting = match entry.get("formatting") {
            None | Some(Value::Null) => "alpaca",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => bail!("dataset `{name}`: `formatting` must be a string"),
        };
        let format = match formatting {
            "alpaca" => Format::Alpaca,
            "sharegpt" | "openai" => Format::Sharegpt,
            other => bail!("dataset `{name}`: formatting `{other}` is not one of alpaca, sharegpt, openai"),
        };
        let names = |key: &str| -> anyhow::Result<Option<Map<String, Value>>> {
            match entry.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Object(m)) => Ok(Some(m.clone())),
                Some(_) => bail!("dataset `{name}`: `{key}` must be an object of names"),
            }
        };
        // With the map given, a name it lacks is unset; without it, the default stays.
        let pick = |map: &Option<Map<String, Value>>, key: &str, default: Option<String>| -> anyhow::Result<Option<String>> {
            match map {
                None => Ok(default),
                Some(m) => match m.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => bail!("dataset `{name}`: `{key}` must be a string"),
                },
            }
        };
        let columns = names("columns")?;
        // A column ingot does not read would be dropped silently (media above all): refuse it.
        if let Some(unknown) = columns.iter().flat_map(|m| m.keys()).find(|k| !KNOWN_COLUMNS.contains(&k.as_str())) {
            bail!("dataset `{name}`: unknown column `{unknown}` in `columns` (known: {})", KNOWN_COLUMNS.join(", "));
        }
        let tags = names("tags")?;
        Ok(match format {
            Format::Alpaca => Schema::Alpaca(AlpacaColumns {
                prompt: pick(&columns, "prompt", some("instruction"))?,
                query: pick(&columns, "query", some("input"))?,
                response: pick(&columns, "response", some("output"))?,
                history: pick(&columns, "history", None)?,
                system: pick(&columns, "system", None)?,
                tools: pick(&columns, "tools", None)?,
                media: MediaColumns { images: pick(&columns, "images", None)?, videos: pick(&columns, "videos", None)?, audios: pick(&columns, "audios", None)? },
            }),
            _ => Schema::Conversation(ConversationColumns {
                messages: pick(&columns, "messages", some("conversations"))?,
                system: pick(&columns, "system", None)?,
                tools: pick(&columns, "tools", None)?,
                media: MediaColumns { images: pick(&columns, "images", None)?, videos: pick(&columns, "videos", None)?, audios: pick(&columns, "audios", None)? },
                role: pick(&tags, "role_tag", some("from"))?,
                content: pick(&tags, "content_tag", some("value"))?,
                user: pick(&tags, "user_tag", some("human"))?,
                assistant: pick(&tags, "assistant_tag", some("gpt"))?,
                observation: pick(&tags, "observation_tag", some("observation"))?,
                function: pick(&tags, "function_tag", some("function_call"))?,
                system_tag: pick(&tags, "system_tag", some("system"))?,
            }),
        })
    }
}

/// Which schema reads the rows: one for the whole file, or told from each row's keys.
enum Reader {
    Fixed(Box<Schema>),
    Detect,
}

impl Reader {
    fn convert(&self, value: Value) -> Result<Row, String> {
        let Value::Object(row) = value else {
            return Err(format!("expected a JSON object, got {}", kind(&value)));
        };
        match self {
            Reader::Fixed(schema) => convert(schema, &row),
            Reader::Detect => {
                let format = if row.contains_key("conversations") {
                    Format::Sharegpt
                } else if row.contains_key("messages") {
                    Format::Openai
                } else if row.contains_key("instruction") {
                    Format::Alpaca
                } else {
                    return Err(
                        "cannot tell the format: the row has no `instruction` (alpaca), `conversations` (sharegpt) or \
                         `messages` (openai) key (hint: --format)"
                            .into(),
                    );
                };
                convert(&Schema::default_for(format), &row)
            }
        }
    }
}

/// Opens `--dataset`: a file, else a dataset name in `dataset_dir/dataset_info.json`.
pub fn open(spec: &str, dataset_dir: &Path, format: Option<Format>) -> anyhow::Result<Dataset> {
    let as_file = Path::new(spec);
    if as_file.is_file() {
        let reader = format.map_or(Reader::Detect, |f| Reader::Fixed(Box::new(Schema::default_for(f))));
        return read_file(as_file, &reader);
    }
    let info_path = dataset_dir.join("dataset_info.json");
    if !info_path.is_file() {
        bail!(
            "{spec} is not a file, and there is no {} to look it up in (hint: --dataset-dir)",
            info_path.display()
        );
    }
    let text = std::fs::read_to_string(&info_path).with_context(|| format!("cannot read {}", info_path.display()))?;
    let info: Value = serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", info_path.display()))?;
    let Some(entry) = info.get(spec) else {
        let known: Vec<&str> = info.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
        bail!("{spec} is not a file, nor a dataset in {} (it has: {})", info_path.display(), known.join(", "));
    };
    let entry = entry.as_object().with_context(|| format!("{}: `{spec}` must be an object", info_path.display()))?;
    let at = || format!("{}: dataset `{spec}`", info_path.display());
    if format.is_some() {
        bail!("{}: --format applies to files; a named dataset's format is its `formatting`", at());
    }
    if entry.get("ranking").and_then(Value::as_bool) == Some(true) {
        bail!("{}: ranking (preference) datasets have no single answer to predict", at());
    }
    let file = match entry.get("file_name") {
        Some(Value::String(f)) => dataset_dir.join(f),
        _ => {
            let remote = ["hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name"];
            match remote.iter().find(|k| entry.contains_key(**k)) {
                Some(k) => bail!("{}: `{k}` datasets are not supported; ingot reads local files (`file_name`)", at()),
                None => bail!("{}: no `file_name`", at()),
            }
        }
    };
    let schema = Schema::from_info(spec, entry).with_context(|| info_path.display().to_string())?;
    read_file(&file, &Reader::Fixed(Box::new(schema))).with_context(at)
}

/// Reads a JSON array or JSONL file, converting each row.
fn read_file(path: &Path, reader: &Reader) -> anyhow::Result<Dataset> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let rows = if text.trim_start().starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON (a JSON array of rows, or one JSON object per line)", path.display()))?;
        values.into_iter().enumerate().map(|(i, v)| (Place::Row(i + 1), reader.convert(v))).collect()
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                let row = serde_json::from_str::<Value>(line)
                    .map_err(|e| format!("invalid JSON: {e}"))
                    .and_then(|v| reader.convert(v));
                (Place::Line(i + 1), row)
            })
            .collect()
    };
    Ok(Dataset { path: path.to_owned(), rows })
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The value of an optional column: absent and null are both "not there".
pub(crate) fn column<'a>(row: &'a Map<String, Value>, name: &Option<String>) -> Option<(&'a str, &'a Value)> {
    let name = name.as_deref()?;
    match row.get_key_value(name) {
        Some((k, v)) if !v.is_null() => Some((k.as_str(), v)),
        _ => None,
    }
}

fn text_column(row: &Map<String, Value>, name: &Option<String>) -> Result<Option<String>, String> {
    match column(row, name) {
        None => Ok(None),
        Some((_, Value::String(s))) => Ok(Some(s.clone())),
        Some((k, v)) => Err(format!("`{k}` must be a string, got {}", kind(v))),
    }
}

fn convert(schema: &Schema, row: &Map<String, Value>) -> Result<Row, String> {
    match schema {
        Schema::Alpaca(c) => alpaca(c, row),
        Schema::Conversation(c) => conversation(c, row),
    }
}

fn message(role: &str, content: &str) -> Value {
    json!({ "role": role, "content": content })
}

fn alpaca(c: &AlpacaColumns, row: &Map<String, Value>) -> Result<Row, String> {
    let mut messages = Vec::new();
    if let Some((k, history)) = column(row, &c.history) {
        let pairs = history.as_array().ok_or_else(|| format!("`{k}` must be a list of [prompt, response] pairs"))?;
        for (i, pair) in pairs.iter().enumerate() {
            match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(p), Value::String(r)]) => {
                    messages.push(message("user", p));
                    messages.push(message("assistant", r));
                }
                _ => return Err(format!("`{k}` item {} must be a [prompt, response] pair of strings", i + 1)),
            }
        }
    }
    let prompt = text_column(row, &c.prompt)?.unwrap_or_default();
    let query = text_column(row, &c.query)?.unwrap_or_default();
    let user: Vec<&str> = [prompt.as_str(), query.as_str()].into_iter().filter(|s| !s.is_empty()).collect();
    if user.is_empty() {
        let names: Vec<&str> = [&c.prompt, &c.query].into_iter().flatten().map(String::as_str).collect();
        return Err(format!("empty prompt: no text in {}", names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" or ")));
    }
    messages.push(message("user", &user.join("\n")));
    Ok(Row {
        messages,
        label: text_column(row, &c.response)?.unwrap_or_default(),
        system: text_column(row, &c.system)?,
        tools: tools(row, &c.tools)?,
        media: RowMedia::read(row, &c.media)?,
    })
}

/// Tool schemas from a column holding a JSON string (LLaMA Factory's way) or the JSON itself;
/// bare `{name, description, parameters}` schemas are wrapped as `{"type": "function", ...}`.
fn tools(row: &Map<String, Value>, name: &Option<String>) -> Result<Option<Vec<Value>>, String> {
    let Some((k, v)) = column(row, name) else { return Ok(None) };
    let parsed;
    let v = match v {
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|e| format!("`{k}` is not valid JSON: {e}"))?;
            &parsed
        }
        v => v,
    };
    let list = match v {
        Value::Array(list) => list.clone(),
        Value::Object(_) => vec![v.clone()],
        other => return Err(format!("`{k}` must be a list of tool schemas, got {}", kind(other))),
    };
    if list.is_empty() {
        return Ok(None);
    }
    list.into_iter()
        .enumerate()
        .map(|(i, t)| match t {
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") && o.contains_key("function") => {
                Ok(Value::Object(o))
            }
            Value::Object(o) if o.get("name").is_some_and(Value::is_string) => Ok(json!({ "type": "function", "function": o })),
            _ => Err(format!("`{k}` item {} is not a tool schema with a `name`", i + 1)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// What a turn is, after its role tag is mapped.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Turn {
    User,
    Assistant,
    Observation,
    Function,
}

impl Turn {
    /// User and observation turns ask; assistant and function-call turns answer.
    fn answers(self) -> bool {
        matches!(self, Turn::Assistant | Turn::Function)
    }
}

fn conversation(c: &ConversationColumns, row: &Map<String, Value>) -> Result<Row, String> {
    let key = c.messages.as_deref().ok_or("the dataset names no messages column")?;
    let list = match row.get(key) {
        None | Some(Value::Null) => return Err(format!("missing `{key}`")),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(format!("`{key}` must be a list of messages, got {}", kind(other))),
    };
    if list.is_empty() {
        return Err(format!("`{key}` is empty"));
    }
    let role_tag = c.role.as_deref().ok_or("the dataset names no role tag")?;
    let content_tag = c.content.as_deref().ok_or("the dataset names no content tag")?;
    let role_of = |i: usize, m: &Value| -> Result<String, String> {
        match m.get(role_tag) {
            Some(Value::String(r)) => Ok(r.clone()),
            Some(_) => Err(format!("message {}: `{role_tag}` must be a string", i + 1)),
            None if m.is_object() => Err(format!("message {}: no `{role_tag}`", i + 1)),
            None => Err(format!("message {} must be an object, got {}", i + 1, kind(m))),
        }
    };

    let mut system = text_column(row, &c.system)?;
    let mut start = 0;
    if c.system_tag.is_some() && role_of(0, &list[0])? == *c.system_tag.as_deref().unwrap_or_default() {
        system = Some(content_of(0, &list[0], content_tag)?.to_owned());
        start = 1;
    }

    // Each turn with the text it stands for as a label (an answer's content, or its calls).
    let mut turns: Vec<(Turn, Value, String)> = Vec::new();
    for (i, m) in list.iter().enumerate().skip(start) {
        let role = role_of(i, m)?;
        let is = |tag: &Option<String>| tag.as_deref() == Some(role.as_str());
        let has_calls = m.get("tool_calls").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
        let (turn, msg, text) = if is(&c.user) {
            let text = content_of(i, m, content_tag)?;
            (Turn::User, message("user", text), text.to_owned())
        } else if is(&c.assistant) && has_calls {
            let msg = openai_tool_calls(i, m, content_tag)?;
            let text = serde_json::to_string(&msg["tool_calls"]).map_err(|e| e.to_string())?;
            (Turn::Function, msg, text)
        } else if is(&c.assistant) {
            let text = content_of(i, m, content_tag)?;
            (Turn::Assistant, message("assistant", text), text.to_owned())
        } else if is(&c.observation) {
            let text = content_of(i, m, content_tag)?;
            (Turn::Observation, message("tool", text), text.to_owned())
        } else if is(&c.function) {
            let text = content_of(i, m, content_tag)?;
            (Turn::Function, function_call(i, text)?, text.to_owned())
        } else {
            let known: Vec<String> =
                [&c.user, &c.assistant, &c.observation, &c.function].into_iter().flatten().map(|t| format!("`{t}`")).collect();
            let first = if is(&c.system_tag) { " (a system turn must come first)" } else { "" };
            return Err(format!("message {}: role `{role}` is not one of {}{first}", i + 1, known.join(", ")));
        };
        // Turns alternate between asking and answering, as LLaMA Factory requires; several
        // tool results in a row (OpenAI's one message per call) answer one function-call turn.
        let prev = turns.last().map(|(t, _, _)| *t);
        let ok = match prev {
            None => !turn.answers(),
            Some(Turn::Observation) if turn == Turn::Observation => true,
            Some(p) => p.answers() != turn.answers(),
        };
        if !ok {
            let expected = if prev.is_some_and(|p| !p.answers()) { "an assistant turn" } else { "a user or tool turn" };
            return Err(format!("message {}: `{role}` out of order: expected {expected}", i + 1));
        }
        turns.push((turn, msg, text));
    }
    if turns.is_empty() {
        return Err(format!("`{key}` has only a system message"));
    }
    let label = match turns.last() {
        Some((t, _, _)) if t.answers() => turns.pop().map(|(_, _, text)| text).unwrap_or_default(),
        _ => String::new(),
    };
    Ok(Row {
        messages: turns.into_iter().map(|(_, m, _)| m).collect(),
        label,
        system,
        tools: tools(row, &c.tools)?,
        media: RowMedia::read(row, &c.media)?,
    })
}

fn content_of<'a>(i: usize, m: &'a Value, tag: &str) -> Result<&'a str, String> {
    match m.get(tag) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(format!("message {}: no `{tag}`", i + 1)),
        Some(other) => Err(format!("message {}: `{tag}` must be a string, got {}", i + 1, kind(other))),
    }
}

/// A sharegpt `function_call` turn: its text is a JSON call `{"name", "arguments"}` or a list
/// of them; it becomes an assistant message with `tool_calls` (arguments as JSON objects).
fn function_call(i: usize, text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("message {}: function call is not valid JSON: {e}", i + 1))?;
    let calls = match v {
        Value::Array(list) => list,
        one => vec![one],
    };
    let calls = calls.into_iter().map(|call| tool_call(i, call)).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "role": "assistant", "content": "", "tool_calls": calls }))
}

/// One call as a chat template wants it, with its arguments parsed when given as a string.
fn tool_call(i: usize, call: Value) -> Result<Value, String> {
    let name = call.get("name").and_then(Value::as_str).ok_or_else(|| format!("message {}: a tool call has no `name`", i + 1))?;
    let arguments = match call.get("arguments") {
        Some(Value::String(s)) => serde_json::from_str(s)
            .map_err(|e| format!("message {}: arguments of `{name}` are not valid JSON: {e}", i + 1))?,
        Some(v) => v.clone(),
        None => json!({}),
    };
    Ok(json!({ "type": "function", "function": { "name": name, "arguments": arguments } }))
}

/// An OpenAI assistant message with `tool_calls`, normalised (arguments as JSON objects).
fn openai_tool_calls(i: usize, m: &Value, content_tag: &str) -> Result<Value, String> {
    let calls = m["tool_calls"].as_array().map(Vec::as_slice).unwrap_or_default();
    let calls = calls
        .iter()
        .map(|c| tool_call(i, c.get("function").cloned().unwrap_or_else(|| c.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let content = m.get(content_tag).and_then(Value::as_str).unwrap_or_default();
    Ok(json!({ "role": "assistant", "content": content, "tool_calls": calls }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        ingot_testkit::fixtures_dir().join("datasets")
    }

    fn rows(ds: &Dataset) -> Vec<&Row> {
        ds.rows.iter().map(|(p, r)| r.as_ref().unwrap_or_else(|e| panic!("{p}: {e}"))).collect()
    }

    fn user(s: &str) -> Value {
        message("user", s)
    }

    #[test]
    fn alpaca_rows_join_instruction_and_input_and_keep_history() {
        for ds in [
            open(fixtures().join("alpaca_demo.json").to_str().expect("utf-8"), Path::new("."), None).expect("file"),
            open("alpaca_demo", &fixtures(), None).expect("named"),
        ] {
            let r = rows(&ds);
            assert_eq!(r.len(), 20);
            assert_eq!(r[0].messages, [user("Give a synonym for the word.\nhappy")]);
            assert_eq!((r[0].label.as_str(), &r[0].system), ("Cheerful.", &None));
            assert_eq!(r[2].messages, [user("Write a one-line Python expression that reverses a list named xs.")]);
            assert_eq!(r[7].system.as_deref(), Some("Answer with a single word followed by a period."));
            assert_eq!(
                r[12].messages,
                [
                    user("Name a large land animal."),
                    message("assistant", "An elephant."),
                    user("Name a small bird."),
                    message("assistant", "A wren."),
                    user("Which one is bigger?"),
                ]
            );
            assert_eq!(ds.rows[12].0, Place::Row(13));
        }
    }

    #[test]
    fn sharegpt_rows_map_function_calls_observations_and_tools() {
        let ds = open("sharegpt_demo", &fixtures(), None).expect("named");
        let r = rows(&ds);
        assert_eq!(r.len(), 10);
        assert_eq!(r[1].messages.len(), 3);
        assert_eq!(r[1].label, "Duchess Ashford.");
        let tool = r[3];
        assert_eq!(tool.messages[1]["tool_calls"][0]["function"], json!({"name": "get_weather", "arguments": {"city": "Lisbon"}}));
        assert_eq!(tool.messages[2], message("tool", "{\"condition\": \"sunny\", \"high_c\": 24}"));
        assert_eq!(tool.label, "It is sunny in Lisbon today with a high of 24 °C.");
        let tools = tool.tools.as_ref().expect("tools");
        assert_eq!(tools[0]["type"], "function");
        assert_eq!(tools[0]["function"]["name"], "get_weather");
        // Detected from the keys, the file reads the same.
        let detected = open(fixtures().join("sharegpt_demo.json").to_str().expect("utf-8"), Path::new("."), None).expect("file");
        assert_eq!(rows(&detected), r);
    }

    #[test]
    fn openai_rows_take_the_system_message_out() {
        let ds = open("openai_demo", &fixtures(), None).expect("named");
        let r = rows(&ds);
        assert_eq!(r.len(), 10);
        assert_eq!(r[1].system.as_deref(), Some("You are a travel agent."));
        assert_eq!(r[1].messages, [user("Suggest a weekend trip from Madrid.")]);
        assert_eq!(r[3].messages.len(), 3);
        assert_eq!(ds.rows[9].0, Place::Line(10));
        let path = fixtures().join("openai_demo.jsonl");
        let detected = open(path.to_str().expect("utf-8"), Path::new("."), Some(Format::Openai)).expect("file");
        assert_eq!(rows(&detected), r);
    }

    #[test]
    fn bad_rows_each_name_the_problem() {
        let ds = open("bad_rows", &fixtures(), None).expect("named");
        let errors: Vec<(Place, String)> =
            ds.rows.iter().filter_map(|(p, r)| r.as_ref().err().map(|e| (*p, e.clone()))).collect();
        // The fifth row is well-formed; it is too long for the context, which only the
        // engine can tell.
        assert_eq!(errors.len(), 4, "{errors:?}");
        let expect = [(1, "invalid JSON"), (2, "no `content`"), (3, "must be a list of messages, got a string"), (4, "is empty")];
        for ((place, e), (line, what)) in errors.iter().zip(expect) {
            assert_eq!(*place, Place::Line(line));
            assert!(e.contains(what), "line {line}: {e}");
        }
    }

    fn one(format: Format, row: Value) -> Result<Row, String> {
        Reader::Fixed(Box::new(Schema::default_for(format))).convert(row)
    }

    #[test]
    fn malformed_rows_are_errors_not_panics() {
        let cases = [
            (Format::Alpaca, json!({"instruction": "", "input": ""}), "empty prompt"),
            (Format::Alpaca, json!({"instruction": 3}), "`instruction` must be a string"),
            (Format::Alpaca, json!({"instruction": "q", "history": [["a"]]}), "pair"),
            (Format::Sharegpt, json!({"conversations": [{"from": "gpt", "value": "x"}]}), "out of order"),
            (Format::Sharegpt, json!({"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}), "out of order"),
            (Format::Sharegpt, json!({"conversations": [{"from": "bot", "value": "x"}]}), "role `bot`"),
            (Format::Sharegpt, json!({"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "{oops"}]}), "not valid JSON"),
            (Format::Sharegpt, json!({"conversations": [{"from": "system", "value": "s"}]}), "only a system"),
            (Format::Sharegpt, json!({"conversations": [{"from": "human", "value": "a"}], "tools": "[1]"}), "tool schema"),
            (Format::Openai, json!({"messages": [{"role": "user", "content": ["part"]}]}), "must be a string, got a list"),
            (Format::Openai, json!(["not an object"]), "expected a JSON object"),
        ];
        for (format, row, what) in cases {
            let e = one(format, row.clone()).expect_err(&row.to_string());
            assert!(e.contains(what), "{row}: {e}");
        }
    }

    #[test]
    fn a_row_without_an_answer_is_unlabelled_and_openai_tool_calls_are_normalised() {
        let r = one(Format::Sharegpt, json!({"conversations": [{"from": "human", "value": "hi"}]})).expect("valid");
        assert_eq!((r.messages, r.label), (vec![user("hi")], String::new()));
        let r = one(
            Format::Openai,
            json!({"messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": "{\"c\": 1}"}}]},
                {"role": "tool", "content": "sun"},
                {"role": "tool", "content": "rain"},
                {"role": "assistant", "content": "mixed"}
            ]}),
        )
        .expect("valid");
        assert_eq!(r.messages[1]["tool_calls"][0]["function"]["arguments"], json!({"c": 1}));
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.label, "mixed");
    }

    #[test]
    fn dataset_info_columns_replace_the_defaults() {
        let entry = json!({"formatting": "sharegpt", "columns": {"messages": "msgs"}, "tags": {"role_tag": "r", "content_tag": "c", "user_tag": "u", "assistant_tag": "a"}});
        let schema = Schema::from_info("x", entry.as_object().expect("object")).expect("valid");
        let Schema::Conversation(c) = &schema else { panic!("{schema:?}") };
        // Listed tags replace the defaults, and unlisted ones are unset, as in LLaMA Factory.
        assert_eq!((c.messages.as_deref(), c.system.as_deref(), c.observation.as_deref()), (Some("msgs"), None, None));
        let row = json!({"msgs": [{"r": "u", "c": "q"}, {"r": "a", "c": "ans"}], "system": "ignored: no system column"});
        let r = Reader::Fixed(Box::new(schema)).convert(row).expect("valid");
        assert_eq!((r.messages, r.label, r.system), (vec![user("q")], "ans".to_owned(), None));
        let bad = json!({"formatting": "csv"});
        assert!(Schema::from_info("x", bad.as_object().expect("object")).is_err());
        // Media columns renamed; an unknown column is an error naming it.
        let entry = json!({"columns": {"prompt": "q", "videos": "clips", "audios": "sounds"}});
        let Schema::Alpaca(a) = Schema::from_info("x", entry.as_object().expect("object")).expect("valid") else { panic!("alpaca") };
        assert_eq!((a.media.videos.as_deref(), a.media.audios.as_deref(), a.media.images), (Some("clips"), Some("sounds"), None));
        let typo = json!({"columns": {"prompt": "q", "video": "clips"}});
        let e = Schema::from_info("x", typo.as_object().expect("object")).expect_err("unknown column").to_string();
        assert!(e.contains("unknown column `video`"), "{e}");
    }

    #[test]
    fn names_that_are_neither_files_nor_datasets_list_what_there_is() {
        let e = format!("{:#}", open("nope", &fixtures(), None).err().expect("unknown"));
        assert!(e.contains("nope") && e.contains("alpaca_demo"), "{e}");
        let e = format!("{:#}", open("alpaca_demo", &fixtures(), Some(Format::Alpaca)).err().expect("format and name"));
        assert!(e.contains("--format"), "{e}");
    }
}
