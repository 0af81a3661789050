//! Reading media files named on the command line or in datasets.

use std::path::Path;

use anyhow::Context;
use ingot_engine::{Image, Media, MediaLimits};

/// Reads and decodes an image file (PNG, JPEG, WebP, GIF); errors name the file.
pub fn read_image(path: &Path) -> anyhow::Result<Media> {
    let limits = MediaLimits::default();
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read image {}", path.display()))?;
    // Checked before reading, so a huge file is refused without loading it.
    if meta.len() > limits.max_bytes as u64 {
        anyhow::bail!("image {} has {} bytes, more than the limit of {}", path.display(), meta.len(), limits.max_bytes);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    Ok(Media::Image(Image::decode(&bytes, &path.display().to_string(), &limits)?))
}
