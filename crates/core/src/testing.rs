//! Locations of test inputs, shared by the unit and integration tests of every crate.
//! Not part of the engine's API.

use std::path::PathBuf;

/// The shared reference fixtures: `$INGOT_FIXTURES_DIR`, else `../shared/fixtures` beside the
/// repository, else the workplace's `/work/shared/fixtures` (for clones made elsewhere, as CI
/// does).
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("INGOT_FIXTURES_DIR") {
        return dir.into();
    }
    let beside = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures"));
    let workplace = PathBuf::from("/work/shared/fixtures");
    if !beside.exists() && workplace.exists() {
        return workplace;
    }
    beside
}

/// A fetched real model; panics (failing the test) with the fix when it is missing.
pub fn model_path(file: &str) -> PathBuf {
    let path = crate::load::models_dir().join(file);
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
