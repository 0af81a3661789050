//! Dataset rows with media as OpenAI chat messages, for `ingot infer --remote`: token ids
//! carry no pixels or samples, so such a row goes to the servers' `/v1/chat/completions` with
//! its media inline, and the server's template (the same model's, checked at start) lays them
//! out: images as `image_url` and video files as `video_url` `data:` URLs (the convention vLLM,
//! SGLang and ingot's API take), audio as OpenAI `input_audio` parts.
//!
//! Media go where the row's `<image>`, `<video>` and `<audio>` placeholders stand, splitting
//! the text into content parts; a kind without placeholders has all its items before the
//! first user message's text (images, then videos, then audios), as a local run places them.
//! Other counts of placeholders than items are the row's error, and so is a video given as
//! frame images (an OpenAI-style request has no part for a frame list).

use std::path::Path;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::dataset::{Row, VideoRef};

/// Placeholders and columns, in the order leading media go.
const KINDS: [(&str, &str); 3] = [("<image>", "images"), ("<video>", "videos"), ("<audio>", "audios")];

/// The row's conversation as chat messages with its media inline; `system` (the row's, else
/// the run's) goes first. An error names the row's column at fault.
pub(super) fn chat_messages(row: &Row, dir: &Path, system: Option<&str>) -> Result<Value, String> {
    let mut parts: [Vec<Value>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for p in &row.media.images {
        let (path, bytes) = read(dir, p, "images")?;
        parts[0].push(json!({"type": "image_url", "image_url": {"url": data_url(image_mime(&path), &bytes)}}));
    }
    for v in &row.media.videos {
        let p = match v {
            VideoRef::Path(p) if !dir.join(p).is_dir() => p,
            _ => return Err("column `videos`: a video given as frame images cannot be sent to --remote servers (they take video files); run this row locally".into()),
        };
        let (path, bytes) = read(dir, p, "videos")?;
        parts[1].push(json!({"type": "video_url", "video_url": {"url": data_url(video_mime(&path), &bytes)}}));
    }
    for p in &row.media.audios {
        let (path, bytes) = read(dir, p, "audios")?;
        let format = path.extension().and_then(|e| e.to_str()).map_or_else(|| "wav".to_string(), str::to_ascii_lowercase);
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        parts[2].push(json!({"type": "input_audio", "input_audio": {"data": data, "format": format}}));
    }
    let mut leading = Vec::new();
    for (k, (placeholder, column)) in KINDS.iter().enumerate() {
        let placed: usize = row.messages.iter().filter_map(|m| m["content"].as_str()).map(|t| t.matches(placeholder).count()).sum();
        if placed == 0 {
            leading.append(&mut parts[k]);
        } else if placed != parts[k].len() {
            return Err(format!("column `{column}`: the messages have {placed} {placeholder} placeholders for {} items", parts[k].len()));
        }
    }
    let mut queues = parts.map(std::collections::VecDeque::from);
    let mut leading = Some(leading).filter(|l| !l.is_empty());
    let mut messages: Vec<Value> = system.map(|s| json!({"role": "system", "content": s})).into_iter().collect();
    for m in &row.messages {
        let mut m = m.clone();
        if let Some(text) = m["content"].as_str().map(str::to_owned) {
            let mut content = Vec::new();
            if m["role"] == "user" {
                content.extend(leading.take().into_iter().flatten());
            }
            let mut rest = text.as_str();
            while let Some((at, k)) = KINDS.iter().enumerate().filter_map(|(k, (p, _))| rest.find(p).map(|at| (at, k))).min() {
                if at > 0 {
                    content.push(json!({"type": "text", "text": &rest[..at]}));
                }
                content.extend(queues[k].pop_front());
                rest = &rest[at + KINDS[k].0.len()..];
            }
            if !rest.is_empty() {
                content.push(json!({"type": "text", "text": rest}));
            }
            if content.iter().any(|p| p["type"] != "text") {
                m["content"] = Value::Array(content);
            }
        }
        messages.push(m);
    }
    Ok(Value::Array(messages))
}

/// Text with the media placeholders taken out.
pub(super) fn without_placeholders(text: &str) -> String {
    KINDS.iter().fold(text.to_string(), |t, (p, _)| t.replace(p, ""))
}

/// A media item's path (under the dataset's media directory) and bytes.
fn read(dir: &Path, item: &str, column: &str) -> Result<(std::path::PathBuf, Vec<u8>), String> {
    let path = dir.join(item);
    let bytes = std::fs::read(&path).map_err(|e| format!("column `{column}`: {}: {e}", path.display()))?;
    Ok((path, bytes))
}

fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn extension(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase)
}

/// The image MIME type a file's extension names (servers sniff the bytes anyway).
fn image_mime(path: &Path) -> &'static str {
    match extension(path).as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => "image/png",
    }
}

/// The video MIME type a file's extension names.
fn video_mime(path: &Path) -> &'static str {
    match extension(path).as_deref() {
        Some("webm") => "video/webm",
        Some("mkv") => "video/x-matroska",
        Some("mov") => "video/quicktime",
        _ => "video/mp4",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::RowMedia;

    fn row(content: &str, images: &[&str]) -> Row {
        Row {
            messages: vec![json!({"role": "user", "content": content})],
            label: String::new(),
            system: None,
            tools: None,
            media: RowMedia { images: images.iter().map(|s| s.to_string()).collect(), ..RowMedia::default() },
        }
    }

    #[test]
    fn images_go_where_the_placeholders_stand_or_first() {
        let dir = ingot_testkit::scratch_dir("remote-media-rows");
        std::fs::write(dir.join("a.png"), b"png").expect("write");
        let url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(b"png"));
        let m = chat_messages(&row("Look<image>now", &["a.png"]), &dir, Some("Be brief.")).expect("placed");
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        let parts = &m[1]["content"];
        assert_eq!(parts[0]["text"], "Look");
        assert_eq!(parts[1]["image_url"]["url"], url);
        assert_eq!(parts[2]["text"], "now");
        let m = chat_messages(&row("What is it?", &["a.png", "a.png"]), &dir, None).expect("leading");
        let types: Vec<&Value> = m[0]["content"].as_array().expect("parts").iter().map(|p| &p["type"]).collect();
        assert_eq!(types, ["image_url", "image_url", "text"]);
        let e = chat_messages(&row("<image><image>Two?", &["a.png"]), &dir, None).expect_err("miscounted");
        assert!(e.contains("2 <image> placeholders for 1 items"), "{e}");
        let e = chat_messages(&row("<image>?", &["gone.png"]), &dir, None).expect_err("missing file");
        assert!(e.contains("gone.png"), "{e}");
    }

    #[test]
    fn videos_and_audios_go_as_video_url_and_input_audio_parts() {
        let dir = ingot_testkit::scratch_dir("remote-media-av");
        std::fs::write(dir.join("v.webm"), b"webm").expect("write");
        std::fs::write(dir.join("a.wav"), b"wav").expect("write");
        std::fs::create_dir_all(dir.join("frames")).expect("dir");
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut r = row("Hear<audio>then see", &[]);
        r.media.videos = vec![VideoRef::Path("v.webm".into())];
        r.media.audios = vec!["a.wav".into()];
        let m = chat_messages(&r, &dir, None).expect("placed");
        let parts = m[0]["content"].as_array().expect("parts");
        // The video has no placeholder: it leads; the audio stands where its placeholder does.
        assert_eq!(parts[0]["video_url"]["url"], format!("data:video/webm;base64,{}", b64(b"webm")));
        assert_eq!(parts[1]["text"], "Hear");
        assert_eq!(parts[2]["input_audio"], json!({"data": b64(b"wav"), "format": "wav"}));
        assert_eq!(parts[3]["text"], "then see");
        assert_eq!(without_placeholders("a<video>b<audio>c<image>"), "abc");
        r.media.videos = vec![VideoRef::Frames(vec!["f1.png".into()])];
        let e = chat_messages(&r, &dir, None).expect_err("frames");
        assert!(e.contains("column `videos`") && e.contains("frame images"), "{e}");
        r.media.videos = vec![VideoRef::Path("frames".into())];
        assert!(chat_messages(&r, &dir, None).is_err(), "a frame directory is frames too");
    }
}
