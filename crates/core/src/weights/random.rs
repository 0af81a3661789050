//! Generated weights for an encoder built to measure compute rather than to answer: the
//! benchmark of media encoding scales a tiny checkpoint's vision tower up to a real model's
//! size, and an encoder's cost depends on its shapes, not on its weights' values.
//!
//! Invariants: the values are a pure function of the seed and the tensor's name (the same
//! encoder every time); matrices are uniform in ±1/√k so activations keep their scale through
//! the layers; vectors named `*.weight` (the encoders' norm multipliers) are ones, other
//! vectors (biases) small.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{CheckedWeights, LoadError};
use crate::kernels::QMatrix;

/// Weights of any requested shape, drawn from a seeded generator.
#[derive(Debug, Clone, Copy)]
pub struct RandomWeights {
    pub seed: u64,
}

impl RandomWeights {
    /// A generator for `name` alone, so a tensor does not depend on the order of requests.
    fn rng(&self, name: &str) -> StdRng {
        // FNV-1a: stable across builds, unlike the standard hasher.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        StdRng::seed_from_u64(self.seed ^ hash)
    }
}

impl CheckedWeights for RandomWeights {
    fn origin(&self) -> &Path {
        Path::new("<random weights>")
    }

    fn checked_matrix(&self, name: &str, n: usize, k: usize) -> Result<QMatrix, LoadError> {
        let mut rng = self.rng(name);
        let bound = 1.0 / (k.max(1) as f32).sqrt();
        let values: Vec<f32> = (0..n * k).map(|_| rng.random_range(-bound..=bound)).collect();
        QMatrix::from_f32(n, k, &values).map_err(|e| LoadError::from_kernel(self.origin(), name, e))
    }

    fn checked_vector(&self, name: &str, len: usize) -> Result<Vec<f32>, LoadError> {
        if name.ends_with(".weight") {
            return Ok(vec![1.0; len]);
        }
        let mut rng = self.rng(name);
        Ok((0..len).map(|_| rng.random_range(-0.02..=0.02)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_depend_on_the_seed_and_name_only() {
        let r = RandomWeights { seed: 7 };
        let row = |w: &RandomWeights, name: &str| {
            let m = w.checked_matrix(name, 2, 8).expect("matrix");
            let mut out = vec![0f32; 8];
            m.dequantize_row(1, &mut out);
            out
        };
        assert_eq!(row(&r, "a.weight"), row(&r, "a.weight"));
        assert_ne!(row(&r, "a.weight"), row(&r, "b.weight"));
        assert_ne!(row(&r, "a.weight"), row(&RandomWeights { seed: 8 }, "a.weight"));
        assert!(row(&r, "a.weight").iter().all(|v| v.abs() <= 1.0 / 8f32.sqrt()));
        assert_eq!(r.checked_vector("norm1.weight", 3).expect("norm"), [1.0; 3]);
        assert!(r.checked_vector("norm1.bias", 3).expect("bias").iter().all(|v| v.abs() <= 0.02));
    }
}
