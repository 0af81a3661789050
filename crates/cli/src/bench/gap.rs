//! `ingot bench --concurrency N --media-model DIR`: how long running text streams wait while a
//! large image is encoded.
//!
//! Method: N text streams decode on the media model's engine, each restarted as soon as it
//! ends, so N streams are always running; once every stream has its first tokens, one image
//! request (a synthetic `--media-image-side`² picture, pixel limits raised to keep its size) is
//! admitted, and the streams keep running until it has its first token. The figure is the
//! gap between consecutive tokens of one stream (a stream's first token is not a gap): the
//! longest and the 99th percentile over all streams, and the image request's time to first
//! token (its encoding plus prefill, what slicing costs it).
//!
//! `--random-vision-tower` replaces the checkpoint's vision tower by one of Qwen2-VL-2B's
//! shape (32 blocks of width 1280, 16 heads, MLP 5120) with random weights: the tiny test
//! checkpoints' towers cost nothing, and a tower's cost depends on its shapes, not its
//! weights' values. The answer's text is then meaningless; its timing is the real one.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use ingot_core::model::vision::VisionModel;
use ingot_core::weights::random::RandomWeights;
use ingot_core::media::Video;
use ingot_engine::{ChatRequest, EngineConfig, EngineHandle, Event, GenParams, Image, Media, MediaLimits, Prompt, PromptRequest};
use serde::Serialize;

/// Tokens per text stream before it restarts (the tiny checkpoints have a 512-token context).
const STREAM_TOKENS: usize = 128;

/// What the measurement needs from the bench's arguments.
pub(super) struct GapArgs<'a> {
    pub media_model: &'a Path,
    pub streams: usize,
    pub threads: usize,
    pub image_side: u32,
    /// Send a video of this many copies of the picture instead of the picture (0: the picture).
    pub video_frames: usize,
    pub random_tower: bool,
    /// `None`: the engine's default slice.
    pub encode_slice_macs: Option<u64>,
}

/// The inter-token gap of running streams while an image is encoded.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Gap {
    pub media_model: String,
    pub streams: usize,
    pub image_side: u32,
    /// Frames of the media request's video (0: it sent one picture).
    pub video_frames: usize,
    pub random_vision_tower: bool,
    pub encode_slice_macs: u64,
    pub max_gap_s: f64,
    pub p99_gap_s: f64,
    pub median_gap_s: f64,
    /// The image request's time to first token.
    pub image_ttft_s: f64,
}

/// Qwen2-VL-2B's vision tower shape on `cfg`'s patches, merge and output width.
fn scaled_tower(encoder: &VisionModel) -> anyhow::Result<VisionModel> {
    let mut cfg = encoder.config().clone();
    (cfg.depth, cfg.embed_dim, cfg.num_heads, cfg.intermediate_size) = (32, 1280, 16, 5120);
    Ok(VisionModel::load(&RandomWeights { seed: 0 }, cfg)?)
}

/// A synthetic `side`×`side` picture as PNG bytes (a gradient: the content does not matter).
fn picture(side: u32) -> anyhow::Result<Vec<u8>> {
    let img = image::RgbImage::from_fn(side, side, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]));
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

pub(super) fn measure(a: &GapArgs<'_>) -> anyhow::Result<Gap> {
    let mut loaded = ingot_core::load::load(a.media_model)?;
    let vision = loaded.vision.as_mut().with_context(|| format!("{} has no vision tower (--media-model)", a.media_model.display()))?;
    if a.random_tower {
        vision.encoder = scaled_tower(&vision.encoder)?;
    }
    let pixels = (a.image_side as usize).pow(2);
    let mut cfg = EngineConfig {
        threads: a.threads,
        prefix_cache: false,
        max_seqs: a.streams + 1,
        // One token per step, so the gaps measure steps (lookup would emit several at once).
        lookup: 0,
        image_max_pixels: Some(pixels),
        video_max_pixels: Some(pixels),
        ..EngineConfig::default()
    };
    if let Some(macs) = a.encode_slice_macs {
        cfg.encode_slice_macs = macs;
    }
    let encode_slice_macs = cfg.encode_slice_macs;
    let engine = ingot_engine::start(loaded, cfg)?;
    let image = Image::decode(&picture(a.image_side)?, "the benchmark picture", &MediaLimits::default())?;
    let media = match a.video_frames {
        0 => Media::Image(image),
        n => Media::Video(Video::from_frames(vec![image; n], "the benchmark video", 2.0)?),
    };
    let prompt = engine.tokenizer().encode_prompt("The river bends around the old mill")?;

    let stop = AtomicBool::new(false);
    let gaps = Mutex::new(Vec::<f64>::new());
    let started = Mutex::new(0usize);
    let image_ttft = std::thread::scope(|s| -> anyhow::Result<f64> {
        let workers: Vec<_> =
            (0..a.streams).map(|_| s.spawn(|| run_stream(&engine, &prompt, &stop, &gaps, &started))).collect();
        let waited = Instant::now();
        while *started.lock().expect("lock") < a.streams && waited.elapsed() < Duration::from_secs(600) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let result = media_request(&engine, media);
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a benchmark stream panicked"))??;
        }
        result
    })?;
    let mut gaps = gaps.into_inner().expect("lock");
    anyhow::ensure!(!gaps.is_empty(), "the text streams produced no two consecutive tokens");
    gaps.sort_by(f64::total_cmp);
    let pct = |q: f64| gaps[((gaps.len() - 1) as f64 * q).round() as usize];
    Ok(Gap {
        media_model: a.media_model.display().to_string(),
        streams: a.streams,
        image_side: a.image_side,
        video_frames: a.video_frames,
        random_vision_tower: a.random_tower,
        encode_slice_macs,
        max_gap_s: gaps[gaps.len() - 1],
        p99_gap_s: pct(0.99),
        median_gap_s: pct(0.5),
        image_ttft_s: image_ttft,
    })
}

/// Runs text streams back to back until `stop`, adding each one's inter-token gaps to `gaps`;
/// counts itself in `started` at its first stream's first token.
fn run_stream(engine: &EngineHandle, prompt: &[u32], stop: &AtomicBool, gaps: &Mutex<Vec<f64>>, started: &Mutex<usize>) -> anyhow::Result<()> {
    let mut counted = false;
    while !stop.load(Ordering::Relaxed) {
        let params = GenParams { max_new_tokens: Some(STREAM_TOKENS), ignore_eos: Some(true), ..GenParams::greedy() };
        let valid = engine.validate_prompt(PromptRequest { prompt: Prompt::Ids(prompt.to_vec()), params })?;
        let stream = engine.stream(valid)?.pop().context("the engine queued no sample")?;
        let mut last: Option<Instant> = None;
        for event in stream.events.iter() {
            match event {
                Event::Text(_) => {
                    let now = Instant::now();
                    if let Some(prev) = last {
                        gaps.lock().expect("lock").push(now.duration_since(prev).as_secs_f64());
                    } else if !counted {
                        counted = true;
                        *started.lock().expect("lock") += 1;
                    }
                    last = Some(now);
                }
                Event::Logprobs(_) => {}
                Event::Done(_) => break,
                Event::Error(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// One media request of a few tokens; its time to first token.
fn media_request(engine: &EngineHandle, media: Media) -> anyhow::Result<f64> {
    let request = ChatRequest {
        messages: vec![serde_json::json!({"role": "user", "content": "Describe this."})],
        media: vec![media],
        params: GenParams { max_new_tokens: Some(4), ..GenParams::greedy() },
        ..ChatRequest::default()
    };
    let stream = engine.stream(engine.validate_chat(request)?)?.pop().context("the engine queued no sample")?;
    for event in stream.events.iter() {
        match event {
            Event::Text(_) | Event::Logprobs(_) => {}
            Event::Done(usage) => return Ok(usage.time_to_first_token),
            Event::Error(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("the engine stopped before answering the media request")
}
