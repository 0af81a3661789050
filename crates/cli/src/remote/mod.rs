//! Remote OpenAI-compatible engines behind ingot's front ends. This module's [`Pool`] is
//! `ingot infer --remote URL`'s: rows ingot rendered itself go to the servers, each with its
//! own limit of requests in flight. `api` and `chat` stream through [`RemoteEngine`] instead.
//!
//! Every server gets `limit` worker threads that take jobs from one shared queue, so a fast
//! server takes more rows. A server failure (refused, reset, timeout, 5xx) puts the job back
//! at the queue for any server to take and marks the failing server down: its workers probe
//! `GET /health` with exponential backoff before they take jobs again. A 4xx is the row's
//! error, reported as such. A completion is delivered whole (text, then `Done`), only after
//! the server finished it, so a retried row's text never arrives twice.
//!
//! Invariant: every job submitted gets exactly one outcome (its completion, its row error,
//! or, once every server has been down for the whole `give_up` time, [`EngineError::Stopped`]
//! after the reason is printed), and the pool's threads end when the [`Pool`] is dropped.

pub mod backend;
pub mod client;
mod fields;
mod relay;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ingot_engine::{EngineError, Event, FinishReason, Usage};
use serde_json::Value;

pub use backend::RemoteEngine;
pub use client::Endpoint;
pub use fields::{connect_all, openai_params};
use client::Failure;

/// Where remote engines are, for every command that can use them instead of the model's
/// weights (`--model` still gives the tokenizer and chat template).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RemoteArgs {
    /// Generate on this OpenAI-compatible server (`ingot api`, vLLM, SGLang, llama.cpp's
    /// server, a router) instead of loading the model's weights; repeat for several (`infer`'s
    /// config key `remote_urls`). --model still gives the tokenizer and chat template.
    #[arg(id = "remote", long = "remote", value_name = "URL")]
    pub urls: Vec<String>,
    /// Longest one --remote request may take, its stream included (with `infer`, also how
    /// long the run waits while every server is down), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub remote_timeout: u64,
}

impl RemoteArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.remote_timeout.max(1))
    }
}

/// First wait before a failed server is probed again; doubled per failed probe.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// A row's request.
struct Job {
    seq: usize,
    /// The request without its `model` and `prompt`.
    body: Value,
    prompt: JobPrompt,
}

/// What a row asks a server to continue.
pub enum JobPrompt {
    /// A prompt rendered here, for `/v1/completions`: its ids and the text they tokenize from.
    Rendered { ids: Vec<u32>, text: String },
    /// Chat messages with media inline, for `/v1/chat/completions` (rendered by the server).
    Messages(Value),
}

/// Whether each server is up, and since when every server has been down.
struct Health {
    down: Vec<bool>,
    all_down_since: Option<Instant>,
}

/// The servers and their workers.
pub struct Pool {
    jobs: Sender<Job>,
    closed: Arc<AtomicBool>,
}

impl Pool {
    /// Starts `limit` workers per endpoint; their outcomes go to `events`, tagged with the
    /// job's `seq`. Gives up on the run when every server has been down for `give_up`.
    pub fn start(endpoints: Vec<Endpoint>, limit: usize, give_up: Duration, events: Sender<(usize, Event)>) -> Self {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        let closed = Arc::new(AtomicBool::new(false));
        let health = Arc::new(Mutex::new(Health { down: vec![false; endpoints.len()], all_down_since: None }));
        let endpoints = Arc::new(endpoints);
        for at in 0..endpoints.len() {
            for _ in 0..limit.max(1) {
                let w = Worker {
                    at,
                    endpoints: endpoints.clone(),
                    health: health.clone(),
                    queue: queue.clone(),
                    requeue: jobs.clone(),
                    events: events.clone(),
                    closed: closed.clone(),
                    give_up,
                };
                std::thread::spawn(move || w.run());
            }
        }
        Self { jobs, closed }
    }

    /// Queues a row's completion request; the pool fills in the `model` each server serves
    /// and the prompt: a rendered one as ids or as text, as the server takes it, or messages.
    pub fn submit(&self, seq: usize, body: Value, prompt: JobPrompt) {
        // The workers hold the queue's receiver until the pool is dropped.
        let _ = self.jobs.send(Job { seq, body, prompt });
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

struct Worker {
    at: usize,
    endpoints: Arc<Vec<Endpoint>>,
    health: Arc<Mutex<Health>>,
    queue: Receiver<Job>,
    requeue: Sender<Job>,
    events: Sender<(usize, Event)>,
    closed: Arc<AtomicBool>,
    give_up: Duration,
}

impl Worker {
    fn run(self) {
        let endpoint = &self.endpoints[self.at];
        let mut backoff = FIRST_BACKOFF;
        while !self.closed.load(Ordering::Relaxed) {
            if self.is_down() {
                std::thread::sleep(backoff);
                if endpoint.healthy() {
                    self.set_down(false);
                    eprintln!("infer: {} is back", endpoint.url);
                    backoff = FIRST_BACKOFF;
                } else {
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    self.check_give_up();
                }
                continue;
            }
            let Ok(mut job) = self.queue.recv_timeout(Duration::from_millis(200)) else { continue };
            job.body["model"] = Value::String(endpoint.model.clone());
            let done = match &job.prompt {
                JobPrompt::Rendered { ids, text } => {
                    job.body["prompt"] = if endpoint.text_prompts { Value::String(text.clone()) } else { serde_json::json!(ids) };
                    endpoint.complete(&job.body)
                }
                JobPrompt::Messages(messages) => {
                    job.body["messages"] = messages.clone();
                    endpoint.chat(&job.body)
                }
            };
            match done {
                Ok(c) => {
                    let usage = Usage {
                        finish_reason: if c.finish_reason == "length" { FinishReason::Length } else { FinishReason::Stop },
                        prompt_tokens: c.prompt_tokens,
                        completion_tokens: c.completion_tokens,
                        cached_tokens: 0,
                        time_to_first_token: 0.0,
                        prefill_seconds: 0.0,
                        decode_seconds: 0.0,
                        stop_string: None,
                    };
                    let _ = self.events.send((job.seq, Event::Text(c.text)));
                    let _ = self.events.send((job.seq, Event::Done(usage)));
                }
                Err(Failure::Request(m)) => {
                    let _ = self.events.send((job.seq, Event::Error(EngineError::invalid("prompt", format!("{}: {m}", endpoint.url)))));
                }
                Err(Failure::Server(m)) => {
                    eprintln!("warning: infer: {} failed ({m}); its rows go to the other servers", endpoint.url);
                    self.set_down(true);
                    let _ = self.requeue.send(job);
                }
            }
        }
    }

    fn is_down(&self) -> bool {
        self.health.lock().map(|h| h.down[self.at]).unwrap_or(true)
    }

    fn set_down(&self, down: bool) {
        if let Ok(mut h) = self.health.lock() {
            h.down[self.at] = down;
            let all = h.down.iter().all(|&d| d);
            h.all_down_since = match (all, h.all_down_since) {
                (true, None) => Some(Instant::now()),
                (true, since) => since,
                (false, _) => None,
            };
        }
    }

    /// Once every server has been down for `give_up`, fails every queued job: the run ends
    /// (rows not written are retried by a rerun).
    fn check_give_up(&self) {
        let expired = self.health.lock().map(|h| h.all_down_since.is_some_and(|t| t.elapsed() >= self.give_up)).unwrap_or(true);
        if !expired {
            return;
        }
        let urls: Vec<&str> = self.endpoints.iter().map(|e| e.url.as_str()).collect();
        let mut failed = false;
        while let Ok(job) = self.queue.try_recv() {
            if !failed {
                eprintln!("error: infer: every --remote server has been down for {:?}: {}", self.give_up, urls.join(", "));
                failed = true;
            }
            let _ = self.events.send((job.seq, Event::Error(EngineError::Stopped)));
        }
    }
}
