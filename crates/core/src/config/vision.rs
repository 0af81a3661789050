//! `vision_config` of a Qwen2-VL or Qwen2.5-VL checkpoint, and the special tokens that lay
//! images out in a prompt: what the loaders read ([`crate::weights::hf_config`]) and the
//! encoder runs by ([`crate::model::vision`], whose module doc describes the architecture).

/// The vision MLP's activation (`vision_config.hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionActivation {
    /// `x · sigmoid(1.702 x)`, Qwen2-VL's.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
    /// GELU with the tanh approximation.
    GeluTanh,
    /// `x · sigmoid(x)`, Qwen2.5-VL's.
    Silu,
}

impl VisionActivation {
    /// transformers' `ACT2FN` names.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "quick_gelu" => Self::QuickGelu,
            "gelu" => Self::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Self::GeluTanh,
            "silu" | "swish" => Self::Silu,
            _ => return None,
        })
    }
}

/// Which generation of the encoder: the blocks' norms, MLP and attention spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VisionArch {
    /// Qwen2-VL: LayerNorms, fc1/fc2 MLP, every block attends over the whole frame.
    Qwen2Vl,
    /// Qwen2.5-VL: RMSNorms, gated MLP, window attention except in the listed blocks.
    Qwen25Vl {
        /// Window side in pixels: `window_size / (patch_size · spatial_merge_size)` merge
        /// units.
        window_size: usize,
        /// Blocks that attend over the whole frame (transformers ignores indices past
        /// `depth`, and so does ingot).
        fullatt_block_indexes: Vec<usize>,
    },
}

/// `vision_config` of a Qwen2-VL or Qwen2.5-VL checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub arch: VisionArch,
    pub depth: usize,
    /// Width of the blocks (Qwen2-VL's `embed_dim`, Qwen2.5-VL's `hidden_size`).
    pub embed_dim: usize,
    pub num_heads: usize,
    /// The block MLP's hidden width (Qwen2-VL: `int(embed_dim · mlp_ratio)`, Qwen2.5-VL:
    /// `intermediate_size`).
    pub intermediate_size: usize,
    pub hidden_act: VisionActivation,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub in_channels: usize,
    /// The merger's output width, the language model's hidden size (Qwen2-VL's
    /// `hidden_size`, Qwen2.5-VL's `out_hidden_size`).
    pub hidden_size: usize,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads.max(1)
    }

    /// Side of an attention window in merge units, for Qwen2.5-VL.
    pub(crate) fn window_units(&self) -> Option<usize> {
        match self.arch {
            VisionArch::Qwen2Vl => None,
            VisionArch::Qwen25Vl { window_size, .. } => Some(window_size / (self.patch_size * self.spatial_merge_size)),
        }
    }

    /// Whether block `i` attends over the whole frame rather than its window.
    pub(crate) fn full_attention(&self, i: usize) -> bool {
        match &self.arch {
            VisionArch::Qwen2Vl => true,
            VisionArch::Qwen25Vl { fullatt_block_indexes, .. } => fullatt_block_indexes.contains(&i),
        }
    }

    /// Values per row of `pixel_values`.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Checks what the encoder relies on; the message names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        super::require_positive(&[
            ("depth", self.depth),
            ("embed_dim", self.embed_dim),
            ("num_heads", self.num_heads),
            ("patch_size", self.patch_size),
            ("temporal_patch_size", self.temporal_patch_size),
            ("spatial_merge_size", self.spatial_merge_size),
            ("in_channels", self.in_channels),
            ("hidden_size", self.hidden_size),
            ("mlp width", self.intermediate_size),
        ])?;
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(format!("embed_dim ({}) must be a multiple of num_heads ({})", self.embed_dim, self.num_heads));
        }
        // Two rotary halves (rows, columns), each a whole number of frequency pairs.
        if !self.head_dim().is_multiple_of(4) {
            return Err(format!("head dim {} must be a multiple of 4 for the 2-D rotary embedding", self.head_dim()));
        }
        if let VisionArch::Qwen25Vl { window_size, .. } = self.arch {
            // Windows are whole merge units: transformers floors the division, which would
            // silently give other windows than the checkpoint was trained with.
            let unit = self.patch_size * self.spatial_merge_size;
            if window_size == 0 || !window_size.is_multiple_of(unit) {
                return Err(format!(
                    "window_size ({window_size}) must be a positive multiple of patch_size * spatial_merge_size ({unit})"
                ));
            }
        }
        Ok(())
    }
}

/// Special token ids of a multimodal prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultimodalTokens {
    /// `<|image_pad|>`: one per merged image patch, replaced by the encoder's rows.
    pub image_token_id: u32,
    pub video_token_id: Option<u32>,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
    pub spatial_merge_size: usize,
    /// Qwen2.5-VL's `vision_config.tokens_per_second`: video temporal ids advance by
    /// `second_per_grid_t · tokens_per_second` per temporal patch (`model::mrope`). `None`
    /// (Qwen2-VL): by one.
    pub tokens_per_second: Option<u32>,
}

impl MultimodalTokens {
    /// How many image pad tokens an image of patch grid `grid_thw` takes in the prompt.
    pub fn image_tokens(&self, grid_thw: [usize; 3]) -> usize {
        let m2 = (self.spatial_merge_size * self.spatial_merge_size).max(1);
        grid_thw[0] * grid_thw[1] * grid_thw[2] / m2
    }
}
