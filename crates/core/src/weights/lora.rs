//! PEFT LoRA adapters merged into a checkpoint's weights at load, as LLaMA Factory does with
//! `adapter_name_or_path` (PEFT's `merge_and_unload`). The same reading and checks serve
//! adapters kept unmerged and applied per sequence ([`crate::model::lora`]).
//!
//! An adapter directory holds `adapter_config.json` and `adapter_model.safetensors`, whose
//! tensors are `base_model.model.{module}.lora_A.weight` `[r, in]` and `...lora_B.weight`
//! `[out, r]` for each adapted linear layer `{module}` (a Hugging Face name without `.weight`).
//! The merged weight is `W' = W + scale · B · A`, `scale = lora_alpha / r`
//! (`lora_alpha / √r` with `use_rslora`).
//!
//! Invariants:
//! - Every adapter is checked against the base model when [`LoraMerged`] is built: each adapted
//!   module exists in the model, and `A`/`B` fit its weight's shape. So a load either merges
//!   every adapter tensor or fails naming the adapter file and tensor.
//! - The merge happens in f32 on the weights as stored, before the load options' conversion
//!   ([`MergeSource::hold`]): quantizing (`--quantize`) applies once, to the merged weights.
//! - Several adapters are applied in the order given, each with its own scale.
//! - Only what the merge formula above covers is accepted; PEFT features that would change it
//!   (DoRA, per-module rank/alpha patterns, transposed `fan_in_fan_out` weights, regex targets,
//!   extra trained modules (`modules_to_save`), trained biases (`bias` other than `none`),
//!   `layers_to_transform`, `layer_replication`) are refused rather than ignored, naming
//!   `adapter_config.json` and the setting.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::safetensors::Shard;
use super::{LoadError, MergeSource, WeightSource};
use crate::kernels::QMatrix;

/// The adapter's configuration file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// Prefix PEFT gives every tensor name of an adapter for a causal LM.
const PEFT_PREFIX: &str = "base_model.model.";

/// Why an adapter cannot be merged. Every variant names the adapter file (and the tensor).
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{path}: invalid adapter config: {problem}")]
    BadConfig { path: PathBuf, problem: String },
    #[error("{path}: {feature} is not supported")]
    Unsupported { path: PathBuf, feature: String },
    #[error("{path}: tensor '{tensor}' is not a LoRA weight ({PEFT_PREFIX}<module>.lora_A.weight or .lora_B.weight)")]
    UnexpectedTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensor '{tensor}' adapts a module not in target_modules of {ADAPTER_CONFIG}")]
    OutsideTargets { path: PathBuf, tensor: String },
    #[error("{path}: tensor '{tensor}' has no matching {missing}")]
    Unpaired { path: PathBuf, tensor: String, missing: &'static str },
    #[error("{path}: tensor '{tensor}' adapts module '{module}', which the model lacks (an adapter for another model?)")]
    UnknownModule { path: PathBuf, tensor: String, module: String },
    #[error("{path}: tensor '{tensor}': {problem} (an adapter for another model?)")]
    Shape { path: PathBuf, tensor: String, problem: String },
}

/// The keys of `adapter_config.json` the merge depends on.
#[derive(Deserialize)]
struct AdapterConfig {
    peft_type: Option<String>,
    r: usize,
    lora_alpha: f32,
    target_modules: TargetModules,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    lora_bias: bool,
    rank_pattern: Option<HashMap<String, serde_json::Value>>,
    alpha_pattern: Option<HashMap<String, serde_json::Value>>,
    modules_to_save: Option<Vec<String>>,
    bias: Option<String>,
    layers_to_transform: Option<serde_json::Value>,
    layer_replication: Option<serde_json::Value>,
}

/// PEFT saves target modules as a list of names, or a regex string.
#[derive(Deserialize)]
#[serde(untagged)]
enum TargetModules {
    Names(Vec<String>),
    Pattern(String),
}

/// One adapted weight: `scale · B · A` is added to it.
pub(crate) struct LoraPair {
    /// The adapter's A and B tensor names, for messages.
    a_tensor: String,
    b_tensor: String,
    /// `[r, k]`, row-major.
    pub(crate) a: Vec<f32>,
    /// `[n, r]`, row-major.
    pub(crate) b: Vec<f32>,
    pub(crate) r: usize,
    pub(crate) scale: f32,
}

/// One adapter directory, read and validated on its own.
pub(crate) struct Adapter {
    /// The weights file, for messages.
    pub(crate) path: PathBuf,
    /// Weight name (`model.layers.0.self_attn.q_proj.weight`) → its update.
    pub(crate) pairs: BTreeMap<String, LoraPair>,
}

impl Adapter {
    pub(crate) fn open(dir: &Path) -> Result<Self, LoadError> {
        let config_path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&config_path).map_err(|source| LoadError::Io { path: config_path.clone(), source })?;
        let bad = |problem: String| AdapterError::BadConfig { path: config_path.clone(), problem };
        let cfg: AdapterConfig = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let unsupported = |feature: &str| AdapterError::Unsupported { path: config_path.clone(), feature: feature.to_string() };
        if cfg.peft_type.as_deref().is_some_and(|t| t != "LORA") {
            return Err(unsupported(&format!("peft_type '{}' (only LORA)", cfg.peft_type.unwrap_or_default())).into());
        }
        if cfg.r == 0 {
            return Err(bad("r is 0".into()).into());
        }
        if cfg.fan_in_fan_out {
            return Err(unsupported("fan_in_fan_out: true (transposed weights, GPT-2 style)").into());
        }
        if cfg.use_dora {
            return Err(unsupported("use_dora: true (DoRA)").into());
        }
        if cfg.rank_pattern.is_some_and(|p| !p.is_empty()) || cfg.alpha_pattern.is_some_and(|p| !p.is_empty()) {
            return Err(unsupported("a per-module rank_pattern or alpha_pattern").into());
        }
        if cfg.lora_bias {
            return Err(unsupported("lora_bias: true (a bias on lora_B)").into());
        }
        if cfg.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            let modules = cfg.modules_to_save.unwrap_or_default().join(", ");
            return Err(unsupported(&format!("modules_to_save ({modules}): fully trained extra modules")).into());
        }
        if let Some(bias) = cfg.bias.as_deref().filter(|b| *b != "none") {
            return Err(unsupported(&format!("bias: \"{bias}\" (trained biases; only \"none\")")).into());
        }
        if cfg.layers_to_transform.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(unsupported("layers_to_transform (an adapter for some layers only)").into());
        }
        if cfg.layer_replication.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(unsupported("layer_replication").into());
        }
        let targets = match cfg.target_modules {
            TargetModules::Names(names) => names,
            TargetModules::Pattern(p) => return Err(unsupported(&format!("target_modules as a regex ('{p}')")).into()),
        };
        let scale = if cfg.use_rslora { cfg.lora_alpha / (cfg.r as f32).sqrt() } else { cfg.lora_alpha / cfg.r as f32 };

        let shard = Shard::open(dir.join(ADAPTER_WEIGHTS))?;
        let path = shard.path().to_path_buf();
        let shape_err = |tensor: &str, problem: String| AdapterError::Shape { path: path.clone(), tensor: tensor.into(), problem };
        // Module → (A tensor name, B tensor name), as found.
        let mut halves: BTreeMap<String, [Option<String>; 2]> = BTreeMap::new();
        let mut names = shard.names();
        // Sorted so that, of several bad tensors, the same one is reported every time.
        names.sort();
        for tensor in names {
            let parsed = tensor.strip_prefix(PEFT_PREFIX).and_then(|rest| {
                rest.strip_suffix(".lora_A.weight").map(|m| (m, 0)).or_else(|| rest.strip_suffix(".lora_B.weight").map(|m| (m, 1)))
            });
            let Some((module, half)) = parsed.map(|(m, h)| (m.to_string(), h)) else {
                return Err(AdapterError::UnexpectedTensor { path, tensor }.into());
            };
            // PEFT matches a listed target against the module name's last component.
            let leaf = module.rsplit('.').next().unwrap_or(&module);
            if !targets.iter().any(|t| t == leaf) {
                return Err(AdapterError::OutsideTargets { path, tensor }.into());
            }
            halves.entry(module).or_default()[half] = Some(tensor);
        }

        let mut pairs = BTreeMap::new();
        for (module, [a_name, b_name]) in halves {
            // Both names, when present, came from this file's header, so the lookups succeed.
            let (a, b) = match (a_name.as_deref().and_then(|n| shard.tensor(n)), b_name.as_deref().and_then(|n| shard.tensor(n))) {
                (Some(a), Some(b)) => (a, b),
                (_, None) => {
                    let tensor = a_name.unwrap_or_default();
                    return Err(AdapterError::Unpaired { path, tensor, missing: "lora_B.weight" }.into());
                }
                (None, _) => {
                    let tensor = b_name.unwrap_or_default();
                    return Err(AdapterError::Unpaired { path, tensor, missing: "lora_A.weight" }.into());
                }
            };
            let (a_name, b_name) = (a_name.unwrap_or_default(), b_name.unwrap_or_default());
            let (&[ra, _], &[_, rb]) = (a.shape, b.shape) else {
                let problem = format!("lora_A shape {:?} and lora_B shape {:?}: both must be matrices", a.shape, b.shape);
                return Err(shape_err(&a_name, problem).into());
            };
            if ra != cfg.r || rb != cfg.r {
                let problem = format!("lora_A shape {:?} and lora_B shape {:?} do not have rank r = {}", a.shape, b.shape, cfg.r);
                return Err(shape_err(&a_name, problem).into());
            }
            let pair = LoraPair { a: a.to_f32(&a_name)?, b: b.to_f32(&b_name)?, a_tensor: a_name, b_tensor: b_name, r: cfg.r, scale };
            pairs.insert(format!("{module}.weight"), pair);
        }
        Ok(Self { path, pairs })
    }

    /// Checks every adapted module against the base model: `shape_of` gives a weight's
    /// `[n, k]`, or `None` when the model has no such weight.
    pub(crate) fn check_against(
        &self,
        shape_of: impl Fn(&str) -> Result<Option<[usize; 2]>, LoadError>,
    ) -> Result<(), LoadError> {
        for (weight, pair) in &self.pairs {
            let Some([n, k]) = shape_of(weight)? else {
                let module = weight.trim_end_matches(".weight").to_string();
                return Err(AdapterError::UnknownModule { path: self.path.clone(), tensor: pair.a_tensor.clone(), module }.into());
            };
            let (a_fits, b_fits) = (pair.a.len() == pair.r * k, pair.b.len() == n * pair.r);
            if !(a_fits && b_fits) {
                let tensor = if a_fits { pair.b_tensor.clone() } else { pair.a_tensor.clone() };
                let problem = format!(
                    "lora_A [{}, {}] and lora_B [{}, {}] do not fit '{weight}' [{n}, {k}] (expected lora_A [{r}, {k}], lora_B [{n}, {r}])",
                    pair.r,
                    pair.a.len() / pair.r,
                    pair.b.len() / pair.r,
                    pair.r,
                    r = pair.r
                );
                return Err(AdapterError::Shape { path: self.path.clone(), tensor, problem }.into());
            }
        }
        Ok(())
    }
}

impl LoraPair {
    /// `w[n, k] += scale · B · A`, one output row at a time (rows of `A` are contiguous, so the
    /// inner loop is a scaled vector add).
    fn merge_into(&self, w: &mut [f32], k: usize) {
        for (row, b_row) in w.chunks_exact_mut(k).zip(self.b.chunks_exact(self.r)) {
            for (&b, a_row) in b_row.iter().zip(self.a.chunks_exact(k)) {
                let c = self.scale * b;
                row.iter_mut().zip(a_row).for_each(|(w, &a)| *w += c * a);
            }
        }
    }
}

/// A checkpoint's weights with LoRA adapters merged in: adapted matrices are rebuilt from
/// `W + Σ scale·B·A` in f32; everything else passes through from the base unchanged.
pub struct LoraMerged<S> {
    base: S,
    adapters: Vec<Adapter>,
}

impl<S: MergeSource> LoraMerged<S> {
    /// Reads every adapter directory in `dirs` (merged in that order) and checks each against
    /// `base`.
    pub fn new(base: S, dirs: &[PathBuf]) -> Result<Self, LoadError> {
        let adapters = dirs.iter().map(|d| Adapter::open(d)).collect::<Result<Vec<_>, _>>()?;
        for adapter in &adapters {
            adapter.check_against(|w| if base.has(w) { base.matrix_shape(w).map(Some) } else { Ok(None) })?;
        }
        Ok(Self { base, adapters })
    }
}

impl<S: MergeSource> WeightSource for LoraMerged<S> {
    fn path(&self) -> &Path {
        self.base.path()
    }

    fn has(&self, name: &str) -> bool {
        self.base.has(name)
    }

    fn matrix(&self, name: &str) -> Result<QMatrix, LoadError> {
        let mut updates = self.adapters.iter().filter_map(|a| a.pairs.get(name)).peekable();
        if updates.peek().is_none() {
            return self.base.matrix(name);
        }
        // Shapes were checked against the base in `new`.
        let [n, k] = self.base.matrix_shape(name)?;
        let mut w = self.base.matrix_f32(name)?;
        updates.for_each(|pair| pair.merge_into(&mut w, k));
        self.base.hold(name, n, k, &w)
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>, LoadError> {
        self.base.vector(name)
    }

    /// Adapters target the language model; the vision encoder's weights pass through.
    fn matrix_unquantized(&self, name: &str) -> Result<QMatrix, LoadError> {
        self.base.matrix_unquantized(name)
    }
}
