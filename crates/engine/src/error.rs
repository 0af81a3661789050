//! Every way an engine call can fail, as one typed enum.
//!
//! Front ends decide from the variant, never from the text: [`EngineError::field`] names the
//! request field at fault (LLaMA Factory's names: `temperature`, `num_return_sequences`,
//! `max_new_tokens`, `messages[2]`, `response_format.json_schema`, ...) and
//! [`EngineError::is_request_error`] tells a bad request (answer it, keep going) from a failure
//! of the engine itself.

use ingot_core::constraint::ConstraintError;
use ingot_core::media::MediaError;
use ingot_core::model::ForwardError;
use ingot_core::template::{ChatTemplate, TemplateError, ToolError};
use ingot_core::tokenizer::TokenizerError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A request field's value is out of range or inconsistent with the rest of the request.
    /// `message` is whole (it names the field and the limit); `field` is for machines.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// A media item of the request could not be used; `field` names where the request gave it.
    #[error("{field}: {source}")]
    Media {
        field: String,
        #[source]
        source: MediaError,
    },
    /// The chat template refused or failed to render the conversation.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Text could not be tokenized, or generated ids decoded.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A `response_format` or forced `tool_choice` could not be compiled, or its grammar failed
    /// while generating.
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    /// The model's forward pass refused the batch (inputs it was not built for).
    #[error("the model failed: {0}")]
    Forward(#[from] ForwardError),
    #[error("the server is overloaded: {queued} requests are already waiting (limit {limit}); retry later")]
    Overloaded { queued: usize, limit: usize },
    /// A new request would wait longer than the configured bound for a batch slot.
    #[error("the server is busy: a new request would wait about {:.1} s for a batch slot, over the limit of {} s (--max-queue-wait); retry later", expected.as_secs_f64(), limit.as_secs_f64())]
    QueueWait { expected: std::time::Duration, limit: std::time::Duration },
    /// A queued request waited longer than the configured bound for a batch slot (the
    /// estimate at submission was short: a burst, or no service time measured yet).
    #[error("the server is busy: the request waited {:.1} s for a batch slot, over the limit of {} s (--max-queue-wait); retry later", waited.as_secs_f64(), limit.as_secs_f64())]
    QueueExpired { waited: std::time::Duration, limit: std::time::Duration },
    #[error("this model is a reward model (it has a value head); use `ingot score`")]
    RewardModel,
    #[error("this model has no value head (value_head.safetensors), so it cannot score texts")]
    NoValueHead,
    #[error("this model has no chat template; choose a named one (one of: {})", ChatTemplate::names().join(", "))]
    NoTemplate,
    /// A LoRA adapter (`--lora NAME=DIR`) could not be read or does not fit the base model;
    /// `source` names the adapter's file and the setting or tensor at fault.
    #[error("LoRA adapter '{name}': {source}")]
    Adapter {
        name: String,
        #[source]
        source: ingot_core::weights::LoadError,
    },
    /// The engine thread or its kernel threads could not start.
    #[error("cannot start the engine: {0}")]
    Start(#[source] std::io::Error),
    #[error("the engine has stopped")]
    Stopped,
    /// A remote engine (`--remote URL`) failed the request: unreachable, an error status, or
    /// a stream that broke after its first token (so it could not be retried elsewhere).
    #[error("--remote {url}: {message}")]
    Remote { url: String, message: String },
}

impl EngineError {
    /// An invalid value of `field`; `message` should name the field and its limit.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }

    /// The request field at fault, when one is: LLaMA Factory's parameter names, and the
    /// request's own paths for messages and formats.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } | Self::Media { field, .. } => Some(field),
            Self::Template(_) => Some("messages"),
            Self::Constraint(ConstraintError::Invalid { field, .. }) => Some(field),
            Self::Constraint(ConstraintError::Tools(ToolError::Definition { .. })) => Some("tools"),
            Self::Constraint(ConstraintError::Tools(ToolError::Choice(_))) => Some("tool_choice"),
            _ => None,
        }
    }

    /// Whether the request itself is at fault (another request may well succeed), rather
    /// than the engine or the model it serves.
    pub fn is_request_error(&self) -> bool {
        match self {
            Self::Invalid { .. } | Self::Media { .. } | Self::Template(_) | Self::Tokenizer(_) => true,
            Self::Constraint(e) => !matches!(e, ConstraintError::Vocabulary(_)),
            Self::Forward(_)
            | Self::Overloaded { .. }
            | Self::QueueWait { .. }
            | Self::QueueExpired { .. }
            | Self::RewardModel
            | Self::NoValueHead
            | Self::NoTemplate
            | Self::Adapter { .. }
            | Self::Start(_)
            | Self::Stopped
            | Self::Remote { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_kinds() {
        let e = EngineError::invalid("top_p", "top_p must be in (0, 1], got 2");
        assert_eq!((e.field(), e.is_request_error()), (Some("top_p"), true));
        assert_eq!(e.to_string(), "top_p must be in (0, 1], got 2");
        let e = EngineError::Constraint(ConstraintError::Invalid { field: "response_format.json_schema", message: "x".into() });
        assert_eq!(e.field(), Some("response_format.json_schema"));
        assert!(!EngineError::Stopped.is_request_error());
        assert!(!EngineError::Overloaded { queued: 1, limit: 1 }.is_request_error());
        assert_eq!(EngineError::Stopped.field(), None);
    }
}
