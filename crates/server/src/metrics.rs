//! Counters for `GET /metrics`, in Prometheus' text exposition format.
//!
//! Everything is updated by the routes as requests start and finish (atomics and one small
//! mutex-guarded map), so scraping never talks to the engine thread. Queue depth comes from
//! the engine handle at scrape time, as do queue times and shed counts ([`QueueStats`]);
//! running sequences are the ones in flight (submitted, not finished) less those still queued.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ingot_engine::{QueueStats, Usage, QUEUE_BUCKETS};

/// Upper bounds (seconds) of the time-to-first-token histogram.
const TTFT_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
pub struct Metrics {
    /// (route, status) → count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// Sum of decode seconds, in microseconds (with completion tokens: decode throughput).
    decode_micros: AtomicU64,
    ttft: Histogram,
    /// Sequences submitted and not finished (see [`InFlight`]).
    in_flight: AtomicUsize,
}

/// Counts one sequence as in flight for as long as it lives.
pub struct InFlight(Arc<Metrics>);

impl InFlight {
    pub fn new(m: Arc<Metrics>) -> Self {
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(m)
    }
}

impl InFlight {
    pub fn metrics(&self) -> &Metrics {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; TTFT_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Metrics {
    pub fn request(&self, route: &'static str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((route, status)).or_default() += 1;
    }

    /// Records a finished sequence.
    pub fn sequence(&self, u: &Usage) {
        self.prompt_tokens.fetch_add(u.prompt_tokens as u64, Ordering::Relaxed);
        self.completion_tokens.fetch_add(u.completion_tokens as u64, Ordering::Relaxed);
        self.decode_micros.fetch_add((u.decode_seconds * 1e6) as u64, Ordering::Relaxed);
        if u.completion_tokens > 0 {
            let h = &self.ttft;
            for (bound, bucket) in TTFT_BUCKETS.iter().zip(&h.buckets) {
                if u.time_to_first_token <= *bound {
                    bucket.fetch_add(1, Ordering::Relaxed);
                }
            }
            h.count.fetch_add(1, Ordering::Relaxed);
            h.sum_micros.fetch_add((u.time_to_first_token * 1e6) as u64, Ordering::Relaxed);
        }
    }

    /// The exposition text; `queued` is the engine's queue depth, `queue` its queue times
    /// and refusals.
    pub fn render(&self, queued: usize, queue: &QueueStats) -> String {
        let running = self.in_flight.load(Ordering::Relaxed).saturating_sub(queued);
        let mut out = String::new();
        let o = &mut out;
        header(o, "ingot_requests_total", "counter", "HTTP requests by route and status.");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(o, "ingot_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        sample(o, "ingot_prompt_tokens_total", "counter", "Prompt tokens of finished sequences.", load(&self.prompt_tokens) as f64);
        sample(o, "ingot_completion_tokens_total", "counter", "Generated tokens.", load(&self.completion_tokens) as f64);
        sample(
            o,
            "ingot_decode_seconds_total",
            "counter",
            "Seconds spent decoding after the first token (completion tokens / this = decode throughput).",
            load(&self.decode_micros) as f64 / 1e6,
        );
        let decode = load(&self.decode_micros) as f64 / 1e6;
        let tps = if decode > 0.0 { load(&self.completion_tokens) as f64 / decode } else { 0.0 };
        sample(o, "ingot_decode_tokens_per_second", "gauge", "Generated tokens per decode second, since start.", tps);
        sample(o, "ingot_running_sequences", "gauge", "Sequences being decoded.", running as f64);
        sample(o, "ingot_queue_depth", "gauge", "Sequences waiting for a batch slot.", queued as f64);
        header(o, "ingot_time_to_first_token_seconds", "histogram", "Seconds from submission to the first token.");
        let h = &self.ttft;
        for (bound, bucket) in TTFT_BUCKETS.iter().zip(&h.buckets) {
            let _ = writeln!(o, "ingot_time_to_first_token_seconds_bucket{{le=\"{bound}\"}} {}", load(bucket));
        }
        let _ = writeln!(o, "ingot_time_to_first_token_seconds_bucket{{le=\"+Inf\"}} {}", load(&h.count));
        let _ = writeln!(o, "ingot_time_to_first_token_seconds_sum {}", load(&h.sum_micros) as f64 / 1e6);
        let _ = writeln!(o, "ingot_time_to_first_token_seconds_count {}", load(&h.count));
        queue_lines(o, queue);
        out
    }
}

/// The queue-time histogram and the counts of requests refused before queueing.
fn queue_lines(o: &mut String, q: &QueueStats) {
    header(o, "ingot_queue_time_seconds", "histogram", "Seconds admitted requests waited for a batch slot.");
    for (bound, n) in QUEUE_BUCKETS.iter().zip(q.buckets.iter().chain(std::iter::repeat(&0))) {
        let _ = writeln!(o, "ingot_queue_time_seconds_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(o, "ingot_queue_time_seconds_bucket{{le=\"+Inf\"}} {}", q.count);
    let _ = writeln!(o, "ingot_queue_time_seconds_sum {}", q.sum_seconds);
    let _ = writeln!(o, "ingot_queue_time_seconds_count {}", q.count);
    header(o, "ingot_requests_shed_total", "counter", "Requests refused before queueing: the queue full (429) or the expected wait over --max-queue-wait (503).");
    let _ = writeln!(o, "ingot_requests_shed_total{{reason=\"queue_full\"}} {}", q.shed_full);
    let _ = writeln!(o, "ingot_requests_shed_total{{reason=\"queue_wait\"}} {}", q.shed_wait);
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(o: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    header(o, name, kind, help);
    let _ = writeln!(o, "{name} {value}");
}
