//! What the engine sends back for a request, and where it sends it.
//!
//! Every sample of a request streams into its own [`EventSink`], given by the caller: text
//! deltas that never split a UTF-8 character (each generated token's [`TokenLogprobs`] just
//! before them, when the request asks for logprobs), then exactly one terminal event (`Done`
//! or `Error`). The engine thread calls the sink directly, so there is no thread per stream and
//! no polling: a front end on tokio implements the trait over a tokio channel (sending
//! never blocks), a plain thread uses a crossbeam channel ([`Stream`], [`Tagged`]).
//!
//! Cancelling: a sink that reports itself closed, or refuses an event, cancels its sequence
//! at the next step; so does [`Cancel::cancel`] (e.g. from a Ctrl-C handler).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::EngineError;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-generation token, a stop token or a stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The caller cancelled (or stopped listening).
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What the engine sends back for one sample of a request.
#[derive(Debug)]
pub enum Event {
    /// Newly completed text.
    Text(String),
    /// One generated token's log-probabilities, sent only when the request asks for them
    /// (`GenParams::logprobs`), right after the token is sampled: before the `Text` that
    /// holds its text, which a stop string may still hold back. End-of-generation and stop
    /// tokens, which add no text, get none.
    Logprobs(TokenLogprobs),
    /// The sample ended; always the last event.
    Done(Usage),
    /// The sample failed; always the last event.
    Error(EngineError),
}

/// A token and its log-probability under the model (`log_softmax` of the raw logits, see
/// [`ingot_core::sampling::token_logprobs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    /// The text the token adds (a control token's own text, e.g. `<|im_end|>`); a token
    /// that ends inside a UTF-8 character holds only part of one.
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// A generated token and the most likely tokens at its step (most likely first).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub token: TokenLogprob,
    pub top: Vec<TokenLogprob>,
}

/// Summary of a finished sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache rather than a forward pass.
    pub cached_tokens: usize,
    /// Seconds from submission to the first generated token.
    pub time_to_first_token: f64,
    /// Seconds spent in the prompt's forward pass.
    pub prefill_seconds: f64,
    /// Seconds spent generating after the first token.
    pub decode_seconds: f64,
    /// The request's own stop string that ended the sample (finish reason `Stop`), for the
    /// APIs that report it (llama.cpp's `stopping_word`, Anthropic's `stop_sequence`); `None`
    /// when an end-of-generation token, a stop token or a template's stop string ended it.
    pub stop_string: Option<String>,
}

impl Usage {
    /// A sample cancelled before it ran.
    pub(crate) fn unstarted(prompt_tokens: usize) -> Self {
        Self {
            finish_reason: FinishReason::Cancelled,
            prompt_tokens,
            completion_tokens: 0,
            cached_tokens: 0,
            time_to_first_token: 0.0,
            prefill_seconds: 0.0,
            decode_seconds: 0.0,
            stop_string: None,
        }
    }
}

/// The receiving side has gone away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Where a sample's events go. Called on the engine thread: `send` must not block.
pub trait EventSink: Send {
    /// Delivers one event; `Err(Closed)` when nobody listens any more, which cancels the
    /// sample.
    fn send(&mut self, event: Event) -> Result<(), Closed>;

    /// Whether the receiver has gone away (checked once per step, so a client that leaves
    /// while nothing is generated for it is still noticed).
    fn is_closed(&self) -> bool {
        false
    }
}

impl<T: EventSink + ?Sized> EventSink for Box<T> {
    fn send(&mut self, event: Event) -> Result<(), Closed> {
        (**self).send(event)
    }

    fn is_closed(&self) -> bool {
        (**self).is_closed()
    }
}

impl EventSink for Sender<Event> {
    fn send(&mut self, event: Event) -> Result<(), Closed> {
        Sender::send(self, event).map_err(|_| Closed)
    }
}

/// Events of many samples into one channel, each tagged with its caller-given index (a batch
/// run waits on one receiver for all its rows).
pub struct Tagged {
    pub index: usize,
    pub tx: Sender<(usize, Event)>,
}

impl EventSink for Tagged {
    fn send(&mut self, event: Event) -> Result<(), Closed> {
        self.tx.send((self.index, event)).map_err(|_| Closed)
    }
}

/// Asks the engine to stop one sample; it finishes with `FinishReason::Cancelled`.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A sample's events on a crossbeam channel, for callers on plain threads. Dropping the
/// stream cancels the sample (the engine notices within one step).
pub struct Stream {
    pub events: Receiver<Event>,
    cancel: Cancel,
}

impl Stream {
    /// A stream over `events`, cancelled through `cancel` (a front end relaying another
    /// engine's sample makes one too).
    pub fn new(events: Receiver<Event>, cancel: Cancel) -> Self {
        Self { events, cancel }
    }

    /// Asks the engine to stop this sample; it finishes with `FinishReason::Cancelled`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A handle that cancels the sample (e.g. from a Ctrl-C handler).
    pub fn canceller(&self) -> Cancel {
        self.cancel.clone()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.cancel();
    }
}
