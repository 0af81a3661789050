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
