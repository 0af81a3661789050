//! Fuzz targets of the front ends, outside ingot-core: the OpenAI request parser with its
//! validation (crates/server) and dataset rows (crates/cli/src/dataset.rs, compiled in here
//! from its source, since the CLI is a binary crate).

use ingot_server::openai::{ChatCompletionRequest, CompletionRequest, ScoreRequest};

#[allow(dead_code)] // Only `open` and the row types are used here.
#[path = "../../crates/cli/src/dataset.rs"]
mod dataset;

use crate::targets::class;

pub const REQUEST_WORDS: &[&str] = &[
    "{\"messages\": [", "{\"role\": \"user\", \"content\": ", "\"assistant\"", "\"tool\"", "\"system\"", "\"developer\"",
    "\"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}]", "\"tool_call_id\": \"c\"",
    "[{\"type\": \"text\", \"text\": \"x\"}]", "[{\"type\": \"image_url\", \"image_url\": {\"url\": \"data:,\"}}]",
    "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {}}}]", "\"stop\": [\"a\"]",
    "\"n\": 2", "\"max_tokens\": 5", "\"stream\": true", "\"stream_options\": {\"include_usage\": true}",
    "\"response_format\": {\"type\": \"json_object\"}", "\"tool_choice\": \"required\"", "\"logit_bias\": {\"1\": 2}",
    "\"prompt\": ", "[1, 2, 3]", "\"temperature\": -1", "\"top_p\": 2", "\"seed\": 18446744073709551615", "null",
    "true", "1e999", "-0", "\"\\ud800\"", "{", "}", "[", "]", ",", ":",
];

pub const DATASET_WORDS: &[&str] = &[
    "{\"instruction\": ", "\"input\": ", "\"output\": ", "\"history\": [[\"a\", \"b\"]]", "\"system\": ",
    "{\"conversations\": [", "{\"from\": \"human\", \"value\": ", "{\"from\": \"gpt\", \"value\": ",
    "{\"from\": \"function_call\", \"value\": ", "{\"from\": \"observation\", \"value\": ", "{\"messages\": [",
    "{\"role\": \"user\", \"content\": ", "{\"role\": \"assistant\", \"tool_calls\": [", "\"tools\": ", "\"images\": [\"a.png\"]",
    "<image>", "\"x\"", "[]", "{}", "null", "\n", "[", "]", "{", "}", ",", ":",
];

/// A request body for the chat, completion and score routes at once: parsed, then validated
/// (and checked against the size limits) as the routes do.
pub fn request(data: &[u8]) -> String {
    let mut outcome = String::new();
    match serde_json::from_slice::<ChatCompletionRequest>(data) {
        Ok(req) => match req.validate() {
            Ok(v) => outcome += &format!("chat {} {}", v.chat.messages.len().min(3), v.images.len().min(2)),
            Err(e) => outcome += &class("chat", &format!("{:?} {}", e.param, e.message)),
        },
        Err(e) => outcome += &class("chat shape", &e.to_string()),
    }
    match serde_json::from_slice::<CompletionRequest>(data) {
        Ok(req) => outcome += if req.validate().is_ok() { " completion" } else { " completion refused" },
        Err(_) => outcome += " completion shape",
    }
    if let Ok(req) = serde_json::from_slice::<ScoreRequest>(data) {
        outcome += if req.check_sizes().is_ok() { " score" } else { " score refused" };
    }
    outcome
}

/// Dataset rows in a file: the first byte picks the format (detected, alpaca, sharegpt,
/// openai), the rest is the file (a JSON array, else JSONL).
pub fn dataset(data: &[u8]) -> String {
    use dataset::Format;
    let format = match data.first().map(|b| b % 4) {
        Some(1) => Some(Format::Alpaca),
        Some(2) => Some(Format::Sharegpt),
        Some(3) => Some(Format::Openai),
        _ => None,
    };
    let path = crate::targets::scratch().join("rows.jsonl");
    std::fs::write(&path, data.get(1..).unwrap_or_default()).expect("write");
    match dataset::open(&path.display().to_string(), crate::targets::scratch(), format) {
        Ok(d) => {
            let ok = d.rows.iter().filter(|(_, r)| r.is_ok()).count();
            let first_error = d.rows.iter().find_map(|(_, r)| r.as_ref().err()).map(|e| class(" row", e)).unwrap_or_default();
            format!("{format:?} rows {} ok {}{first_error}", d.rows.len().min(3), ok.min(3))
        }
        Err(e) => class("open", &format!("{e:#}")),
    }
}
