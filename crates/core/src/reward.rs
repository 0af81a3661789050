//! Reward models in LLaMA Factory's layout: a causal LM checkpoint directory plus
//! `value_head.safetensors`, the linear "value head" (`v_head.summary`) that maps a hidden
//! state to one scalar.
//!
//! A sequence's score is the value head applied to the hidden state **after** the final norm at
//! its last token (what transformers' `last_hidden_state` and LLaMA Factory's
//! `AutoModelForCausalLMWithValueHead` use); the model produces that state with
//! [`crate::model::Logits::Hidden`].
//!
//! Invariant: a loaded [`ValueHead`] has exactly `hidden_size` weights, so [`ValueHead::score`]
//! never sees a length mismatch from a well-formed forward pass.

use std::path::Path;

use crate::weights::safetensors::SafetensorsFile;
use crate::weights::LoadError;

/// The file whose presence in a checkpoint directory makes it a reward model.
pub const VALUE_HEAD_FILE: &str = "value_head.safetensors";
const WEIGHT: &str = "v_head.summary.weight";
const BIAS: &str = "v_head.summary.bias";

/// `score = weight · h + bias`.
#[derive(Debug, Clone)]
pub struct ValueHead {
    weight: Vec<f32>,
    bias: f32,
}

impl ValueHead {
    /// Reads `dir/value_head.safetensors` if it exists (`None` means a plain causal LM),
    /// checking the weight is `[1, hidden_size]` and the bias `[1]`.
    pub fn load_from_dir(dir: &Path, hidden_size: usize) -> Result<Option<Self>, LoadError> {
        let path = dir.join(VALUE_HEAD_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let file = SafetensorsFile::open(path.clone())?;
        let (w_shape, weight) = file.f32_tensor(WEIGHT)?;
        if w_shape != [1, hidden_size] {
            return Err(LoadError::bad_tensor(&path, WEIGHT, format!("shape {w_shape:?}, expected [1, {hidden_size}]")));
        }
        let (b_shape, bias) = file.f32_tensor(BIAS)?;
        let bias = match (&b_shape[..], &bias[..]) {
            ([1], &[b]) => b,
            _ => return Err(LoadError::bad_tensor(&path, BIAS, format!("shape {b_shape:?}, expected [1]"))),
        };
        Ok(Some(Self { weight, bias }))
    }

    /// The score of one final-normed hidden state (`[hidden_size]`).
    pub fn score(&self, hidden: &[f32]) -> f32 {
        // f64 accumulation: the head is tiny and this keeps the score independent of summation order.
        let dot: f64 = self.weight.iter().zip(hidden).map(|(&w, &h)| f64::from(w) * f64::from(h)).sum();
        (dot + f64::from(self.bias)) as f32
    }
}
