//! A video input: its frames as decoded [`Image`]s, in order, plus the rate they stand for.
//!
//! Two ways in, as LLaMA Factory takes them: a list of frame images (already sampled by whoever
//! made the list; they count as taken at `video_fps`), or a video file whose frames are sampled
//! by [`super::FrameSampling`] while it is decoded ([`Video::decode`], with the system's FFmpeg).
//!
//! Invariants: at least one frame; every frame has the same width and height; `fps > 0`. The
//! digest covers the original bytes of every frame (a frame list) or of the file and the
//! sampling that picked the frames (a file), so the prefix cache shares a video's tokens only
//! between identical inputs.

use super::{digest_bytes, Image, MediaError};

/// A video: frames of one size, in order.
#[derive(Clone)]
pub struct Video {
    frames: Vec<Image>,
    fps: f64,
    digest: u64,
    source: String,
}

impl std::fmt::Debug for Video {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Video")
            .field("source", &self.source)
            .field("frames", &self.frames.len())
            .field("width", &self.frames[0].width())
            .field("height", &self.frames[0].height())
            .field("fps", &self.fps)
            .field("digest", &format_args!("{:016x}", self.digest))
            .finish()
    }
}

impl Video {
    /// A video from frames already decoded (LLaMA Factory's list-of-images video), taken to be
    /// sampled at `fps` (its `video_fps`). `source` names the video in errors. Errors when there
    /// are no frames, the frames differ in size (naming the first odd one and both sizes), or
    /// `fps` is not positive.
    pub fn from_frames(frames: Vec<Image>, source: &str, fps: f64) -> Result<Video, MediaError> {
        let mut keyed = Vec::with_capacity(8 * frames.len() + 8);
        keyed.extend_from_slice(b"frames\0\0");
        keyed.extend(frames.iter().flat_map(|f| f.digest().to_le_bytes()));
        Self::new(frames, source, fps, digest_bytes(&keyed))
    }

    /// Checks the invariants; `digest` is the caller's.
    pub(super) fn new(frames: Vec<Image>, source: &str, fps: f64, digest: u64) -> Result<Video, MediaError> {
        let geometry = |detail: String| MediaError::Geometry { origin: source.to_string(), detail };
        let Some(first) = frames.first() else {
            return Err(geometry("the video has no frames".to_string()));
        };
        let size = (first.width(), first.height());
        if let Some((i, odd)) = frames.iter().enumerate().find(|(_, f)| (f.width(), f.height()) != size) {
            return Err(geometry(format!(
                "frame {} ({}) is {}x{} but frame 1 ({}) is {}x{}: all frames of a video must have one size",
                i + 1,
                odd.source(),
                odd.width(),
                odd.height(),
                first.source(),
                size.0,
                size.1
            )));
        }
        if !(fps.is_finite() && fps > 0.0) {
            return Err(geometry(format!("a frame rate of {fps} frames per second; it must be positive")));
        }
        Ok(Video { frames, fps, digest, source: source.to_string() })
    }

    /// The frames, in order (never empty, all of one size).
    pub fn frames(&self) -> &[Image] {
        &self.frames
    }

    /// The rate the frames stand for (LLaMA Factory's `fps_per_video`).
    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// Qwen2.5-VL's `second_per_grid_t` for this video: seconds of video per temporal patch,
    /// `temporal_patch_size / fps`, in f32 as LLaMA Factory hands it to the model.
    pub fn second_per_grid_t(&self, temporal_patch_size: usize) -> f32 {
        (temporal_patch_size as f64 / self.fps) as f32
    }

    /// Stable hash of the video's original bytes (see the module documentation).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The human name given when the video was made.
    pub fn source(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u32, h: u32, value: u8, name: &str) -> Image {
        Image::from_rgb8(w, h, vec![value; (w * h * 3) as usize], name).expect("frame")
    }

    #[test]
    fn frames_of_one_size() {
        let v = Video::from_frames(vec![frame(4, 3, 1, "a.png"), frame(4, 3, 2, "b.png")], "clip", 2.0).expect("video");
        assert_eq!(v.frames().len(), 2);
        assert_eq!(v.source(), "clip");
        assert_eq!(v.second_per_grid_t(2), 1.0);
        let same = Video::from_frames(vec![frame(4, 3, 1, "x"), frame(4, 3, 2, "y")], "other", 2.0).expect("video");
        assert_eq!(v.digest(), same.digest(), "the digest is of the pixels, not the names");
        let swapped = Video::from_frames(vec![frame(4, 3, 2, "b.png"), frame(4, 3, 1, "a.png")], "clip", 2.0).expect("video");
        assert_ne!(v.digest(), swapped.digest(), "frame order matters");
        assert_ne!(v.digest(), v.frames()[0].digest());
    }

    #[test]
    fn bad_frame_lists_are_errors_naming_the_video() {
        let err = Video::from_frames(Vec::new(), "video 1 of the request", 2.0).expect_err("empty");
        assert_eq!(err.to_string(), "video 1 of the request: cannot be preprocessed: the video has no frames");
        let mixed = vec![frame(4, 3, 1, "f0.png"), frame(4, 3, 1, "f1.png"), frame(5, 3, 1, "f2.png")];
        let err = Video::from_frames(mixed, "clip", 2.0).expect_err("mixed sizes");
        assert_eq!(
            err.to_string(),
            "clip: cannot be preprocessed: frame 3 (f2.png) is 5x3 but frame 1 (f0.png) is 4x3: all frames of a video must have one size"
        );
        for fps in [0.0, -1.0, f64::NAN] {
            assert!(Video::from_frames(vec![frame(4, 3, 1, "a")], "clip", fps).is_err(), "fps {fps}");
        }
    }
}
