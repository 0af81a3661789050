//! One OpenAI-compatible server (`ingot api`, vLLM, SGLang, llama.cpp's server, or a router in
//! front of several) as `ingot infer --remote` uses it: checked once before any row runs,
//! then asked for completions of prompts ingot rendered and tokenized itself.
//!
//! Prompts go as token ids where the server takes them (`ingot api`, vLLM, llama.cpp's
//! server), else as the rendered text (sglang-router takes strings only), which a server of
//! the same model tokenizes to the same ids (special-token text included).
//!
//! A failure is either the request's (a 4xx: the same request fails anywhere, so it is the
//! row's error) or the server's (refused, reset, timed out, 5xx, an unreadable body: the row
//! is retried elsewhere). The HTTP client is ureq, already in the tree for the server's media
//! fetches: blocking, one call per thread, no async runtime of its own.

use std::time::Duration;

use anyhow::{bail, Context};
use ingot_core::tokenizer::Tokenizer;
use serde_json::{json, Value};

/// Text whose tokens tell tokenizers apart (words, digits, punctuation, CJK, an emoji).
const PROBE: &str = "Hello, ingot! Tokenizers differ: 12345 apples, 你好世界, émigré 🙂.";

/// Why a completion failed.
#[derive(Debug)]
pub enum Failure {
    /// The server's fault: retry on another.
    Server(String),
    /// The request's: a 4xx with the server's message.
    Request(String),
}

/// A generated completion.
#[derive(Debug)]
pub struct Completion {
    pub text: String,
    pub finish_reason: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// A checked server.
pub struct Endpoint {
    /// The base URL as given, without a trailing `/`.
    pub url: String,
    /// The model it serves (the first in its `/v1/models`), named in every request.
    pub model: String,
    /// Whether prompts go as text: the server (sglang-router, for one) refuses token ids.
    pub text_prompts: bool,
    /// The model's context length, where `/v1/models` gives it (`max_model_len`: ingot, vLLM).
    pub context: Option<usize>,
    /// The field the server enforces a JSON schema through, if any ([`Endpoint::check_structured`]).
    pub schema_field: Option<SchemaField>,
    agent: ureq::Agent,
}

impl Endpoint {
    /// Connects to `url` and reads the model it serves. `timeout` bounds each request.
    pub fn connect(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let url = url.trim_end_matches('/').to_owned();
        anyhow::ensure!(url.starts_with("http://") || url.starts_with("https://"), "--remote {url}: not an http:// or https:// URL");
        let config = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).proxy(None).build();
        let agent: ureq::Agent = config.into();
        let mut e = Self { url, model: String::new(), text_prompts: false, context: None, schema_field: None, agent };
        let (status, body) = e.get("/v1/models").map_err(|m| anyhow::anyhow!("--remote {}: unreachable: {m}", e.url))?;
        if status != 200 {
            bail!("--remote {}: GET /v1/models answered {status}: {}", e.url, excerpt(&body));
        }
        let models: Value = serde_json::from_str(&body).with_context(|| format!("--remote {}: GET /v1/models is not JSON", e.url))?;
        e.model = models["data"][0]["id"]
            .as_str()
            .with_context(|| format!("--remote {}: GET /v1/models lists no model", e.url))?
            .to_owned();
        e.context = models["data"][0]["max_model_len"].as_u64().map(|n| n as usize);
        Ok(e)
    }

    /// Checks that the server tokenizes as `tokenizer` does (the same model), where it has a
    /// tokenize route (llama.cpp's, vLLM's or ingot's shape); returns whether it could check.
    pub fn check_tokenizer(&self, tokenizer: &Tokenizer) -> anyhow::Result<bool> {
        let ours = tokenizer.encode(PROBE, false).context("tokenizing the probe text")?;
        for body in [json!({"content": PROBE}), json!({"prompt": PROBE, "model": self.model})] {
            let Ok((200, text)) = self.post("/tokenize", &body) else { continue };
            let Some(theirs) = serde_json::from_str::<Value>(&text).ok().and_then(|v| serde_json::from_value::<Vec<u32>>(v["tokens"].clone()).ok())
            else {
                continue;
            };
            // A server may put the model's BOS in front (vLLM adds special tokens by default).
            let same = theirs.ends_with(&ours) && theirs.len() <= ours.len() + 1;
            if !same {
                bail!(
                    "--remote {}: serves a different model than --model: its /tokenize gives {} tokens for a probe text, --model's tokenizer {} (model `{}`)",
                    self.url,
                    theirs.len(),
                    ours.len(),
                    self.model
                );
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Checks that the server has `/v1/completions` by generating one token from `ids`
    /// (the prompt `text` tokenizes to), and learns whether it takes token ids or only text.
    pub fn check_completions(&mut self, ids: &[u32], text: &str) -> anyhow::Result<()> {
        let body = |prompt: Value| json!({"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0});
        let failed = match self.complete(&body(json!(ids))) {
            Ok(_) => return Ok(()),
            Err(Failure::Request(m)) if m.starts_with("404") => bail!("--remote {}: has no /v1/completions ({m})", self.url),
            Err(Failure::Request(m)) => m,
            Err(Failure::Server(m)) => bail!("--remote {}: a one-token test completion failed: {m}", self.url),
        };
        match self.complete(&body(json!(text))) {
            Ok(_) => {
                self.text_prompts = true;
                Ok(())
            }
            Err(Failure::Request(m) | Failure::Server(m)) => {
                bail!("--remote {}: a one-token test completion failed: with token ids {failed}; with text {m}", self.url)
            }
        }
    }

    /// Learns which field, if any, makes the server's `/v1/completions` follow a JSON schema:
    /// each dialect in turn asks for a JSON object in a few greedy tokens from `ids`, and the
    /// first whose reply starts with `{` is the server's (a server that ignores the field
    /// answers the prompt in prose).
    pub fn check_structured(&mut self, ids: &[u32], text: &str) {
        let prompt = if self.text_prompts { json!(text) } else { json!(ids) };
        for field in SchemaField::ALL {
            let mut body = json!({"model": self.model, "prompt": prompt, "max_tokens": 4, "temperature": 0});
            field.put(&mut body, &json!({"type": "object"}));
            if let Ok(c) = self.complete(&body) {
                if c.text.trim_start().starts_with('{') {
                    self.schema_field = Some(field);
                    return;
                }
            }
        }
    }

    /// `POST /v1/completions` with `body` streamed back: the reply's body, once the server
    /// answered 200 (a failure as [`Endpoint::complete`] classes it).
    pub fn open_stream(&self, body: &Value) -> Result<ureq::Body, Failure> {
        let reply = self
            .agent
            .post(format!("{}/v1/completions", self.url))
            .header("content-type", "application/json")
            .send(body.to_string())
            .map_err(|e| Failure::Server(e.to_string()))?;
        let status = reply.status().as_u16();
        if status == 200 {
            return Ok(reply.into_body());
        }
        let (_, text) = read(Ok(reply)).map_err(Failure::Server)?;
        Err(classify(status, &text))
    }

    /// Whether `GET /health` answers 200.
    pub fn healthy(&self) -> bool {
        matches!(self.get("/health"), Ok((200, _)))
    }

    /// `POST /v1/completions` with `body` (one choice, not streamed).
    pub fn complete(&self, body: &Value) -> Result<Completion, Failure> {
        self.generate("/v1/completions", "/text", body)
    }

    /// `POST /v1/chat/completions` with `body` (one choice, not streamed).
    pub fn chat(&self, body: &Value) -> Result<Completion, Failure> {
        self.generate("/v1/chat/completions", "/message/content", body)
    }

    /// A generation route's one choice, its text at the JSON `pointer` under `choices[0]`.
    fn generate(&self, path: &str, pointer: &str, body: &Value) -> Result<Completion, Failure> {
        let (status, text) = self.post(path, body).map_err(Failure::Server)?;
        if status != 200 {
            return Err(classify(status, &text));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| Failure::Server(format!("the reply is not JSON: {e}")))?;
        let choice = &v["choices"][0];
        let text = choice.pointer(pointer).and_then(Value::as_str);
        let text = text.ok_or_else(|| Failure::Server(format!("the reply has no choices[0]{}: {}", pointer.replace('/', "."), excerpt(&v.to_string()))))?;
        let count = |k: &str| v["usage"][k].as_u64().unwrap_or(0) as usize;
        Ok(Completion {
            text: text.to_owned(),
            finish_reason: choice["finish_reason"].as_str().unwrap_or("stop").to_owned(),
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
        })
    }

    fn get(&self, path: &str) -> Result<(u16, String), String> {
        let reply = self.agent.get(format!("{}{path}", self.url)).call();
        read(reply)
    }

    fn post(&self, path: &str, body: &Value) -> Result<(u16, String), String> {
        let reply = self.agent.post(format!("{}{path}", self.url)).header("content-type", "application/json").send(body.to_string());
        read(reply)
    }
}

/// A reply other than 200: the request's fault for a 4xx (but a timeout or a rate limit),
/// else the server's.
fn classify(status: u16, body: &str) -> Failure {
    match status {
        400..=499 if status != 408 && status != 429 => Failure::Request(format!("{status}: {}", excerpt(body))),
        _ => Failure::Server(format!("{status}: {}", excerpt(body))),
    }
}

/// How a server takes a JSON schema on `/v1/completions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaField {
    /// OpenAI's `response_format` (ingot, vLLM).
    ResponseFormat,
    /// llama.cpp's server: `json_schema`.
    JsonSchema,
    /// vLLM's older `guided_json`.
    GuidedJson,
}

impl SchemaField {
    const ALL: [Self; 3] = [Self::ResponseFormat, Self::JsonSchema, Self::GuidedJson];

    /// Puts `schema` into `body` under this field.
    pub fn put(self, body: &mut Value, schema: &Value) {
        match self {
            Self::ResponseFormat => body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}),
            Self::JsonSchema => body["json_schema"] = schema.clone(),
            Self::GuidedJson => body["guided_json"] = schema.clone(),
        }
    }
}

fn read(reply: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<(u16, String), String> {
    let mut reply = reply.map_err(|e| e.to_string())?;
    let status = reply.status().as_u16();
    let text = reply.body_mut().with_config().limit(64 << 20).read_to_string().map_err(|e| format!("reading the reply: {e}"))?;
    Ok((status, text))
}

/// The start of a reply body, for messages.
fn excerpt(body: &str) -> String {
    let mut end = body.len().min(300);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].trim().to_owned()
}
