//! Engine events straight into the async side: each sample's [`ChannelSink`] sends
//! `(choice index, Event)` into one unbounded tokio channel per request, from the engine
//! thread, without blocking and without a thread of its own.
//!
//! When the request's receiver is dropped (the client went away, the handler returned), the
//! sink reports itself closed and the engine cancels the sample at its next step, even one
//! still queued. Every finished sample, cancelled ones included, reaches the metrics here:
//! the sink records its usage before delivering `Done`, and counts as in flight until the
//! engine drops it.

use std::sync::Arc;

use ingot_engine::{Closed, Event, EventSink};
use tokio::sync::mpsc;

use crate::metrics::{InFlight, Metrics};

/// One sample's sink.
pub struct ChannelSink {
    index: usize,
    tx: mpsc::UnboundedSender<(usize, Event)>,
    in_flight: InFlight,
}

impl EventSink for ChannelSink {
    fn send(&mut self, event: Event) -> Result<(), Closed> {
        if let Event::Done(usage) = &event {
            self.in_flight.metrics().sequence(usage);
        }
        self.tx.send((self.index, event)).map_err(|_| Closed)
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A request's sink factory (one sink per sample index) and the receiver of all its events.
pub fn channel(metrics: &Arc<Metrics>) -> (impl FnMut(usize) -> ChannelSink + Send + 'static, mpsc::UnboundedReceiver<(usize, Event)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let metrics = metrics.clone();
    let sinks = move |index| ChannelSink { index, tx: tx.clone(), in_flight: InFlight::new(metrics.clone()) };
    (sinks, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_receiver_closes_the_sink_and_usage_is_still_counted() {
        let metrics = Arc::new(Metrics::default());
        let (mut sinks, rx) = channel(&metrics);
        let mut sink = sinks(3);
        assert!(!sink.is_closed());
        sink.send(Event::Text("a".into())).expect("open");
        drop(rx);
        assert!(sink.is_closed());
        assert_eq!(sink.send(Event::Text("b".into())), Err(Closed));
        assert!(metrics.render(0, &ingot_engine::QueueStats::default()).contains("ingot_running_sequences 1"));
        drop(sink);
        assert!(metrics.render(0, &ingot_engine::QueueStats::default()).contains("ingot_running_sequences 0"));
    }
}
