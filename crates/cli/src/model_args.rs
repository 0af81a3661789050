//! Flags shared by every command that loads a model, and the loading itself.

use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgMatches, Args};
use ingot_core::config::KvType;
use ingot_core::load::{models_dir, LoadOptions, DEFAULT_MODEL_FILE};
use ingot_core::weights::{Quantization, WeightDType};
use ingot_core::media::FrameSampling;
use ingot_engine::{EngineConfig, EngineError, EngineHandle, MediaLimits, DEFAULT_LOOKUP};

use crate::infer_config::{fill, parse_lora, InferConfig};
use crate::media::MediaReading;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model file (.gguf) or Hugging Face checkpoint directory (config.json + safetensors).
    /// Default: the fetched Qwen2.5-Coder-0.5B-Instruct.
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// Checkpoint directories only: precision weights are held in (auto = f32, f32, bf16,
    /// f16). Compute is f32 either way.
    #[arg(long, default_value = "auto")]
    pub dtype: WeightDType,
    /// Checkpoint directories only: quantize the weight matrices at load (q8_0, q4_k).
    #[arg(long)]
    pub quantize: Option<Quantization>,
    /// Checkpoint directories only: PEFT LoRA adapter directories merged into the weights at
    /// load, in order (comma-separated or repeated).
    #[arg(long = "adapter", value_delimiter = ',')]
    pub adapters: Vec<PathBuf>,
    /// A PEFT LoRA adapter served unmerged under NAME (repeatable): API requests pick it by
    /// `model`, chat and infer by `--use-lora`. Checked against the model at start.
    #[arg(long = "lora", value_name = "NAME=DIR", value_parser = parse_lora)]
    pub loras: Vec<(String, PathBuf)>,
    /// LoRA adapters held in memory at once (default: all); others are read again when a
    /// request needs them, the least recently used one evicted.
    #[arg(long)]
    pub max_loras: Option<usize>,
    /// A Jinja chat template file overriding the model's own (a named `--template` still wins).
    #[arg(long, value_name = "FILE.jinja")]
    pub chat_template: Option<PathBuf>,
    /// Serve a shorter context than the model's, in tokens (llama.cpp's `--ctx-size`): a
    /// prompt plus its new tokens over it is refused.
    #[arg(long, short = 'c')]
    pub ctx_size: Option<usize>,
    /// Kernel threads (default: one per core).
    #[arg(long, short = 't', default_value_t = 0)]
    pub threads: usize,
    /// Memory for KV caches in MiB: running sequences and the prefix cache together stay
    /// within it; requests that do not fit yet wait in the queue.
    #[arg(long, default_value_t = EngineConfig::default().kv_cache_mb)]
    pub kv_cache_mb: usize,
    /// KV cache element type for keys and values (llama.cpp's `--cache-type-k/-v`): f16 (half
    /// the memory, llama.cpp's default) or f32 (exact, e.g. to compare with transformers).
    #[arg(long, default_value = "f16", value_parser = parse_cache_type)]
    pub cache_type: KvType,
    /// Vision models: images with more pixels are scaled down to about this many before
    /// encoding (LLaMA Factory's `image_max_pixels`; default: the model's preprocessor config).
    #[arg(long)]
    pub image_max_pixels: Option<usize>,
    /// Vision models: images with fewer pixels are scaled up to about this many
    /// (`image_min_pixels`).
    #[arg(long)]
    pub image_min_pixels: Option<usize>,
    /// Video models: every frame is first scaled to at most this many pixels (LLaMA Factory's
    /// `video_max_pixels`, default 65536) and at least `--video-min-pixels` (default 256).
    #[arg(long)]
    pub video_max_pixels: Option<usize>,
    #[arg(long)]
    pub video_min_pixels: Option<usize>,
    /// Video files: frames sampled per second (`video_fps`, default 2); a list or directory
    /// of frames is taken to be at this rate.
    #[arg(long, default_value_t = FrameSampling::default().fps)]
    pub video_fps: f64,
    /// Video files: at most this many frames (`video_maxlen`, default 128).
    #[arg(long, default_value_t = FrameSampling::default().maxlen)]
    pub video_maxlen: usize,
    /// Audio models: the rate clips are resampled to (`audio_sampling_rate`; default: the
    /// model's feature extractor's, 16000 for Qwen2-Audio).
    #[arg(long)]
    pub audio_sampling_rate: Option<u32>,
    /// Audio: longest clip accepted, in seconds; a longer one is an error naming this limit.
    #[arg(long, default_value_t = MediaLimits::default().max_audio_seconds)]
    pub max_audio_seconds: f64,
    /// Lookup (prompt n-gram) speculative decoding for commands that generate: at most N
    /// draft tokens, copied from earlier in the prompt or reply, checked per step (0 = off).
    /// Exact: the output is plain decoding's; steps are saved where the reply copies.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LOOKUP)]
    pub lookup: usize,
}

impl ModelArgs {
    /// Takes the model settings of a config where no flag was given for them.
    pub fn apply_config(&mut self, cfg: &InferConfig, matches: &ArgMatches) {
        fill(&mut self.model, cfg.model.clone().map(Some), matches, "model");
        fill(&mut self.adapters, cfg.adapters.clone(), matches, "adapters");
        fill(&mut self.loras, cfg.loras.clone(), matches, "loras");
        fill(&mut self.max_loras, cfg.max_loras.map(Some), matches, "max_loras");
        fill(&mut self.dtype, cfg.dtype, matches, "dtype");
        fill(&mut self.quantize, cfg.quantize.map(Some), matches, "quantize");
        fill(&mut self.image_max_pixels, cfg.image_max_pixels.map(Some), matches, "image_max_pixels");
        fill(&mut self.image_min_pixels, cfg.image_min_pixels.map(Some), matches, "image_min_pixels");
        fill(&mut self.video_max_pixels, cfg.video_max_pixels.map(Some), matches, "video_max_pixels");
        fill(&mut self.video_min_pixels, cfg.video_min_pixels.map(Some), matches, "video_min_pixels");
        fill(&mut self.video_fps, cfg.video_fps, matches, "video_fps");
        fill(&mut self.video_maxlen, cfg.video_maxlen, matches, "video_maxlen");
        fill(&mut self.audio_sampling_rate, cfg.audio_sampling_rate.map(Some), matches, "audio_sampling_rate");
        fill(&mut self.lookup, cfg.lookup, matches, "lookup");
    }

    pub fn model_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.model {
            return Ok(p.clone());
        }
        let p = models_dir().join(DEFAULT_MODEL_FILE);
        anyhow::ensure!(
            p.exists(),
            "the default model {} is not there yet (hint: run scripts/fetch-models.sh, or pass --model)",
            p.display()
        );
        Ok(p)
    }

    /// The engine settings these flags give; commands adjust the rest.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            threads: self.threads,
            kv_cache_mb: self.kv_cache_mb,
            ctx_size: self.ctx_size,
            image_max_pixels: self.image_max_pixels,
            image_min_pixels: self.image_min_pixels,
            video_max_pixels: self.video_max_pixels,
            video_min_pixels: self.video_min_pixels,
            audio_sampling_rate: self.audio_sampling_rate,
            loras: self.loras.clone(),
            max_loras: self.max_loras,
            lookup: self.lookup,
            ..EngineConfig::default()
        }
    }

    /// How media files named on the command line or in datasets are read.
    pub fn media_reading(&self) -> anyhow::Result<MediaReading> {
        anyhow::ensure!(self.video_fps.is_finite() && self.video_fps > 0.0, "--video-fps must be positive, got {}", self.video_fps);
        anyhow::ensure!(self.video_maxlen > 0, "--video-maxlen must be at least 1");
        anyhow::ensure!(
            self.max_audio_seconds.is_finite() && self.max_audio_seconds > 0.0,
            "--max-audio-seconds must be positive, got {}",
            self.max_audio_seconds
        );
        Ok(MediaReading {
            limits: MediaLimits { max_audio_seconds: self.max_audio_seconds, ..MediaLimits::default() },
            sampling: FrameSampling { fps: self.video_fps, maxlen: self.video_maxlen },
        })
    }

    /// [`ModelArgs::start_engine`] for commands that generate chat replies: a reward model,
    /// or a model without a chat template when none was named, is an error up front.
    pub fn start_chat_engine(&self, cfg: EngineConfig) -> anyhow::Result<EngineHandle> {
        let engine = self.start_engine(cfg)?;
        let path = self.model_path()?;
        if engine.is_reward_model() {
            return Err(EngineError::RewardModel).with_context(|| path.display().to_string());
        }
        if engine.template().is_none() {
            return Err(EngineError::NoTemplate).with_context(|| format!("{} (hint: pass --template NAME)", path.display()));
        }
        Ok(engine)
    }

    /// The `--chat-template` file's text, if one was given.
    fn template_file(&self) -> anyhow::Result<Option<String>> {
        self.chat_template
            .as_ref()
            .map(|file| std::fs::read_to_string(file).with_context(|| format!("reading --chat-template {}", file.display())))
            .transpose()
    }

    /// The model's tokenizer and chat template (`--chat-template` over the model's own),
    /// without its weights.
    pub fn load_prompting(&self) -> anyhow::Result<ingot_core::load::Prompting> {
        let path = self.model_path()?;
        let template = self.template_file()?;
        let mut prompting = ingot_core::load::load_prompting(&path).with_context(|| format!("--model {}", path.display()))?;
        if template.is_some() {
            prompting.chat_template = template;
        }
        Ok(prompting)
    }

    /// Loads the model and starts the engine with `cfg` (see [`ModelArgs::engine_config`]).
    pub fn start_engine(&self, cfg: EngineConfig) -> anyhow::Result<EngineHandle> {
        let path = self.model_path()?;
        // Read before the (slow) model load, so a wrong path fails at once.
        let template = self.template_file()?;
        let opts = LoadOptions { dtype: self.dtype, quantize: self.quantize, adapters: self.adapters.clone() };
        let mut loaded = ingot_core::load::load_with(&path, &opts)?;
        loaded.model.set_kv_type(self.cache_type);
        if template.is_some() {
            loaded.chat_template = template;
        }
        ingot_engine::start(loaded, cfg).with_context(|| match &self.chat_template {
            // A template that does not compile is this file's fault, not the model's.
            Some(file) => format!("starting the engine for {} with --chat-template {}", path.display(), file.display()),
            None => format!("starting the engine for {}", path.display()),
        })
    }
}

/// `--cache-type`: the KV element types attention reads directly.
fn parse_cache_type(s: &str) -> Result<KvType, String> {
    match s {
        "f16" => Ok(KvType::F16),
        "f32" => Ok(KvType::F32),
        _ => Err(format!("--cache-type must be f16 or f32, got '{s}'")),
    }
}
