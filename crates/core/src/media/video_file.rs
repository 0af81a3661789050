//! Decoding a video file into [`Video`] frames by running the system's FFmpeg programs:
//! `ffprobe` reads the container's header (format, codec, size, frame count, duration), then
//! `ffmpeg` decodes the video stream to raw RGB24 frames on a pipe, which are kept or skipped
//! as [`FrameSampling`] (LLaMA Factory's rule) picks them.
//!
//! Why the programs and not FFmpeg's libraries (the `ffmpeg-next` crate this replaced): linking
//! the libraries needs their development packages, pkg-config and libclang at build time, which
//! kept video files out of the default build, so out of CI and out of users' hands. The
//! programs cost no build time, work with any FFmpeg 4.x to 7.x, and a decoder that crashes or
//! hangs on a hostile file takes down a child process (killed after [`DECODE_TIMEOUT`]), not
//! the server. The cost is one temporary file per video (MP4 indexes are often at the end, so
//! the input must be seekable) and two process starts (tens of milliseconds).
//!
//! Only common, well-fuzzed inputs are opened: `-format_whitelist` lets only the MP4/MOV and
//! Matroska/WebM demuxers probe the bytes, and the stream's codec must be H.264, H.265, VP8,
//! VP9, AV1 or MPEG-4 Part 2 before anything is decoded. Frames come out at their coded size
//! (no auto-rotation, as PyAV gives them), converted to RGB by libswscale with bilinear
//! chroma, like PyAV's `frame.to_image()`; timestamps are passed through (`-vsync
//! passthrough`), so frame `i` of the pipe is frame `i` in decode order.
//!
//! Errors name the item and the limit: bytes over the limit, FFmpeg not installed, an
//! unreadable container, a container or codec outside the lists, a frame over the pixel limit,
//! kept frames over [`MAX_VIDEO_PIXELS`] in total, no video stream, no frames, fewer frames
//! than the container declares (truncated), a decode over [`DECODE_TIMEOUT`]. Memory is the
//! kept frames plus one frame buffer.

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{digest_bytes, FrameSampling, Image, MediaError, MediaLimits, Video};

/// Longest one video may take to probe and decode.
pub const DECODE_TIMEOUT: Duration = Duration::from_secs(120);

/// Most pixels the kept frames of one video may hold together (3 bytes each as RGB): 128
/// frames of 1080p fit, 128 of 4K do not.
pub const MAX_VIDEO_PIXELS: u64 = 300_000_000;

/// ffprobe's `format_name`s accepted, with their names for messages.
const CONTAINERS: [&str; 2] = ["mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"];

/// ffprobe's `codec_name`s accepted.
const CODECS: [&str; 6] = ["h264", "hevc", "vp8", "vp9", "av1", "mpeg4"];

/// The FFmpeg programs a decode runs, and how long it may take.
#[derive(Debug, Clone)]
pub struct FfmpegTools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    pub timeout: Duration,
}

impl Default for FfmpegTools {
    /// `ffmpeg` and `ffprobe` from `PATH`, [`DECODE_TIMEOUT`].
    fn default() -> Self {
        FfmpegTools { ffmpeg: "ffmpeg".into(), ffprobe: "ffprobe".into(), timeout: DECODE_TIMEOUT }
    }
}

impl Video {
    /// Decodes a video file's `bytes` with the system's FFmpeg, keeping the frames `sampling`
    /// picks. `source` names the video in errors; `limits` bound the encoded size and each
    /// frame's pixels.
    pub fn decode(bytes: &[u8], source: &str, limits: &MediaLimits, sampling: &FrameSampling) -> Result<Video, MediaError> {
        Self::decode_with(&FfmpegTools::default(), bytes, source, limits, sampling)
    }

    /// [`Video::decode`] with the given programs.
    pub fn decode_with(
        tools: &FfmpegTools,
        bytes: &[u8],
        source: &str,
        limits: &MediaLimits,
        sampling: &FrameSampling,
    ) -> Result<Video, MediaError> {
        if bytes.len() > limits.max_bytes {
            return Err(MediaError::TooManyBytes { origin: source.to_string(), size: bytes.len(), limit: limits.max_bytes });
        }
        let corrupt = |detail: String| MediaError::Corrupt { origin: source.to_string(), format: "video".into(), detail };
        if bytes.is_empty() {
            return Err(corrupt("no bytes".into()));
        }
        let deadline = Instant::now() + tools.timeout;
        let file = TempFile::write(bytes).map_err(|e| tool_error(source, format!("cannot write a temporary file: {e}")))?;
        let header = probe(tools, &file.0, source, deadline)?;
        if u64::from(header.width) * u64::from(header.height) > limits.max_pixels {
            return Err(MediaError::TooManyPixels {
                origin: source.to_string(),
                width: header.width,
                height: header.height,
                limit: limits.max_pixels,
            });
        }
        let wanted = sampling.indices(header.frames, header.duration.unwrap_or(f64::NAN));
        let pixels = u64::from(header.width) * u64::from(header.height) * wanted.len() as u64;
        if pixels > MAX_VIDEO_PIXELS {
            return Err(MediaError::Geometry {
                origin: source.to_string(),
                detail: format!(
                    "{} frames of {}x{} are {pixels} pixels, over the limit of {MAX_VIDEO_PIXELS} pixels per video (lower video_maxlen or video_fps)",
                    wanted.len(),
                    header.width,
                    header.height
                ),
            });
        }
        let (kept, decoded) = decode_frames(tools, &file.0, &header, &wanted, source, deadline)?;
        if header.frames > 0 && kept.len() < wanted.len() {
            return Err(corrupt(format!(
                "truncated: the container declares {} frames but only {decoded} could be decoded",
                header.frames
            )));
        }
        let fps = sampling.sampled_fps(kept.len(), header.duration);
        let mut keyed = Vec::with_capacity(32);
        keyed.extend_from_slice(b"file\0\0\0\0");
        keyed.extend_from_slice(&digest_bytes(bytes).to_le_bytes());
        keyed.extend_from_slice(&sampling.fps.to_bits().to_le_bytes());
        keyed.extend_from_slice(&(sampling.maxlen as u64).to_le_bytes());
        Video::new(kept, source, fps, digest_bytes(&keyed))
    }
}

fn tool_error(source: &str, detail: String) -> MediaError {
    MediaError::VideoDecoder { origin: source.to_string(), detail }
}

/// What `ffprobe` says about the file's first video stream.
#[derive(Debug, PartialEq)]
struct Header {
    width: u32,
    height: u32,
    /// Declared frame count; 0 when the container declares none (Matroska/WebM).
    frames: u64,
    /// The stream's duration, else the container's, in seconds.
    duration: Option<f64>,
}

/// Runs `ffprobe` on `path` and checks the container and codec against the lists.
fn probe(tools: &FfmpegTools, path: &Path, source: &str, deadline: Instant) -> Result<Header, MediaError> {
    let mut command = Command::new(&tools.ffprobe);
    command.args(["-v", "error", "-format_whitelist", "mov,matroska", "-select_streams", "v:0"]);
    command.args(["-show_entries", "stream=codec_name,width,height,nb_frames,duration:format=format_name,duration", "-of", "json"]);
    command.arg(path);
    let mut json = Vec::new();
    let outcome = run(command, &tools.ffprobe, (deadline, tools.timeout), source, |out| out.take(1 << 20).read_to_end(&mut json).map(drop))?;
    if !outcome.success {
        return Err(MediaError::Corrupt {
            origin: source.to_string(),
            format: "video".into(),
            detail: format!("not a readable video container ({})", outcome.message(path, source)),
        });
    }
    parse_probe(&json, source)
}

/// Reads ffprobe's JSON: the container and codec must be on the lists, the size positive.
fn parse_probe(json: &[u8], source: &str) -> Result<Header, MediaError> {
    let corrupt = |detail: String| MediaError::Corrupt { origin: source.to_string(), format: "video".into(), detail };
    let unsupported = |detected: String| MediaError::UnsupportedVideo { origin: source.to_string(), detected };
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| corrupt(format!("unreadable ffprobe output: {e}")))?;
    let container = v["format"]["format_name"].as_str().unwrap_or("unknown");
    if !CONTAINERS.contains(&container) {
        return Err(unsupported(format!("container `{container}`")));
    }
    let Some(stream) = v["streams"].get(0) else {
        return Err(corrupt("the file has no video stream".into()));
    };
    let codec = stream["codec_name"].as_str().unwrap_or("unknown");
    if !CODECS.contains(&codec) {
        return Err(unsupported(format!("codec {codec}")));
    }
    let dimension = |key: &str| stream[key].as_u64().and_then(|d| u32::try_from(d).ok()).unwrap_or(0);
    let (width, height) = (dimension("width"), dimension("height"));
    if width == 0 || height == 0 {
        return Err(corrupt(format!("the video is {width}x{height}")));
    }
    // ffprobe prints numbers as strings ("N/A" when unknown).
    let number = |value: &serde_json::Value| value.as_str().and_then(|s| s.parse::<f64>().ok()).filter(|d| d.is_finite() && *d > 0.0);
    let frames = stream["nb_frames"].as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let duration = number(&stream["duration"]).or_else(|| number(&v["format"]["duration"]));
    Ok(Header { width, height, frames, duration })
}

/// Decodes frames `0 ..= last wanted` to RGB24 and keeps the `wanted` ones (ascending). Returns
/// the kept frames and how many frames were decoded.
fn decode_frames(
    tools: &FfmpegTools,
    path: &Path,
    header: &Header,
    wanted: &[u64],
    source: &str,
    deadline: Instant,
) -> Result<(Vec<Image>, u64), MediaError> {
    let Some(&last) = wanted.last() else {
        return Err(MediaError::Geometry { origin: source.to_string(), detail: "no frames to take (video_maxlen is 0)".into() });
    };
    let (w, h) = (header.width, header.height);
    let mut command = Command::new(&tools.ffmpeg);
    command.args(["-v", "error", "-nostdin", "-format_whitelist", "mov,matroska", "-noautorotate", "-i"]);
    command.arg(path);
    command.args(["-map", "0:v:0", "-an", "-sn", "-dn", "-vsync", "passthrough", "-frames:v", &(last + 1).to_string()]);
    // A fixed output size: a stream that changes size mid-way still gives whole frames.
    command.args(["-s", &format!("{w}x{h}"), "-sws_flags", "bilinear", "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]);
    let frame_bytes = w as usize * h as usize * 3;
    let mut kept = Vec::with_capacity(wanted.len());
    let mut decoded = 0u64;
    let outcome = run(command, &tools.ffmpeg, (deadline, tools.timeout), source, |out| {
        let mut buffer = vec![0u8; frame_bytes];
        let mut next = wanted.iter().peekable();
        while decoded <= last {
            match out.read_exact(&mut buffer) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            if next.peek() == Some(&&decoded) {
                next.next();
                let name = format!("{source} frame {}", decoded + 1);
                // The buffer is exactly w·h·3 bytes, which `from_rgb8` takes.
                kept.extend(Image::from_rgb8(w, h, buffer.clone(), &name));
            }
            decoded += 1;
        }
        Ok(())
    })?;
    if decoded == 0 {
        let why = if outcome.success { String::new() } else { format!(" ({})", outcome.message(path, source)) };
        return Err(MediaError::Geometry { origin: source.to_string(), detail: format!("the video has no frames{why}") });
    }
    if !outcome.success && kept.len() < wanted.len() {
        return Err(MediaError::Corrupt {
            origin: source.to_string(),
            format: "video".into(),
            detail: format!("damaged or cut-short frame data after {decoded} frames ({})", outcome.message(path, source)),
        });
    }
    Ok((kept, decoded))
}

/// How a program run ended.
struct Outcome {
    success: bool,
    /// The start of what it wrote to stderr.
    stderr: String,
}

impl Outcome {
    /// The first line of stderr, for messages: without FFmpeg's `[component @ address]` prefix,
    /// the temporary file's path replaced by `source`.
    fn message(&self, path: &Path, source: &str) -> String {
        let line = self.stderr.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no message");
        let line = match (line.starts_with('['), line.find("] ")) {
            (true, Some(end)) => &line[end + 2..],
            _ => line,
        };
        line.replace(&path.display().to_string(), source).chars().take(200).collect()
    }
}

/// Runs `command` with stdout handed to `read` and stderr collected (its first 16 KiB), killed
/// at `deadline` (the end of the `limit` a whole decode has). A program that is not installed,
/// a read error and the deadline are errors naming `source`.
fn run(
    mut command: Command,
    program: &Path,
    (deadline, limit): (Instant, Duration),
    source: &str,
    read: impl FnOnce(&mut dyn Read) -> std::io::Result<()>,
) -> Result<Outcome, MediaError> {
    let name = program.display();
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            tool_error(source, format!("the `{name}` program was not found: video files need FFmpeg installed (Debian/Ubuntu: apt-get install ffmpeg)"))
        } else {
            tool_error(source, format!("cannot run `{name}`: {e}"))
        }
    })?;
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(tool_error(source, format!("`{name}` started without pipes")));
    };
    let errors = std::thread::spawn(move || {
        let mut stderr = stderr;
        let mut head = Vec::new();
        let _ = (&mut stderr).take(16 << 10).read_to_end(&mut head);
        // Keep draining so the program never blocks on a full pipe.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        String::from_utf8_lossy(&head).into_owned()
    });
    // The reader below blocks on the pipe; this thread kills the program at the deadline,
    // which closes the pipe and ends the read.
    let child = Arc::new(Mutex::new(child));
    let (stop, stopped) = mpsc::channel::<()>();
    let killer = {
        let child = Arc::clone(&child);
        std::thread::spawn(move || {
            let timed_out = matches!(stopped.recv_timeout(deadline.saturating_duration_since(Instant::now())), Err(RecvTimeoutError::Timeout));
            if timed_out {
                if let Ok(mut c) = child.lock() {
                    let _ = c.kill();
                }
            }
            timed_out
        })
    };
    let result = read(&mut stdout);
    // Closing the pipe ends a program still writing frames nobody reads.
    drop(stdout);
    let status = loop {
        let polled = child.lock().map(|mut c| c.try_wait());
        match polled {
            Ok(Ok(Some(status))) => break Some(status),
            Ok(Ok(None)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                if let Ok(mut c) = child.lock() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                break None;
            }
        }
    };
    let _ = stop.send(());
    let timed_out = killer.join().unwrap_or(true) || status.is_none();
    let stderr = errors.join().unwrap_or_default();
    if timed_out {
        return Err(tool_error(source, format!("decoding took longer than the limit of {} s", limit.as_secs_f64())));
    }
    result.map_err(|e| tool_error(source, format!("reading `{name}`'s output: {e}")))?;
    Ok(Outcome { success: status.is_some_and(|s| s.success()), stderr })
}

/// A temporary copy of the video's bytes (FFmpeg needs a seekable input), removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn write(bytes: &[u8]) -> std::io::Result<TempFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // The clock part keeps a name left behind by an earlier process of the same id unused.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("ingot-video-{}-{n}-{nanos}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        // Other local users have no business reading a request's video.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut handle = options.open(&path)?;
        let file = TempFile(path);
        std::io::Write::write_all(&mut handle, bytes)?;
        Ok(file)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_json(format: &str, streams: &str) -> Vec<u8> {
        format!(r#"{{"streams": [{streams}], "format": {{"format_name": "{format}", "duration": "4.000000"}}}}"#).into_bytes()
    }

    #[test]
    fn reads_ffprobe_output() {
        let mp4 = probe_json(CONTAINERS[0], r#"{"codec_name": "h264", "width": 56, "height": 42, "nb_frames": "8", "duration": "3.5"}"#);
        assert_eq!(parse_probe(&mp4, "a.mp4").expect("mp4"), Header { width: 56, height: 42, frames: 8, duration: Some(3.5) });
        // WebM: no frame count, no stream duration ("N/A" or absent): the container's duration.
        let webm = probe_json(CONTAINERS[1], r#"{"codec_name": "vp9", "width": 56, "height": 42, "nb_frames": "N/A"}"#);
        assert_eq!(parse_probe(&webm, "a.webm").expect("webm"), Header { width: 56, height: 42, frames: 0, duration: Some(4.0) });
    }

    #[test]
    fn refuses_what_is_not_on_the_lists() {
        let err = |json: Vec<u8>| parse_probe(&json, "v.bin").expect_err("refused").to_string();
        assert_eq!(
            err(probe_json("avi", r#"{"codec_name": "h264", "width": 2, "height": 2}"#)),
            format!("v.bin: unsupported video (container `avi`); supported: {}", super::super::SUPPORTED_VIDEO)
        );
        assert!(err(probe_json(CONTAINERS[1], r#"{"codec_name": "mjpeg", "width": 2, "height": 2}"#)).contains("(codec mjpeg)"));
        assert!(err(probe_json(CONTAINERS[0], "")).ends_with("the file has no video stream"));
        assert!(err(probe_json(CONTAINERS[0], r#"{"codec_name": "h264", "width": 0, "height": 2}"#)).ends_with("the video is 0x2"));
        assert!(err(b"not json".to_vec()).contains("unreadable ffprobe output"));
    }

    #[test]
    fn messages_drop_ffmpegs_prefix_and_the_temporary_path() {
        let path = Path::new("/tmp/ingot-video-1-2-3");
        let outcome = Outcome { success: false, stderr: "\n[mov,mp4 @ 0x55] moov atom not found\n/tmp/ingot-video-1-2-3: Invalid data\n".into() };
        assert_eq!(outcome.message(path, "clip.mp4"), "moov atom not found");
        let outcome = Outcome { success: false, stderr: "/tmp/ingot-video-1-2-3: Invalid data\n".into() };
        assert_eq!(outcome.message(path, "clip.mp4"), "clip.mp4: Invalid data");
        assert_eq!(Outcome { success: false, stderr: String::new() }.message(path, "c"), "no message");
    }

    #[test]
    fn the_temporary_copy_is_removed() {
        let file = TempFile::write(b"bytes").expect("write");
        let path = file.0.clone();
        assert_eq!(std::fs::read(&path).expect("read"), b"bytes");
        drop(file);
        assert!(!path.exists());
    }
}
