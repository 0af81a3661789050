//! The llama.cpp side of `ingot bench --compare-llama-cpp`: runs `scripts/bench_llama_cpp.py`
//! (embedded in the binary) with llama-cpp-python on the same file, threads and token ids, and
//! reads back its figures.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::{BenchArgs, Figures, Prompts, DECODE_TOKENS};

const LLAMA_CPP_SCRIPT: &str = include_str!("../../../../scripts/bench_llama_cpp.py");

fn llama_cpp_python(args: &BenchArgs) -> PathBuf {
    if let Some(p) = &args.llama_cpp_python {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("INGOT_LLAMA_CPP_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(".bench-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// What the llama.cpp script reports: the single-stream figures, and the batched figure when
/// asked for one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LlamaCpp {
    #[serde(flatten)]
    pub figures: Figures,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<LlamaCppConcurrent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LlamaCppConcurrent {
    pub streams: usize,
    pub aggregate_decode_tok_s: f64,
}

pub(super) fn run(args: &BenchArgs, model: &Path, threads: usize, p: &Prompts) -> anyhow::Result<LlamaCpp> {
    let dir = std::env::temp_dir().join(format!("ingot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("bench_llama_cpp.py");
    let request = dir.join("request.json");
    std::fs::write(&script, LLAMA_CPP_SCRIPT)?;
    let body = serde_json::json!({
        "model": model, "threads": threads, "n_ctx": p.context(),
        "prefill_ids": p.prefill, "decode_prompt_ids": p.decode, "decode_tokens": DECODE_TOKENS,
        "ttft_ids": p.ttft, "repeats": args.repeats.max(1), "concurrency": args.concurrency.unwrap_or(0),
    });
    std::fs::write(&request, serde_json::to_vec(&body)?)?;
    let python = llama_cpp_python(args);
    let out = Command::new(&python)
        .arg(&script)
        .arg(&request)
        .output()
        .with_context(|| format!("running {} (hint: scripts/install-llama-cpp.sh)", python.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        bail!(
            "llama.cpp benchmark failed: {} (hint: scripts/install-llama-cpp.sh installs llama-cpp-python)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the llama.cpp benchmark's output")
}
