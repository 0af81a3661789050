//! Decoding a video file into [`Video`] frames with FFmpeg (libavformat, libavcodec,
//! libswscale, through the `ffmpeg-next` crate; cargo feature `video-files`, on by default).
//!
//! Only common, well-fuzzed inputs are opened: containers MP4/MOV and WebM/Matroska, video
//! codecs H.264, H.265, VP8, VP9, AV1 and MPEG-4 Part 2 (and only when the system's libavcodec
//! has a decoder for them); FFmpeg's other demuxers and decoders never see the bytes. The bytes
//! are read from memory; nothing touches the file system.
//!
//! Frames are picked while decoding by [`FrameSampling`] (LLaMA Factory's rule, from the
//! stream's declared frame count and duration) and converted to RGB8 by libswscale (bilinear,
//! its default BT.601 matrix, like PyAV's `frame.to_image()`, within a unit or two).
//!
//! Errors name the item: bytes over the limit, an unreadable or truncated container (fewer
//! frames decoded than the container declares), a container or codec outside the lists, a
//! frame over the pixel limit, no video stream, no frames.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::Once;

use ffmpeg_next as ffmpeg;
use ffmpeg::codec::Id;
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::frame::video::Video as AvFrame;

use super::{digest_bytes, FrameSampling, Image, MediaError, MediaLimits, Video};

/// libavformat demuxers accepted (their `name`s).
const CONTAINERS: [&str; 2] = ["mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"];

/// Video codecs accepted, with their names for messages.
const CODECS: [(Id, &str); 6] =
    [(Id::H264, "H.264"), (Id::HEVC, "H.265"), (Id::VP8, "VP8"), (Id::VP9, "VP9"), (Id::AV1, "AV1"), (Id::MPEG4, "MPEG-4 Part 2")];

/// libavcodec decoder names for [`CODECS`] (native and library-backed).
const DECODERS: &str = "h264,hevc,vp8,libvpx,vp9,libvpx-vp9,av1,libdav1d,libaom-av1,mpeg4";

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Initialisation only registers codecs on old FFmpeg; it cannot fail on current ones.
        let _ = ffmpeg::init();
        // Bad input is reported through the returned errors, not FFmpeg's stderr log.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}

impl Video {
    /// Decodes a video file's `bytes`, keeping the frames `sampling` picks. `source` names the
    /// video in errors; `limits` bound the encoded size and each frame's pixels.
    pub fn decode(bytes: &[u8], source: &str, limits: &MediaLimits, sampling: &FrameSampling) -> Result<Video, MediaError> {
        if bytes.len() > limits.max_bytes {
            return Err(MediaError::TooManyBytes { origin: source.to_string(), size: bytes.len(), limit: limits.max_bytes });
        }
        let corrupt = |detail: String| MediaError::Corrupt { origin: source.to_string(), format: "video".into(), detail };
        let unsupported = |detected: String| MediaError::UnsupportedVideo { origin: source.to_string(), detected };
        if bytes.is_empty() {
            return Err(corrupt("no bytes".into()));
        }
        init();
        let io = ffmpeg::format::context::StreamIo::from_read_seek(Cursor::new(bytes.to_vec()))
            .map_err(|e| corrupt(format!("cannot read: {e}")))?;
        // Only the accepted demuxers probe the bytes, and only the accepted codecs' decoders
        // run while the streams are probed: the rest of FFmpeg never sees untrusted input.
        let mut options = ffmpeg::Dictionary::new();
        options.set("format_whitelist", "mov,matroska");
        options.set("codec_whitelist", DECODERS);
        let mut input = ffmpeg::format::input_from_stream(io, None, Some(options))
            .map_err(|e| corrupt(format!("not a readable video container ({e})")))?;
        let container = input.format().name().to_string();
        if !CONTAINERS.contains(&container.as_str()) {
            return Err(unsupported(format!("container `{container}`")));
        }
        let stream = input.streams().best(ffmpeg::media::Type::Video).ok_or_else(|| corrupt("the file has no video stream".into()))?;
        let index = stream.index();
        let parameters = stream.parameters();
        let codec_id = parameters.id();
        if !CODECS.iter().any(|&(id, _)| id == codec_id) {
            return Err(unsupported(format!("codec {codec_id:?}")));
        }
        let mut decoder = ffmpeg::codec::context::Context::from_parameters(parameters)
            .and_then(|c| c.decoder().video())
            .map_err(|e| unsupported(format!("codec {codec_id:?}: no decoder in this system's FFmpeg ({e})")))?;
        let (width, height) = (decoder.width(), decoder.height());
        if width == 0 || height == 0 {
            return Err(corrupt(format!("the video is {width}x{height}")));
        }
        if u64::from(width) * u64::from(height) > limits.max_pixels {
            return Err(MediaError::TooManyPixels { origin: source.to_string(), width, height, limit: limits.max_pixels });
        }

        let declared = u64::try_from(stream.frames()).unwrap_or(0);
        let duration = stream_duration(&stream).or_else(|| container_duration(&input));
        let wanted: BTreeSet<u64> = sampling.indices(declared, duration.unwrap_or(f64::NAN)).into_iter().collect();
        let mut frames = FrameCollector { wanted: &wanted, next_index: 0, kept: Vec::new(), scaler: None, source };
        let mut packet = ffmpeg::Packet::empty();
        while !frames.done() {
            match packet.read(&mut input) {
                Ok(()) if packet.stream() == index => {
                    decoder.send_packet(&packet).map_err(|e| {
                        corrupt(format!("damaged or cut-short frame data after {} frames ({e})", frames.next_index))
                    })?;
                    frames.drain(&mut decoder).map_err(corrupt)?;
                }
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => {
                    // Flushing the decoder gives the frames it still holds.
                    decoder.send_eof().map_err(|e| corrupt(e.to_string()))?;
                    frames.drain(&mut decoder).map_err(corrupt)?;
                    break;
                }
                // A demuxer resyncs past one damaged packet, as FFmpeg's own tools do.
                Err(ffmpeg::Error::InvalidData) => {}
                Err(e) => return Err(corrupt(format!("after {} frames: {e}", frames.next_index))),
            }
        }
        let kept = frames.kept;
        if declared > 0 && kept.len() < wanted.len() {
            return Err(corrupt(format!(
                "truncated: the container declares {declared} frames but only {} could be decoded",
                frames.next_index
            )));
        }
        let fps = sampling.sampled_fps(kept.len(), duration);
        let mut keyed = Vec::with_capacity(32);
        keyed.extend_from_slice(b"file\0\0\0\0");
        keyed.extend_from_slice(&digest_bytes(bytes).to_le_bytes());
        keyed.extend_from_slice(&sampling.fps.to_bits().to_le_bytes());
        keyed.extend_from_slice(&(sampling.maxlen as u64).to_le_bytes());
        Video::new(kept, source, fps, digest_bytes(&keyed))
    }
}

/// The stream's duration in seconds, when it declares one.
fn stream_duration(stream: &ffmpeg::format::stream::Stream<'_>) -> Option<f64> {
    let (ticks, base) = (stream.duration(), stream.time_base());
    (ticks > 0 && base.denominator() != 0).then(|| (ticks as f64 * f64::from(base.numerator())) / f64::from(base.denominator()))
}

/// The container's duration in seconds (WebM declares only this).
fn container_duration(input: &ffmpeg::format::context::Input) -> Option<f64> {
    let micros = input.duration();
    (micros > 0).then(|| micros as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE))
}

/// Receives decoded frames, keeping the wanted ones as RGB8 images.
struct FrameCollector<'a> {
    wanted: &'a BTreeSet<u64>,
    /// Index (in decode output order) of the next frame.
    next_index: u64,
    kept: Vec<Image>,
    /// The converter for the current frame format and size.
    scaler: Option<(scaling::Context, Pixel, u32, u32)>,
    source: &'a str,
}

impl FrameCollector<'_> {
    /// Whether every wanted frame is in.
    fn done(&self) -> bool {
        self.wanted.last().is_none_or(|&last| self.next_index > last)
    }

    /// Takes every frame the decoder has ready.
    fn drain(&mut self, decoder: &mut ffmpeg::decoder::Video) -> Result<(), String> {
        let mut frame = AvFrame::empty();
        while decoder.receive_frame(&mut frame).is_ok() {
            if self.wanted.contains(&self.next_index) {
                let image = self.convert(&frame)?;
                self.kept.push(image);
            }
            self.next_index += 1;
        }
        Ok(())
    }

    fn convert(&mut self, frame: &AvFrame) -> Result<Image, String> {
        let (format, w, h) = (frame.format(), frame.width(), frame.height());
        let stale = self.scaler.as_ref().is_none_or(|s| (s.1, s.2, s.3) != (format, w, h));
        if stale {
            let ctx = scaling::Context::get(format, w, h, Pixel::RGB24, w, h, scaling::Flags::BILINEAR)
                .map_err(|e| format!("frame {}: cannot convert {format:?} to RGB: {e}", self.next_index + 1))?;
            self.scaler = Some((ctx, format, w, h));
        }
        let Some((scaler, ..)) = self.scaler.as_mut() else { return Err("no frame converter".into()) };
        let mut rgb = AvFrame::empty();
        scaler.run(frame, &mut rgb).map_err(|e| format!("frame {}: {e}", self.next_index + 1))?;
        let (stride, row) = (rgb.stride(0).max(1), w as usize * 3);
        // A short buffer gives too few bytes, which `from_rgb8` refuses.
        let pixels: Vec<u8> = rgb.data(0).chunks(stride).take(h as usize).flat_map(|r| r.iter().take(row)).copied().collect();
        let name = format!("{} frame {}", self.source, self.next_index + 1);
        Image::from_rgb8(w, h, pixels, &name).ok_or_else(|| format!("frame {}: a {w}x{h} frame", self.next_index + 1))
    }
}
