//! The media columns of a LLaMA Factory dataset row (`images`, `videos`, `audios`): which
//! keys hold them, and the paths a row gives.
//!
//! Shapes, as LLaMA Factory takes them: a column holds one path or a list of paths, one per
//! item in the order of the messages' placeholders; a video item is a file path (or a
//! directory of frames) or a list of frame image paths.

use serde_json::{Map, Value};

use super::{column, kind};

/// Column names of the media (`None`: the dataset has no such column).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaColumns {
    pub images: Option<String>,
    pub videos: Option<String>,
    pub audios: Option<String>,
}

impl MediaColumns {
    /// The default names, used when no `dataset_info.json` renames the columns.
    pub fn defaults() -> Self {
        MediaColumns { images: Some("images".into()), videos: Some("videos".into()), audios: Some("audios".into()) }
    }
}

/// One video of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoRef {
    /// A video file, or a directory of frame images.
    Path(String),
    /// Frame image paths, in order.
    Frames(Vec<String>),
}

/// A row's media, paths as the row gives them (relative to the media directory unless
/// absolute).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowMedia {
    pub images: Vec<String>,
    pub videos: Vec<VideoRef>,
    pub audios: Vec<String>,
}

impl RowMedia {
    /// Reads the row's media columns; errors name the column and the item.
    pub fn read(row: &Map<String, Value>, c: &MediaColumns) -> Result<RowMedia, String> {
        Ok(RowMedia {
            images: paths(row, &c.images, "image")?,
            videos: videos(row, &c.videos)?,
            audios: paths(row, &c.audios, "audio")?,
        })
    }
}

/// Paths from a column holding a list of strings (or one string).
fn paths(row: &Map<String, Value>, name: &Option<String>, what: &str) -> Result<Vec<String>, String> {
    let Some((k, v)) = column(row, name) else { return Ok(Vec::new()) };
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("`{k}` item {} must be a path string, got {}", i + 1, kind(other))),
            })
            .collect(),
        other => Err(format!("`{k}` must be a list of {what} paths, got {}", kind(other))),
    }
}

/// Videos: one path, or a list whose items are paths or lists of frame paths.
fn videos(row: &Map<String, Value>, name: &Option<String>) -> Result<Vec<VideoRef>, String> {
    let Some((k, v)) = column(row, name) else { return Ok(Vec::new()) };
    let one = |i: usize, item: &Value| match item {
        Value::String(s) => Ok(VideoRef::Path(s.clone())),
        Value::Array(frames) => frames
            .iter()
            .map(|f| f.as_str().map(str::to_string).ok_or_else(|| format!("`{k}` item {}: frames must be path strings, got {}", i + 1, kind(f))))
            .collect::<Result<Vec<_>, _>>()
            .map(VideoRef::Frames),
        other => Err(format!("`{k}` item {} must be a video path or a list of frame paths, got {}", i + 1, kind(other))),
    };
    match v {
        Value::String(_) => Ok(vec![one(0, v)?]),
        Value::Array(items) => items.iter().enumerate().map(|(i, item)| one(i, item)).collect(),
        other => Err(format!("`{k}` must be a list of videos, got {}", kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn media_columns_in_every_shape() {
        let row = json!({"images": "a.png", "videos": ["v.mp4", ["f0.png", "f1.png"]], "audios": ["a.wav"]});
        let m = RowMedia::read(row.as_object().expect("object"), &MediaColumns::defaults()).expect("read");
        assert_eq!(m.images, ["a.png"]);
        assert_eq!(m.videos, [VideoRef::Path("v.mp4".into()), VideoRef::Frames(vec!["f0.png".into(), "f1.png".into()])]);
        assert_eq!(m.audios, ["a.wav"]);
        let bad = json!({"videos": [["f0.png", 3]]});
        let e = RowMedia::read(bad.as_object().expect("object"), &MediaColumns::defaults()).expect_err("number frame");
        assert_eq!(e, "`videos` item 1: frames must be path strings, got a number");
        let bad = json!({"audios": {"path": "a.wav"}});
        let e = RowMedia::read(bad.as_object().expect("object"), &MediaColumns::defaults()).expect_err("object");
        assert_eq!(e, "`audios` must be a list of audio paths, got an object");
    }
}
