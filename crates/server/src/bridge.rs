//! From the engine's blocking event channels to one async channel.
//!
//! A submission's n streams each get a forwarding thread (tokio's blocking pool) that moves
//! `(choice index, Event)` pairs into one tokio channel, so the async side never blocks on a
//! crossbeam receiver. The forwarding thread owns its [`Stream`]: when the async receiver is
//! gone (the client disconnected, the handler was dropped) it notices within [`POLL`],
//! cancels the sequence (even one still queued) and keeps reading until the engine's final
//! `Done`, so every finished sequence, cancelled ones included, reaches the metrics here.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use ingot_engine::{Event, Stream};
use tokio::sync::mpsc;

use crate::metrics::{InFlight, Metrics};

/// How often a forwarding thread waiting on the engine checks that someone still listens.
const POLL: Duration = Duration::from_millis(100);

/// Forwards every stream's events, tagged with the stream's index, into one receiver. Each
/// stream ends with its `Done` or `Error` event; a stream whose engine side vanished without
/// one gets an `Error`. Each stream counts as in flight in `metrics` until its thread ends,
/// and its usage is recorded there.
pub fn forward(streams: Vec<Stream>, metrics: &Arc<Metrics>) -> mpsc::Receiver<(usize, Event)> {
    let (tx, rx) = mpsc::channel(64);
    for (index, stream) in streams.into_iter().enumerate() {
        let tx = tx.clone();
        let in_flight = InFlight::new(metrics.clone());
        tokio::task::spawn_blocking(move || forward_one(index, stream, tx, in_flight));
    }
    rx
}

fn forward_one(index: usize, stream: Stream, tx: mpsc::Sender<(usize, Event)>, in_flight: InFlight) {
    let mut listening = true;
    loop {
        let event = match stream.events.recv_timeout(POLL) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => {
                if listening && tx.is_closed() {
                    listening = false;
                    stream.cancel();
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => Event::Error("the engine stopped".into()),
        };
        if let Event::Done(usage) = &event {
            in_flight.metrics().sequence(usage);
        }
        let last = matches!(event, Event::Done(_) | Event::Error(_));
        if listening && tx.blocking_send((index, event)).is_err() {
            listening = false;
            stream.cancel();
        }
        if last {
            return;
        }
    }
}
