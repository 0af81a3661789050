//! Media inputs (images, video and audio) and the preprocessors that turn them into
//! the tensors a multimodal model's encoder takes.
//!
//! Shape of the module, so that new modalities and model families slot in beside the existing
//! ones instead of special-casing one model:
//! * [`Media`] is one input item of a request, one variant per modality. Every item carries a
//!   [`Media::digest`] of its original encoded bytes; the engine keys its prefix cache on it, so two
//!   requests share cached media tokens only when their bytes are identical.
//! * [`Image::decode`] turns encoded bytes into RGB8 pixels, within [`MediaLimits`], and never
//!   panics: every failure is a [`MediaError`] naming the item (`source`) and, for limits, the
//!   limit.
//! * [`MediaProcessor`] is one model family's preprocessing of one item into [`Processed`]
//!   (`pixel_values` rows plus the `grid_thw` the encoder and the rotary positions need), and the
//!   number of placeholder tokens the prompt must hold for it.
//! * [`Qwen2VlImageProcessor`] is transformers' `Qwen2VLImageProcessor` (PIL backend), numerically:
//!   [`smart_resize`], then Pillow's bicubic resize ([`resize`]), rescale, normalise, patchify.
//! * A [`Video`] is frames of one size (a frame list, or a file decoded with the frames picked
//!   by [`FrameSampling`], LLaMA Factory's rule, by the system's FFmpeg programs:
//!   [`Video::decode`]); [`Qwen2VlVideoProcessor`] is LLaMA Factory's
//!   frame regularisation plus transformers' `Qwen2VLVideoProcessor`.
//! * Audio: [`Audio::decode`] gives mono samples at the file's rate; [`WhisperFeatureExtractor`]
//!   resamples them ([`resample`]) and computes transformers' Whisper log-mel features, which
//!   Qwen2-Audio's encoder takes ([`crate::model::audio`]). Audio does not go through
//!   [`MediaProcessor`], whose [`Processed`] is a patch grid.

mod audio;
pub mod frames;
mod image;
pub mod qwen2_vl;
pub mod qwen2_vl_video;
pub mod resample;
pub mod resize;
mod video;
mod video_file;
pub mod whisper;


use std::path::PathBuf;

pub use self::audio::{Audio, SUPPORTED_AUDIO_FORMATS};
pub use self::image::Image;
pub use self::frames::FrameSampling;
pub use self::qwen2_vl::{smart_resize, Qwen2VlImageProcessor, SmartResizeError};
pub use self::qwen2_vl_video::Qwen2VlVideoProcessor;
pub use self::video::Video;
pub use self::video_file::{FfmpegTools, DECODE_TIMEOUT, MAX_VIDEO_PIXELS};
pub use self::whisper::{AudioFeatures, WhisperFeatureExtractor};

/// One media item of a request.
#[derive(Debug, Clone)]
pub enum Media {
    /// A still image (for animated GIF or WebP, its first frame).
    Image(Image),
    /// A video: its frames (see [`Video`]).
    Video(Video),
    /// An audio clip, mono, at its file's sample rate.
    Audio(Audio),
}

impl Media {
    /// Stable 64-bit hash of the item's original bytes (see [`digest_bytes`]).
    pub fn digest(&self) -> u64 {
        match self {
            Media::Image(image) => image.digest(),
            Media::Video(video) => video.digest(),
            Media::Audio(audio) => audio.digest(),
        }
    }

    /// The modality's name as it appears in messages and errors: `"image"`, `"video"`, `"audio"`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Media::Image(_) => "image",
            Media::Video(_) => "video",
            Media::Audio(_) => "audio",
        }
    }

    /// The human name given when the item was made (file path, "image 2 of the request", ...).
    pub fn source(&self) -> &str {
        match self {
            Media::Image(image) => image.source(),
            Media::Video(video) => video.source(),
            Media::Audio(audio) => audio.source(),
        }
    }
}

/// Bounds on one media item, checked before the expensive work (the byte size before decoding,
/// the decoded dimensions before the pixel buffer is allocated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaLimits {
    /// Largest accepted encoded size, in bytes.
    pub max_bytes: usize,
    /// Largest accepted decoded size, width * height.
    pub max_pixels: u64,
    /// Longest accepted audio clip, in seconds.
    pub max_audio_seconds: f64,
}

impl Default for MediaLimits {
    /// 20 MiB encoded, 40 megapixels decoded: above any photo a client sends on purpose, small
    /// enough that one request cannot make the server allocate gigabytes. 30 s of audio: the
    /// window of Whisper-style encoders (Qwen2-Audio), which see no more of a clip.
    fn default() -> Self {
        MediaLimits { max_bytes: 20 << 20, max_pixels: 40_000_000, max_audio_seconds: 30.0 }
    }
}

/// What a [`MediaProcessor`] produces for one item.
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    /// `rows * row_len` values, row-major: one row per encoder patch.
    pub pixel_values: Vec<f32>,
    pub rows: usize,
    pub row_len: usize,
    /// Patch grid (temporal, height, width); `rows == grid_thw[0] * grid_thw[1] * grid_thw[2]`.
    pub grid_thw: [usize; 3],
}

/// One model family's preprocessing of one modality.
pub trait MediaProcessor: Send + Sync + std::fmt::Debug {
    /// The encoder input for `media`; an error when the processor does not take that modality
    /// or the item cannot be processed (the error names the item).
    fn process(&self, media: &Media) -> Result<Processed, MediaError>;

    /// How many placeholder tokens the prompt needs for an item processed into `p`.
    fn placeholder_tokens(&self, p: &Processed) -> usize;

    /// Overrides the bounds on an item's pixel count after resizing (LLaMA Factory's
    /// `image_min_pixels` / `image_max_pixels`); `None` keeps the configured bound. Refuses
    /// bounds that leave no valid size.
    fn set_pixel_limits(&mut self, min_pixels: Option<usize>, max_pixels: Option<usize>) -> Result<(), MediaError>;

    /// Seconds of input per temporal patch of `media` (Qwen2.5-VL's `second_per_grid_t`,
    /// which scales video time positions); `None` for inputs without time (images).
    fn second_per_grid_t(&self, _media: &Media) -> Option<f32> {
        None
    }
}

/// Why a media item or a processor configuration was rejected. Every variant names the item
/// (`origin`: the `source` given to [`Image::decode`]) or the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{origin}: {size} bytes is over the limit of {limit} bytes per media item")]
    TooManyBytes { origin: String, size: usize, limit: usize },
    #[error("{origin}: the image is {width}x{height} = {pixels} pixels, over the limit of {limit} pixels", pixels = *width as u64 * *height as u64)]
    TooManyPixels { origin: String, width: u32, height: u32, limit: u64 },
    #[error("{origin}: unsupported image format ({detected}); supported formats: {}", SUPPORTED_FORMATS.join(", "))]
    UnsupportedFormat { origin: String, detected: String },
    #[error("{origin}: unsupported video ({detected}); supported: {SUPPORTED_VIDEO}")]
    UnsupportedVideo { origin: String, detected: String },
    #[error("{origin}: cannot decode the video: {detail}")]
    VideoDecoder { origin: String, detail: String },
    #[error("{origin}: unsupported audio ({detected}); supported formats: {}", SUPPORTED_AUDIO_FORMATS.join(", "))]
    UnsupportedAudio { origin: String, detected: String },
    #[error("{origin}: the audio is {seconds:.2} s long, over the limit of {limit} s")]
    TooLong { origin: String, seconds: f64, limit: f64 },
    #[error("{origin}: corrupt or truncated {format} data: {detail}")]
    Corrupt { origin: String, format: String, detail: String },
    #[error("{origin}: cannot be preprocessed: {detail}")]
    Geometry { origin: String, detail: String },
    #[error("{origin}: this processor takes {expected}, not {got}")]
    WrongModality { origin: String, expected: &'static str, got: &'static str },
    #[error("{}: {detail}", path.display())]
    Config { path: PathBuf, detail: String },
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
}

/// The video files [`Video::decode`] reads, as named in errors.
pub const SUPPORTED_VIDEO: &str = "MP4/MOV or WebM/Matroska with H.264, H.265, VP8, VP9, AV1 or MPEG-4 Part 2 video";

/// The encoded formats [`Image::decode`] reads, as named in errors.
pub const SUPPORTED_FORMATS: [&str; 4] = ["PNG", "JPEG", "WebP", "GIF"];

/// The media digest: SipHash-2-4 with a fixed key over the bytes.
///
/// Fixed so that it is stable across processes, builds and Rust releases (std's `DefaultHasher`
/// promises none of that); SipHash because it mixes well and is simple to write down. A 64-bit
/// value makes accidental collisions negligible (about n²/2⁶⁵ for n cached items) but cannot
/// resist a deliberately crafted collision, as no 64-bit digest can.
pub fn digest_bytes(bytes: &[u8]) -> u64 {
    // Key: "ingot media v1\0\0", so that the values differ from other SipHash users'.
    siphash24(u64::from_le_bytes(*b"ingot me"), u64::from_le_bytes(*b"dia v1\0\0"), bytes)
}

fn siphash24(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    let mut v = [k0 ^ 0x736f_6d65_7073_6575, k1 ^ 0x646f_7261_6e64_6f6d, k0 ^ 0x6c79_6765_6e65_7261, k1 ^ 0x7465_6462_7974_6573];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let compress = |m: u64, v: &mut [u64; 4]| {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    };
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        compress(u64::from_le_bytes(word), &mut v);
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    last[7] = bytes.len() as u8;
    compress(u64::from_le_bytes(last), &mut v);
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_matches_the_reference_vectors() {
        // The SipHash paper's vector (appendix A): key 00..0f, message 00..0e.
        let key: Vec<u8> = (0u8..16).collect();
        let k0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
        let k1 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
        let msg: Vec<u8> = (0u8..15).collect();
        assert_eq!(siphash24(k0, k1, &msg), 0xa129_ca61_49be_45e5);
        let a = digest_bytes(b"abc");
        assert_eq!(a, digest_bytes(b"abc"), "deterministic");
        assert_ne!(a, digest_bytes(b"abd"));
        assert_ne!(digest_bytes(b""), digest_bytes(b"\0"), "length is part of the hash");
        assert_ne!(digest_bytes(&[0u8; 8]), digest_bytes(&[0u8; 9]));
        // Stable across builds: a pinned value (changing it invalidates persisted cache keys).
        assert_eq!(digest_bytes(b"ingot"), PINNED_INGOT_DIGEST);
    }

    const PINNED_INGOT_DIGEST: u64 = 10443596292413673935;

    #[test]
    fn limits_default() {
        let l = MediaLimits::default();
        assert_eq!(l.max_bytes, 20 * 1024 * 1024);
        assert_eq!(l.max_pixels, 40_000_000);
        assert_eq!(l.max_audio_seconds, 30.0);
    }
}
