//! GGUF files: metadata → [`ModelConfig`], tensors by Hugging Face name, tokenizer, template.
//!
//! candle's `gguf_file` parses the header (with bounds checks against the file size), after
//! [`header::check`] has held its counts and lengths to limits that keep its memory small. Tensor
//! bytes are read with positioned reads, a chunk of rows at a time, rather than memory-mapped:
//! the kernels repack every weight into their own layout anyway, and a mapping (or a whole
//! tensor read at once) would keep the raw bytes resident beside the repacked copy, up to
//! doubling peak memory during loading.
//! Tensor extents are checked against the file length first, so a truncated download is
//! reported by name instead of crashing.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};

use super::{LoadError, WeightSource};
use crate::config::{Activation, Arch, KvType, LayerKind, ModelConfig, RopeScaling, RopeStyle};
use crate::kernels::{byte_size, KernelError, QMatrix};

pub mod header;

/// candle's message for an error, without the backtrace it attaches when `RUST_BACKTRACE`
/// is set: errors here are one line for people.
fn without_backtrace(mut e: candle_core::Error) -> String {
    while let candle_core::Error::WithBacktrace { inner, .. } = e {
        e = *inner;
    }
    e.to_string()
}

/// An open GGUF file.
pub struct GgufFile {
    path: PathBuf,
    file: File,
    file_len: u64,
    content: Content,
    arch: Arch,
    arch_name: String,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile").field("path", &self.path).field("arch", &self.arch).finish()
    }
}

impl GgufFile {
    /// Opens and parses the header. Fails on a missing file, bad magic, truncated header or
    /// an architecture ingot does not implement.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| LoadError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::new(&file);
        header::check(&mut reader, file_len).map_err(|refusal| match refusal {
            header::Refusal::OverLimit(source) => LoadError::OverLimit { path: path.clone(), source },
            header::Refusal::Malformed(problem) => LoadError::Corrupt { path: path.clone(), problem },
        })?;
        reader.rewind().map_err(io)?;
        let content = Content::read(&mut reader)
            .map_err(|e| LoadError::Corrupt { path: path.clone(), problem: without_backtrace(e) })?;
        let arch_name = match content.metadata.get("general.architecture") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(LoadError::MissingKey { path, key: "general.architecture".into() }),
        };
        let arch = Arch::from_name(&arch_name).ok_or_else(|| LoadError::UnsupportedArch {
            path: path.clone(),
            arch: arch_name.clone(),
            supported: Arch::SUPPORTED.iter().map(|s| s.to_string()).collect(),
        })?;
        Ok(Self { path, file, file_len, content, arch, arch_name })
    }

    /// The parsed header (metadata and tensor table).
    pub fn content(&self) -> &Content {
        &self.content
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// `tokenizer.chat_template`, if the file carries one.
    pub fn chat_template(&self) -> Option<&str> {
        match self.content.metadata.get("tokenizer.chat_template") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch_name)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn missing(&self, key: &str) -> LoadError {
        LoadError::MissingKey { path: self.path.clone(), key: key.to_string() }
    }

    fn bad_value(&self, key: &str, v: &Value) -> LoadError {
        LoadError::Invalid { path: self.path.display().to_string(), problem: format!("metadata '{key}' has unexpected value {v:?}") }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.to_u64().map(|x| Some(x as usize)).map_err(|_| self.bad_value(key, v)),
        }
    }

    fn usize(&self, key: &str) -> Result<usize, LoadError> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x)),
            Some(Value::F64(x)) => Ok(Some(*x as f32)),
            Some(v) => Err(self.bad_value(key, v)),
        }
    }

    /// Maps the `<arch>.*` metadata (plus llama.cpp's per-architecture conventions that the
    /// file does not spell out) onto a validated [`ModelConfig`].
    pub fn config(&self) -> Result<ModelConfig, LoadError> {
        let hidden_size = self.usize(&self.key("embedding_length"))?;
        let num_layers = self.usize(&self.key("block_count"))?;
        let num_heads = self.usize(&self.key("attention.head_count"))?;
        let num_kv_heads = self.opt_usize(&self.key("attention.head_count_kv"))?.unwrap_or(num_heads);
        let head_dim = match self.opt_usize(&self.key("attention.key_length"))? {
            Some(d) => d,
            None if num_heads > 0 => hidden_size / num_heads,
            None => 0,
        };
        let embed = self.tensor_shape("token_embd.weight")?;
        let vocab_size = embed.first().copied().unwrap_or(0);
        let rope_theta = self.opt_f32(&self.key("rope.freq_base"))?.unwrap_or(10_000.0);
        let sliding_window = self.opt_usize(&self.key("attention.sliding_window"))?;
        let mut cfg = ModelConfig {
            kv_type: KvType::F16,
            arch: self.arch,
            vocab_size,
            hidden_size,
            intermediate_size: self.usize(&self.key("feed_forward_length"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: self.opt_f32(&self.key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            rope_theta,
            rope_local_theta: None,
            rope_scaling: None,
            rope_style: RopeStyle::Halves,
            max_position_embeddings: self.opt_usize(&self.key("context_length"))?.unwrap_or(4096),
            tie_word_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
            layer_types: vec![LayerKind::Full; num_layers],
            sliding_window: None,
            activation: Activation::Silu,
            embed_scale: None,
            attn_scale: 1.0 / (head_dim.max(1) as f32).sqrt(),
            final_logit_softcap: self.opt_f32(&self.key("final_logit_softcapping"))?,
            mrope_section: None,
        };
        match self.arch {
            Arch::Llama | Arch::Mistral => {
                // llama.cpp's converter permutes llama q/k rows for adjacent-pair RoPE.
                cfg.rope_style = RopeStyle::Interleaved;
                if self.content.tensor_infos.contains_key("rope_freqs.weight") {
                    cfg.rope_scaling = Some(RopeScaling::FreqFactors(self.vector_gguf("rope_freqs.weight")?));
                }
            }
            Arch::Qwen2 | Arch::Qwen3 => {}
            Arch::Gemma3 => {
                // Gemma 3 conventions that llama.cpp hard-codes rather than storing: every sixth
                // layer is global, local layers use RoPE base 10000, embeddings are scaled by
                // sqrt(hidden), the MLP uses tanh-GELU (evaluated
                // as ggml does, see `Activation::GeluTanhF16`).
                cfg.layer_types = (0..num_layers)
                    .map(|i| if (i + 1) % 6 == 0 { LayerKind::Full } else { LayerKind::Sliding })
                    .collect();
                cfg.sliding_window = sliding_window;
                cfg.rope_local_theta = Some(10_000.0);
                cfg.embed_scale = Some((hidden_size as f32).sqrt());
                cfg.activation = Activation::GeluTanhF16;
                if let Some(factor) = self.opt_f32(&self.key("rope.scaling.factor"))? {
                    cfg.rope_scaling = Some(RopeScaling::Linear { factor });
                }
            }
        }
        cfg.validate(&self.path.display().to_string())?;
        Ok(cfg)
    }

    fn tensor_shape(&self, gguf_name: &str) -> Result<Vec<usize>, LoadError> {
        let info = self.content.tensor_infos.get(gguf_name).ok_or_else(|| LoadError::MissingTensor {
            path: self.path.clone(),
            name: gguf_name.to_string(),
        })?;
        Ok(info.shape.dims().to_vec())
    }

    /// A tensor as `n` rows of `k`. Its bytes are checked to lie inside the file, then read a
    /// chunk of rows at a time ([`QMatrix::read_ggml`]).
    fn read_tensor(&self, gguf_name: &str, n: usize, k: usize) -> Result<QMatrix, LoadError> {
        let info = self.content.tensor_infos.get(gguf_name).ok_or_else(|| LoadError::MissingTensor {
            path: self.path.clone(),
            name: gguf_name.to_string(),
        })?;
        let dtype = info.ggml_dtype;
        if !k.is_multiple_of(dtype.block_size()) {
            return Err(LoadError::bad_tensor(&self.path, gguf_name, format!("{k} columns are not a multiple of the {dtype:?} block size")));
        }
        let size = byte_size(dtype, n, k) as u64;
        let start = self.content.tensor_data_offset.saturating_add(info.offset);
        if start.saturating_add(size) > self.file_len {
            return Err(LoadError::Corrupt {
                path: self.path.clone(),
                problem: format!(
                    "tensor '{gguf_name}' needs bytes {start}..{} but the file has only {} bytes (truncated download?)",
                    start.saturating_add(size),
                    self.file_len
                ),
            });
        }
        QMatrix::read_ggml(dtype, n, k, |offset, chunk| self.file.read_exact_at(chunk, start + offset as u64)).map_err(|e| match e {
            KernelError::Read(source) => LoadError::Io { path: self.path.clone(), source },
            e => LoadError::from_kernel(&self.path, gguf_name, e),
        })
    }

    fn matrix_gguf(&self, gguf_name: &str) -> Result<QMatrix, LoadError> {
        let dims = self.tensor_shape(gguf_name)?;
        let [n, k] = dims[..] else {
            return Err(LoadError::bad_tensor(&self.path, gguf_name, format!("expected a matrix, got shape {dims:?}")));
        };
        self.read_tensor(gguf_name, n, k)
    }

    fn vector_gguf(&self, gguf_name: &str) -> Result<Vec<f32>, LoadError> {
        let len = self.tensor_shape(gguf_name)?.iter().product();
        let m = self.read_tensor(gguf_name, 1, len)?;
        let mut out = vec![0f32; len];
        m.dequantize_row(0, &mut out);
        Ok(out)
    }

    /// The GGUF tensor name for a Hugging Face parameter name.
    fn gguf_name(&self, hf: &str) -> Option<String> {
        let top = match hf {
            "model.embed_tokens.weight" => Some("token_embd.weight"),
            "model.norm.weight" => Some("output_norm.weight"),
            "lm_head.weight" => Some("output.weight"),
            _ => None,
        };
        if let Some(t) = top {
            return Some(t.to_string());
        }
        let rest = hf.strip_prefix("model.layers.")?;
        let (layer, param) = rest.split_once('.')?;
        let (module, suffix) = param.rsplit_once('.')?;
        let gemma = self.arch == Arch::Gemma3;
        let g = match module {
            "input_layernorm" => "attn_norm",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "self_attn.q_norm" => "attn_q_norm",
            "self_attn.k_norm" => "attn_k_norm",
            // Gemma's post_attention_layernorm normalises the attention output; in the other
            // families the same HF name is the pre-MLP norm.
            "post_attention_layernorm" if gemma => "post_attention_norm",
            "post_attention_layernorm" => "ffn_norm",
            "pre_feedforward_layernorm" => "ffn_norm",
            "post_feedforward_layernorm" => "post_ffw_norm",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            _ => return None,
        };
        Some(format!("blk.{layer}.{g}.{suffix}"))
    }

    fn resolve(&self, hf: &str) -> Result<String, LoadError> {
        self.gguf_name(hf)
            .ok_or_else(|| LoadError::MissingTensor { path: self.path.clone(), name: hf.to_string() })
    }
}

impl WeightSource for GgufFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn has(&self, name: &str) -> bool {
        self.gguf_name(name).is_some_and(|g| self.content.tensor_infos.contains_key(&g))
    }

    fn matrix(&self, name: &str) -> Result<QMatrix, LoadError> {
        self.matrix_gguf(&self.resolve(name)?)
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>, LoadError> {
        self.vector_gguf(&self.resolve(name)?)
    }
}
