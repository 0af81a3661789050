//! Reading media files named on the command line or in datasets: images, videos (a file, a
//! directory of frame images, or a list of frame paths) and audio clips. Every error names
//! the file and, for limits, the limit.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ingot_core::media::{Audio, FrameSampling, Video};
use ingot_engine::{Image, Media, MediaLimits};

/// How media files are read: the size and duration limits, and video frame sampling.
#[derive(Debug, Clone, Copy, Default)]
pub struct MediaReading {
    pub limits: MediaLimits,
    pub sampling: FrameSampling,
}

/// The file's bytes, refused before reading when over the byte limit.
fn read_bytes(path: &Path, what: &str, limits: &MediaLimits) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if meta.len() > limits.max_bytes as u64 {
        anyhow::bail!("{what} {} has {} bytes, more than the limit of {}", path.display(), meta.len(), limits.max_bytes);
    }
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// Reads and decodes an image file (PNG, JPEG, WebP, GIF); errors name the file.
pub fn read_image(path: &Path) -> anyhow::Result<Media> {
    Ok(Media::Image(decode_image(path, &MediaLimits::default())?))
}

fn decode_image(path: &Path, limits: &MediaLimits) -> anyhow::Result<Image> {
    let bytes = read_bytes(path, "image", limits)?;
    Ok(Image::decode(&bytes, &path.display().to_string(), limits)?)
}

/// A video: a directory is its frame images in file-name order, anything else a video file.
pub fn read_video(path: &Path, how: &MediaReading) -> anyhow::Result<Media> {
    if path.is_dir() {
        let mut frames: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read the frame directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        frames.sort();
        return read_frames(&frames, &path.display().to_string(), how);
    }
    let bytes = read_bytes(path, "video", &how.limits)?;
    Ok(Media::Video(Video::decode(&bytes, &path.display().to_string(), &how.limits, &how.sampling)?))
}

/// A video given as its frame images, taken to be sampled at `video_fps` (LLaMA Factory's
/// rule for frame lists); `source` names the video in errors.
pub fn read_frames(frames: &[PathBuf], source: &str, how: &MediaReading) -> anyhow::Result<Media> {
    let images = frames.iter().map(|f| decode_image(f, &how.limits)).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Media::Video(Video::from_frames(images, source, how.sampling.fps)?))
}

/// Reads and decodes an audio clip (WAV, FLAC, MP3, OGG/Vorbis) within the duration limit.
pub fn read_audio(path: &Path, how: &MediaReading) -> anyhow::Result<Media> {
    let bytes = read_bytes(path, "audio", &how.limits)?;
    Ok(Media::Audio(Audio::decode(&bytes, &path.display().to_string(), &how.limits)?))
}
