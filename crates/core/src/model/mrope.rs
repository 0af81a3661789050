//! M-RoPE position ids (t, h, w) of a Qwen2-VL / Qwen2.5-VL prompt with images and videos.
//!
//! Text tokens take `p` on all three axes and advance `p` by one. A vision item (an image, or
//! a video) starting at `p` with merged grid (T, H, W) gives its token (t, row, column) the ids
//! `(p + time(t), p + row, p + column)`, tokens ordered t, then row, then column. `time(t)` is
//! `t`, except for Qwen2.5-VL videos (`tokens_per_second` set), where it is
//! `trunc(t · second_per_grid_t · tokens_per_second)` in f32, as transformers computes it.
//!
//! Where text resumes after a vision item is where the two rules differ ([`RopeRule`]):
//! * [`RopeRule::Legacy`] (the default; transformers 4.x, Qwen's reference code, vLLM, and what
//!   the released checkpoints were trained with): at the largest id so far + 1, so after a
//!   video whose temporal extent exceeds its height and width, text starts past the last frame;
//! * [`RopeRule::Transformers5`] (transformers 5.x): at `p + max(H, W)`, ignoring the temporal
//!   extent, so text ids can overlap a video's temporal ids.
//!
//! For images (T = 1) the rules agree. The rope delta is `max id + 1 - prompt length`: a token
//! appended at cache position `i` takes `i + delta` on every axis.

use crate::config::vision::MultimodalTokens;
use super::ForwardError;

/// Where text resumes after a vision item (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RopeRule {
    /// Largest id so far + 1 (transformers 4.x, the checkpoints' training rule).
    #[default]
    Legacy,
    /// Start + max(merged height, merged width) (transformers 5.x).
    Transformers5,
}

/// One video of a prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoGrid {
    /// Patch grid (temporal patches, rows, columns), as the video processor made it.
    pub grid_thw: [usize; 3],
    /// Seconds of video per temporal patch (`temporal_patch_size / fps`; see
    /// [`crate::media::Video::second_per_grid_t`]). Used by Qwen2.5-VL only.
    pub second_per_grid_t: f32,
}

/// Position ids and rope delta of a prompt whose image pad runs hold `images` and whose video
/// pad runs hold `videos`, each list in prompt order (the two kinds may interleave).
///
/// Each maximal run of pad tokens of one kind holds one or more consecutive items of that
/// kind, `t·h·w / merge²` tokens each. Errors (never panics) when the tokens and the grids do
/// not match, a grid is not whole merge groups, or an id exceeds u32.
pub fn mrope_index(
    ids: &[u32],
    images: &[[usize; 3]],
    videos: &[VideoGrid],
    mm: &MultimodalTokens,
    rule: RopeRule,
) -> Result<(Vec<[u32; 3]>, i64), ForwardError> {
    let mismatch = |problem: String| ForwardError::ImageTokens { problem };
    let mut out = Vec::with_capacity(ids.len());
    let mut images_left = images.iter().enumerate();
    let mut videos_left = videos.iter().enumerate();
    // Where the next token starts, and one past the largest id given so far.
    let (mut next, mut end): (u64, u64) = (0, 0);
    let mut i = 0;
    while i < ids.len() {
        let id = ids[i];
        let is_video = Some(id) == mm.video_token_id;
        if id != mm.image_token_id && !is_video {
            out.push([position(next)?; 3]);
            next += 1;
            end = end.max(next);
            i += 1;
            continue;
        }
        let run = ids[i..].iter().take_while(|&&x| x == id).count();
        let (kind, given) = if is_video { ("video", videos.len()) } else { ("image", images.len()) };
        let item = if is_video {
            videos_left.next().map(|(n, v)| (n, v.grid_thw, Some(v.second_per_grid_t)))
        } else {
            images_left.next().map(|(n, &g)| (n, g, None))
        };
        let Some((n, grid, second_per_grid_t)) = item else {
            return Err(mismatch(format!("{kind} tokens at {i} but only {given} {kind} grid(s) given")));
        };
        super::vision::check_grid(grid, mm.spatial_merge_size)?;
        let m = mm.spatial_merge_size;
        let (lt, lh, lw) = (grid[0], grid[1] / m, grid[2] / m);
        let count = lt.checked_mul(lh).and_then(|x| x.checked_mul(lw)).filter(|&c| c <= run).ok_or_else(|| {
            mismatch(format!("{kind} {n} (grid {grid:?}) needs {} tokens, the prompt has {run} at {i}", mm.image_tokens(grid)))
        })?;
        let mut last_time = 0;
        for t in 0..lt {
            let time = temporal_id(t, second_per_grid_t, mm.tokens_per_second, rule);
            last_time = time;
            for r in 0..lh {
                for c in 0..lw {
                    out.push([position(next + time)?, position(next + r as u64)?, position(next + c as u64)?]);
                }
            }
        }
        let block_end = next + last_time.max(lh as u64 - 1).max(lw as u64 - 1) + 1;
        end = end.max(block_end);
        next = match rule {
            RopeRule::Legacy => end,
            RopeRule::Transformers5 => next + lh.max(lw) as u64,
        };
        i += count;
    }
    let unused = [(images_left.next().map(|(n, _)| n), images.len(), "image"), (videos_left.next().map(|(n, _)| n), videos.len(), "video")];
    if let Some((Some(n), given, kind)) = unused.into_iter().find(|u| u.0.is_some()) {
        return Err(mismatch(format!("{given} {kind} grid(s) given, the prompt has {kind} tokens for {n}")));
    }
    Ok((out, end as i64 - ids.len() as i64))
}

/// The temporal id offset of temporal patch `t`: `t`, or for a Qwen2.5-VL video the scaled
/// time truncated, with transformers' f32 arithmetic and operand order for each rule
/// (4.x: `(t · second_per_grid_t) · tokens_per_second`; 5.x: `t · (tokens_per_second ·
/// second_per_grid_t)`).
fn temporal_id(t: usize, second_per_grid_t: Option<f32>, tokens_per_second: Option<u32>, rule: RopeRule) -> u64 {
    let (Some(seconds), Some(rate)) = (second_per_grid_t, tokens_per_second) else { return t as u64 };
    let rate = rate as f32;
    let time = match rule {
        RopeRule::Legacy => (t as f32 * seconds) * rate,
        RopeRule::Transformers5 => t as f32 * (rate * seconds),
    };
    // `.long()` truncates; a negative or NaN time (a bad second_per_grid_t) is clamped to 0.
    if time > 0.0 {
        time as u64
    } else {
        0
    }
}

fn position(p: u64) -> Result<u32, ForwardError> {
    u32::try_from(p).map_err(|_| ForwardError::ImageTokens { problem: format!("position {p} does not fit in u32") })
}

/// M-RoPE position ids (t, h, w) of a prompt with images only, and its rope delta:
/// [`mrope_index`] without videos (for images both position rules agree).
///
/// Each maximal run of `image_token_id` holds the images of `image_grids`, in order, each
/// `t·h·w / merge²` tokens; text tokens take `p` on every axis, where `p` is one past the
/// largest position so far; an image starting at `p` gives its token (t, row, col) of the
/// merged grid the positions `(p + t, p + row, p + col)`. The delta is `max position + 1 -
/// ids.len()`: a token appended at cache position `i` takes `i + delta` on every axis.
///
/// Errors (never panics) when the image tokens and the grids do not match, a grid is not whole
/// merge groups, or the prompt has video tokens.
pub fn rope_index(ids: &[u32], image_grids: &[[usize; 3]], mm: &MultimodalTokens) -> Result<(Vec<[u32; 3]>, i64), ForwardError> {
    mrope_index(ids, image_grids, &[], mm, RopeRule::Legacy)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MM: MultimodalTokens = MultimodalTokens {
        image_token_id: 9,
        video_token_id: Some(8),
        vision_start_token_id: 6,
        vision_end_token_id: 7,
        spatial_merge_size: 2,
        tokens_per_second: None,
    };

    fn axes(pos: &[[u32; 3]]) -> [Vec<u32>; 3] {
        [0, 1, 2].map(|a| pos.iter().map(|p| p[a]).collect())
    }

    #[test]
    fn a_long_video_under_both_rules() {
        // text, start, video of 3 temporal patches of 1×2 merged, end, text
        let ids = [1, 6, 8, 8, 8, 8, 8, 8, 7, 2];
        let video = VideoGrid { grid_thw: [3, 2, 4], second_per_grid_t: 1.0 };
        let (pos, delta) = mrope_index(&ids, &[], &[video], &MM, RopeRule::Legacy).expect("legacy");
        let [t, h, w] = axes(&pos);
        assert_eq!(t, [0, 1, 2, 2, 3, 3, 4, 4, 5, 6]);
        assert_eq!(h, [0, 1, 2, 2, 2, 2, 2, 2, 5, 6]);
        assert_eq!(w, [0, 1, 2, 3, 2, 3, 2, 3, 5, 6]);
        assert_eq!(delta, 7 - 10);
        // transformers 5: text resumes at 2 + max(1, 2) = 4, under the video's last time ids.
        let (pos, delta) = mrope_index(&ids, &[], &[video], &MM, RopeRule::Transformers5).expect("5.x");
        let [t, h, _] = axes(&pos);
        assert_eq!(t, [0, 1, 2, 2, 3, 3, 4, 4, 4, 5]);
        assert_eq!(h, [0, 1, 2, 2, 2, 2, 2, 2, 4, 5]);
        assert_eq!(delta, 6 - 10);
        // Default is the legacy rule.
        assert_eq!(RopeRule::default(), RopeRule::Legacy);
    }

    #[test]
    fn images_and_videos_interleave() {
        // image (1×1 merged), video (2 × 1×1), image (1×1), each between text tokens
        let ids = [1, 9, 2, 8, 8, 3, 9, 4];
        let video = VideoGrid { grid_thw: [2, 2, 2], second_per_grid_t: 1.0 };
        let (pos, delta) = mrope_index(&ids, &[[1, 2, 2], [1, 2, 2]], &[video], &MM, RopeRule::Legacy).expect("mixed");
        assert_eq!(axes(&pos)[0], [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(delta, 0);
    }

    #[test]
    fn qwen2_5_vl_scales_video_time() {
        let mm = MultimodalTokens { tokens_per_second: Some(2), ..MM };
        let ids = [1, 8, 8, 8, 2];
        // 3 temporal patches at 0.5 s each, 2 tokens per second: time ids 0, 1, 2.
        let video = VideoGrid { grid_thw: [3, 2, 2], second_per_grid_t: 0.5 };
        let (pos, _) = mrope_index(&ids, &[], &[video], &mm, RopeRule::Legacy).expect("scaled");
        assert_eq!(axes(&pos)[0], [0, 1, 2, 3, 4]);
        // 1 s per patch at 4 tokens per second: 0, 4, 8; text after at 1 + 8 + 1 = 10.
        let mm4 = MultimodalTokens { tokens_per_second: Some(4), ..MM };
        let video = VideoGrid { grid_thw: [3, 2, 2], second_per_grid_t: 1.0 };
        let (pos, delta) = mrope_index(&ids, &[], &[video], &mm4, RopeRule::Legacy).expect("scaled");
        assert_eq!(axes(&pos)[0], [0, 1, 5, 9, 10]);
        assert_eq!(axes(&pos)[1], [0, 1, 1, 1, 10]);
        assert_eq!(delta, 11 - 5);
        // 5.x: text at 1 + max(1, 1) = 2.
        let (pos, delta) = mrope_index(&ids, &[], &[video], &mm4, RopeRule::Transformers5).expect("scaled");
        assert_eq!(axes(&pos)[0], [0, 1, 5, 9, 2]);
        assert_eq!(delta, 10 - 5);
        // Truncated in f32: t · 0.7 · 3 = 0, 2.1, 4.2 -> 0, 2, 4.
        let mm3 = MultimodalTokens { tokens_per_second: Some(3), ..MM };
        let video = VideoGrid { grid_thw: [3, 2, 2], second_per_grid_t: 0.7 };
        let (pos, _) = mrope_index(&ids, &[], &[video], &mm3, RopeRule::Legacy).expect("scaled");
        assert_eq!(axes(&pos)[0], [0, 1, 3, 5, 6]);
        // Images are never scaled.
        let (pos, _) = mrope_index(&[1, 9, 2], &[[1, 2, 2]], &[], &mm4, RopeRule::Legacy).expect("image");
        assert_eq!(axes(&pos)[0], [0, 1, 2]);
    }

    #[test]
    fn mismatches_are_errors() {
        let video = VideoGrid { grid_thw: [2, 2, 2], second_per_grid_t: 1.0 };
        let ids = [1, 8, 8, 2];
        for (images, videos, what) in [
            (vec![], vec![], "video tokens at 1 but only 0 video grid(s) given"),
            (vec![], vec![VideoGrid { grid_thw: [3, 2, 2], ..video }], "video 0 (grid [3, 2, 2]) needs 3 tokens, the prompt has 2 at 1"),
            (vec![], vec![video, video], "2 video grid(s) given, the prompt has video tokens for 1"),
            (vec![[1, 2, 2]], vec![video], "1 image grid(s) given, the prompt has image tokens for 0"),
        ] {
            let err = mrope_index(&ids, &images, &videos, &MM, RopeRule::Legacy).expect_err(what);
            assert!(err.to_string().contains(what), "{err} should contain {what}");
        }
        let odd = VideoGrid { grid_thw: [2, 3, 2], ..video };
        assert!(matches!(mrope_index(&ids, &[], &[odd], &MM, RopeRule::Legacy), Err(ForwardError::BadGrid { .. })));
        // A model without a video token treats the id as text.
        let no_video = MultimodalTokens { video_token_id: None, ..MM };
        assert_eq!(mrope_index(&ids, &[], &[], &no_video, RopeRule::Legacy).expect("text").1, 0);
    }
}
