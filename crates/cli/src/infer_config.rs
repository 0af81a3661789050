//! LLaMA Factory inference configs: `ingot chat|score [CONFIG.yaml] [KEY=VALUE ...]`, the
//! way `llamafactory-cli chat cfg.yaml temperature=0.5` takes them.
//!
//! Precedence, lowest first: the YAML file, then `KEY=VALUE` overrides (a later one wins),
//! then flags given explicitly on the command line. A flag's clap default never beats the
//! file: only a value whose source is the command line does.
//!
//! Every key is checked: the ones ingot maps are converted and type-checked, valid LLaMA
//! Factory keys with no meaning here are collected for one warning line, and anything else
//! is an error naming the key and where it came from, so a typo never goes unnoticed.
//! Generation keys (`temperature`, `top_p`, `do_sample`, ...: every field of the engine's
//! [`GenParams`] by its LLaMA Factory name) deserialize straight into that one type.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use ingot_core::template::ChatTemplate;
use ingot_core::weights::{Quantization, WeightDType};
use ingot_engine::GenParams;
use serde_yaml_ng::Value;

#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// A LLaMA Factory inference config (.yaml/.yml), then KEY=VALUE overrides of its keys.
    /// Flags given explicitly win over both.
    #[arg(value_name = "CONFIG.yaml | KEY=VALUE")]
    pub items: Vec<String>,
}

/// One key's value with where it came from, kept apart because the two are typed
/// differently: YAML values already carry a type, override values are text.
enum Setting {
    File(Value),
    Override(String),
}

/// The settings of a config file and its overrides, converted to ingot's terms. `None` means
/// the key was not given.
#[derive(Debug, Default, PartialEq)]
pub struct InferConfig {
    pub model: Option<PathBuf>,
    pub adapters: Option<Vec<PathBuf>>,
    /// `lora_adapters`: `NAME=DIR` adapters served unmerged (`--lora`).
    pub loras: Option<Vec<(String, PathBuf)>>,
    /// `max_loras` (`--max-loras`).
    pub max_loras: Option<usize>,
    /// `use_lora`: the adapter chat and infer run with (`--use-lora`).
    pub use_lora: Option<String>,
    pub template: Option<String>,
    pub system: Option<String>,
    pub dtype: Option<WeightDType>,
    /// `quantization_bit` 8 or 4: quantize a checkpoint at load (q8_0, q4_k).
    pub quantize: Option<Quantization>,
    /// LLaMA Factory's `enable_thinking`, passed to the chat template.
    pub enable_thinking: Option<bool>,
    /// The generation keys given.
    pub params: GenParams,
    /// `dataset` (or `eval_dataset`), `dataset_dir`, `max_samples`: for `ingot infer`.
    pub dataset: Option<String>,
    pub dataset_dir: Option<PathBuf>,
    pub max_samples: Option<usize>,
    /// `remote_urls` (ingot's key, beside LLaMA Factory's `infer_backend`): the
    /// OpenAI-compatible servers `ingot infer --remote` sends rows to.
    pub remote_urls: Option<Vec<String>>,
    /// `media_dir`: where `ingot infer` finds a dataset's relative image paths (default:
    /// `dataset_dir`), and where `ingot api` lets `image_url` parts point.
    pub media_dir: Option<PathBuf>,
    /// `allow_remote_media`: `ingot api` may fetch http(s) image URLs.
    pub allow_remote_media: Option<bool>,
    /// `image_min_pixels` / `image_max_pixels`: bounds on an image's size after resizing.
    pub image_min_pixels: Option<usize>,
    pub image_max_pixels: Option<usize>,
    /// `video_min_pixels` / `video_max_pixels`, `video_fps`, `video_maxlen`,
    /// `audio_sampling_rate`: LLaMA Factory's video and audio preprocessing.
    pub video_min_pixels: Option<usize>,
    pub video_max_pixels: Option<usize>,
    pub video_fps: Option<f64>,
    pub video_maxlen: Option<usize>,
    pub audio_sampling_rate: Option<u32>,
    /// `lookup` (ingot's key, `--lookup`): most lookup-decoding draft tokens per step.
    pub lookup: Option<usize>,
    /// Valid LLaMA Factory keys ingot has no use for, in the order given.
    pub ignored: Vec<String>,
    /// The generation keys given (template, sampling, system prompt): commands that do not
    /// generate report them as ignored.
    pub generation_keys: Vec<String>,
    /// The dataset keys given: commands that read no dataset report them as ignored.
    pub data_keys: Vec<String>,
    /// The API server's keys given: commands other than `api` report them as ignored.
    pub server_keys: Vec<String>,
}

/// The keys besides [`GenParams`]' own that only matter to commands that generate text.
const GENERATION_KEYS: &[&str] = &["template", "enable_thinking", "default_system", "use_lora", "lookup"];

/// The keys that only matter to commands that read a dataset.
const DATA_KEYS: &[&str] = &["dataset", "eval_dataset", "dataset_dir", "max_samples", "remote_urls"];

/// The keys that only matter to the API server. (`media_dir` serves `infer` too, so it is
/// in neither list.)
const SERVER_KEYS: &[&str] = &["allow_remote_media"];

/// Valid LLaMA Factory inference keys (model, data and generation arguments) that change
/// nothing in ingot: GPU backends, tokenizer loading switches, multimodal and export options.
const IGNORED_KEYS: &[&str] = &[
    "infer_backend",
    "trust_remote_code",
    "flash_attn",
    "use_fast_tokenizer",
    "quantization_method",
    "quantization_type",
    "double_quantization",
    "quantization_device_map",
    "rope_scaling",
    "cache_dir",
    "hf_hub_token",
    "ms_hub_token",
    "om_hub_token",
    "print_param_status",
    "model_revision",
    "low_cpu_mem_usage",
    "split_special_tokens",
    "new_special_tokens",
    "resize_vocab",
    "use_unsloth",
    "enable_liger_kernel",
    "offload_folder",
    "use_cache",
    "finetuning_type",
    "num_beams",
    "length_penalty",
    "max_length",
    "skip_special_tokens",
    // ingot never truncates a prompt: one over the context is an error for its row.
    "cutoff_len",
];

/// Key prefixes of whole families of backend options ingot has no counterpart for.
const IGNORED_PREFIXES: &[&str] = &["vllm_", "sglang_", "export_"];

fn is_ignored(key: &str) -> bool {
    IGNORED_KEYS.contains(&key) || IGNORED_PREFIXES.iter().any(|p| key.starts_with(p))
}

impl ConfigArgs {
    /// Reads the config file (if any), applies the overrides and converts every key.
    pub fn resolve(&self) -> anyhow::Result<InferConfig> {
        let mut items = self.items.as_slice();
        let mut settings: Vec<(String, Setting)> = Vec::new();
        let mut file_label = None;
        if let Some(first) = items.first().filter(|s| is_config_path(s)) {
            let path = Path::new(first);
            settings = read_file(path)?;
            file_label = Some(path.display().to_string());
            items = &items[1..];
        }
        for item in items {
            let Some((key, value)) = item.split_once('=') else {
                bail!("expected KEY=VALUE, got `{item}` (a config file must come first and end in .yaml or .yml)");
            };
            let key = key.trim().to_owned();
            // A later setting of the same key replaces the earlier one in place, keeping the
            // file's order for the ignored-keys warning.
            settings.retain(|(k, _)| *k != key);
            settings.push((key, Setting::Override(value.to_owned())));
        }
        convert(&settings, file_label.as_deref().unwrap_or("the command line"))
    }
}

fn is_config_path(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    !s.contains('=') && (lower.ends_with(".yaml") || lower.ends_with(".yml"))
}

/// The top-level keys of a YAML config, in file order. An empty file has none.
fn read_file(path: &Path) -> anyhow::Result<Vec<(String, Setting)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: Value = serde_yaml_ng::from_str(&text).with_context(|| format!("{}: invalid YAML", path.display()))?;
    let map = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(m) => m,
        _ => bail!("{}: expected a mapping of LLaMA Factory keys at the top level", path.display()),
    };
    map.into_iter()
        .map(|(k, v)| match k {
            Value::String(k) => Ok((k, Setting::File(v))),
            other => bail!("{}: keys must be strings, got {other:?}", path.display()),
        })
        .collect()
}

fn convert(settings: &[(String, Setting)], file: &str) -> anyhow::Result<InferConfig> {
    let mut cfg = InferConfig::default();
    let gen_keys = gen_params_keys();
    let mut params = serde_json::Map::new();
    for (key, setting) in settings {
        let v = Typed { key, setting, file };
        match key.as_str() {
            "model_name_or_path" => cfg.model = Some(PathBuf::from(v.string()?)),
            "adapter_name_or_path" => cfg.adapters = Some(v.paths()?),
            "lora_adapters" => cfg.loras = Some(v.loras()?),
            "max_loras" => cfg.max_loras = Some(v.count()?),
            "use_lora" => cfg.use_lora = Some(v.string()?),
            "quantization_bit" => cfg.quantize = Some(v.quantization()?),
            "enable_thinking" => cfg.enable_thinking = Some(v.bool()?),
            "infer_dtype" => cfg.dtype = Some(v.dtype()?),
            "template" => cfg.template = Some(v.template()?),
            "default_system" => cfg.system = Some(v.string()?),
            "dataset" | "eval_dataset" => {
                let name = v.string()?;
                if name.contains(',') {
                    bail!("{}: `{key}` lists several datasets; ingot infer reads one at a time", v.origin());
                }
                cfg.dataset = Some(name.trim().to_owned());
            }
            "dataset_dir" => cfg.dataset_dir = Some(PathBuf::from(v.string()?)),
            "max_samples" => cfg.max_samples = Some(v.count()?),
            "remote_urls" => cfg.remote_urls = Some(v.strings()?),
            "media_dir" => cfg.media_dir = Some(PathBuf::from(v.string()?)),
            "allow_remote_media" => cfg.allow_remote_media = Some(v.bool()?),
            "image_min_pixels" => cfg.image_min_pixels = Some(v.count()?),
            "image_max_pixels" => cfg.image_max_pixels = Some(v.count()?),
            "video_min_pixels" => cfg.video_min_pixels = Some(v.count()?),
            "video_max_pixels" => cfg.video_max_pixels = Some(v.count()?),
            "video_fps" => cfg.video_fps = Some(v.positive()?),
            "video_maxlen" => cfg.video_maxlen = Some(v.count()?),
            "audio_sampling_rate" => cfg.audio_sampling_rate = Some(v.count()?),
            "lookup" => cfg.lookup = Some(v.count()?),
            k if is_ignored(k) => cfg.ignored.push(k.to_owned()),
            k if gen_keys.iter().any(|g| g == k) => {
                params.insert(k.to_owned(), v.gen_param()?);
                cfg.generation_keys.push(key.clone());
            }
            k => bail!("{}: unknown key `{k}`", v.origin()),
        }
        if GENERATION_KEYS.contains(&key.as_str()) {
            cfg.generation_keys.push(key.clone());
        }
        if DATA_KEYS.contains(&key.as_str()) {
            cfg.data_keys.push(key.clone());
        }
        if SERVER_KEYS.contains(&key.as_str()) {
            cfg.server_keys.push(key.clone());
        }
    }
    // Each value was checked alone, so together they deserialize.
    cfg.params = serde_json::from_value(serde_json::Value::Object(params)).context("generation keys")?;
    Ok(cfg)
}

/// One `NAME=DIR` LoRA adapter (`--lora`, the config's `lora_adapters`).
pub fn parse_lora(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, dir)) if !name.trim().is_empty() && !dir.trim().is_empty() => {
            Ok((name.trim().to_string(), PathBuf::from(dir.trim())))
        }
        _ => Err(format!("expected NAME=DIR (a name for the adapter, then its directory), got `{s}`")),
    }
}

/// The names of [`GenParams`]' fields (LLaMA Factory's), as the config takes them.
fn gen_params_keys() -> Vec<String> {
    match serde_json::to_value(GenParams::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    }
}

/// One setting being converted to the type its key needs.
struct Typed<'a> {
    key: &'a str,
    setting: &'a Setting,
    file: &'a str,
}

impl Typed<'_> {
    fn origin(&self) -> String {
        match self.setting {
            Setting::File(_) => self.file.to_owned(),
            Setting::Override(v) => format!("override `{}={v}`", self.key),
        }
    }

    fn wrong(&self, expected: &str) -> anyhow::Error {
        anyhow::anyhow!("{}: `{}` must be {expected}", self.origin(), self.key)
    }

    /// A generation key's value, checked by deserializing it alone into [`GenParams`].
    fn gen_param(&self) -> anyhow::Result<serde_json::Value> {
        let value = match self.setting {
            Setting::File(v) => serde_json::to_value(v).map_err(|_| self.wrong("a plain value"))?,
            // An override is text: read it as a YAML scalar, as the file's values are.
            Setting::Override(s) => serde_yaml_ng::from_str::<Value>(s)
                .ok()
                .and_then(|v| serde_json::to_value(v).ok())
                .unwrap_or_else(|| serde_json::Value::String(s.clone())),
        };
        let one = serde_json::json!({ self.key: value.clone() });
        match serde_json::from_value::<GenParams>(one) {
            Ok(_) => Ok(value),
            Err(e) => {
                let e = e.to_string();
                let expected = if e.contains("expected f32") {
                    "a number"
                } else if e.contains("expected usize") || e.contains("expected u64") || e.contains("expected u32") {
                    "a non-negative integer"
                } else if e.contains("expected a boolean") {
                    "true or false"
                } else {
                    return Err(anyhow::anyhow!("{}: `{}`: {e}", self.origin(), self.key));
                };
                Err(self.wrong(expected))
            }
        }
    }

    fn string(&self) -> anyhow::Result<String> {
        match self.setting {
            Setting::File(Value::String(s)) => Ok(s.clone()),
            Setting::Override(s) => Ok(s.clone()),
            Setting::File(_) => Err(self.wrong("a string")),
        }
    }

    fn count<T: TryFrom<u64>>(&self) -> anyhow::Result<T> {
        let n = match self.setting {
            Setting::File(Value::Number(n)) => n.as_u64(),
            Setting::Override(s) => s.trim().parse::<u64>().ok(),
            Setting::File(_) => None,
        };
        n.and_then(|n| T::try_from(n).ok()).ok_or_else(|| self.wrong("a non-negative integer"))
    }

    fn positive(&self) -> anyhow::Result<f64> {
        let n = match self.setting {
            Setting::File(Value::Number(n)) => n.as_f64(),
            Setting::Override(s) => s.trim().parse::<f64>().ok(),
            Setting::File(_) => None,
        };
        n.filter(|n| n.is_finite() && *n > 0.0).ok_or_else(|| self.wrong("a positive number"))
    }

    fn bool(&self) -> anyhow::Result<bool> {
        match self.setting {
            Setting::File(Value::Bool(b)) => Ok(*b),
            Setting::Override(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.wrong("true or false")),
            },
            Setting::File(_) => Err(self.wrong("true or false")),
        }
    }

    /// A comma-separated string or a YAML list of strings, trimmed, empty ones dropped.
    fn strings(&self) -> anyhow::Result<Vec<String>> {
        let items: Vec<String> = match self.setting {
            Setting::File(Value::Sequence(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| self.wrong("a string or a list of strings")))
                .collect::<anyhow::Result<_>>()?,
            _ => self.string()?.split(',').map(str::to_owned).collect(),
        };
        Ok(items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_owned).collect())
    }

    /// A comma-separated string or a YAML list of paths.
    fn paths(&self) -> anyhow::Result<Vec<PathBuf>> {
        Ok(self.strings()?.into_iter().map(PathBuf::from).collect())
    }

    /// `NAME=DIR` adapters: a comma-separated string or a YAML list.
    fn loras(&self) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let parse = |s: String| parse_lora(&s).map_err(|e| anyhow::anyhow!("{}: `{}`: {e}", self.origin(), self.key));
        self.strings()?.into_iter().map(parse).collect()
    }

    /// LLaMA Factory quantizes on the fly with bitsandbytes; ingot quantizes at load to the
    /// GGUF type of the same width.
    fn quantization(&self) -> anyhow::Result<Quantization> {
        match self.count::<u64>()? {
            8 => Ok(Quantization::Q8_0),
            4 => Ok(Quantization::Q4K),
            _ => Err(self.wrong("8 or 4")),
        }
    }

    fn dtype(&self) -> anyhow::Result<WeightDType> {
        match self.string()?.as_str() {
            "auto" => Ok(WeightDType::Auto),
            "float32" => Ok(WeightDType::F32),
            "float16" => Ok(WeightDType::F16),
            "bfloat16" => Ok(WeightDType::Bf16),
            _ => Err(self.wrong("one of auto, float32, float16, bfloat16")),
        }
    }

    fn template(&self) -> anyhow::Result<String> {
        // Our named templates carry LLaMA Factory's names.
        let name = self.string()?;
        let names = ChatTemplate::names();
        if names.contains(&name.as_str()) {
            Ok(name)
        } else {
            Err(self.wrong(&format!("a template ingot has: one of {}, not `{name}`", names.join(", "))))
        }
    }
}

impl InferConfig {
    /// One stderr line naming the keys that change nothing, if there are any.
    pub fn warn_ignored(&self) {
        if !self.ignored.is_empty() {
            eprintln!("warning: ignoring LLaMA Factory keys ingot has no use for: {}", self.ignored.join(", "));
        }
    }
}

/// Stores `value` in `slot` unless the flag `id` was given on the command line, which wins.
pub fn fill<T>(slot: &mut T, value: Option<T>, matches: &ArgMatches, id: &str) {
    if let Some(value) = value {
        if matches.value_source(id) != Some(ValueSource::CommandLine) {
            *slot = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(items: &[&str]) -> anyhow::Result<InferConfig> {
        ConfigArgs { items: items.iter().map(|s| s.to_string()).collect() }.resolve()
    }

    fn yaml(name: &str, text: &str) -> String {
        // A directory per file: scratch_dir empties its directory, and tests run in parallel.
        let path = ingot_testkit::scratch_dir(&format!("infer-config-{name}")).join(name);
        std::fs::write(&path, text).expect("write config");
        path.display().to_string()
    }

    #[test]
    fn maps_quantization_thinking_and_adapter_lists() {
        let f = yaml(
            "lists.yaml",
            "adapter_name_or_path:\n  - saves/a\n  - saves/b\nquantization_bit: 4\nenable_thinking: false\n",
        );
        let cfg = resolve(&[&f]).expect("valid");
        assert_eq!(cfg.adapters, Some(vec![PathBuf::from("saves/a"), PathBuf::from("saves/b")]));
        assert_eq!((cfg.quantize, cfg.enable_thinking), (Some(Quantization::Q4K), Some(false)));
        assert_eq!(resolve(&[&f, "quantization_bit=8"]).expect("valid").quantize, Some(Quantization::Q8_0));
        let e = resolve(&[&f, "quantization_bit=3"]).expect_err("3 bits").to_string();
        assert!(e.contains("`quantization_bit` must be 8 or 4"), "{e}");
        let bad = yaml("badlist.yaml", "adapter_name_or_path:\n  - 1\n");
        let e = resolve(&[&bad]).expect_err("not a path").to_string();
        assert!(e.contains("a string or a list of strings"), "{e}");
    }

    #[test]
    fn maps_the_lookup_key() {
        let f = yaml("lookup.yaml", "lookup: 8\n");
        let cfg = resolve(&[&f]).expect("valid");
        assert_eq!((cfg.lookup, cfg.generation_keys.as_slice()), (Some(8), &["lookup".to_string()][..]));
        assert_eq!(resolve(&[&f, "lookup=0"]).expect("valid").lookup, Some(0), "an override turns it off");
        let e = resolve(&["lookup=-1"]).expect_err("negative").to_string();
        assert!(e.contains("`lookup`") && e.contains("non-negative integer"), "{e}");
    }

    #[test]
    fn maps_unmerged_lora_keys() {
        let f = yaml("loras.yaml", "lora_adapters:\n  - tuned=saves/a\n  - other = saves/b\nmax_loras: 1\nuse_lora: tuned\n");
        let cfg = resolve(&[&f]).expect("valid");
        let expected = vec![("tuned".to_string(), PathBuf::from("saves/a")), ("other".to_string(), PathBuf::from("saves/b"))];
        assert_eq!((cfg.loras, cfg.max_loras, cfg.use_lora.as_deref()), (Some(expected), Some(1), Some("tuned")));
        let e = resolve(&["lora_adapters=saves/a"]).expect_err("no name").to_string();
        assert!(e.contains("`lora_adapters`") && e.contains("NAME=DIR"), "{e}");
    }

    #[test]
    fn maps_llama_factory_keys() {
        let f = yaml(
            "full.yaml",
            "model_name_or_path: /m\nadapter_name_or_path: a, b\ntemplate: gemma3\ndefault_system: be brief\n\
             infer_dtype: bfloat16\ntemperature: 0.5\ntop_p: 0.9\ntop_k: 20\nmax_new_tokens: 8\n\
             repetition_penalty: 1.1\nseed: 3\ninfer_backend: vllm\nvllm_maxlen: 4096\n",
        );
        let cfg = resolve(&[&f]).expect("valid");
        assert_eq!(cfg.model, Some(PathBuf::from("/m")));
        assert_eq!(cfg.adapters, Some(vec![PathBuf::from("a"), PathBuf::from("b")]));
        assert_eq!(cfg.template.as_deref(), Some("gemma3"));
        assert_eq!(cfg.system.as_deref(), Some("be brief"));
        assert_eq!(cfg.dtype, Some(WeightDType::Bf16));
        let p = &cfg.params;
        assert_eq!((p.temperature, p.top_p, p.top_k), (Some(0.5), Some(0.9), Some(20)));
        assert_eq!((p.max_new_tokens, p.repetition_penalty, p.seed), (Some(8), Some(1.1), Some(3)));
        assert_eq!(cfg.ignored, ["infer_backend", "vllm_maxlen"]);
    }

    #[test]
    fn overrides_replace_file_values_and_do_sample_false_is_greedy() {
        let f = yaml("over.yaml", "max_new_tokens: 8\ntemperature: 0.7\n");
        let cfg = resolve(&[&f, "max_new_tokens=2", "do_sample=false"]).expect("valid");
        assert_eq!(cfg.params.max_new_tokens, Some(2));
        // The engine decodes greedily when do_sample is false, whatever the temperature.
        assert_eq!((cfg.params.do_sample, cfg.params.temperature), (Some(false), Some(0.7)));
        assert!(cfg.params.clone().or(&GenParams::llama_factory()).sampling().expect("valid").is_greedy());
        let cfg = resolve(&["top_k=5", "top_k=6"]).expect("overrides alone are a config");
        assert_eq!(cfg.params.top_k, Some(6));
    }

    #[test]
    fn errors_name_the_key_and_where_it_came_from() {
        let f = yaml("bad.yaml", "temprature: 0.5\n");
        let e = format!("{:#}", resolve(&[&f]).expect_err("unknown key"));
        assert!(e.contains("temprature") && e.contains("bad.yaml"), "{e}");
        let f = yaml("type.yaml", "top_k: lots\n");
        let e = format!("{:#}", resolve(&[&f]).expect_err("wrong type"));
        assert!(e.contains("top_k") && e.contains("integer"), "{e}");
        let e = format!("{:#}", resolve(&["temperature=hot"]).expect_err("wrong type"));
        assert!(e.contains("temperature=hot") && e.contains("number"), "{e}");
        let e = format!("{:#}", resolve(&["template=vicuna"]).expect_err("unknown template"));
        assert!(e.contains("vicuna") && e.contains("qwen"), "{e}");
        let e = format!("{:#}", resolve(&["notakeyvalue"]).expect_err("not key=value"));
        assert!(e.contains("KEY=VALUE"), "{e}");
        let f = yaml("list.yaml", "- a\n");
        assert!(resolve(&[&f]).is_err());
    }

    #[test]
    fn dataset_keys_are_for_infer() {
        let f = yaml("data.yaml", "eval_dataset: alpaca_demo\ndataset_dir: data\nmax_samples: 5\ncutoff_len: 1024\n");
        let cfg = resolve(&[&f]).expect("valid");
        assert_eq!(cfg.dataset.as_deref(), Some("alpaca_demo"));
        assert_eq!((cfg.dataset_dir, cfg.max_samples), (Some(PathBuf::from("data")), Some(5)));
        assert_eq!((cfg.data_keys.len(), cfg.ignored.as_slice()), (3, &["cutoff_len".to_owned()][..]));
        let e = format!("{:#}", resolve(&["dataset=a,b"]).expect_err("two datasets"));
        assert!(e.contains("several"), "{e}");
    }

    #[test]
    fn remote_urls_take_a_list_or_commas() {
        let f = yaml("remote.yaml", "infer_backend: vllm\nremote_urls:\n  - http://a:8000\n  - http://b:8000\n");
        let cfg = resolve(&[&f]).expect("valid");
        assert_eq!(cfg.remote_urls, Some(vec!["http://a:8000".to_owned(), "http://b:8000".to_owned()]));
        assert_eq!((cfg.data_keys.as_slice(), cfg.ignored.as_slice()), (&["remote_urls".to_owned()][..], &["infer_backend".to_owned()][..]));
        let cfg = resolve(&["remote_urls=http://a:1, http://b:2"]).expect("valid");
        assert_eq!(cfg.remote_urls, Some(vec!["http://a:1".to_owned(), "http://b:2".to_owned()]));
    }

    #[test]
    fn media_keys_are_for_api() {
        let f = yaml("media.yaml", "media_dir: /srv/images\nallow_remote_media: true\n");
        let cfg = resolve(&[&f]).expect("valid");
        assert_eq!((cfg.media_dir, cfg.allow_remote_media), (Some(PathBuf::from("/srv/images")), Some(true)));
        assert_eq!(cfg.server_keys, ["allow_remote_media"]);
        assert_eq!(resolve(&[&f, "allow_remote_media=false"]).expect("valid").allow_remote_media, Some(false));
        let e = format!("{:#}", resolve(&["allow_remote_media=yes"]).expect_err("not a bool"));
        assert!(e.contains("allow_remote_media") && e.contains("true or false"), "{e}");
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        let f = yaml("empty.yml", "");
        assert_eq!(resolve(&[&f]).expect("empty is valid"), InferConfig::default());
    }
}
