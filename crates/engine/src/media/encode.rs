//! The one place the engine runs media encoders: an item's preprocessed input goes to the
//! encoder of its modality (the vision tower for images and videos, the audio encoder for
//! audio) and comes back as the rows that replace its placeholder tokens' embeddings.

use std::borrow::Cow;

use ingot_core::media::{AudioFeatures, Processed};
use ingot_core::model::audio::AudioEncoder;
use ingot_core::model::encode_job::EncodeJob;
use ingot_core::model::vision::VisionModel;
use ingot_core::model::ForwardError;

/// One item's encoder input, as its preprocessor made it.
#[derive(Debug)]
pub(crate) enum EncoderInput {
    /// Patches of an image or a video, for the vision tower.
    Vision(Processed),
    /// Log-mel features of an audio clip, for the audio encoder.
    Audio(AudioFeatures),
}

/// The encoders a model has.
#[derive(Clone, Copy, Default)]
pub(crate) struct Encoders<'m> {
    pub vision: Option<&'m VisionModel>,
    pub audio: Option<&'m AudioEncoder>,
}

/// Why an item could not be encoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EncodeError {
    /// The request was laid out for an encoder this model lacks (the validator refuses such
    /// requests first; this keeps the engine thread from trusting it).
    #[error("this model has no {0} encoder")]
    Missing(&'static str),
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

impl<'m> Encoders<'m> {
    /// The encoding of `input` by its modality's encoder, to advance a bounded slice at a time
    /// (the scheduler interleaves slices with decode steps); its output is the rows
    /// (`tokens × hidden`, row-major). The input is checked here, so slices cannot fail.
    pub(crate) fn start(&self, input: &EncoderInput) -> Result<Box<dyn EncodeJob<'m> + 'm>, EncodeError> {
        // A job owns a copy of its input: the request it comes from is shared with the other
        // samples and the caller.
        match input {
            EncoderInput::Vision(p) => {
                let vision = self.vision.ok_or(EncodeError::Missing("vision"))?;
                Ok(Box::new(vision.start(Cow::Owned(p.pixel_values.clone()), p.grid_thw)?))
            }
            EncoderInput::Audio(f) => {
                let audio = self.audio.ok_or(EncodeError::Missing("audio"))?;
                Ok(Box::new(audio.start(Cow::Owned(f.features.clone()), f.frames, f.valid_frames)?))
            }
        }
    }
}
