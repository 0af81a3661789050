//! A fixed pool of threads for the blocking part of requests (template rendering,
//! tokenizing, decoding and preprocessing media), off the async runtime, as text-generation
//! servers keep tokenisation off theirs. The pool is sized once for the whole server: a
//! request or stream never gets a thread of its own, and its events reach it through its
//! sink (see [`crate::sink`]), not through a thread.

use std::panic::{catch_unwind, AssertUnwindSafe};

use axum::http::StatusCode;
use crossbeam_channel::Sender;
use tokio::sync::oneshot;

use crate::ApiError;

type Task = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct Workers {
    tasks: Sender<Task>,
}

impl Workers {
    /// Starts `threads` workers (at least one); they end when the last handle is dropped.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (tasks, rx) = crossbeam_channel::unbounded::<Task>();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("ingot-request-{i}")).spawn(move || {
                for task in rx.iter() {
                    // A panicking task fails its request (its reply channel drops); the worker lives on.
                    let _ = catch_unwind(AssertUnwindSafe(task));
                }
            })?;
        }
        Ok(Self { tasks })
    }

    /// Runs `f` on a worker and waits for its result without blocking the runtime.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let task: Task = Box::new(move || {
            // The request may have gone away meanwhile; then nobody wants the result.
            let _ = tx.send(f());
        });
        let failed = || ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the request's worker failed");
        self.tasks.send(task).map_err(|_| failed())?;
        rx.await.map_err(|_| failed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_tasks_and_survives_a_panic() {
        let w = Workers::new(1).expect("start");
        assert_eq!(w.run(|| 2 + 2).await.expect("ran"), 4);
        let e = w.run(|| -> u8 { panic!("boom") }).await.expect_err("the task panicked");
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(w.run(|| "still here").await.expect("ran"), "still here");
    }
}
