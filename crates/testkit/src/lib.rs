//! Locations of test inputs, shared by the unit and integration tests of every ingot crate:
//! the reference fixtures, the fetched real models, per-test scratch directories, the
//! fixtures' id arrays, and LoRA adapters made in-test. A dev-dependency only; nothing here is part of ingot's API.
//!
//! Nothing names a machine path: the fixtures are `$INGOT_FIXTURES_DIR`, else
//! `../shared/fixtures` beside the repository (`.ci/run` sets the variable for clones that
//! have none beside them), and the models directory is the caller's
//! (`ingot_core::load::models_dir`; this crate cannot call it, being ingot-core's own
//! dev-dependency).

use std::path::{Path, PathBuf};

/// The shared reference fixtures: `$INGOT_FIXTURES_DIR` when set and not empty, else
/// `../shared/fixtures` beside the repository.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("INGOT_FIXTURES_DIR") {
        Some(dir) if !dir.is_empty() => dir.into(),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    }
}

/// `file` in `models_dir` (`ingot_core::load::models_dir()`): a fetched real model. Panics
/// (failing the test) with the fix when it is missing.
pub fn model_path(models_dir: &Path, file: &str) -> PathBuf {
    let path = models_dir.join(file);
    assert!(path.exists(), "{} is missing: run scripts/fetch-models.sh (or set INGOT_MODELS_DIR)", path.display());
    path
}

/// An empty directory for one test's files, unique to this process and `name`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ingot-test-{}-{name}", std::process::id()));
    // A leftover from an earlier run of the same pid is stale.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// A JSON array of token ids, as the fixtures store them.
pub fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("id array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// Writes into `to` a PEFT LoRA adapter with the config and tensor names and shapes of the
/// adapter in `from` (`adapter_config.json`, `adapter_model.safetensors`) but new random A
/// and B, uniform in ±0.2, from `seed`: a second adapter for the same base model.
pub fn write_random_lora(from: &Path, to: &Path, seed: u64) {
    const WEIGHTS: &str = "adapter_model.safetensors";
    let original = std::fs::read(from.join(WEIGHTS)).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    let st = safetensors::SafeTensors::deserialize(&original).expect("adapter safetensors");
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 0.4
    };
    let mut names = st.names();
    // Sorted, so a seed gives the same adapter whatever the header order.
    names.sort();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = names
        .into_iter()
        .map(|name| {
            let shape = st.tensor(name).expect("named tensor").shape().to_vec();
            let bytes = (0..shape.iter().product::<usize>()).flat_map(|_| next().to_le_bytes()).collect();
            (name.to_string(), shape, bytes)
        })
        .collect();
    let views = data.iter().map(|(name, shape, bytes)| {
        (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).expect("f32 view"))
    });
    safetensors::serialize_to_file(views, None, &to.join(WEIGHTS)).expect("write adapter weights");
    std::fs::copy(from.join("adapter_config.json"), to.join("adapter_config.json")).expect("copy adapter config");
}
