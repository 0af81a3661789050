//! Opening a model path: the model, its tokenizer and its chat template, together.
//!
//! A path is either a GGUF file or a Hugging Face checkpoint directory (`config.json`,
//! safetensors weights, tokenizer files). [`LoadOptions`] choose how a checkpoint's weights are
//! held in memory, and which LoRA adapters are merged into them; GGUF files are already in their
//! final types and take only the defaults (an adapter must be merged before converting to GGUF).

use std::path::{Path, PathBuf};

use crate::config::vision::{MultimodalTokens, VisionArch};
use crate::media::{MediaProcessor, Qwen2VlImageProcessor, Qwen2VlVideoProcessor, WhisperFeatureExtractor};
use crate::model::audio::AudioEncoder;
use crate::model::vision::VisionModel;
use crate::model::Model;
use crate::reward::ValueHead;
use crate::tokenizer::Tokenizer;
use crate::hf_files::GenerationDefaults;
use crate::weights::gguf::GgufFile;
use crate::weights::hf_config;
use crate::weights::lora::LoraMerged;
use crate::weights::safetensors::SafetensorsDir;
use crate::weights::{LoadError, Quantization, WeightDType};

/// Everything a front end needs from one model file.
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// The file's own Jinja chat template, if it has one.
    pub chat_template: Option<String>,
    /// Present for reward models (a checkpoint directory with `value_head.safetensors`).
    pub value_head: Option<ValueHead>,
    /// The checkpoint's `generation_config.json` (empty for GGUF files, which have none).
    pub generation: GenerationDefaults,
    /// Present for vision-language checkpoints (Qwen2-VL and Qwen2.5-VL directories); `None` for text models
    /// and GGUF files.
    pub vision: Option<Vision>,
    /// Present for audio-language checkpoints (Qwen2-Audio directories).
    pub audio: Option<AudioSupport>,
}

/// An audio-language model's audio side: the encoder whose rows replace the `<|AUDIO|>`
/// tokens' embeddings, that token, and the feature extractor.
#[derive(Debug)]
pub struct AudioSupport {
    pub encoder: AudioEncoder,
    /// `audio_token_index`: `<|AUDIO|>`, repeated once per encoder row
    /// ([`crate::model::audio::audio_tokens`]).
    pub audio_token_id: u32,
    /// The checkpoint's `preprocessor_config.json` (transformers' defaults with 128 mel bins,
    /// Qwen2-Audio's, when absent).
    pub feature_extractor: WhisperFeatureExtractor,
}

/// A vision-language model's image side: the encoder whose rows replace the image pad tokens'
/// embeddings, and the token ids that lay images out in a prompt.
#[derive(Debug)]
pub struct Vision {
    pub encoder: VisionModel,
    pub tokens: MultimodalTokens,
    /// The checkpoint's image preprocessing (`preprocessor_config.json`; transformers'
    /// defaults for the family when the file is absent).
    pub image_processor: Box<dyn MediaProcessor>,
    /// The checkpoint's video preprocessing (`video_preprocessor_config.json` or the image
    /// processor's file; the family's defaults when absent).
    pub video_processor: Box<dyn MediaProcessor>,
}

/// How to load a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub dtype: WeightDType,
    /// Quantize every weight matrix (the projections, the embedding table and the LM head)
    /// with ggml's reference quantizer. A matrix whose row length is not a multiple of the
    /// format's block size (32 for q8_0, 256 for q4_k) cannot be quantized and stays at `dtype`.
    /// Norms and biases are never quantized.
    pub quantize: Option<Quantization>,
    /// PEFT LoRA adapter directories (`adapter_config.json` + `adapter_model.safetensors`)
    /// merged into the weights in this order, in f32, before `dtype`/`quantize` apply.
    pub adapters: Vec<PathBuf>,
}

/// [`load_with`] and the default options.
pub fn load(path: &Path) -> Result<LoadedModel, LoadError> {
    load_with(path, &LoadOptions::default())
}

/// Loads a GGUF file or a Hugging Face checkpoint directory. Every failure names the file
/// (and the key or tensor) at fault.
pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<LoadedModel, LoadError> {
    if path.is_dir() {
        let (model, vision, audio) = load_checkpoint(path, opts)?;
        let Prompting { tokenizer, chat_template } = dir_prompting(path)?;
        let value_head = ValueHead::load_from_dir(path, model.config().hidden_size)?;
        // The error names generation_config.json and the key at fault.
        let generation = GenerationDefaults::from_dir(path)
            .map_err(|e| LoadError::Invalid { path: path.display().to_string(), problem: e.to_string() })?;
        release_freed_memory();
        return Ok(LoadedModel {
            model,
            tokenizer,
            chat_template,
            value_head,
            generation,
            vision,
            audio,
        });
    }
    if !opts.adapters.is_empty() {
        return Err(LoadError::Invalid {
            path: path.display().to_string(),
            problem: "LoRA adapters (--adapter) are merged into Hugging Face checkpoint directories only; merge the adapter before converting to GGUF".into(),
        });
    }
    if *opts != LoadOptions::default() {
        return Err(LoadError::Invalid {
            path: path.display().to_string(),
            problem: "--dtype and --quantize apply to Hugging Face checkpoint directories; a GGUF file keeps its own weight types".into(),
        });
    }
    let file = GgufFile::open(path)?;
    let cfg = file.config()?;
    let Prompting { tokenizer, chat_template } = gguf_prompting(&file, path)?;
    let model = Model::load(&file, cfg)?;
    drop(file);
    release_freed_memory();
    // LLaMA Factory stores value heads only beside checkpoints; a GGUF file is a causal LM.
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        value_head: None,
        generation: GenerationDefaults::default(),
        vision: None,
        audio: None,
    })
}

/// Hands back to the OS the heap pages freed while loading: the parsed GGUF header and the
/// tokenizer's build tables, tens of MiB of small blocks among live ones. glibc keeps them
/// resident for reuse, but the engine allocates from its own threads' arenas, so they would
/// only add to every later peak (about 10 MiB on the bundled models).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's `malloc_trim` has no preconditions; it only releases free memory.
        unsafe { malloc_trim(0) };
    }
}

/// What turns messages into a prompt: the tokenizer and the model's own chat template.
pub struct Prompting {
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
}

/// Loads only the tokenizer and chat template of a GGUF file or checkpoint directory (no
/// weights), for rendering and tokenizing prompts.
pub fn load_prompting(path: &Path) -> Result<Prompting, LoadError> {
    if path.is_dir() {
        dir_prompting(path)
    } else {
        gguf_prompting(&GgufFile::open(path)?, path)
    }
}

fn dir_prompting(path: &Path) -> Result<Prompting, LoadError> {
    let tokenizer =
        Tokenizer::from_hf_dir(path).map_err(|source| LoadError::Tokenizer { path: path.to_path_buf(), source })?;
    let templates = crate::hf_files::ChatTemplates::from_dir(path)
        .map_err(|source| LoadError::Tokenizer { path: path.to_path_buf(), source: source.into() })?;
    Ok(Prompting { tokenizer, chat_template: templates.get(None).map(str::to_string) })
}

fn gguf_prompting(file: &GgufFile, path: &Path) -> Result<Prompting, LoadError> {
    let tokenizer =
        Tokenizer::from_gguf(file.content()).map_err(|source| LoadError::Tokenizer { path: path.to_path_buf(), source })?;
    Ok(Prompting { tokenizer, chat_template: file.chat_template().map(str::to_string) })
}

/// The model alone of a checkpoint directory: `config.json` and the safetensors weights, with
/// the adapters of `opts` merged in.
pub fn load_checkpoint_model(dir: &Path, opts: &LoadOptions) -> Result<Model, LoadError> {
    let cfg = hf_config::read_config(dir)?;
    let weights = SafetensorsDir::open(dir, &cfg, opts.dtype, opts.quantize)?;
    language_model(weights, cfg, opts)
}

/// The model of a checkpoint directory and, for a vision-language checkpoint, its vision
/// side or audio side (held unquantized whatever `opts.quantize` says; adapters apply to the
/// language model).
fn load_checkpoint(dir: &Path, opts: &LoadOptions) -> Result<(Model, Option<Vision>, Option<AudioSupport>), LoadError> {
    let cfg = hf_config::read_config(dir)?;
    let weights = SafetensorsDir::open(dir, &cfg, opts.dtype, opts.quantize)?;
    let vision = match hf_config::read_vision_config(dir)? {
        None => None,
        Some((vcfg, tokens)) => {
            if vcfg.hidden_size != cfg.hidden_size {
                return Err(LoadError::Invalid {
                    path: dir.join(hf_config::CONFIG_FILE).display().to_string(),
                    problem: format!(
                        "the vision merger's output width (vision_config.{}: {}) must equal the language model's hidden_size ({})",
                        match vcfg.arch {
                            VisionArch::Qwen2Vl => "hidden_size",
                            VisionArch::Qwen25Vl { .. } => "out_hidden_size",
                        },
                        vcfg.hidden_size,
                        cfg.hidden_size
                    ),
                });
            }
            let invalid = |e: crate::media::MediaError| LoadError::Invalid { path: dir.display().to_string(), problem: e.to_string() };
            let processor = Qwen2VlImageProcessor::from_dir(dir).map_err(invalid)?.unwrap_or_default();
            let video = Qwen2VlVideoProcessor::from_dir(dir).map_err(invalid)?.unwrap_or_default();
            Some(Vision {
                encoder: VisionModel::load(&weights, vcfg)?,
                tokens,
                image_processor: Box::new(processor),
                video_processor: Box::new(video),
            })
        }
    };
    let audio = load_audio(dir, &weights, cfg.hidden_size)?;
    Ok((language_model(weights, cfg, opts)?, vision, audio))
}

fn load_audio(dir: &Path, weights: &SafetensorsDir, hidden_size: usize) -> Result<Option<AudioSupport>, LoadError> {
    let Some((cfg, audio_token_id)) = hf_config::read_audio_config(dir, hidden_size)? else {
        return Ok(None);
    };
    let invalid = |problem: String| LoadError::Invalid { path: dir.display().to_string(), problem };
    let feature_extractor = match WhisperFeatureExtractor::from_dir(dir).map_err(|e| invalid(e.to_string()))? {
        Some(fe) => fe,
        None => WhisperFeatureExtractor::new(cfg.num_mel_bins, 16_000, 160, 400, 30).map_err(invalid)?,
    };
    if feature_extractor.feature_size() != cfg.num_mel_bins {
        return Err(invalid(format!(
            "preprocessor_config.json has feature_size {} but audio_config.num_mel_bins is {}",
            feature_extractor.feature_size(), cfg.num_mel_bins
        )));
    }
    Ok(Some(AudioSupport { encoder: AudioEncoder::load(weights, cfg)?, audio_token_id, feature_extractor }))
}

fn language_model(weights: SafetensorsDir, cfg: crate::config::ModelConfig, opts: &LoadOptions) -> Result<Model, LoadError> {
    if opts.adapters.is_empty() {
        return Model::load(&weights, cfg);
    }
    Model::load(&LoraMerged::new(weights, &opts.adapters)?, cfg)
}

/// File name of the default model (Qwen2.5-Coder-0.5B-Instruct) in [`models_dir`].
pub const DEFAULT_MODEL_FILE: &str = "qwen2.5-coder-0.5b-instruct.gguf";

/// Where `scripts/fetch-models.sh` puts models: `$INGOT_MODELS_DIR`, else
/// `$XDG_CACHE_HOME/ingot/models`, else `~/.cache/ingot/models`.
pub fn models_dir() -> std::path::PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    if let Some(dir) = var("INGOT_MODELS_DIR") {
        return dir;
    }
    let cache = var("XDG_CACHE_HOME").unwrap_or_else(|| var("HOME").unwrap_or_default().join(".cache"));
    cache.join("ingot").join("models")
}
