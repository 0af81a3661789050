//! One request streamed from remote engines into event sinks, token by token, for the
//! interactive front ends on them (`ingot api --remote`, `ingot chat --remote`).
//!
//! The completion goes to `/v1/completions` with `stream: true`; every server-sent chunk's
//! text is passed on as an [`Event::Text`] of the sample its `index` names, and each sample
//! ends with exactly one terminal event. Failover: servers are tried in turn from a rotating
//! start; a server failure (refused, 5xx, a stream that breaks) moves the request to the next
//! server only while nothing has been sent to any sink, so no client sees text twice; after
//! the first token the samples still open end with [`EngineError::Remote`]. A 4xx is the
//! request's own error, answered at once. When every sink has closed (the client left) the
//! connection is dropped, which makes the server stop generating.

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ingot_engine::{EngineError, Event, EventSink, FinishReason, Usage};
use serde_json::{json, Value};

use super::client::{Endpoint, Failure};

/// The servers of a front end, taken in rotation.
pub struct Servers {
    pub endpoints: Vec<Endpoint>,
    next: AtomicUsize,
}

/// A completion request before a server is picked.
pub struct Job {
    /// The body without `model`, `prompt` and the JSON-schema field.
    pub body: Value,
    pub ids: Vec<u32>,
    pub text: String,
    /// A JSON schema the reply must follow (each server takes it in its own field).
    pub schema: Option<Value>,
    /// The request field a server's 4xx is reported against.
    pub field: &'static str,
}

impl Servers {
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        Self { endpoints, next: AtomicUsize::new(0) }
    }

    /// Whether every server enforces JSON schemas (a request with one may go anywhere).
    pub fn all_take_schemas(&self) -> bool {
        self.endpoints.iter().all(|e| e.schema_field.is_some())
    }

    /// Opens the job's stream on the first server that answers 200, starting with the next in
    /// rotation; returns which one and its body.
    pub fn open(&self, job: &Job) -> Result<(usize, ureq::Body), EngineError> {
        let n = self.endpoints.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut failures = Vec::new();
        for k in 0..n {
            let at = (first + k) % n;
            let e = &self.endpoints[at];
            match e.open_stream(&body_for(e, job)) {
                Ok(body) => return Ok((at, body)),
                Err(Failure::Request(m)) => return Err(EngineError::invalid(job.field, format!("--remote {}: {m}", e.url))),
                Err(Failure::Server(m)) => {
                    eprintln!("warning: --remote {} failed ({m}); trying the next server", e.url);
                    failures.push(format!("{}: {m}", e.url));
                }
            }
        }
        let url = self.endpoints.iter().map(|e| e.url.as_str()).collect::<Vec<_>>().join(", ");
        Err(EngineError::Remote { url, message: format!("every server failed: {}", failures.join("; ")) })
    }
}

/// The job's body for server `e`: its model name, the prompt as it takes prompts, the schema
/// in its field, and the stream's usage asked for.
fn body_for(e: &Endpoint, job: &Job) -> Value {
    let mut body = job.body.clone();
    body["model"] = json!(e.model);
    body["prompt"] = if e.text_prompts { json!(job.text) } else { json!(job.ids) };
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    if let (Some(schema), Some(field)) = (&job.schema, e.schema_field) {
        field.put(&mut body, schema);
    }
    body
}

/// How one sample stands.
struct Sample<S> {
    sink: S,
    tokens: usize,
    finish: Option<FinishReason>,
}

/// Relays the stream opened on server `at` into `sinks` (sample `i` into `sinks[i]`) until
/// every sample ended, reopening on another server while nothing was sent yet (see the
/// module doc). Runs on its own thread.
pub fn relay<S: EventSink>(servers: &Servers, job: &Job, opened: (usize, ureq::Body), sinks: Vec<S>) {
    let started = Instant::now();
    let mut samples: Vec<Sample<S>> = sinks.into_iter().map(|sink| Sample { sink, tokens: 0, finish: None }).collect();
    let mut first_token: Option<f64> = None;
    let mut usage_tokens = None;
    let (mut at, mut body) = opened;
    let mut attempts = 1;
    let outcome = loop {
        match read_stream(body, &mut samples, &mut first_token, &mut usage_tokens, started) {
            Ok(()) => break Ok(()),
            Err(m) if first_token.is_none() && attempts < servers.endpoints.len() => {
                eprintln!("warning: --remote {}: the stream failed before its first token ({m}); trying the next server", servers.endpoints[at].url);
                attempts += 1;
                match servers.open(job) {
                    Ok(next) => (at, body) = next,
                    Err(e) => break Err(e),
                }
            }
            Err(m) => break Err(EngineError::Remote { url: servers.endpoints[at].url.clone(), message: m }),
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let ttft = first_token.unwrap_or(elapsed);
    let one = samples.len() == 1;
    let failure = outcome.err();
    for s in &mut samples {
        let usage = |finish_reason, completion_tokens| Usage {
            finish_reason,
            prompt_tokens: job.ids.len(),
            completion_tokens,
            cached_tokens: 0,
            time_to_first_token: ttft,
            prefill_seconds: 0.0,
            decode_seconds: elapsed - ttft,
            // Servers name the matched stop string each their own way (vLLM's `stop_reason`,
            // llama.cpp's `stopping_word`); not relayed yet.
            stop_string: None,
        };
        let event = match (s.finish, &failure) {
            (Some(finish), _) => Event::Done(usage(finish, usage_tokens.filter(|_| one).unwrap_or(s.tokens))),
            (None, Some(e)) => Event::Error(clone_error(e)),
            // The stream ended without this sample's end: the client left (every sink closed).
            (None, None) => Event::Done(usage(FinishReason::Cancelled, s.tokens)),
        };
        let _ = s.sink.send(event);
    }
}

/// Reads server-sent events until `[DONE]` or every sink has closed; an error when the
/// stream breaks or ends before every sample finished, or the server reports one.
fn read_stream<S: EventSink>(
    body: ureq::Body,
    samples: &mut [Sample<S>],
    first_token: &mut Option<f64>,
    usage_tokens: &mut Option<usize>,
    started: Instant,
) -> Result<(), String> {
    let reader = BufReader::new(body.into_reader());
    for line in reader.lines() {
        if samples.iter().all(|s| s.sink.is_closed()) {
            return Ok(());
        }
        let line = line.map_err(|e| format!("reading the stream: {e}"))?;
        let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).map_err(|e| format!("a stream chunk is not JSON ({e}): {data}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("the server sent an error: {err}"));
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            *usage_tokens = Some(n as usize);
        }
        for c in v["choices"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap_or(0) as usize;
            let Some(s) = samples.get_mut(i) else { return Err(format!("a chunk names choice {i}, of {} asked for", samples.len())) };
            if let Some(text) = c["text"].as_str().filter(|t| !t.is_empty()) {
                first_token.get_or_insert_with(|| started.elapsed().as_secs_f64());
                s.tokens += 1;
                // A sink that refuses is a client gone: the check above ends the stream.
                let _ = s.sink.send(Event::Text(text.to_owned()));
            }
            if let Some(reason) = c["finish_reason"].as_str() {
                s.finish = Some(if reason == "length" { FinishReason::Length } else { FinishReason::Stop });
            }
        }
    }
    if samples.iter().all(|s| s.finish.is_some() || s.sink.is_closed()) {
        Ok(())
    } else {
        Err("the stream ended before the reply did".into())
    }
}

/// The error for another sample of the same request (engine errors are not `Clone`; the
/// relay makes only these two kinds).
fn clone_error(e: &EngineError) -> EngineError {
    match e {
        EngineError::Remote { url, message } => EngineError::Remote { url: url.clone(), message: message.clone() },
        other => EngineError::invalid(other.field().unwrap_or("prompt"), other.to_string()),
    }
}
