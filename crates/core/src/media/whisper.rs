//! transformers' `WhisperFeatureExtractor`: log-mel features of a clip, as Whisper and
//! Qwen2-Audio take them.
//!
//! Per clip (transformers' torch path, which is what the reference uses): zero-pad on the right
//! to `n_samples = chunk_length · sampling_rate` (30 s); STFT with `n_fft` points (400), a
//! periodic Hann window, hop `hop_length` (160), centred (reflect padding of n_fft/2 on both
//! sides); power spectrum with the last frame dropped (`n_samples / hop` frames); mel filters
//! (`mel_filter_bank(n_fft/2 + 1, feature_size, 0 Hz, rate/2, norm="slaney",
//! mel_scale="slaney")`, rounded to f32 as torch uses them); `log10(max(mel, 1e-10))`; then
//! `max(l, max(l) - 8)` over the whole padded chunk; then `(l + 4) / 4`.
//!
//! Numerics: the spectrum and the mel sums are computed in f64 (realfft), so the result is
//! within f32 rounding of the exact value; transformers' torch path uses f32 FFTs and differs
//! from its own f64 numpy path by up to 3e-5, which bounds the distance to the reference.
//! Frames made only of padding have zero power and cost nothing.
//!
//! Layout of [`AudioFeatures::features`] (what the encoder relies on): `n_mels` rows of
//! `frames` values, row-major, as transformers' `input_features[0]`.

use std::path::Path;
use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};
use serde_json::Value;

use super::resample::resample;
use super::{Audio, Media, MediaError};

/// The preprocessor file name inside a checkpoint directory.
const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// Log-mel features of one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFeatures {
    /// `n_mels * frames` values, row-major (mel bin, frame).
    pub features: Vec<f32>,
    pub n_mels: usize,
    /// Frames per row: the padded chunk's (3000 for 30 s).
    pub frames: usize,
    /// Frames that hold audio, transformers' `feature_attention_mask.sum()`: `ceil(samples / hop)`.
    pub valid_frames: usize,
}

/// `WhisperFeatureExtractor`'s settings (`preprocessor_config.json`). Read-only once made: the
/// mel filters depend on them ([`Self::with_sampling_rate`] makes another).
#[derive(Clone)]
pub struct WhisperFeatureExtractor {
    feature_size: usize,
    sampling_rate: u32,
    hop_length: usize,
    n_fft: usize,
    chunk_length: usize,
    /// `[n_fft/2 + 1][feature_size]`, f32 values held as f64.
    mel_filters: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl std::fmt::Debug for WhisperFeatureExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperFeatureExtractor")
            .field("feature_size", &self.feature_size)
            .field("sampling_rate", &self.sampling_rate)
            .field("hop_length", &self.hop_length)
            .field("n_fft", &self.n_fft)
            .field("chunk_length", &self.chunk_length)
            .finish()
    }
}

impl Default for WhisperFeatureExtractor {
    /// transformers' defaults: 80 mel bins, 16 kHz, n_fft 400, hop 160, 30 s chunks.
    fn default() -> Self {
        Self::new(80, 16_000, 160, 400, 30).expect("the defaults are valid")
    }
}

impl WhisperFeatureExtractor {
    /// An extractor with these settings; `Err` names the setting that cannot work.
    pub fn new(feature_size: usize, sampling_rate: u32, hop_length: usize, n_fft: usize, chunk_length: usize) -> Result<Self, String> {
        if feature_size == 0 || sampling_rate == 0 || hop_length == 0 || chunk_length == 0 {
            return Err("feature_size, sampling_rate, hop_length and chunk_length must be positive".into());
        }
        if n_fft < 4 || !n_fft.is_multiple_of(2) {
            return Err(format!("n_fft ({n_fft}) must be an even number of at least 4"));
        }
        if chunk_length * sampling_rate as usize <= n_fft / 2 {
            return Err("the chunk is shorter than half an FFT window (reflect padding needs more)".into());
        }
        Ok(WhisperFeatureExtractor {
            feature_size,
            sampling_rate,
            hop_length,
            n_fft,
            chunk_length,
            mel_filters: mel_filters(n_fft / 2 + 1, feature_size, sampling_rate as f64),
            fft: RealFftPlanner::<f64>::new().plan_fft_forward(n_fft),
        })
    }

    /// Reads `dir/preprocessor_config.json`: `Ok(None)` when the file is absent. Missing keys
    /// take transformers' defaults; the error names the file and the key.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, MediaError> {
        let path = dir.join(PREPROCESSOR_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|error| MediaError::Io { path: path.clone(), error })?;
        let config = |detail: String| MediaError::Config { path: path.clone(), detail };
        let v: Value = serde_json::from_str(&text).map_err(|e| config(format!("invalid JSON: {e}")))?;
        let key = |name: &str, default: u64| -> Result<u64, MediaError> {
            match v.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x.as_u64().ok_or_else(|| config(format!("key '{name}': expected a non-negative integer, got {x}"))),
            }
        };
        let size = |name: &str, default: u64| key(name, default).map(|x| x as usize);
        let rate = u32::try_from(key("sampling_rate", 16_000)?).map_err(|_| config("key 'sampling_rate': too large".into()))?;
        Self::new(size("feature_size", 80)?, rate, size("hop_length", 160)?, size("n_fft", 400)?, size("chunk_length", 30)?)
            .map(Some)
            .map_err(config)
    }

    /// The same extractor at another sampling rate (LLaMA Factory's `audio_sampling_rate`): clips
    /// are resampled to it, and the mel filters span 0 to rate/2.
    pub fn with_sampling_rate(&self, rate: u32) -> Result<Self, String> {
        Self::new(self.feature_size, rate, self.hop_length, self.n_fft, self.chunk_length)
    }

    /// Mel bins (`feature_size`).
    pub fn feature_size(&self) -> usize {
        self.feature_size
    }

    /// The rate clips are resampled to (`sampling_rate`).
    pub fn sampling_rate(&self) -> u32 {
        self.sampling_rate
    }

    /// Samples in one chunk (`n_samples`).
    pub fn n_samples(&self) -> usize {
        self.chunk_length * self.sampling_rate as usize
    }

    /// The longest clip the features can hold, in seconds.
    pub fn max_seconds(&self) -> f64 {
        self.chunk_length as f64
    }

    /// Features of an audio item: resampled to [`Self::sampling_rate`], then
    /// [`Self::extract`]. A clip longer than the chunk is an error (transformers would cut it).
    pub fn process(&self, media: &Media) -> Result<AudioFeatures, MediaError> {
        let audio: &Audio = match media {
            Media::Audio(a) => a,
            other => {
                return Err(MediaError::WrongModality { origin: other.source().to_string(), expected: "audio", got: other.kind_name() })
            }
        };
        let seconds = audio.seconds();
        if seconds > self.max_seconds() {
            return Err(MediaError::TooLong { origin: audio.source().to_string(), seconds, limit: self.max_seconds() });
        }
        let wave = resample(audio.samples(), audio.sample_rate(), self.sampling_rate);
        Ok(self.extract(&wave[..wave.len().min(self.n_samples())]))
    }

    /// Features of `wave` (at [`Self::sampling_rate`], at most [`Self::n_samples`] samples;
    /// more are cut off, as transformers' truncation does).
    pub fn extract(&self, wave: &[f32]) -> AudioFeatures {
        let (n_samples, hop, n_fft) = (self.n_samples(), self.hop_length, self.n_fft);
        let wave = &wave[..wave.len().min(n_samples)];
        let frames = n_samples / hop;
        let bins = n_fft / 2 + 1;
        let half = n_fft / 2;
        // The padded chunk, reflect-padded by n_fft/2 on both sides (valid: n_samples > n_fft/2).
        let at = |i: usize| -> f64 {
            let j = if i < half {
                half - i
            } else if i - half >= n_samples {
                2 * (n_samples - 1) - (i - half)
            } else {
                i - half
            };
            wave.get(j).map_or(0.0, |&v| v as f64)
        };
        let window: Vec<f64> =
            (0..n_fft).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n_fft as f64).cos()).collect();
        let mut log_mel = vec![-10f64; frames * self.feature_size];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f64; bins];
        for f in 0..frames {
            let start = f * hop;
            for (i, (x, w)) in input.iter_mut().zip(&window).enumerate() {
                *x = at(start + i) * w;
            }
            if input.iter().all(|&x| x == 0.0) {
                continue; // log10(1e-10) for every bin
            }
            if self.fft.process_with_scratch(&mut input, &mut spectrum, &mut scratch).is_err() {
                continue; // unreachable: the buffers come from the plan itself
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            let row = &mut log_mel[f * self.feature_size..(f + 1) * self.feature_size];
            for (m, out) in row.iter_mut().enumerate() {
                let mel: f64 = power.iter().enumerate().map(|(k, p)| p * self.mel_filters[k * self.feature_size + m]).sum();
                *out = mel.max(1e-10).log10();
            }
        }
        let floor = log_mel.iter().cloned().fold(f64::NEG_INFINITY, f64::max) - 8.0;
        let mut features = vec![0f32; self.feature_size * frames];
        for f in 0..frames {
            for m in 0..self.feature_size {
                features[m * frames + f] = ((log_mel[f * self.feature_size + m].max(floor) + 4.0) / 4.0) as f32;
            }
        }
        AudioFeatures { features, n_mels: self.feature_size, frames, valid_frames: wave.len().div_ceil(hop) }
    }
}

/// transformers' `mel_filter_bank(bins, n_mels, 0, rate/2, rate, norm="slaney",
/// mel_scale="slaney")`, `[bins][n_mels]`, each value rounded to f32.
fn mel_filters(bins: usize, n_mels: usize, rate: f64) -> Vec<f64> {
    let (mel_min, mel_max) = (hz_to_mel(0.0), hz_to_mel(rate / 2.0));
    let edges: Vec<f64> = (0..n_mels + 2).map(|i| mel_to_hz(mel_min + (mel_max - mel_min) * i as f64 / (n_mels + 1) as f64)).collect();
    let mut out = vec![0f64; bins * n_mels];
    for k in 0..bins {
        let freq = (rate / 2.0) * k as f64 / (bins - 1) as f64;
        for m in 0..n_mels {
            let down = (freq - edges[m]) / (edges[m + 1] - edges[m]);
            let up = (edges[m + 2] - freq) / (edges[m + 2] - edges[m + 1]);
            let enorm = 2.0 / (edges[m + 2] - edges[m]);
            out[k * n_mels + m] = (down.min(up).max(0.0) * enorm) as f32 as f64;
        }
    }
    out
}

/// Slaney's mel scale: linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    if hz < 1000.0 {
        3.0 * hz / 200.0
    } else {
        15.0 + (hz / 1000.0).ln() * 27.0 / 6.4f64.ln()
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel < 15.0 {
        200.0 * mel / 3.0
    } else {
        1000.0 * ((mel - 15.0) * 6.4f64.ln() / 27.0).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MediaLimits;
    use safetensors::SafeTensors;

    fn reference() -> Vec<u8> {
        std::fs::read(ingot_testkit::fixtures_dir().join("audio/reference_features.safetensors")).expect("reference features")
    }

    fn tensor(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
        let t = st.tensor(name).expect(name);
        t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn mel_filters_match_transformers() {
        let bytes = reference();
        let st = SafeTensors::deserialize(&bytes).expect("safetensors");
        for n_mels in [80, 128] {
            let ours: Vec<f32> = mel_filters(201, n_mels, 16_000.0).iter().map(|&v| v as f32).collect();
            assert!(max_diff(&ours, &tensor(&st, &format!("mel_filters_{n_mels}"))) < 1e-8, "{n_mels} bins");
        }
    }

    #[test]
    fn features_of_the_16k_clip_match_transformers() {
        let bytes = reference();
        let st = SafeTensors::deserialize(&bytes).expect("safetensors");
        let wav = std::fs::read(ingot_testkit::fixtures_dir().join("audio/tone_chirp_16k.wav")).expect("wav");
        let audio = Audio::decode(&wav, "tone_chirp_16k.wav", &MediaLimits::default()).expect("decode");
        assert_eq!(audio.samples(), &tensor(&st, "mono16k.waveform")[..], "read as soundfile reads it");
        let f = WhisperFeatureExtractor::default().process(&Media::Audio(audio)).expect("features");
        assert_eq!((f.n_mels, f.frames, f.valid_frames), (80, 3000, 150));
        let d = max_diff(&f.features, &tensor(&st, "mono16k.input_features"));
        eprintln!("16 kHz clip, 80 bins: max abs diff {d}");
        assert!(d < 1e-4, "max abs diff {d}");
    }

    #[test]
    fn config_and_errors() {
        let dir = ingot_testkit::fixtures_dir().join("tiny-qwen2-audio");
        let fe = WhisperFeatureExtractor::from_dir(&dir).expect("read").expect("present");
        assert_eq!((fe.feature_size, fe.sampling_rate, fe.hop_length, fe.n_fft, fe.chunk_length), (128, 16_000, 160, 400, 30));
        let fe8 = fe.with_sampling_rate(8000).expect("8 kHz");
        assert_eq!((fe8.sampling_rate(), fe8.feature_size(), fe8.n_samples()), (8000, 128, 240_000));
        assert!(fe.with_sampling_rate(0).is_err());
        assert!(WhisperFeatureExtractor::from_dir(Path::new("/nonexistent")).expect("absent").is_none());
        assert!(WhisperFeatureExtractor::new(80, 16_000, 160, 401, 30).is_err());
        assert!(WhisperFeatureExtractor::new(80, 16_000, 0, 400, 30).is_err());
        let image = crate::media::Image::from_rgb8(1, 1, vec![0, 0, 0], "pixel").expect("image");
        let e = fe.process(&Media::Image(image)).expect_err("an image");
        assert!(matches!(e, MediaError::WrongModality { .. }), "{e}");
        let short = WhisperFeatureExtractor::new(80, 16_000, 160, 400, 1).expect("1 s chunks");
        let wav = crate::media::audio::tests::wav(&[1000; 20_000], 1, 16_000);
        let audio = Audio::decode(&wav, "long.wav", &MediaLimits::default()).expect("decode");
        let e = short.process(&Media::Audio(audio)).expect_err("1.25 s > 1 s");
        assert!(e.to_string().contains("long.wav") && e.to_string().contains("limit of 1 s"), "{e}");
    }

    #[test]
    fn silence_is_the_floor_everywhere() {
        let f = WhisperFeatureExtractor::new(4, 16_000, 160, 400, 1).expect("fe").extract(&[0.0; 800]);
        assert!(f.features.iter().all(|&v| v == -1.5), "log10(1e-10) = -10 → (-10 + 4) / 4");
        assert_eq!(f.valid_frames, 5);
    }
}
