//! `ingot bench`: prefill and decode speed, time to first token and peak memory, optionally
//! beside llama.cpp (llama-cpp-python) on the same file, threads and token ids.
//!
//! Method (the llama.cpp side, `scripts/bench_llama_cpp.py`, does the same): one warm-up
//! request; prefill = a 512-token prompt in one pass; decode = 128 greedy tokens after a short
//! prompt, end-of-generation ignored; TTFT = a ~200-token chat prompt until its first token;
//! each the best of `--repeats`. Peak RSS is the process's high-water mark. With
//! `--concurrency N`, N decode streams start together; aggregate decode tok/s is all their
//! tokens over the wall time (prefills included). With LoRA adapters (`--lora NAME=DIR`), the
//! concurrent streams are spread round-robin over them (stream `i` runs with adapter
//! `i mod adapters`), so the figure compares with the same run without `--lora`. With
//! `--media-model` as well, the longest gap between two tokens of running streams while a large
//! image is encoded ([`gap`]). The figures above run with lookup decoding off; with `--lookup N`
//! (on by default) a last line gives decode speed on a copying prompt with it off and on, and
//! its acceptance rate ([`lookup`]).

mod gap;
mod lookup;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;
use ingot_core::template::Message;
use ingot_engine::{EngineConfig, EngineHandle, Event, GenParams, Prompt, PromptRequest, Usage};
use serde::{Deserialize, Serialize};

use crate::model_args::ModelArgs;

const LLAMA_CPP_SCRIPT: &str = include_str!("../../../scripts/bench_llama_cpp.py");
const PREFILL_TOKENS: usize = 512;
const DECODE_TOKENS: usize = 128;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also run llama.cpp (llama-cpp-python) on the same model and threads.
    #[arg(long)]
    pub compare_llama_cpp: bool,
    /// Python with llama-cpp-python installed (default: $INGOT_LLAMA_CPP_PYTHON, else
    /// ./.bench-venv/bin/python from scripts/install-llama-cpp.sh, else python3).
    #[arg(long)]
    pub llama_cpp_python: Option<PathBuf>,
    /// Runs per measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Also run N concurrent decode streams and report aggregate decode tok/s and TTFT
    /// percentiles.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// With --concurrency N: on this Qwen2-VL / Qwen2.5-VL checkpoint directory, also report
    /// the longest gap between two tokens of N running text streams while an image request
    /// admitted mid-run is encoded.
    #[arg(long, requires = "concurrency")]
    pub media_model: Option<PathBuf>,
    /// Replace the media model's vision tower by one of Qwen2-VL-2B's shape with random
    /// weights (its cost is a real 2B tower's; its answer is meaningless).
    #[arg(long, requires = "media_model")]
    pub random_vision_tower: bool,
    /// Side in pixels of the square picture the media request sends.
    #[arg(long, default_value_t = 448, requires = "media_model")]
    pub media_image_side: u32,
    /// Media encoder work between two decode steps, in millions of multiply-adds (0: each
    /// image whole at once, running streams waiting for it). Default: the engine's (1000).
    #[arg(long, requires = "media_model")]
    pub encode_slice_mmacs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Figures {
    prefill_tok_s: f64,
    decode_tok_s: f64,
    ttft_s: f64,
    peak_rss_mb: f64,
}

/// N streams of `DECODE_TOKENS` greedy tokens each, started together.
#[derive(Debug, Clone, Serialize)]
struct Concurrent {
    streams: usize,
    /// LoRA adapters the streams were spread over (0: all on the base model).
    adapters: usize,
    aggregate_decode_tok_s: f64,
    ttft_p50_s: f64,
    ttft_p99_s: f64,
}

#[derive(Serialize)]
struct Ratio {
    prefill: f64,
    decode: f64,
    /// Aggregate decode of N concurrent streams against llama.cpp's N-sequence batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrent_decode: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    threads: usize,
    #[serde(flatten)]
    ingot: Figures,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrent: Option<Concurrent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_gap: Option<gap::Gap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lookup: Option<lookup::LookupFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    llama_cpp: Option<LlamaCpp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<Ratio>,
}

/// Deterministic English-like filler text for prompts.
fn filler(words: usize) -> String {
    const TEXT: &str = "The river bends around the old mill where children once gathered to watch the water \
        wheel turn. In autumn the leaves drift downstream, red and gold, past the stone bridge and the \
        orchard, while farmers carry baskets of apples to the market square and talk about the weather, \
        the harvest, the price of grain and the stories their grandparents told them long ago.";
    TEXT.split_whitespace().cycle().take(words).collect::<Vec<_>>().join(" ")
}

/// One greedy request of `max_new_tokens`, with LoRA adapter `adapter` (`None`: the base).
fn run_request(engine: &EngineHandle, prompt_ids: &[u32], max_new_tokens: usize, adapter: Option<&str>) -> anyhow::Result<Usage> {
    let adapter = adapter.map(str::to_string);
    let params = GenParams { max_new_tokens: Some(max_new_tokens), ignore_eos: Some(true), adapter, ..GenParams::greedy() };
    let valid = engine.validate_prompt(PromptRequest { prompt: Prompt::Ids(prompt_ids.to_vec()), params })?;
    let stream = engine.stream(valid)?.pop().context("the engine queued no sample")?;
    for event in stream.events.iter() {
        match event {
            Event::Text(_) | Event::Logprobs(_) => {}
            Event::Done(usage) => return Ok(usage),
            Event::Error(e) => return Err(e.into()),
        }
    }
    bail!("the engine stopped before finishing the benchmark request")
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Prompts {
    prefill: Vec<u32>,
    decode: Vec<u32>,
    ttft: Vec<u32>,
}

fn prompts(engine: &EngineHandle) -> anyhow::Result<Prompts> {
    let mut prefill = engine.tokenizer().encode_prompt(&filler(600))?;
    anyhow::ensure!(prefill.len() >= PREFILL_TOKENS, "the benchmark text is too short for this tokenizer");
    prefill.truncate(PREFILL_TOKENS);
    let decode = engine.tokenizer().encode_prompt(&filler(12))?;
    // A chat prompt when the model has a template; plain text otherwise.
    let user = Message { role: "user".into(), content: format!("Summarise this story: {}", filler(160)) };
    let ttft_text = match engine.template() {
        Some(t) => t.render(&[user], None, true)?,
        None => user.content,
    };
    Ok(Prompts { prefill, decode, ttft: engine.tokenizer().encode_prompt(&ttft_text)? })
}

fn measure(engine: &EngineHandle, p: &Prompts, repeats: usize) -> anyhow::Result<Figures> {
    run_request(engine, &p.decode, 4, None).context("warm-up")?;
    let best = |f: &dyn Fn() -> anyhow::Result<f64>| -> anyhow::Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..repeats.max(1) {
            best = best.min(f()?);
        }
        Ok(best)
    };
    let prefill_s = best(&|| Ok(run_request(engine, &p.prefill, 1, None)?.prefill_seconds))?;
    // Decode time runs from the first token to the last: DECODE_TOKENS - 1 forward passes.
    let decode_s = best(&|| Ok(run_request(engine, &p.decode, DECODE_TOKENS, None)?.decode_seconds))?;
    let ttft_s = best(&|| Ok(run_request(engine, &p.ttft, 1, None)?.time_to_first_token))?;
    Ok(Figures {
        prefill_tok_s: p.prefill.len() as f64 / prefill_s,
        decode_tok_s: (DECODE_TOKENS - 1) as f64 / decode_s,
        ttft_s,
        peak_rss_mb: peak_rss_mb(),
    })
}

fn measure_concurrent(engine: &EngineHandle, p: &Prompts, streams: usize) -> anyhow::Result<Concurrent> {
    let started = std::time::Instant::now();
    let usages = std::thread::scope(|s| {
        let adapters = engine.adapters();
        let adapter = |i: usize| (!adapters.is_empty()).then(|| adapters[i % adapters.len()].as_str());
        let jobs: Vec<_> =
            (0..streams).map(|i| s.spawn(move || run_request(engine, &p.decode, DECODE_TOKENS, adapter(i)))).collect();
        jobs.into_iter()
            .map(|j| j.join().map_err(|_| anyhow::anyhow!("a benchmark stream panicked"))?)
            .collect::<anyhow::Result<Vec<Usage>>>()
    })?;
    let wall = started.elapsed().as_secs_f64();
    let mut ttft: Vec<f64> = usages.iter().map(|u| u.time_to_first_token).collect();
    ttft.sort_by(f64::total_cmp);
    let pct = |q: f64| ttft[((ttft.len() - 1) as f64 * q).round() as usize];
    let tokens: usize = usages.iter().map(|u| u.completion_tokens).sum();
    let adapters = engine.adapters().len();
    Ok(Concurrent { streams, adapters, aggregate_decode_tok_s: tokens as f64 / wall, ttft_p50_s: pct(0.5), ttft_p99_s: pct(0.99) })
}

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
struct LlamaCpp {
    #[serde(flatten)]
    figures: Figures,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    concurrent: Option<LlamaCppConcurrent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LlamaCppConcurrent {
    streams: usize,
    aggregate_decode_tok_s: f64,
}

fn run_llama_cpp(args: &BenchArgs, model: &std::path::Path, threads: usize, p: &Prompts) -> anyhow::Result<LlamaCpp> {
    let dir = std::env::temp_dir().join(format!("ingot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("bench_llama_cpp.py");
    let request = dir.join("request.json");
    std::fs::write(&script, LLAMA_CPP_SCRIPT)?;
    let body = serde_json::json!({
        "model": model, "threads": threads, "n_ctx": 2048,
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

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let path = args.model.model_path()?;
    let threads = if args.model.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.model.threads
    };
    let model = ModelArgs { model: Some(path.clone()), threads, ..args.model.clone() };
    // Every repeat sends the same prompts: reusing their cached prefixes would time nothing.
    // Lookup decoding is off here (llama.cpp decodes plainly); its own line measures it.
    let engine = model.start_engine(EngineConfig { prefix_cache: false, lookup: 0, ..model.engine_config() })?;
    let p = prompts(&engine)?;
    let ingot = measure(&engine, &p, args.repeats)?;
    let concurrent = args.concurrency.map(|n| measure_concurrent(&engine, &p, n.max(1))).transpose()?;
    let lookup = lookup::measure(&engine, &model, args.repeats)?;
    drop(engine);
    let media_gap = match (&args.media_model, args.concurrency) {
        (Some(dir), Some(n)) => Some(gap::measure(&gap::GapArgs {
            media_model: dir,
            streams: n.max(1),
            threads,
            image_side: args.media_image_side,
            random_tower: args.random_vision_tower,
            encode_slice_macs: args.encode_slice_mmacs.map(|m| m.saturating_mul(1_000_000)),
        })?),
        _ => None,
    };
    let llama_cpp = if args.compare_llama_cpp { Some(run_llama_cpp(&args, &path, threads, &p)?) } else { None };
    let ratio = llama_cpp.as_ref().map(|l| Ratio {
        prefill: ingot.prefill_tok_s / l.figures.prefill_tok_s,
        decode: ingot.decode_tok_s / l.figures.decode_tok_s,
        concurrent_decode: concurrent
            .as_ref()
            .zip(l.concurrent.as_ref())
            .map(|(ours, theirs)| ours.aggregate_decode_tok_s / theirs.aggregate_decode_tok_s),
    });
    let report = Report { model: path.display().to_string(), threads, ingot, concurrent, media_gap, lookup, llama_cpp, ratio };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("model: {}  threads: {threads}", report.model);
    println!("{:<10} {:>12} {:>12} {:>10} {:>12}", "", "prefill t/s", "decode t/s", "ttft s", "peak RSS MB");
    let row = |name: &str, f: &Figures| {
        println!("{name:<10} {:>12.1} {:>12.1} {:>10.3} {:>12.0}", f.prefill_tok_s, f.decode_tok_s, f.ttft_s, f.peak_rss_mb)
    };
    row("ingot", &report.ingot);
    if let Some(c) = &report.concurrent {
        println!(
            "ingot x{:<3}  aggregate decode {:.1} tok/s, TTFT p50 {:.3} s, p99 {:.3} s{}",
            c.streams,
            c.aggregate_decode_tok_s,
            c.ttft_p50_s,
            c.ttft_p99_s,
            if c.adapters > 0 { format!(" (over {} LoRA adapters)", c.adapters) } else { String::new() }
        );
    }
    if let Some(l) = &report.lookup {
        println!("{}", lookup::line(l));
    }
    if let Some(g) = &report.media_gap {
        println!(
            "ingot x{:<3}  inter-token gap while a {}x{} image is encoded: max {:.3} s, p99 {:.3} s, median {:.3} s; image TTFT {:.2} s ({}{}, slice {} MMAC)",
            g.streams,
            g.image_side,
            g.image_side,
            g.max_gap_s,
            g.p99_gap_s,
            g.median_gap_s,
            g.image_ttft_s,
            g.media_model,
            if g.random_vision_tower { ", random 2B-shaped tower" } else { "" },
            g.encode_slice_macs / 1_000_000
        );
    }
    if let (Some(l), Some(r)) = (&report.llama_cpp, &report.ratio) {
        row("llama.cpp", &l.figures);
        if let Some(c) = &l.concurrent {
            println!("llama.cpp x{:<3} aggregate decode {:.1} tok/s (one batch of {} sequences)", c.streams, c.aggregate_decode_tok_s, c.streams);
        }
        println!("ratio ingot/llama.cpp: prefill {:.2}x, decode {:.2}x", r.prefill, r.decode);
        if let Some(c) = r.concurrent_decode {
            println!("ratio ingot/llama.cpp, concurrent decode: {c:.2}x");
        }
    }
    Ok(())
}
