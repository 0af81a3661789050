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
//! image is encoded ([`gap`]). `--prompt-file` benches a real prompt instead of the filler.
//! The figures above run with lookup decoding off; with `--lookup N` (on by default) a last
//! line gives decode speed on a copying prompt with it off and on, and its acceptance rate
//! ([`lookup`]).
//!
//! Time to first token is split into its parts: rendering the chat template and tokenizing
//! (measured here, before the engine sees ids), the prompt's forward pass, and the rest (queue,
//! the first sampling step, delivering the event). The llama.cpp figure starts from token ids,
//! so the ratio compares the engine part of ours with it.

mod gap;
mod llama_cpp;
mod lookup;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use ingot_core::kernels::Backend;
use ingot_core::template::Message;
use ingot_engine::{EngineConfig, EngineHandle, Event, GenParams, Prompt, PromptRequest, Usage};
use serde::{Deserialize, Serialize};

use crate::model_args::ModelArgs;

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
    /// Bench this prompt (a text file) instead of the built-in filler: its tokens are the
    /// prefill prompt (all of them, not 512) and its text the TTFT chat message.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
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
    /// Send a video of this many frames (copies of the picture) instead of the picture.
    #[arg(long, default_value_t = 0, requires = "media_model")]
    pub media_video_frames: usize,
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

/// The kernel path this run took and the CPU it ran on (figures differ a lot between an
/// AVX-512 VNNI Xeon and an AVX2-only EPYC, so a figure without them means little).
#[derive(Serialize)]
struct Kernels {
    /// `scalar`, `avx2` or `avx512-vnni` (see `INGOT_KERNELS`).
    path: &'static str,
    cpu: String,
    /// The x86 features the kernels test for, as this CPU reports them.
    features: Vec<&'static str>,
}

impl Kernels {
    fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        Self { path: Backend::detected().name(), cpu, features: cpu_features() }
    }
}

fn cpu_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let all = [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("f16c", is_x86_feature_detected!("f16c")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512bw", is_x86_feature_detected!("avx512bw")),
            ("avx512vl", is_x86_feature_detected!("avx512vl")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
        ];
        all.into_iter().filter(|&(_, on)| on).map(|(name, _)| name).collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

/// Where the time to first token goes (the best TTFT run's parts).
#[derive(Serialize)]
struct TtftParts {
    /// Rendering the chat template and tokenizing the ~200-token conversation.
    prep_s: f64,
    /// The prompt's forward pass.
    prefill_s: f64,
    /// Queue, first sampling step and event delivery: engine TTFT minus the forward pass.
    rest_s: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    threads: usize,
    kernels: Kernels,
    /// Bytes one token takes in a sequence's KV cache (all layers, keys and values).
    kv_bytes_per_token: usize,
    #[serde(flatten)]
    ingot: Figures,
    ttft_parts: TtftParts,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrent: Option<Concurrent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_gap: Option<gap::Gap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lookup: Option<lookup::LookupFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    llama_cpp: Option<llama_cpp::LlamaCpp>,
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
    /// Best time to render and tokenize the TTFT conversation.
    ttft_prep_s: f64,
}

impl Prompts {
    /// Context a run needs (for llama.cpp's `n_ctx`): at least 2048, as before prompt files.
    fn context(&self) -> usize {
        let longest = self.prefill.len().max(self.ttft.len()).max(self.decode.len() + DECODE_TOKENS);
        longest.next_multiple_of(256).max(2048)
    }
}

/// The three prompts; `file`'s text replaces the filler of the prefill and TTFT prompts.
fn prompts(engine: &EngineHandle, file: Option<&std::path::Path>, repeats: usize) -> anyhow::Result<Prompts> {
    let text = file
        .map(|f| std::fs::read_to_string(f).with_context(|| format!("reading --prompt-file {}", f.display())))
        .transpose()?;
    if text.as_deref().is_some_and(|t| t.trim().is_empty()) {
        bail!("--prompt-file is empty");
    }
    let prefill = match &text {
        Some(t) => engine.tokenizer().encode_prompt(t)?,
        None => {
            let mut ids = engine.tokenizer().encode_prompt(&filler(600))?;
            anyhow::ensure!(ids.len() >= PREFILL_TOKENS, "the benchmark text is too short for this tokenizer");
            ids.truncate(PREFILL_TOKENS);
            ids
        }
    };
    let decode = engine.tokenizer().encode_prompt(&filler(12))?;
    let content = text.unwrap_or_else(|| format!("Summarise this story: {}", filler(160)));
    // A chat prompt when the model has a template; plain text otherwise. Timed: it is part of
    // every chat request's time to first token.
    let (mut ttft, mut ttft_prep_s) = (Vec::new(), f64::INFINITY);
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        let user = Message { role: "user".into(), content: content.clone() };
        let rendered = match engine.template() {
            Some(t) => t.render(&[user], None, true)?,
            None => user.content,
        };
        ttft = engine.tokenizer().encode_prompt(&rendered)?;
        ttft_prep_s = ttft_prep_s.min(started.elapsed().as_secs_f64());
    }
    let max = engine.context_length();
    for (what, ids) in [("prefill", &prefill), ("TTFT", &ttft)] {
        if ids.len() + 1 > max {
            bail!("the {what} prompt has {} tokens; the model's context is {max}", ids.len());
        }
    }
    Ok(Prompts { prefill, decode, ttft, ttft_prep_s })
}

fn measure(engine: &EngineHandle, p: &Prompts, repeats: usize) -> anyhow::Result<(Figures, TtftParts)> {
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
    let mut ttft: Option<Usage> = None;
    for _ in 0..repeats.max(1) {
        let u = run_request(engine, &p.ttft, 1, None)?;
        if ttft.as_ref().is_none_or(|b| u.time_to_first_token < b.time_to_first_token) {
            ttft = Some(u);
        }
    }
    let ttft = ttft.context("no TTFT run")?;
    let figures = Figures {
        prefill_tok_s: p.prefill.len() as f64 / prefill_s,
        decode_tok_s: (DECODE_TOKENS - 1) as f64 / decode_s,
        ttft_s: ttft.time_to_first_token,
        peak_rss_mb: peak_rss_mb(),
    };
    let parts = TtftParts {
        prep_s: p.ttft_prep_s,
        prefill_s: ttft.prefill_seconds,
        rest_s: (ttft.time_to_first_token - ttft.prefill_seconds).max(0.0),
    };
    Ok((figures, parts))
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
    let p = prompts(&engine, args.prompt_file.as_deref(), args.repeats)?;
    let kv_bytes_per_token = ingot_core::kv_cache::SeqCache::bytes_per_position(engine.model_config());
    let (ingot, ttft_parts) = measure(&engine, &p, args.repeats)?;
    let concurrent = args.concurrency.map(|n| measure_concurrent(&engine, &p, n.max(1))).transpose()?;
    let lookup = lookup::measure(&engine, &model, args.repeats)?;
    drop(engine);
    let media_gap = match (&args.media_model, args.concurrency) {
        (Some(dir), Some(n)) => Some(gap::measure(&gap::GapArgs {
            media_model: dir,
            streams: n.max(1),
            threads,
            image_side: args.media_image_side,
            video_frames: args.media_video_frames,
            random_tower: args.random_vision_tower,
            encode_slice_macs: args.encode_slice_mmacs.map(|m| m.saturating_mul(1_000_000)),
        })?),
        _ => None,
    };
    let llama_cpp = if args.compare_llama_cpp { Some(llama_cpp::run(&args, &path, threads, &p)?) } else { None };
    let ratio = llama_cpp.as_ref().map(|l| Ratio {
        prefill: ingot.prefill_tok_s / l.figures.prefill_tok_s,
        decode: ingot.decode_tok_s / l.figures.decode_tok_s,
        concurrent_decode: concurrent
            .as_ref()
            .zip(l.concurrent.as_ref())
            .map(|(ours, theirs)| ours.aggregate_decode_tok_s / theirs.aggregate_decode_tok_s),
    });
    let kernels = Kernels::detect();
    let report =
        Report { model: path.display().to_string(), threads, kernels, kv_bytes_per_token, ingot, ttft_parts, concurrent, media_gap, lookup, llama_cpp, ratio };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("model: {}  threads: {threads}", report.model);
    let k = &report.kernels;
    println!("kernels: {} (cpu: {}; features: {})", k.path, k.cpu, k.features.join(" "));
    println!("KV cache: {:?}, {} bytes per token", model.cache_type, report.kv_bytes_per_token);
    println!("{:<10} {:>12} {:>12} {:>10} {:>12}", "", "prefill t/s", "decode t/s", "ttft s", "peak RSS MB");
    let row = |name: &str, f: &Figures| {
        println!("{name:<10} {:>12.1} {:>12.1} {:>10.3} {:>12.0}", f.prefill_tok_s, f.decode_tok_s, f.ttft_s, f.peak_rss_mb)
    };
    row("ingot", &report.ingot);
    let t = &report.ttft_parts;
    println!(
        "ingot TTFT parts: template+tokenize {:.4} s, prefill {:.3} s, queue+first sample {:.4} s ({} prompt tokens)",
        t.prep_s,
        t.prefill_s,
        t.rest_s,
        p.ttft.len()
    );
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
            "ingot x{:<3}  inter-token gap while {} is encoded: max {:.3} s, p99 {:.3} s, median {:.3} s; its TTFT {:.2} s ({}{}, slice {} MMAC)",
            g.streams,
            match g.video_frames {
                0 => format!("a {}x{} image", g.image_side, g.image_side),
                n => format!("a {n}-frame {}x{} video", g.image_side, g.image_side),
            },
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
