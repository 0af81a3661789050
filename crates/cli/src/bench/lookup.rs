//! `ingot bench`'s lookup line: greedy decode speed on a prompt whose answer copies it (a chat
//! asking to repeat a passage), without and with lookup decoding (`--lookup N`), and the
//! share of draft tokens accepted. The main figures run with lookup off, so they compare with
//! llama.cpp's plain decoding; this line shows what lookup adds where outputs copy.

use anyhow::Context;
use ingot_core::template::Message;
use ingot_engine::{EngineConfig, EngineHandle};
use serde::Serialize;

use super::{filler, run_request, DECODE_TOKENS};
use crate::model_args::ModelArgs;

#[derive(Debug, Clone, Serialize)]
pub(super) struct LookupFigures {
    /// `--lookup`: most draft tokens per step.
    pub max_draft: usize,
    pub plain_decode_tok_s: f64,
    pub lookup_decode_tok_s: f64,
    /// Draft tokens verified and accepted over the lookup runs.
    pub drafted: usize,
    pub accepted: usize,
    pub acceptance: f64,
}

/// The copy prompt's ids: a chat when the model has a template, plain text otherwise.
fn copy_prompt(engine: &EngineHandle) -> anyhow::Result<Vec<u32>> {
    let user = Message { role: "user".into(), content: format!("Repeat this text exactly:\n\n{}", filler(110)) };
    let text = match engine.template() {
        Some(t) => t.render(&[user], None, true)?,
        None => user.content,
    };
    Ok(engine.tokenizer().encode_prompt(&text)?)
}

/// The best decode tok/s of `repeats` greedy runs of `DECODE_TOKENS` tokens on `ids`.
fn decode_tok_s(engine: &EngineHandle, ids: &[u32], repeats: usize) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        best = best.min(run_request(engine, ids, DECODE_TOKENS, None)?.decode_seconds);
    }
    // From the first token to the last: DECODE_TOKENS - 1 tokens decoded.
    Ok((DECODE_TOKENS - 1) as f64 / best)
}

/// The copy prompt on `plain` (an engine with lookup off), then on an engine of `model` with
/// its `--lookup`. `None` when lookup is off.
pub(super) fn measure(plain: &EngineHandle, model: &ModelArgs, repeats: usize) -> anyhow::Result<Option<LookupFigures>> {
    if model.lookup == 0 {
        return Ok(None);
    }
    let ids = copy_prompt(plain)?;
    let plain_decode_tok_s = decode_tok_s(plain, &ids, repeats).context("copy prompt, lookup off")?;
    let engine = model.start_engine(EngineConfig { prefix_cache: false, ..model.engine_config() })?;
    run_request(&engine, &ids, 4, None).context("warm-up")?;
    let before = engine.lookup_stats();
    let lookup_decode_tok_s = decode_tok_s(&engine, &ids, repeats).context("copy prompt, lookup on")?;
    let stats = engine.lookup_stats().since(before);
    Ok(Some(LookupFigures {
        max_draft: model.lookup,
        plain_decode_tok_s,
        lookup_decode_tok_s,
        drafted: stats.drafted,
        accepted: stats.accepted,
        acceptance: stats.acceptance(),
    }))
}

/// The line the table prints.
pub(super) fn line(f: &LookupFigures) -> String {
    format!(
        "lookup {}:  copy-prompt decode {:.1} tok/s against {:.1} without ({:.2}x); {} of {} draft tokens accepted ({:.0}%)",
        f.max_draft,
        f.lookup_decode_tok_s,
        f.plain_decode_tok_s,
        f.lookup_decode_tok_s / f.plain_decode_tok_s,
        f.accepted,
        f.drafted,
        f.acceptance * 100.0
    )
}
