//! PLACEHOLDER API (to be implemented): sampling.

#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        unimplemented!()
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        unimplemented!()
    }
    pub fn validate(&self) -> Result<(), SamplingError> {
        unimplemented!()
    }
}

pub struct Sampler {}

impl Sampler {
    pub fn new(_params: SamplingParams) -> Self {
        unimplemented!()
    }
    pub fn sample(&mut self, _logits: &mut [f32], _prompt: &[u32], _generated: &[u32]) -> u32 {
        unimplemented!()
    }
}
