//! PLACEHOLDER API (to be implemented): stop strings over streamed text.

pub struct StopMatcher {}

/// What to do with a piece of streamed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopStep {
    pub emit: String,
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(_stops: Vec<String>) -> Self {
        unimplemented!()
    }
    pub fn push(&mut self, _delta: &str) -> StopStep {
        unimplemented!()
    }
    pub fn finish(&mut self) -> String {
        unimplemented!()
    }
}
