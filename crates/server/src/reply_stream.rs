//! One sample's reply streamed in an API's own event shape (Responses, Messages): the engine's
//! events are split into reply pieces ([`ReplySplitter`]) and an [`EventWriter`] turns each
//! into that API's SSE events. The loop, cancellation and the end of stream are shared here:
//! when the client goes away the task returns and the engine cancels the sequence; when the
//! engine stops (or fails) before the reply's end, the writer's error event is the last.

use axum::response::sse::Event as SseEvent;
use ingot_engine::{EngineError, Event, Usage};
use tokio::sync::mpsc;

use crate::completions::{next_event, Submission};
use crate::reply::{Piece, ReplyFormat, ReplySplitter};
use crate::ApiError;

/// An API's stream shape.
pub(crate) trait EventWriter: Send + 'static {
    /// The events before any text.
    fn start(&mut self, prompt_tokens: usize) -> Vec<SseEvent>;
    /// The events of one piece of the reply.
    fn piece(&mut self, piece: Piece) -> Vec<SseEvent>;
    /// The events that end the reply.
    fn done(&mut self, prompt_tokens: usize, usage: &Usage) -> Vec<SseEvent>;
    /// The event for a failure mid-stream.
    fn error(&mut self, e: &ApiError) -> SseEvent;
}

/// Streams `submission`'s one sample through `writer`.
pub(crate) fn stream_reply(submission: Submission, format: ReplyFormat, mut writer: impl EventWriter) -> mpsc::Receiver<SseEvent> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let Submission { prompt_tokens, mut events, .. } = submission;
        let send_all = |events: Vec<SseEvent>| {
            let tx = tx.clone();
            async move {
                for e in events {
                    if tx.send(e).await.is_err() {
                        return false;
                    }
                }
                true
            }
        };
        if !send_all(writer.start(prompt_tokens)).await {
            return;
        }
        let mut splitter = ReplySplitter::new(&format);
        let failure = loop {
            let Some((_, event)) = next_event(&mut events, &tx).await else { break ApiError::from(EngineError::Stopped) };
            let (pieces, done) = match event {
                Event::Text(t) => (splitter.push(&t), None),
                // Neither API asks for them.
                Event::Logprobs(_) => continue,
                Event::Done(u) => (splitter.finish(), Some(u)),
                Event::Error(e) => break ApiError::from(e),
            };
            for piece in pieces {
                if !send_all(writer.piece(piece)).await {
                    return;
                }
            }
            if let Some(u) = done {
                send_all(writer.done(prompt_tokens, &u)).await;
                return;
            }
        };
        if !tx.is_closed() {
            let _ = tx.send(writer.error(&failure)).await;
        }
    });
    rx
}
