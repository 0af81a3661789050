//! `config.json` of a Hugging Face checkpoint directory → [`ModelConfig`].
//!
//! [`HfConfig`] mirrors the keys as transformers writes them, every one optional, so that a
//! missing key can fall back to the default transformers' config class would use, and so that
//! each key is read on its own: a wrong value is reported by its key name, not by a line and
//! column. Both key layouts in circulation are understood: the classic one (`rope_theta`,
//! `rope_scaling`, `rope_local_base_freq`, `sliding_window_pattern`) and transformers 5's
//! `rope_parameters` (flat, or keyed by layer type as Gemma 3 writes it).
//!
//! Qwen2-VL and Qwen2.5-VL checkpoints (`qwen2_vl`, `qwen2_5_vl`) load their language model
//! from here too, from the top level or transformers 5's nested `text_config`, with M-RoPE
//! sections from `rope_scaling` or `rope_parameters`; [`read_vision_config`] reads their vision
//! encoder's keys.
//!
//! Qwen2-Audio checkpoints (`qwen2_audio`) nest their Qwen2 language model under `text_config`;
//! [`read_audio_config`] reads their `audio_config`.
//!
//! Anything the model cannot honour (an unknown RoPE type, MLP biases, attention soft-capping)
//! is an error rather than silently different numbers.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::LoadError;
use crate::config::{Activation, Arch, KvType, LayerKind, ModelConfig, RopeScaling, RopeStyle};
use crate::config::vision::{MultimodalTokens, VisionActivation, VisionArch, VisionConfig};
use crate::model::audio::AudioConfig;

/// The config.json file name inside a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";

/// `model_type` values ingot runs, and the architecture each is.
const MODEL_TYPES: &[(&str, Arch)] = &[
    ("llama", Arch::Llama),
    ("mistral", Arch::Mistral),
    ("qwen2", Arch::Qwen2),
    ("qwen3", Arch::Qwen3),
    ("gemma3_text", Arch::Gemma3),
    // Qwen2-VL's language model is Qwen2 with M-RoPE (`qwen2_vl_text` is its nested text config).
    ("qwen2_vl", Arch::Qwen2),
    ("qwen2_vl_text", Arch::Qwen2),
    // So is Qwen2.5-VL's; only the vision encoders differ.
    ("qwen2_5_vl", Arch::Qwen2),
    ("qwen2_5_vl_text", Arch::Qwen2),
    // Qwen2-Audio's language model is plain Qwen2.
    ("qwen2_audio", Arch::Qwen2),
];

/// `architectures[0]` values, for configs without `model_type`.
const CLASSES: &[(&str, Arch)] = &[
    ("LlamaForCausalLM", Arch::Llama),
    ("MistralForCausalLM", Arch::Mistral),
    ("Qwen2ForCausalLM", Arch::Qwen2),
    ("Qwen3ForCausalLM", Arch::Qwen3),
    ("Gemma3ForCausalLM", Arch::Gemma3),
    ("Qwen2VLForConditionalGeneration", Arch::Qwen2),
    ("Qwen2_5_VLForConditionalGeneration", Arch::Qwen2),
    ("Qwen2AudioForConditionalGeneration", Arch::Qwen2),
];

/// Which vision-language generation a config.json is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VlGeneration {
    Qwen2Vl,
    Qwen25Vl,
}

/// `model_type`, `architectures[0]` and generation of the vision-language checkpoints.
const VL_KINDS: &[(&str, &str, VlGeneration)] = &[
    ("qwen2_vl", "Qwen2VLForConditionalGeneration", VlGeneration::Qwen2Vl),
    ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", VlGeneration::Qwen25Vl),
];

/// One RoPE description: an entry of `rope_parameters` or the classic `rope_scaling`.
#[derive(Debug, Default, Deserialize)]
struct RopeParams {
    rope_type: Option<String>,
    /// Older configs name the type `type`.
    #[serde(rename = "type")]
    legacy_type: Option<String>,
    rope_theta: Option<f32>,
    factor: Option<f32>,
    low_freq_factor: Option<f32>,
    high_freq_factor: Option<f32>,
    original_max_position_embeddings: Option<usize>,
    /// M-RoPE (Qwen2-VL) frequency pairs per t/h/w axis.
    mrope_section: Option<Vec<usize>>,
}

/// transformers 5's `rope_parameters`: one description, or one per layer type (Gemma 3).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RopeParameters {
    PerLayerType { full_attention: RopeParams, sliding_attention: Option<RopeParams> },
    Single(RopeParams),
}

/// Declares [`HfConfig`] with one `Option` field per config.json key, and the reader that
/// fills each field from its own key (so errors name the key).
macro_rules! hf_config {
    ($($key:ident: $ty:ty,)*) => {
        /// The config.json keys ingot reads, named as in the file.
        #[derive(Debug)]
        struct HfConfig {
            $($key: Option<$ty>,)*
        }

        impl HfConfig {
            fn from_json(map: &Map<String, Value>, path: &Path) -> Result<Self, LoadError> {
                Ok(Self { $($key: key(map, stringify!($key), path)?,)* })
            }
        }
    };
}

hf_config! {
    model_type: String,
    architectures: Vec<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    rms_norm_eps: f32,
    max_position_embeddings: usize,
    tie_word_embeddings: bool,
    hidden_act: String,
    hidden_activation: String,
    mlp_bias: bool,
    rope_theta: f32,
    rope_scaling: RopeParams,
    rope_parameters: RopeParameters,
    rope_local_base_freq: f32,
    layer_types: Vec<String>,
    sliding_window: usize,
    sliding_window_pattern: usize,
    use_sliding_window: bool,
    max_window_layers: usize,
    query_pre_attn_scalar: f32,
    final_logit_softcapping: f32,
    attn_logit_softcapping: f32,
}

/// Reads `name` from the JSON object; absent and `null` are both `None`.
fn key<T: DeserializeOwned>(map: &Map<String, Value>, name: &str, path: &Path) -> Result<Option<T>, LoadError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|e| invalid(path, format!("key '{name}': {e}"))),
    }
}

fn invalid(path: &Path, problem: String) -> LoadError {
    LoadError::Invalid { path: path.display().to_string(), problem }
}

/// Reads `dir/config.json` into a validated [`ModelConfig`].
pub fn read_config(dir: &Path) -> Result<ModelConfig, LoadError> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io { path: path.clone(), source })?;
    parse_config(&text, &path)
}

/// [`read_config`] on the text of `path`.
fn parse_config(text: &str, path: &Path) -> Result<ModelConfig, LoadError> {
    let map: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| invalid(path, format!("not a JSON object: {e}")))?;
    let vl = vl_generation(&map).is_some();
    let map = if vl || is_qwen2_audio(&map) { language_model_keys(&map) } else { map };
    let cfg = HfConfig::from_json(&map, path)?.to_model_config(path)?;
    if vl && cfg.mrope_section.is_none() {
        return Err(invalid(path, "Qwen2-VL and Qwen2.5-VL need 'mrope_section' in their RoPE parameters".into()));
    }
    cfg.validate(&path.display().to_string())?;
    Ok(cfg)
}

/// Whether a config.json is a Qwen2-VL or Qwen2.5-VL checkpoint's (by `model_type` or,
/// without it, the class), and which.
fn vl_generation(map: &Map<String, Value>) -> Option<VlGeneration> {
    match map.get("model_type").and_then(Value::as_str) {
        Some(t) => VL_KINDS.iter().find(|(ty, _, _)| *ty == t),
        None => {
            let class = map.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str)?;
            VL_KINDS.iter().find(|(_, c, _)| *c == class)
        }
    }
    .map(|&(_, _, generation)| generation)
}

/// The language model's keys of a multimodal config: transformers 5 nests them under
/// `text_config` (which then wins), the classic layout keeps them at the top level; the
/// vision keys are dropped.
fn language_model_keys(map: &Map<String, Value>) -> Map<String, Value> {
    let mut out: Map<String, Value> =
        map.iter().filter(|(k, _)| *k != "text_config" && *k != "vision_config").map(|(k, v)| (k.clone(), v.clone())).collect();
    if let Some(Value::Object(text)) = map.get("text_config") {
        out.extend(text.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

/// `dir/config.json`'s path and top-level object.
fn read_config_map(dir: &Path) -> Result<(std::path::PathBuf, Map<String, Value>), LoadError> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io { path: path.clone(), source })?;
    let map = serde_json::from_str(&text).map_err(|e| invalid(&path, format!("not a JSON object: {e}")))?;
    Ok((path, map))
}

/// The object under `name` (absent or `null`: empty, so every key takes its default).
fn sub_config(map: &Map<String, Value>, name: &str, path: &Path) -> Result<Map<String, Value>, LoadError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(v)) => Ok(v.clone()),
        Some(_) => Err(invalid(path, format!("key '{name}': expected an object"))),
    }
}

/// Whether a config.json is a Qwen2-Audio checkpoint's (by `model_type` or, without it, the class).
fn is_qwen2_audio(map: &Map<String, Value>) -> bool {
    match map.get("model_type").and_then(Value::as_str) {
        Some(t) => t == "qwen2_audio",
        None => map.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str) == Some("Qwen2AudioForConditionalGeneration"),
    }
}

/// The audio side of a Qwen2-Audio checkpoint directory: `audio_config` (missing keys take the
/// defaults of transformers' `Qwen2AudioEncoderConfig`) and `audio_token_index` (default
/// 151646); `None` for any other model. `hidden_size` is the language model's, the projector's
/// output width.
pub fn read_audio_config(dir: &Path, hidden_size: usize) -> Result<Option<(AudioConfig, u32)>, LoadError> {
    let (path, map) = read_config_map(dir)?;
    if !is_qwen2_audio(&map) {
        return Ok(None);
    }
    let audio = &sub_config(&map, "audio_config", &path)?;
    let usize_key = |name: &str, default: usize| key::<usize>(audio, name, &path).map(|v| v.unwrap_or(default));
    if let Some(act) = key::<String>(audio, "activation_function", &path)?.filter(|a| a != "gelu") {
        return Err(invalid(&path, format!("key 'audio_config.activation_function': '{act}' is not supported (gelu)")));
    }
    let cfg = AudioConfig {
        num_mel_bins: usize_key("num_mel_bins", 128)?,
        d_model: usize_key("d_model", 1280)?,
        encoder_layers: usize_key("encoder_layers", 32)?,
        encoder_attention_heads: usize_key("encoder_attention_heads", 20)?,
        encoder_ffn_dim: usize_key("encoder_ffn_dim", 5120)?,
        max_source_positions: usize_key("max_source_positions", 1500)?,
        hidden_size,
    };
    cfg.validate().map_err(|problem| invalid(&path, format!("key 'audio_config': {problem}")))?;
    let token = key::<u32>(&map, "audio_token_index", &path)?.unwrap_or(151_646);
    Ok(Some((cfg, token)))
}

/// The vision side of a Qwen2-VL or Qwen2.5-VL checkpoint directory (`vision_config` and the
/// special token ids of `config.json`); `None` for any other model. Missing keys take the
/// defaults of transformers' `Qwen2VLVisionConfig` / `Qwen2_5_VLVisionConfig`; the classic
/// `in_chans` is read as `in_channels`.
///
/// The two generations name the widths differently: Qwen2-VL's blocks are `embed_dim` wide with
/// an MLP of `embed_dim · mlp_ratio` and its merger gives `hidden_size`; Qwen2.5-VL's blocks are
/// `hidden_size` wide with an MLP of `intermediate_size` and its merger gives `out_hidden_size`.
pub fn read_vision_config(dir: &Path) -> Result<Option<(VisionConfig, MultimodalTokens)>, LoadError> {
    let (path, map) = read_config_map(dir)?;
    let Some(generation) = vl_generation(&map) else {
        return Ok(None);
    };
    let vision = &sub_config(&map, "vision_config", &path)?;
    let usize_key = |name: &str, default: usize| -> Result<usize, LoadError> {
        key::<usize>(vision, name, &path).map(|v| v.unwrap_or(default))
    };
    let in_channels = match key::<usize>(vision, "in_channels", &path)? {
        Some(c) => c,
        None => usize_key("in_chans", 3)?,
    };
    let default_act = match generation {
        VlGeneration::Qwen2Vl => "quick_gelu",
        VlGeneration::Qwen25Vl => "silu",
    };
    let act_name = key::<String>(vision, "hidden_act", &path)?.unwrap_or_else(|| default_act.into());
    let hidden_act = VisionActivation::from_name(&act_name).ok_or_else(|| {
        invalid(
            &path,
            format!("key 'vision_config.hidden_act': activation '{act_name}' is not supported (quick_gelu, gelu, gelu_pytorch_tanh, silu)"),
        )
    })?;
    let (arch, embed_dim, intermediate_size, hidden_size, depth) = match generation {
        VlGeneration::Qwen2Vl => {
            let embed_dim = usize_key("embed_dim", 1280)?;
            let mlp_ratio = key::<f64>(vision, "mlp_ratio", &path)?.unwrap_or(4.0);
            // transformers' `int(embed_dim * mlp_ratio)`.
            let ffn = (embed_dim as f64 * mlp_ratio) as usize;
            (VisionArch::Qwen2Vl, embed_dim, ffn, usize_key("hidden_size", 3584)?, usize_key("depth", 32)?)
        }
        VlGeneration::Qwen25Vl => {
            let arch = VisionArch::Qwen25Vl {
                window_size: usize_key("window_size", 112)?,
                fullatt_block_indexes: key::<Vec<usize>>(vision, "fullatt_block_indexes", &path)?
                    .unwrap_or_else(|| vec![7, 15, 23, 31]),
            };
            let embed_dim = usize_key("hidden_size", 3584)?;
            (arch, embed_dim, usize_key("intermediate_size", 3420)?, usize_key("out_hidden_size", 3584)?, usize_key("depth", 32)?)
        }
    };
    let cfg = VisionConfig {
        arch,
        depth,
        embed_dim,
        num_heads: usize_key("num_heads", 16)?,
        intermediate_size,
        hidden_act,
        patch_size: usize_key("patch_size", 14)?,
        temporal_patch_size: usize_key("temporal_patch_size", 2)?,
        spatial_merge_size: usize_key("spatial_merge_size", 2)?,
        in_channels,
        hidden_size,
    };
    cfg.validate().map_err(|problem| invalid(&path, format!("key 'vision_config': {problem}")))?;
    let id = |name: &str, default: u32| key::<u32>(&map, name, &path).map(|v| v.unwrap_or(default));
    let tokens = MultimodalTokens {
        image_token_id: id("image_token_id", 151_655)?,
        video_token_id: Some(id("video_token_id", 151_656)?),
        vision_start_token_id: id("vision_start_token_id", 151_652)?,
        vision_end_token_id: id("vision_end_token_id", 151_653)?,
        spatial_merge_size: cfg.spatial_merge_size,
        tokens_per_second: match generation {
            VlGeneration::Qwen2Vl => None,
            // transformers' default is 4; the released checkpoints say 2.
            VlGeneration::Qwen25Vl => Some(key::<u32>(vision, "tokens_per_second", &path)?.unwrap_or(4)),
        },
    };
    Ok(Some((cfg, tokens)))
}

impl HfConfig {
    fn arch(&self, path: &Path) -> Result<Arch, LoadError> {
        let class = self.architectures.as_ref().and_then(|a| a.first());
        let found = match (&self.model_type, class) {
            (Some(t), _) => MODEL_TYPES.iter().find(|(name, _)| name == t).map(|&(_, a)| a).ok_or(t),
            (None, Some(c)) => CLASSES.iter().find(|(name, _)| name == c).map(|&(_, a)| a).ok_or(c),
            (None, None) => return Err(LoadError::MissingKey { path: path.to_path_buf(), key: "model_type".into() }),
        };
        found.map_err(|name| LoadError::UnsupportedArch {
            path: path.to_path_buf(),
            arch: name.clone(),
            supported: MODEL_TYPES.iter().map(|(name, _)| name.to_string()).collect(),
        })
    }

    fn to_model_config(&self, path: &Path) -> Result<ModelConfig, LoadError> {
        let arch = self.arch(path)?;
        let gemma = arch == Arch::Gemma3;
        let required = |v: Option<usize>, name: &str| {
            v.ok_or_else(|| LoadError::MissingKey { path: path.to_path_buf(), key: name.to_string() })
        };
        let hidden_size = required(self.hidden_size, "hidden_size")?;
        let num_heads = required(self.num_attention_heads, "num_attention_heads")?;
        let num_layers = required(self.num_hidden_layers, "num_hidden_layers")?;
        // Gemma3TextConfig's default head_dim is 256; the others derive it from the width.
        let head_dim = self.head_dim.unwrap_or(if gemma { 256 } else { hidden_size / num_heads.max(1) });

        if self.mlp_bias == Some(true) {
            return Err(invalid(path, "key 'mlp_bias': MLP biases are not supported".into()));
        }
        if self.attn_logit_softcapping.is_some() {
            return Err(invalid(path, "key 'attn_logit_softcapping': attention soft-capping is not supported".into()));
        }
        // Gemma names the key `hidden_activation`, the others `hidden_act`.
        let act = match (&self.hidden_activation, &self.hidden_act) {
            (Some(a), _) => Some(("hidden_activation", a.as_str())),
            (None, Some(a)) => Some(("hidden_act", a.as_str())),
            (None, None) => None,
        };
        let activation = match act {
            None if gemma => Activation::GeluTanh,
            None | Some((_, "silu" | "swish")) => Activation::Silu,
            Some((_, "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast")) => Activation::GeluTanh,
            Some((key, other)) => {
                return Err(invalid(path, format!("key '{key}': activation '{other}' is not supported (silu, gelu_pytorch_tanh)")))
            }
        };

        let no_params = RopeParams::default();
        let (global, local) = match &self.rope_parameters {
            Some(RopeParameters::PerLayerType { full_attention, sliding_attention }) => {
                (full_attention, sliding_attention.as_ref())
            }
            Some(RopeParameters::Single(p)) => (p, None),
            None => (self.rope_scaling.as_ref().unwrap_or(&no_params), None),
        };
        let default_theta = if gemma { 1_000_000.0 } else { 10_000.0 };
        let rope_theta = global.rope_theta.or(self.rope_theta).unwrap_or(default_theta);
        let rope_scaling = rope_scaling(global, path)?;
        let mrope_section = match global.mrope_section.as_deref() {
            None => None,
            Some(&[t, h, w]) => Some([t, h, w]),
            Some(other) => return Err(invalid(path, format!("key 'mrope_section': {other:?} should have 3 entries (t, h, w)"))),
        };
        // Gemma 3's sliding layers use their own base and never the scaling.
        let rope_local_theta = if gemma {
            Some(local.and_then(|p| p.rope_theta).or(self.rope_local_base_freq).unwrap_or(10_000.0))
        } else {
            None
        };

        let layer_types = self.layer_types(arch, num_layers, path)?;
        let sliding_window = match self.sliding_window {
            None if gemma => Some(4096),
            w => w,
        };
        let attn_scale = match self.query_pre_attn_scalar {
            Some(s) if gemma => s.powf(-0.5),
            None if gemma => 256f32.powf(-0.5),
            _ => 1.0 / (head_dim.max(1) as f32).sqrt(),
        };

        Ok(ModelConfig {
            kv_type: KvType::F16,
            arch,
            vocab_size: required(self.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: required(self.intermediate_size, "intermediate_size")?,
            num_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: self.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_local_theta,
            rope_scaling,
            rope_style: RopeStyle::Halves,
            max_position_embeddings: required(self.max_position_embeddings, "max_position_embeddings")?,
            // transformers' per-class defaults: only Gemma ties by default.
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(gemma),
            layer_types,
            sliding_window,
            activation,
            embed_scale: gemma.then(|| (hidden_size as f32).sqrt()),
            attn_scale,
            final_logit_softcap: self.final_logit_softcapping,
            mrope_section,
        })
    }

    /// Per-layer spans: `layer_types` when given, else each family's older rule.
    fn layer_types(&self, arch: Arch, num_layers: usize, path: &Path) -> Result<Vec<LayerKind>, LoadError> {
        if let Some(types) = &self.layer_types {
            if types.len() != num_layers {
                return Err(invalid(
                    path,
                    format!("key 'layer_types': {} entries for {num_layers} layers", types.len()),
                ));
            }
            return types
                .iter()
                .map(|t| match t.as_str() {
                    "full_attention" => Ok(LayerKind::Full),
                    "sliding_attention" => Ok(LayerKind::Sliding),
                    other => Err(invalid(path, format!("key 'layer_types': unknown layer type '{other}'"))),
                })
                .collect();
        }
        let kinds = match arch {
            // Every `pattern`-th layer is global (default 6).
            Arch::Gemma3 => {
                let pattern = self.sliding_window_pattern.unwrap_or(6).max(1);
                (0..num_layers).map(|i| if (i + 1) % pattern == 0 { LayerKind::Full } else { LayerKind::Sliding }).collect()
            }
            // Mistral slides every layer when it has a window.
            Arch::Mistral if self.sliding_window.is_some() => vec![LayerKind::Sliding; num_layers],
            // Qwen2 slides the layers from `max_window_layers` on, when enabled.
            Arch::Qwen2 | Arch::Qwen3 if self.use_sliding_window == Some(true) => {
                let first = self.max_window_layers.unwrap_or(num_layers);
                (0..num_layers).map(|i| if i >= first { LayerKind::Sliding } else { LayerKind::Full }).collect()
            }
            _ => vec![LayerKind::Full; num_layers],
        };
        Ok(kinds)
    }
}

/// The frequency rescaling a RoPE description asks for.
fn rope_scaling(p: &RopeParams, path: &Path) -> Result<Option<RopeScaling>, LoadError> {
    let missing = |field: &str| invalid(path, format!("RoPE parameters: '{field}' is required for this rope_type"));
    let kind = p.rope_type.as_deref().or(p.legacy_type.as_deref()).unwrap_or("default");
    Ok(match kind {
        // The classic Qwen2-VL layout's `{"type": "mrope", "mrope_section": …}`: default
        // frequencies, with the sections read beside it.
        "default" | "mrope" => None,
        "linear" => Some(RopeScaling::Linear { factor: p.factor.ok_or_else(|| missing("factor"))? }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: p.factor.ok_or_else(|| missing("factor"))?,
            low_freq_factor: p.low_freq_factor.ok_or_else(|| missing("low_freq_factor"))?,
            high_freq_factor: p.high_freq_factor.ok_or_else(|| missing("high_freq_factor"))?,
            original_max_position: p
                .original_max_position_embeddings
                .ok_or_else(|| missing("original_max_position_embeddings"))?,
        }),
        other => return Err(invalid(path, format!("RoPE type '{other}' is not supported (default, linear, llama3)"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal config of `model_type` plus `extra` keys.
    fn config(model_type: &str, extra: Value) -> Result<ModelConfig, LoadError> {
        let mut v = serde_json::json!({
            "model_type": model_type, "vocab_size": 32, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        });
        for (k, x) in extra.as_object().expect("object") {
            v[k] = x.clone();
        }
        parse_config(&v.to_string(), Path::new("config.json"))
    }

    #[test]
    fn transformers_defaults_apply() {
        let llama = config("llama", serde_json::json!({})).expect("llama");
        assert_eq!((llama.head_dim, llama.rope_theta, llama.tie_word_embeddings), (16, 10_000.0, false));
        assert_eq!((llama.activation, llama.rope_scaling.clone(), llama.rope_local_theta), (Activation::Silu, None, None));
        assert!(llama.layer_types.iter().all(|&k| k == LayerKind::Full));
        let gemma = config("gemma3_text", serde_json::json!({})).expect("gemma");
        assert_eq!((gemma.head_dim, gemma.tie_word_embeddings, gemma.activation), (256, true, Activation::GeluTanh));
        assert_eq!((gemma.rope_theta, gemma.rope_local_theta, gemma.sliding_window), (1_000_000.0, Some(10_000.0), Some(4096)));
        assert_eq!(gemma.attn_scale, 256f32.powf(-0.5));
        // Every sixth layer is global.
        let full: Vec<usize> = (0..6).filter(|&i| gemma.layer_types[i] == LayerKind::Full).collect();
        assert_eq!(full, [5]);
    }

    #[test]
    fn both_rope_layouts_are_read() {
        let classic = config("gemma3_text", serde_json::json!({
            "rope_theta": 5e5, "rope_local_base_freq": 2e4, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        }))
        .expect("classic");
        let v5 = config("gemma3_text", serde_json::json!({"rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 5e5},
            "sliding_attention": {"rope_type": "default", "rope_theta": 2e4},
        }}))
        .expect("transformers 5");
        assert_eq!(classic, v5);
        assert_eq!((v5.rope_theta, v5.rope_local_theta), (5e5, Some(2e4)));
        assert_eq!(v5.rope_scaling, Some(RopeScaling::Linear { factor: 8.0 }));

        let llama3 = serde_json::json!({"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let flat = config("llama", serde_json::json!({"rope_parameters": llama3})).expect("flat");
        let expected = RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 8192 };
        assert_eq!((flat.rope_theta, flat.rope_scaling), (5e5, Some(expected)));
    }

    #[test]
    fn sliding_layers_follow_each_family() {
        let mistral = config("mistral", serde_json::json!({"sliding_window": 4096})).expect("mistral");
        assert!(mistral.layer_types.iter().all(|&k| k == LayerKind::Sliding));
        let qwen = config("qwen2", serde_json::json!({"use_sliding_window": true, "sliding_window": 64, "max_window_layers": 4}))
            .expect("qwen2");
        let sliding: Vec<usize> = (0..6).filter(|&i| qwen.layer_types[i] == LayerKind::Sliding).collect();
        assert_eq!(sliding, [4, 5]);
        let explicit = config("qwen3", serde_json::json!({"layer_types": vec!["full_attention"; 6]})).expect("explicit");
        assert!(explicit.layer_types.iter().all(|&k| k == LayerKind::Full));
        let err = config("qwen3", serde_json::json!({"layer_types": ["full_attention"]})).expect_err("wrong length");
        assert!(err.to_string().contains("1 entries for 6 layers"), "{err}");
    }

    #[test]
    fn qwen2_vl_configs_in_both_layouts() {
        let text = serde_json::json!({"vocab_size": 32, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512});
        let mut v5 = serde_json::json!({"model_type": "qwen2_vl", "tie_word_embeddings": false,
            "vision_config": {"depth": 2}, "text_config": text.clone()});
        v5["text_config"]["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]});
        let mut classic = text.clone();
        classic["architectures"] = serde_json::json!(["Qwen2VLForConditionalGeneration"]);
        classic["rope_theta"] = serde_json::json!(1e6);
        classic["rope_scaling"] = serde_json::json!({"type": "mrope", "mrope_section": [2, 3, 3]});
        let a = parse_config(&v5.to_string(), Path::new("config.json")).expect("transformers 5 layout");
        let b = parse_config(&classic.to_string(), Path::new("config.json")).expect("classic layout");
        assert_eq!(a, b);
        assert_eq!((a.arch, a.mrope_section, a.rope_theta, a.rope_scaling.clone()), (Arch::Qwen2, Some([2, 3, 3]), 1e6, None));
        classic["rope_scaling"]["mrope_section"] = serde_json::json!([2, 3, 4]);
        let err = parse_config(&classic.to_string(), Path::new("config.json")).expect_err("bad sum");
        assert!(err.to_string().contains("must sum to head_dim/2"), "{err}");
        classic["rope_scaling"] = Value::Null;
        let err = parse_config(&classic.to_string(), Path::new("config.json")).expect_err("no sections");
        assert!(err.to_string().contains("mrope_section"), "{err}");
    }

    /// Qwen2.5-VL: a Hub-style classic config (Qwen2.5-VL-3B-Instruct's vision keys), and the
    /// defaults of transformers' `Qwen2_5_VLVisionConfig` for missing keys.
    #[test]
    fn qwen2_5_vl_vision_configs() {
        let dir = ingot_testkit::scratch_dir("hf-config-qwen2.5-vl");
        let read = |config: &Value| {
            std::fs::write(dir.join(CONFIG_FILE), config.to_string()).expect("write");
            (parse_config(&config.to_string(), Path::new("config.json")), read_vision_config(&dir))
        };
        let mut classic = serde_json::json!({"architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "model_type": "qwen2_5_vl", "vocab_size": 32, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 1e6,
            "max_position_embeddings": 128000,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}, "image_token_id": 151655,
            "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
                "num_heads": 16, "in_chans": 3, "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
                "spatial_patch_size": 14, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
                "tokens_per_second": 2, "temporal_patch_size": 2}});
        let (text, vision) = read(&classic);
        let text = text.expect("text config");
        assert_eq!((text.arch, text.mrope_section), (Arch::Qwen2, Some([2, 3, 3])));
        let (v, tokens) = vision.expect("vision config").expect("a VL model");
        let want = VisionConfig {
            arch: VisionArch::Qwen25Vl { window_size: 112, fullatt_block_indexes: vec![7, 15, 23, 31] },
            depth: 32,
            embed_dim: 1280,
            num_heads: 16,
            intermediate_size: 3420,
            hidden_act: VisionActivation::Silu,
            patch_size: 14,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            in_channels: 3,
            hidden_size: 2048,
        };
        assert_eq!(v, want);
        assert_eq!((tokens.image_token_id, tokens.vision_start_token_id), (151_655, 151_652));

        // Without model_type the class decides; without vision keys, transformers' defaults.
        classic.as_object_mut().expect("object").remove("model_type");
        classic["vision_config"] = serde_json::json!({});
        let (v, _) = read(&classic).1.expect("defaults").expect("a VL model");
        assert_eq!(
            v,
            VisionConfig {
                arch: VisionArch::Qwen25Vl { window_size: 112, fullatt_block_indexes: vec![7, 15, 23, 31] },
                embed_dim: 3584,
                hidden_size: 3584,
                ..want
            }
        );
        // A window that is not whole merge units is refused.
        classic["vision_config"] = serde_json::json!({"window_size": 100});
        let err = read(&classic).1.expect_err("window");
        assert!(err.to_string().contains("window_size (100)"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unsupported_features_are_errors() {
        for (extra, message) in [
            (serde_json::json!({"mlp_bias": true}), "mlp_bias"),
            (serde_json::json!({"hidden_act": "relu"}), "activation 'relu'"),
            (serde_json::json!({"attn_logit_softcapping": 50.0}), "attn_logit_softcapping"),
            (serde_json::json!({"rope_scaling": {"type": "dynamic", "factor": 2.0}}), "RoPE type 'dynamic'"),
            (serde_json::json!({"rope_scaling": {"rope_type": "llama3", "factor": 2.0}}), "'low_freq_factor' is required"),
        ] {
            let err = config("llama", extra).expect_err(message);
            assert!(err.to_string().contains(message), "{err} should mention {message}");
        }
    }
}
