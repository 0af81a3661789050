//! How long requests wait for a batch slot: measured, predicted and reported.
//!
//! The engine thread tells the [`QueueClock`] when a queued request is admitted (its queue
//! time goes into a histogram), when a sequence ends (its service time, from admission to
//! its last event) and which request heads the queue; a handle queueing into an empty queue
//! notes its request as the head at once (the engine thread may be busy in a step). Handles ask it, before queueing a new
//! request, how long that request would wait; a front end with a time bound
//! ([`crate::EngineConfig::max_queue_wait`]) refuses the request at once when the estimate is
//! over it ([`crate::EngineError::QueueWait`]), so a client hears "retry later" instead of
//! timing out.
//!
//! The estimator, for a request arriving with `q` requests queued ahead on `slots` batch
//! slots: zero when `q == 0` (a slot is free, or frees within one sequence's time), otherwise
//! the larger of
//! - `q / slots × S`, where `S` is the moving average (weight 1/8) of recent sequences'
//!   service times: the queue drains `slots` requests per `S`;
//! - the age of the oldest queued request: the queue is at least that long now, and this
//!   term needs no history (the first requests after start, or a KV budget that admits fewer
//!   than `slots` sequences, which the first term overlooks).
//!
//! Invariants: only the engine thread writes the clock (atomics, and one mutex held for a
//! copy only); the histogram's buckets are cumulative, as Prometheus' are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the queue-time histogram.
pub const QUEUE_BUCKETS: [f64; 12] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Weight of a new service-time sample in the moving average, as a shift (1/8).
const AVERAGE_SHIFT: u32 = 3;

/// Why a request was refused before it was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The queue held `max_queue` requests.
    QueueFull,
    /// The expected wait was over `max_queue_wait`.
    QueueWait,
}

/// Queue figures since the engine started, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Cumulative counts of admitted requests' queue times, one per [`QUEUE_BUCKETS`] bound.
    pub buckets: Vec<u64>,
    /// Requests admitted.
    pub count: u64,
    /// Their queue times, summed, in seconds.
    pub sum_seconds: f64,
    /// Requests refused because the queue was full.
    pub shed_full: u64,
    /// Requests refused because their expected wait was over the limit.
    pub shed_wait: u64,
}

pub(crate) struct QueueClock {
    /// Moving average of service times, in microseconds (0 until the first one).
    service_micros: AtomicU64,
    /// Submission time of the oldest queued request, if one is queued.
    head_submitted: Mutex<Option<Instant>>,
    buckets: [AtomicU64; QUEUE_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    shed_full: AtomicU64,
    shed_wait: AtomicU64,
}

impl QueueClock {
    pub(crate) fn new() -> Self {
        Self {
            service_micros: AtomicU64::new(0),
            head_submitted: Mutex::new(None),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            shed_full: AtomicU64::new(0),
            shed_wait: AtomicU64::new(0),
        }
    }

    fn micros(d: Duration) -> u64 {
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
    }

    /// A request submitted at `submitted` left the queue now.
    pub(crate) fn admitted(&self, submitted: Instant) {
        let waited = submitted.elapsed();
        let secs = waited.as_secs_f64();
        for (bound, bucket) in QUEUE_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(Self::micros(waited), Ordering::Relaxed);
    }

    /// A sequence admitted at `started` ended now.
    pub(crate) fn served(&self, started: Instant) {
        let sample = Self::micros(started.elapsed()).max(1);
        let old = self.service_micros.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { old - (old >> AVERAGE_SHIFT) + (sample >> AVERAGE_SHIFT) };
        self.service_micros.store(new.max(1), Ordering::Relaxed);
    }

    /// The scheduler's view of the queue after admitting: the oldest request it holds, and
    /// how many are queued in all. Requests still on their way to it (`queued` > 0, none
    /// held) keep the head a handle noted ([`QueueClock::submitted`]).
    pub(crate) fn set_head(&self, oldest_held: Option<Instant>, queued: usize) {
        let mut head = self.head_submitted.lock().unwrap_or_else(|e| e.into_inner());
        if oldest_held.is_some() || queued == 0 {
            *head = oldest_held;
        }
    }

    /// A handle queued a request submitted now behind `before` others: into an empty queue,
    /// it is the head until the scheduler says otherwise.
    pub(crate) fn submitted(&self, before: usize) {
        let mut head = self.head_submitted.lock().unwrap_or_else(|e| e.into_inner());
        if before == 0 && head.is_none() {
            *head = Some(Instant::now());
        }
    }

    /// The expected wait of a request arriving now behind `queued` others, on `slots` slots
    /// (see the module doc).
    pub(crate) fn expected_wait(&self, queued: usize, slots: usize) -> Duration {
        if queued == 0 {
            return Duration::ZERO;
        }
        let service = self.service_micros.load(Ordering::Relaxed) as f64;
        let drain = Duration::from_micros((queued as f64 / slots.max(1) as f64 * service) as u64);
        let head = self.head_submitted.lock().unwrap_or_else(|e| e.into_inner()).map_or(Duration::ZERO, |t| t.elapsed());
        drain.max(head)
    }

    pub(crate) fn shed(&self, why: Shed) {
        let counter = match why {
            Shed::QueueFull => &self.shed_full,
            Shed::QueueWait => &self.shed_wait,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> QueueStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        QueueStats {
            buckets: self.buckets.iter().map(load).collect(),
            count: load(&self.count),
            sum_seconds: load(&self.sum_micros) as f64 / 1e6,
            shed_full: load(&self.shed_full),
            shed_wait: load(&self.shed_wait),
        }
    }
}

/// Whole seconds a refused client should wait before retrying: the expected wait rounded up,
/// at least 1 (`Retry-After` takes whole seconds).
pub fn retry_after_secs(expected: Duration) -> u64 {
    (expected.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_queued_means_no_wait() {
        let c = QueueClock::new();
        c.served(Instant::now() - Duration::from_secs(100));
        assert_eq!(c.expected_wait(0, 4), Duration::ZERO);
    }

    #[test]
    fn the_queue_drains_slots_per_service_time() {
        let c = QueueClock::new();
        c.served(Instant::now() - Duration::from_secs(8));
        let w = c.expected_wait(4, 2);
        assert!(w >= Duration::from_secs(16) && w < Duration::from_secs(17), "{w:?}");
        // One fast sequence moves the average by an eighth of the difference.
        c.served(Instant::now());
        let w = c.expected_wait(1, 1);
        assert!(w >= Duration::from_secs(6) && w < Duration::from_secs(8), "{w:?}");
    }

    #[test]
    fn the_oldest_queued_request_bounds_the_wait_without_history() {
        let c = QueueClock::new();
        assert_eq!(c.expected_wait(3, 1), Duration::ZERO, "no history, no head");
        c.set_head(Some(Instant::now() - Duration::from_secs(5)), 3);
        assert!(c.expected_wait(3, 1) >= Duration::from_secs(5));
        c.set_head(None, 0);
        assert_eq!(c.expected_wait(3, 1), Duration::ZERO);
        // A request on its way to the scheduler is the head as soon as a handle queued it,
        // and stays so while the scheduler has not taken it in.
        c.submitted(0);
        std::thread::sleep(Duration::from_millis(2));
        c.set_head(None, 1);
        assert!(c.expected_wait(1, 1) >= Duration::from_millis(2));
        c.submitted(1);
        c.set_head(None, 0);
        assert_eq!(c.expected_wait(1, 1), Duration::ZERO);
    }

    #[test]
    fn queue_times_and_sheds_are_counted() {
        let c = QueueClock::new();
        c.admitted(Instant::now());
        c.admitted(Instant::now() - Duration::from_secs(3));
        c.shed(Shed::QueueWait);
        c.shed(Shed::QueueFull);
        c.shed(Shed::QueueWait);
        let s = c.stats();
        assert_eq!((s.count, s.shed_full, s.shed_wait), (2, 1, 2));
        assert!(s.sum_seconds >= 3.0);
        assert_eq!(s.buckets[0], 1, "the immediate one is in the first bucket");
        assert_eq!(s.buckets[QUEUE_BUCKETS.iter().position(|b| *b == 5.0).expect("a 5 s bucket")], 2);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::from_millis(3001)), 4);
    }
}
