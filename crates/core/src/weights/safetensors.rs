//! Hugging Face checkpoint directories: `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`, read through [`WeightSource`].
//!
//! Every shard is memory-mapped and its header parsed by the `safetensors` crate, which checks
//! that the tensors' byte ranges match their shapes and lie inside the file; so tensor bytes
//! can be sliced without further bounds checks. A header longer than [`MAX_HEADER_BYTES`] is
//! refused before it is parsed. Tensor names are already the Hugging Face
//! names the model asks for. Stored f32, bf16 and f16 are read; the precision a matrix is
//! *held* in is chosen by the caller ([`WeightDType`], [`Quantization`]), not by the file.
//!
//! Invariant (see [`super`]): Gemma 3 norm weights are stored as `w` and applied as `1 + w`;
//! [`WeightSource::vector`] returns `1 + w` for every `*norm.weight` of a Gemma 3 checkpoint.
//!
//! [`Shard`] and [`Stored`] also read LoRA adapter files ([`super::lora`]); [`MergeSource`] lets
//! an adapter be merged in f32 *before* the load options' conversion (so `--quantize` quantizes
//! the merged weights once, rather than re-quantizing already quantized ones).

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;
use serde::Deserialize;

use super::gguf::header::OverLimit;
use super::{LoadError, MergeSource, Quantization, WeightDType, WeightSource};
use crate::config::{Arch, ModelConfig};
use crate::kernels::{GgmlDType, QMatrix};

/// Single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Largest JSON header accepted (the `safetensors` crate's own cap is 100 MB). A tensor's entry
/// is about 150 bytes, so this is ~200k tensors in one file, far more than checkpoints put in
/// a file; parsing a header costs several times its size in maps and strings.
pub const MAX_HEADER_BYTES: u64 = 32 << 20;

/// One mapped `.safetensors` file.
pub(crate) struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Offset of the data section (after the 8-byte length and the JSON header).
    data_start: usize,
    meta: Metadata,
}

/// The part of `model.safetensors.index.json` ingot needs.
#[derive(Deserialize)]
struct Index {
    weight_map: HashMap<String, String>,
}

/// The weights of a checkpoint directory.
pub struct SafetensorsDir {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → index in `shards`, built from the shards' own headers.
    names: HashMap<String, usize>,
    /// Name asked for → name stored, for checkpoints that nest the usual names under another
    /// prefix (newer Qwen2-VL / Qwen2.5-VL files: `model.language_model.*` for `model.*`, `model.visual.*`
    /// for `visual.*`; Qwen2-Audio: `language_model.*` for `model.*` and `lm_head.weight`).
    aliases: HashMap<String, String>,
    /// Gemma 3: norm weights are `w` in `x · (1 + w)`.
    norm_plus_one: bool,
    dtype: WeightDType,
    quantize: Option<Quantization>,
}

impl std::fmt::Debug for SafetensorsDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsDir").field("dir", &self.dir).field("shards", &self.shards.len()).finish()
    }
}

impl SafetensorsDir {
    /// Maps the checkpoint's weight files. `cfg` (from its config.json) decides the norm
    /// convention; `dtype` and `quantize` the precision matrices are held in.
    pub fn open(dir: &Path, cfg: &ModelConfig, dtype: WeightDType, quantize: Option<Quantization>) -> Result<Self, LoadError> {
        let files = shard_files(dir)?;
        let mut shards = Vec::with_capacity(files.len());
        let mut names = HashMap::new();
        for path in files {
            let shard = Shard::open(path)?;
            for name in shard.names() {
                names.insert(name, shards.len());
            }
            shards.push(shard);
        }
        let mut aliases = HashMap::new();
        for name in names.keys() {
            let usual = if let Some(rest) = name.strip_prefix("model.language_model.") {
                format!("model.{rest}")
            } else if let Some(rest) = name.strip_prefix("model.visual.") {
                format!("visual.{rest}")
            } else if let Some(rest) = name.strip_prefix("language_model.") {
                // Qwen2-Audio: `language_model.model.*` and `language_model.lm_head.weight`.
                rest.to_string()
            } else {
                continue;
            };
            if !names.contains_key(&usual) {
                aliases.insert(usual, name.clone());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
            names,
            aliases,
            norm_plus_one: cfg.arch == Arch::Gemma3,
            dtype,
            quantize,
        })
    }

    /// A tensor by name; a missing one is reported against the checkpoint directory.
    fn tensor(&self, name: &str) -> Result<Stored<'_>, LoadError> {
        let missing = || LoadError::MissingTensor { path: self.dir.clone(), name: name.to_string() };
        let stored = self.aliases.get(name).map_or(name, String::as_str);
        self.shards[*self.names.get(stored).ok_or_else(missing)?].tensor(stored).ok_or_else(missing)
    }

    /// A 2-D tensor and its shape `[n, k]`.
    fn matrix_tensor(&self, name: &str) -> Result<(Stored<'_>, usize, usize), LoadError> {
        let t = self.tensor(name)?;
        let [n, k] = t.shape[..] else {
            return Err(LoadError::bad_tensor(t.shard, name, format!("expected a matrix, got shape {:?}", t.shape)));
        };
        Ok((t, n, k))
    }

    /// The dtype unquantized matrices are held in.
    fn held_dtype(&self) -> GgmlDType {
        match self.dtype {
            WeightDType::Auto | WeightDType::F32 => GgmlDType::F32,
            WeightDType::Bf16 => GgmlDType::BF16,
            WeightDType::F16 => GgmlDType::F16,
        }
    }

    /// The quantization that applies to a matrix with rows of `k`, if any.
    fn quantization_for(&self, k: usize) -> Option<GgmlDType> {
        self.quantize.map(|q| q.ggml_dtype()).filter(|q| k.is_multiple_of(q.block_size()))
    }
}

/// One tensor as stored: its type, shape and bytes, and the shard it is in (for messages).
pub(crate) struct Stored<'a> {
    pub(crate) dtype: Dtype,
    pub(crate) shape: &'a [usize],
    bytes: &'a [u8],
    pub(crate) shard: &'a Path,
}

impl Stored<'_> {
    /// The values as f32, from F32, BF16 or F16.
    pub(crate) fn to_f32(&self, name: &str) -> Result<Vec<f32>, LoadError> {
        let b = self.bytes;
        Ok(match self.dtype {
            Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => {
                return Err(LoadError::bad_tensor(self.shard, name, format!("stored as {other:?}; expected F32, BF16 or F16")))
            }
        })
    }
}

/// One `.safetensors` file read on its own, outside a checkpoint's weight set (a reward
/// model's `value_head.safetensors`).
pub(crate) struct SafetensorsFile(Shard);

impl SafetensorsFile {
    pub(crate) fn open(path: PathBuf) -> Result<Self, LoadError> {
        Shard::open(path).map(Self)
    }

    /// A tensor's shape and its values as f32; a missing one is reported against this file.
    pub(crate) fn f32_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), LoadError> {
        let t = self.0.tensor(name).ok_or_else(|| LoadError::MissingTensor { path: self.0.path.clone(), name: name.to_string() })?;
        Ok((t.shape.to_vec(), t.to_f32(name)?))
    }
}

impl Shard {
    pub(crate) fn open(path: PathBuf) -> Result<Self, LoadError> {
        let io = |source| LoadError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process; a file changed underneath us
        // while running is outside what any model loader can defend against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        if let Some(len) = mmap.first_chunk::<8>().map(|b| u64::from_le_bytes(*b)) {
            if len > MAX_HEADER_BYTES {
                let source = OverLimit { field: "header length".into(), value: len, limit: MAX_HEADER_BYTES };
                return Err(LoadError::OverLimit { path, source });
            }
        }
        let (header_len, meta) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| LoadError::CorruptSafetensors { path: path.clone(), problem: e.to_string() })?;
        Ok(Self { data_start: 8 + header_len, path, mmap, meta })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The names of the tensors in this file.
    pub(crate) fn names(&self) -> Vec<String> {
        self.meta.tensors().into_keys().collect()
    }

    /// The tensor `name` of this file, if it holds one.
    pub(crate) fn tensor(&self, name: &str) -> Option<Stored<'_>> {
        let info = self.meta.info(name)?;
        let (start, end) = info.data_offsets;
        // In bounds: `read_metadata` checked every range against the file length.
        let bytes = &self.mmap[self.data_start + start..self.data_start + end];
        Some(Stored { dtype: info.dtype, shape: &info.shape, bytes, shard: &self.path })
    }
}

/// The weight files of `dir`: the shards its index lists (each checked to exist), else
/// `model.safetensors`.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let index_path = dir.join(INDEX_FILE);
    if !index_path.exists() {
        let single = dir.join(SINGLE_FILE);
        if !single.exists() {
            return Err(LoadError::Invalid {
                path: dir.display().to_string(),
                problem: format!("no {SINGLE_FILE} or {INDEX_FILE} in this directory"),
            });
        }
        return Ok(vec![single]);
    }
    let bad_index = |problem: String| LoadError::Invalid { path: index_path.display().to_string(), problem };
    let text = std::fs::read_to_string(&index_path).map_err(|source| LoadError::Io { path: index_path.clone(), source })?;
    let index: Index = serde_json::from_str(&text).map_err(|e| bad_index(format!("invalid index: {e}")))?;
    // Sorted and deduplicated: many tensors share a shard.
    let files: BTreeSet<&String> = index.weight_map.values().collect();
    files
        .into_iter()
        .map(|file| {
            // Shard names are plain file names; anything else could point outside the checkpoint.
            if !Path::new(file).components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(bad_index(format!("shard name '{file}' is not a file name inside the directory")));
            }
            let path = dir.join(file);
            if !path.is_file() {
                return Err(bad_index(format!("lists shard '{file}', which is missing")));
            }
            Ok(path)
        })
        .collect()
}

/// Encodes f32 values as little-endian `dtype` (F16 or BF16) bytes, for [`QMatrix::from_ggml`].
fn encode_half(values: &[f32], dtype: GgmlDType) -> Vec<u8> {
    let bf16 = dtype == GgmlDType::BF16;
    values
        .iter()
        .flat_map(|&v| if bf16 { half::bf16::from_f32(v).to_le_bytes() } else { half::f16::from_f32(v).to_le_bytes() })
        .collect()
}

impl WeightSource for SafetensorsDir {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn has(&self, name: &str) -> bool {
        self.names.contains_key(name) || self.aliases.contains_key(name)
    }

    /// The matrix in the precision [`SafetensorsDir::open`] was given: quantized when `quantize` is set
    /// and the row length is a multiple of its block size (else unquantized), otherwise f32
    /// for `auto`/`f32`, or the 16-bit type asked for (bytes passed through when the file
    /// already stores that type).
    fn matrix(&self, name: &str) -> Result<QMatrix, LoadError> {
        let (t, n, k) = self.matrix_tensor(name)?;
        let held = self.held_dtype();
        let stored_as_held = matches!(
            (t.dtype, held),
            (Dtype::F32, GgmlDType::F32) | (Dtype::BF16, GgmlDType::BF16) | (Dtype::F16, GgmlDType::F16)
        );
        if stored_as_held && self.quantization_for(k).is_none() {
            return QMatrix::from_ggml(held, n, k, t.bytes).map_err(|e| LoadError::from_kernel(t.shard, name, e));
        }
        self.hold(name, n, k, &t.to_f32(name)?)
    }

    /// Flattened to `[shape[0], rest]` and held at the `dtype` option (f32 for `auto`), never
    /// quantized.
    fn matrix_unquantized(&self, name: &str) -> Result<QMatrix, LoadError> {
        let t = self.tensor(name)?;
        let (n, k) = match t.shape {
            [n, rest @ ..] if !rest.is_empty() => (*n, rest.iter().product::<usize>()),
            _ => return Err(LoadError::bad_tensor(t.shard, name, format!("expected a matrix, got shape {:?}", t.shape))),
        };
        let held = self.held_dtype();
        let converted = match (t.dtype, held) {
            (Dtype::F32, GgmlDType::F32) | (Dtype::BF16, GgmlDType::BF16) | (Dtype::F16, GgmlDType::F16) => {
                QMatrix::from_ggml(held, n, k, t.bytes)
            }
            (_, GgmlDType::F32) => QMatrix::from_f32(n, k, &t.to_f32(name)?),
            (_, half_type) => QMatrix::from_ggml(half_type, n, k, &encode_half(&t.to_f32(name)?, half_type)),
        };
        converted.map_err(|e| LoadError::from_kernel(t.shard, name, e))
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>, LoadError> {
        let t = self.tensor(name)?;
        if t.shape.len() != 1 {
            return Err(LoadError::bad_tensor(t.shard, name, format!("expected a vector, got shape {:?}", t.shape)));
        }
        let mut values = t.to_f32(name)?;
        if self.norm_plus_one && name.ends_with("norm.weight") {
            values.iter_mut().for_each(|w| *w += 1.0);
        }
        Ok(values)
    }
}

impl MergeSource for SafetensorsDir {
    fn matrix_shape(&self, name: &str) -> Result<[usize; 2], LoadError> {
        self.matrix_tensor(name).map(|(_, n, k)| [n, k])
    }

    /// The stored values widened to f32: exact for every stored type.
    fn matrix_f32(&self, name: &str) -> Result<Vec<f32>, LoadError> {
        self.matrix_tensor(name)?.0.to_f32(name)
    }

    /// The same conversion [`WeightSource::matrix`] applies to stored values.
    fn hold(&self, name: &str, n: usize, k: usize, values: &[f32]) -> Result<QMatrix, LoadError> {
        let converted = if let Some(q) = self.quantization_for(k) {
            QMatrix::quantize_f32(n, k, values, q)
        } else {
            match self.held_dtype() {
                GgmlDType::F32 => QMatrix::from_f32(n, k, values),
                half_type => QMatrix::from_ggml(half_type, n, k, &encode_half(values, half_type)),
            }
        };
        converted.map_err(|e| LoadError::from_kernel(&self.dir, name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_100_mb_header_is_refused_before_parsing() {
        let path = ingot_testkit::scratch_dir("safetensors-header").join(SINGLE_FILE);
        let file = File::create(&path).expect("create");
        // A sparse file that really is long enough to hold the header it claims.
        let claimed = 100u64 << 20;
        std::io::Write::write_all(&mut &file, &claimed.to_le_bytes()).expect("write");
        file.set_len(8 + claimed).expect("set_len");
        match Shard::open(path) {
            Err(LoadError::OverLimit { source, .. }) => {
                assert_eq!((source.field.as_str(), source.value, source.limit), ("header length", claimed, MAX_HEADER_BYTES));
            }
            Err(e) => panic!("expected the header length refused, got {e}"),
            Ok(_) => panic!("expected the header length refused"),
        }
    }
}
