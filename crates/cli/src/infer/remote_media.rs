//! Dataset rows with images as OpenAI chat messages, for `ingot infer --remote`: token ids
//! carry no pixels, so such a row goes to the servers' `/v1/chat/completions` with its
//! images inline as `data:` URLs, and the server's template (the same model's, checked at
//! start) lays them out.
//!
//! Images go where the row's `<image>` placeholders stand, splitting the text into content
//! parts; a row without placeholders has them all before its first user message's text, as a
//! local run places them. Other counts of placeholders than images are the row's error.

use std::path::Path;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::dataset::Row;

const PLACEHOLDER: &str = "<image>";

/// The row's conversation as chat messages with its images inline; `system` (the row's, else
/// the run's) goes first. An error names the row's column at fault.
pub(super) fn chat_messages(row: &Row, dir: &Path, system: Option<&str>) -> Result<Value, String> {
    if !row.media.videos.is_empty() || !row.media.audios.is_empty() {
        return Err("columns `videos` and `audios`: --remote servers get only rows with images; run these rows locally".into());
    }
    let mut urls = Vec::with_capacity(row.media.images.len());
    for p in &row.media.images {
        let path = dir.join(p);
        let bytes = std::fs::read(&path).map_err(|e| format!("column `images`: {}: {e}", path.display()))?;
        urls.push(format!("data:{};base64,{}", mime(&path), base64::engine::general_purpose::STANDARD.encode(bytes)));
    }
    let placed: usize = row.messages.iter().filter_map(|m| m["content"].as_str()).map(|t| t.matches(PLACEHOLDER).count()).sum();
    if placed != 0 && placed != urls.len() {
        return Err(format!("column `images`: the messages have {placed} {PLACEHOLDER} placeholders for {} images", urls.len()));
    }
    let mut images = urls.into_iter();
    let mut leading = placed == 0;
    let mut messages: Vec<Value> = system.map(|s| json!({"role": "system", "content": s})).into_iter().collect();
    for m in &row.messages {
        let mut m = m.clone();
        if let Some(text) = m["content"].as_str().map(str::to_owned) {
            let mut parts = Vec::new();
            if leading && m["role"] == "user" {
                parts.extend(images.by_ref().map(image_part));
                leading = false;
            }
            for (i, piece) in text.split(PLACEHOLDER).enumerate() {
                if i > 0 {
                    parts.extend(images.next().map(image_part));
                }
                if !piece.is_empty() {
                    parts.push(json!({"type": "text", "text": piece}));
                }
            }
            if parts.iter().any(|p| p["type"] == "image_url") {
                m["content"] = Value::Array(parts);
            }
        }
        messages.push(m);
    }
    Ok(Value::Array(messages))
}

/// Text with the image placeholders taken out.
pub(super) fn without_placeholders(text: &str) -> String {
    text.replace(PLACEHOLDER, "")
}

fn image_part(url: String) -> Value {
    json!({"type": "image_url", "image_url": {"url": url}})
}

/// The image MIME type a file's extension names (servers sniff the bytes anyway).
fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => "image/png",
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
        assert!(e.contains("2 <image> placeholders for 1 images"), "{e}");
        let e = chat_messages(&row("<image>?", &["gone.png"]), &dir, None).expect_err("missing file");
        assert!(e.contains("gone.png"), "{e}");
    }
}
