//! Decoding an audio file into mono f32 samples, the way the Python reference sees it:
//! LLaMA Factory's `librosa.load(path, sr=...)` reads with soundfile (integer PCM as
//! `int / 2^(bits-1)` in f32), downmixes with `librosa.to_mono` (the mean of the channels) and
//! resamples with soxr HQ ([`super::resample`]).
//!
//! Decoder: symphonia, pure Rust and maintained, built with only WAV (PCM), FLAC, MP3 and Ogg
//! Vorbis. Its integer-to-float conversion is the same `int / 2^(bits-1)` as soundfile's.
//!
//! Length: gapless, as libsndfile reads (MP3 encoder delay and padding trimmed by the LAME
//! header; Ogg Vorbis cut at the last granule position).
//!
//! Strictness: a file whose header announces more frames than its data holds (a truncated WAV
//! or FLAC) is an error, not a shorter clip; so is a packet the codec cannot decode, a stream
//! with no audio track, and a clip longer than [`MediaLimits::max_audio_seconds`] (checked on
//! the header's frame count when there is one, and while decoding, so an over-long file is
//! never decoded in full). Nothing here panics on bad bytes: symphonia's errors become
//! [`MediaError`]s naming the item.
//!
//! Invariants of [`Audio`]: `sample_rate > 0`, `samples` is mono, `samples.len() / sample_rate`
//! is within the limit of the decode that made it.

use std::io::Cursor;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::{digest_bytes, MediaError, MediaLimits};

/// Gapless decoding: encoder delay and padding (MP3's LAME header, Vorbis' granule positions)
/// are trimmed, as libsndfile (soundfile, librosa) trims them.
const GAPLESS: FormatOptions = FormatOptions { enable_gapless: true, prebuild_seek_index: false, seek_index_fill_rate: 20 };

/// The audio formats [`Audio::decode`] reads, as named in errors.
pub const SUPPORTED_AUDIO_FORMATS: [&str; 4] = ["WAV (PCM)", "FLAC", "MP3", "Ogg Vorbis"];

/// A decoded audio clip: mono samples at the file's own rate, plus the digest of the bytes it
/// came from.
#[derive(Clone)]
pub struct Audio {
    samples: Vec<f32>,
    sample_rate: u32,
    digest: u64,
    source: String,
}

impl std::fmt::Debug for Audio {
    // The samples are left out: a debug print of a request should not be megabytes long.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audio")
            .field("source", &self.source)
            .field("sample_rate", &self.sample_rate)
            .field("seconds", &self.seconds())
            .field("digest", &format_args!("{:016x}", self.digest))
            .finish()
    }
}

impl Audio {
    /// Decodes WAV, FLAC, MP3 or Ogg Vorbis `bytes` and downmixes them to mono. `source` is a
    /// human name for the item (a file path, "audio 2 of the request") that every error starts
    /// with.
    pub fn decode(bytes: &[u8], source: &str, limits: &MediaLimits) -> Result<Audio, MediaError> {
        if bytes.len() > limits.max_bytes {
            return Err(MediaError::TooManyBytes { origin: source.to_string(), size: bytes.len(), limit: limits.max_bytes });
        }
        let corrupt = |detail: String| MediaError::Corrupt { origin: source.to_string(), format: "audio".into(), detail };
        if bytes.is_empty() {
            return Err(corrupt("no bytes".into()));
        }
        // symphonia panics on some malformed headers (a WAV `fmt ` chunk with a sample rate of
        // 0, found by fuzzing): a decoder bug must not take a server's worker down, so a panic
        // is a file it cannot read.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Self::decode_checked(bytes, source, limits)))
            .unwrap_or_else(|_| Err(corrupt("the audio decoder cannot read this file".into())))
    }

    /// [`Audio::decode`] past its size checks.
    fn decode_checked(bytes: &[u8], source: &str, limits: &MediaLimits) -> Result<Audio, MediaError> {
        let corrupt = |detail: String| MediaError::Corrupt { origin: source.to_string(), format: "audio".into(), detail };
        let unsupported = |detected: String| MediaError::UnsupportedAudio { origin: source.to_string(), detected };
        let stream = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
        let probed = symphonia::default::get_probe()
            .format(&Hint::new(), stream, &GAPLESS, &MetadataOptions::default())
            .map_err(|e| match e {
                // The probe reads to the end looking for a signature when the start has none.
                _ if !has_audio_signature(bytes) => unsupported("not a recognised audio container".into()),
                SymphoniaError::Unsupported(_) => unsupported("not a recognised audio container".into()),
                other => corrupt(other.to_string()),
            })?;
        let mut format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| unsupported("no decodable audio track".into()))?;
        let (track_id, params) = (track.id, track.codec_params.clone());
        let sample_rate = params.sample_rate.filter(|&r| r > 0).ok_or_else(|| corrupt("no sample rate".into()))?;
        let too_long = |frames: u64| MediaError::TooLong {
            origin: source.to_string(),
            seconds: frames as f64 / sample_rate as f64,
            limit: limits.max_audio_seconds,
        };
        let max_frames = (limits.max_audio_seconds * sample_rate as f64).floor() as u64;
        if let Some(n) = params.n_frames.filter(|&n| n > max_frames) {
            return Err(too_long(n));
        }
        let mut decoder = symphonia::default::get_codecs().make(&params, &DecoderOptions::default()).map_err(|e| match e {
            SymphoniaError::Unsupported(what) => unsupported(format!("codec: {what}")),
            other => corrupt(other.to_string()),
        })?;
        let mut samples = Vec::new();
        let mut buffer: Option<SampleBuffer<f32>> = None;
        loop {
            let packet = match format.next_packet() {
                Ok(p) => p,
                Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(corrupt(e.to_string())),
            };
            if packet.track_id() != track_id {
                continue;
            }
            let decoded = decoder.decode(&packet).map_err(|e| corrupt(e.to_string()))?;
            let channels = decoded.spec().channels.count();
            if channels == 0 {
                return Err(corrupt("a packet with no channels".into()));
            }
            if buffer.as_ref().is_none_or(|b| b.capacity() < decoded.capacity() * channels) {
                buffer = Some(SampleBuffer::new(decoded.capacity() as u64, *decoded.spec()));
            }
            let Some(buf) = buffer.as_mut() else { continue };
            buf.copy_interleaved_ref(decoded);
            downmix_into(buf.samples(), channels, &mut samples);
            if samples.len() as u64 > max_frames {
                return Err(too_long(samples.len() as u64));
            }
        }
        if let Some(n) = params.n_frames {
            if (samples.len() as u64) < n {
                return Err(corrupt(format!("truncated: {} of the {n} frames its header announces", samples.len())));
            }
            // Ogg Vorbis: the last page's granule position ends the stream inside the last
            // packet, which symphonia decodes whole; libsndfile stops at the granule.
            samples.truncate(n as usize);
        }
        if samples.is_empty() {
            return Err(corrupt("no audio frames".into()));
        }
        Ok(Audio { samples, sample_rate, digest: digest_bytes(bytes), source: source.to_string() })
    }

    /// Mono samples at [`Audio::sample_rate`].
    pub fn samples(&self) -> &[f32] {
        &self.samples
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }

    /// Stable hash of the original encoded bytes ([`super::digest_bytes`]).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The human name given at decode time.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Whether `bytes` start like a file of a supported format (a truncated one still does).
fn has_audio_signature(bytes: &[u8]) -> bool {
    let mpeg_sync = bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0;
    [&b"RIFF"[..], b"fLaC", b"OggS", b"ID3"].iter().any(|sig| bytes.starts_with(sig)) || mpeg_sync
}

/// Appends the mean of each interleaved frame's channels (`librosa.to_mono`, in f32).
fn downmix_into(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    if channels == 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    out.extend(interleaved.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 16-bit PCM WAV file.
    pub(crate) fn wav(samples: &[i16], channels: u16, rate: u32) -> Vec<u8> {
        let data_len = (samples.len() * 2) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data_len).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * channels as u32 * 2).to_le_bytes());
        b.extend_from_slice(&(channels * 2).to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        for s in samples {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b
    }

    #[test]
    fn a_wav_with_a_zero_sample_rate_is_an_error_not_a_panic() {
        // The fuzzer's input: a PCM `fmt ` chunk of 2 channels at 0 Hz, then a little data.
        let mut wav = b"RIFF\xa4\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x02\x00".to_vec();
        wav.extend_from_slice(&[0, 0, 0, 0, 0x00, 0xfa, 0, 0, 4, 0, 16, 0]);
        wav.extend_from_slice(b"data\x80\x00\x00\x00");
        wav.extend((0..128u32).map(|i| (i * 37) as u8));
        let err = Audio::decode(&wav, "zero.wav", &MediaLimits::default()).expect_err("a 0 Hz clip");
        assert!(matches!(err, MediaError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("zero.wav"), "{err}");
    }

    #[test]
    fn decodes_and_downmixes_pcm_as_soundfile_reads_it() {
        let a = Audio::decode(&wav(&[0, 16384, -32768, 32767], 1, 8000), "a.wav", &MediaLimits::default()).expect("decode");
        assert_eq!(a.samples(), &[0.0, 0.5, -1.0, 32767.0 / 32768.0]);
        assert_eq!((a.sample_rate(), a.seconds()), (8000, 4.0 / 8000.0));
        let s = Audio::decode(&wav(&[100, 300, -8, 8], 2, 8000), "s.wav", &MediaLimits::default()).expect("stereo");
        assert_eq!(s.samples(), &[200.0 / 32768.0, 0.0]);
        assert_ne!(a.digest(), s.digest());
        assert!(format!("{a:?}").contains("a.wav"));
    }

    fn fixture(name: &str) -> Audio {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio").join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Audio::decode(&bytes, name, &MediaLimits::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    /// FLAC, Ogg Vorbis and MP3 files written by libsndfile (tests/fixtures/audio/README.md):
    /// FLAC decodes to soundfile's values exactly; the lossy ones to the same length (gapless)
    /// and, within the codecs' error, the same signal.
    #[test]
    fn flac_vorbis_and_mp3_decode_as_soundfile_reads_them() {
        let flac = fixture("tone.flac");
        assert_eq!((flac.sample_rate(), flac.samples().len()), (16_000, 4000));
        for (n, &v) in flac.samples().iter().enumerate() {
            let t = n as f64 / 16_000.0;
            let q = |x: f64| (x * 32767.0).round() as f32 / 32768.0;
            let want = (q(0.5 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) + q(0.25 * (2.0 * std::f64::consts::PI * 660.0 * t).sin())) / 2.0;
            assert_eq!(v, want, "frame {n}");
        }
        for name in ["tone.ogg", "tone.mp3"] {
            let a = fixture(name);
            assert_eq!((a.sample_rate(), a.samples().len()), (16_000, 4000), "{name}");
            assert!((rms(a.samples()) - rms(flac.samples())).abs() < 2e-3, "{name}: rms {}", rms(a.samples()));
            let err: Vec<f32> = a.samples().iter().zip(flac.samples()).map(|(x, y)| x - y).collect();
            assert!(rms(&err[400..3600]) < 0.01, "{name}: rms error {}", rms(&err[400..3600]));
        }
        let bytes = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio/tone.aiff")).expect("aiff");
        let e = Audio::decode(&bytes, "tone.aiff", &MediaLimits::default()).expect_err("AIFF is not read");
        assert!(matches!(e, MediaError::UnsupportedAudio { .. }), "{e}");
        let flac_bytes = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio/tone.flac")).expect("flac");
        for cut in [4, 42, 100, flac_bytes.len() / 2, flac_bytes.len() - 3] {
            let e = Audio::decode(&flac_bytes[..cut], "cut.flac", &MediaLimits::default()).expect_err("truncated FLAC");
            assert!(e.to_string().starts_with("cut.flac: "), "{cut}: {e}");
        }
    }

    #[test]
    fn limits_are_errors_naming_the_item_and_the_limit() {
        let bytes = wav(&vec![7; 8000 * 3], 1, 8000);
        let limits = MediaLimits { max_audio_seconds: 2.5, ..MediaLimits::default() };
        let e = Audio::decode(&bytes, "long.wav", &limits).expect_err("3 s > 2.5 s");
        assert!(matches!(e, MediaError::TooLong { .. }), "{e}");
        assert!(e.to_string().contains("long.wav") && e.to_string().contains("2.5"), "{e}");
        let limits = MediaLimits { max_bytes: 100, ..MediaLimits::default() };
        let e = Audio::decode(&bytes, "big.wav", &limits).expect_err("bytes");
        assert!(e.to_string().contains("big.wav") && e.to_string().contains("100"), "{e}");
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let full = wav(&(0..4000).map(|i| (i * 7 % 2000) as i16).collect::<Vec<_>>(), 2, 16000);
        for cut in [0, 1, 4, 12, 20, 36, 43, 44, 45, 1000, full.len() - 1] {
            let e = Audio::decode(&full[..cut], "cut.wav", &MediaLimits::default()).expect_err("truncated");
            assert!(e.to_string().starts_with("cut.wav: "), "{cut}: {e}");
        }
        let e = Audio::decode(b"just some text, not audio at all", "notes.txt", &MediaLimits::default()).expect_err("text");
        assert!(matches!(e, MediaError::UnsupportedAudio { .. }), "{e}");
        assert!(e.to_string().contains("FLAC"), "the message lists the supported formats: {e}");
        for name in ["tone.flac", "tone.ogg", "tone.mp3"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio").join(name);
            let bytes = std::fs::read(path).expect("fixture");
            fuzz(&bytes, name);
        }
        let mut garbage = full.clone();
        garbage[20] = 0x55; // the format tag: not PCM
        garbage[21] = 0x55;
        assert!(Audio::decode(&garbage, "odd.wav", &MediaLimits::default()).is_err());
        fuzz(&full, "fuzz.wav");
    }

    /// Decodes 200 copies of `bytes` with 1 to 40 random bytes changed: errors or clips, never
    /// a panic.
    fn fuzz(bytes: &[u8], name: &str) {
        let mut seed = 12345u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            seed >> 8
        };
        for _ in 0..200 {
            let mut b = bytes.to_vec();
            for _ in 0..1 + next() % 40 {
                let i = next() as usize % b.len();
                b[i] = next() as u8;
            }
            let _ = Audio::decode(&b, name, &MediaLimits::default());
        }
    }
}
