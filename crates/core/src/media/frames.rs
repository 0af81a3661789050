//! Which frames of a video file become the model's input: LLaMA Factory's rule
//! (`mm_plugin.py`, `_get_video_sample_indices` and the Qwen2-VL plugin's `_regularize_videos`).
//!
//! A stream that declares `N > 0` frames and lasts `d` seconds gives
//! `n = min(N, video_maxlen, max(1, floor(d · video_fps)))` frames at
//! `numpy.linspace(0, N - 1, n).astype(int32)`: evenly spread, first and last included,
//! truncated toward zero. A stream that declares no frame count (WebM/Matroska stores none)
//! gives its first `video_maxlen` frames, as LLaMA Factory's "infinite video" branch does.
//! The frames then count as sampled at `n / d` frames per second, which is what Qwen2.5-VL's
//! `second_per_grid_ts` is made of. An odd frame count is made even later, by repeating the
//! last frame ([`super::Qwen2VlVideoProcessor`]).

/// LLaMA Factory's `video_fps` and `video_maxlen`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameSampling {
    /// Frames taken per second of video (also the rate a frame list is taken to have).
    pub fps: f64,
    /// At most this many frames per video file.
    pub maxlen: usize,
}

impl Default for FrameSampling {
    /// LLaMA Factory's defaults: 2 frames per second, at most 128.
    fn default() -> Self {
        FrameSampling { fps: 2.0, maxlen: 128 }
    }
}

impl FrameSampling {
    /// The indices (in decode order) of the frames to keep, ascending and distinct, for a
    /// stream declaring `total_frames` frames (0: not declared) and lasting `duration_secs`.
    pub fn indices(&self, total_frames: u64, duration_secs: f64) -> Vec<u64> {
        if total_frames == 0 {
            return (0..self.maxlen as u64).collect();
        }
        // `max(1, floor(...))` in Python: a NaN or negative duration gives 1 there too.
        let wanted = (duration_secs * self.fps).floor();
        let wanted = if wanted >= 1.0 { wanted as u64 } else { 1 };
        let n = total_frames.min(self.maxlen as u64).min(wanted);
        linspace_truncated(total_frames - 1, n)
    }

    /// The rate the kept frames stand for, LLaMA Factory's `fps_per_video`: `kept / duration`
    /// when the duration is known and positive, else `fps`.
    pub fn sampled_fps(&self, kept: usize, duration_secs: Option<f64>) -> f64 {
        match duration_secs {
            Some(d) if d > 0.0 => kept as f64 / d,
            _ => self.fps,
        }
    }
}

/// `numpy.linspace(0, stop, n).astype(int32)` for `n >= 1`: `i · (stop / (n - 1))` in f64,
/// the last value exactly `stop`, truncated.
fn linspace_truncated(stop: u64, n: u64) -> Vec<u64> {
    if n <= 1 {
        return vec![0; n as usize];
    }
    let step = stop as f64 / (n - 1) as f64;
    let mut out: Vec<u64> = (0..n).map(|i| (i as f64 * step) as u64).collect();
    out[n as usize - 1] = stop;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(total: u64, duration: f64, fps: f64, maxlen: usize) -> Vec<u64> {
        FrameSampling { fps, maxlen }.indices(total, duration)
    }

    #[test]
    fn follows_llama_factorys_rule() {
        // Values from LLaMA Factory 0.9.5's `_get_video_sample_indices` (numpy linspace), by hand:
        // 10 s at 30 fps (300 frames), 2 fps: 20 frames, step 299/19 = 15.736...
        assert_eq!(
            sample(300, 10.0, 2.0, 128),
            [0, 15, 31, 47, 62, 78, 94, 110, 125, 141, 157, 173, 188, 204, 220, 236, 251, 267, 283, 299]
        );
        // The fixture's 8 frames as a 4 s file at 2 fps: all of them.
        assert_eq!(sample(8, 4.0, 2.0, 128), (0..8).collect::<Vec<_>>());
        // 2.9 s: floor(5.8) = 5 frames of 8, step 7/4 = 1.75 -> 0, 1.75, 3.5, 5.25, 7.
        assert_eq!(sample(8, 2.9, 2.0, 128), [0, 1, 3, 5, 7]);
        // video_maxlen caps: 100 s at 2 fps wants 200; maxlen 4 over 1000 frames, step 333.
        assert_eq!(sample(1000, 100.0, 2.0, 4), [0, 333, 666, 999]);
        // Fewer frames than wanted: every frame.
        assert_eq!(sample(3, 10.0, 2.0, 128), [0, 1, 2]);
        // Very short: at least one frame, the first.
        assert_eq!(sample(5, 0.1, 2.0, 128), [0]);
        assert_eq!(sample(5, f64::NAN, 2.0, 128), [0]);
        // No declared frame count (WebM): the first video_maxlen frames.
        assert_eq!(sample(0, 10.0, 2.0, 3), [0, 1, 2]);
        // Truncation toward zero, not rounding: step 9/2 = 4.5 -> 0, 4, 9.
        assert_eq!(sample(10, 1.5, 2.0, 128), [0, 4, 9]);
    }

    #[test]
    fn linspace_matches_numpy_edge_values() {
        // numpy.linspace(0, 6, 4) = [0, 2, 4, 6]; (0, 299, 20)[5] = 78.68... -> 78.
        assert_eq!(linspace_truncated(6, 4), [0, 2, 4, 6]);
        assert_eq!(linspace_truncated(299, 20)[5], 78);
        assert_eq!(linspace_truncated(0, 1), [0]);
        assert!(linspace_truncated(5, 0).is_empty());
    }

    #[test]
    fn sampled_fps_is_frames_over_duration() {
        let s = FrameSampling::default();
        assert_eq!(s.sampled_fps(20, Some(10.0)), 2.0);
        assert_eq!(s.sampled_fps(5, Some(2.9)), 5.0 / 2.9);
        assert_eq!(s.sampled_fps(8, None), 2.0);
        assert_eq!(s.sampled_fps(8, Some(0.0)), 2.0);
    }
}
