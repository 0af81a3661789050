//! Decoding an encoded image into RGB8 pixels, the way the Python reference sees it: PIL's
//! `Image.open(...).convert("RGB")` (alpha dropped, grey replicated, palettes expanded).
//!
//! Invariants of [`Image`]: `width, height >= 1`, `rgb().len() == width * height * 3`,
//! `width * height <= limits.max_pixels` of the decode that made it.
//!
//! Known differences from PIL, all outside the lossless formats the reference fixtures use:
//! JPEG and lossy WebP are decoded by other decoders than libjpeg/libwebp, so a few pixels may
//! differ by a unit or two; 16-bit channels keep their high byte (as PIL's "RGB;16B" unpacking
//! does), also for 16-bit greyscale, which PIL instead clips to 0..255; transparent pixels come out
//! as the decoder's RGB under the alpha (for GIF that is black, where PIL shows the palette colour
//! of the transparent index). EXIF orientation is not applied, as PIL's `open` does not.

use std::io::Cursor;

use ::image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};

use super::{digest_bytes, MediaError, MediaLimits};

/// A decoded still image: RGB8 pixels, row-major, plus the digest of the bytes it came from.
#[derive(Clone)]
pub struct Image {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
    digest: u64,
    source: String,
}

impl std::fmt::Debug for Image {
    // The pixels are left out: a debug print of a request should not be megabytes long.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("source", &self.source)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("digest", &format_args!("{:016x}", self.digest))
            .finish()
    }
}

impl Image {
    /// Decodes PNG, JPEG, WebP or GIF (first frame) `bytes` to RGB8. `source` is a human name
    /// for the item (a file path, "image 2 of the request") that every error starts with.
    pub fn decode(bytes: &[u8], source: &str, limits: &MediaLimits) -> Result<Image, MediaError> {
        if bytes.len() > limits.max_bytes {
            return Err(MediaError::TooManyBytes { origin: source.to_string(), size: bytes.len(), limit: limits.max_bytes });
        }
        let corrupt = |format: &str, detail: String| MediaError::Corrupt {
            origin: source.to_string(),
            format: format.to_string(),
            detail,
        };
        if bytes.is_empty() {
            return Err(corrupt("image", "no bytes".to_string()));
        }
        // Reading from memory cannot fail with an I/O error; map it anyway rather than unwrap.
        let reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| corrupt("image", e.to_string()))?;
        let format = match reader.format() {
            Some(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Gif)) => f,
            Some(other) => {
                return Err(MediaError::UnsupportedFormat { origin: source.to_string(), detected: format!("{other:?}") })
            }
            None => {
                return Err(MediaError::UnsupportedFormat {
                    origin: source.to_string(),
                    detected: "not a recognised image signature".to_string(),
                })
            }
        };
        let format_name = format_name(format);
        let map_err = |e: ImageError| match e {
            ImageError::Unsupported(u) => {
                MediaError::UnsupportedFormat { origin: source.to_string(), detected: format!("{format_name}: {u}") }
            }
            other => corrupt(format_name, other.to_string()),
        };
        // The header alone gives the dimensions: check them before the pixel buffer exists.
        let decoder = reader.into_decoder().map_err(map_err)?;
        let (width, height) = decoder.dimensions();
        if width == 0 || height == 0 {
            return Err(corrupt(format_name, format!("the image is {width}x{height}")));
        }
        if width as u64 * height as u64 > limits.max_pixels {
            return Err(MediaError::TooManyPixels { origin: source.to_string(), width, height, limit: limits.max_pixels });
        }
        let decoded = DynamicImage::from_decoder(decoder).map_err(|e| match e {
            // The decoder's own allocation cap (512 MiB by default): only reachable for images
            // within max_pixels when max_pixels is set very high, so report it as too many pixels.
            ImageError::Limits(_) => {
                MediaError::TooManyPixels { origin: source.to_string(), width, height, limit: limits.max_pixels }
            }
            other => map_err(other),
        })?;
        let rgb = to_rgb8(decoded);
        debug_assert_eq!(rgb.len(), width as usize * height as usize * 3);
        Ok(Image { width, height, rgb, digest: digest_bytes(bytes), source: source.to_string() })
    }

    /// An image from RGB8 pixels already in memory (a video frame, a test pattern). The digest
    /// covers the dimensions and the pixels. `None` when `rgb.len() != width * height * 3` or
    /// a side is 0.
    pub fn from_rgb8(width: u32, height: u32, rgb: Vec<u8>, source: &str) -> Option<Image> {
        let expected = (width as usize).checked_mul(height as usize)?.checked_mul(3)?;
        if width == 0 || height == 0 || rgb.len() != expected {
            return None;
        }
        let mut keyed = Vec::with_capacity(8 + rgb.len());
        keyed.extend_from_slice(&width.to_le_bytes());
        keyed.extend_from_slice(&height.to_le_bytes());
        keyed.extend_from_slice(&rgb);
        Some(Image { width, height, digest: digest_bytes(&keyed), rgb, source: source.to_string() })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// `width * height * 3` bytes, row-major, R G B per pixel.
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// Stable hash of the original encoded bytes ([`super::digest_bytes`]).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The human name given at decode time.
    pub fn source(&self) -> &str {
        &self.source
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        _ => "image",
    }
}

/// PIL's `convert("RGB")`: drop alpha, replicate grey; 16-bit channels keep their high byte.
fn to_rgb8(image: DynamicImage) -> Vec<u8> {
    match image {
        DynamicImage::ImageRgb8(buf) => buf.into_raw(),
        DynamicImage::ImageRgba8(buf) => buf.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        DynamicImage::ImageLuma8(buf) => buf.into_raw().into_iter().flat_map(|l| [l, l, l]).collect(),
        DynamicImage::ImageLumaA8(buf) => buf.into_raw().chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        DynamicImage::ImageRgb16(buf) => buf.into_raw().into_iter().map(|v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(buf) => {
            buf.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).map(|v| (v >> 8) as u8).collect()
        }
        DynamicImage::ImageLuma16(buf) => buf.into_raw().into_iter().flat_map(|l| [(l >> 8) as u8; 3]).collect(),
        DynamicImage::ImageLumaA16(buf) => {
            buf.into_raw().chunks_exact(2).flat_map(|p| [(p[0] >> 8) as u8; 3]).collect()
        }
        // Float images come only from formats not enabled here; the crate's conversion is fine.
        other => other.to_rgb8().into_raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::{ImageEncoder, RgbImage};

    fn encode(format: ImageFormat, color: ::image::ExtendedColorType, w: u32, h: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let cursor = &mut Cursor::new(&mut out);
        match format {
            ImageFormat::Png => ::image::codecs::png::PngEncoder::new(cursor).write_image(data, w, h, color),
            ImageFormat::Jpeg => ::image::codecs::jpeg::JpegEncoder::new_with_quality(cursor, 100).write_image(data, w, h, color),
            ImageFormat::WebP => ::image::codecs::webp::WebPEncoder::new_lossless(cursor).write_image(data, w, h, color),
            ImageFormat::Gif => ::image::codecs::gif::GifEncoder::new(cursor).encode(data, w, h, color),
            _ => unreachable!("test encoder for {format:?}"),
        }
        .expect("encode");
        out
    }

    fn decode(bytes: &[u8]) -> Result<Image, MediaError> {
        Image::decode(bytes, "test image", &MediaLimits::default())
    }

    fn pattern_rgba(w: u32, h: u32) -> Vec<u8> {
        (0..w * h).flat_map(|i| [(i * 7) as u8, (i * 13) as u8, (i * 29) as u8, (i * 3 + 1) as u8]).collect()
    }

    #[test]
    fn png_rgba_drops_alpha() {
        let rgba = pattern_rgba(5, 3);
        let img = decode(&encode(ImageFormat::Png, ::image::ExtendedColorType::Rgba8, 5, 3, &rgba)).expect("decode");
        assert_eq!((img.width(), img.height()), (5, 3));
        let expected: Vec<u8> = rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
        assert_eq!(img.rgb(), &expected[..]);
        assert_eq!(img.source(), "test image");
    }

    #[test]
    fn png_grey_and_grey_alpha_replicate() {
        let grey: Vec<u8> = (0..12).map(|i| i * 20).collect();
        let img = decode(&encode(ImageFormat::Png, ::image::ExtendedColorType::L8, 4, 3, &grey)).expect("decode");
        let expected: Vec<u8> = grey.iter().flat_map(|&l| [l, l, l]).collect();
        assert_eq!(img.rgb(), &expected[..]);

        let la: Vec<u8> = grey.iter().flat_map(|&l| [l, 255 - l]).collect();
        let img = decode(&encode(ImageFormat::Png, ::image::ExtendedColorType::La8, 4, 3, &la)).expect("decode");
        assert_eq!(img.rgb(), &expected[..]);
    }

    #[test]
    fn png_16_bit_keeps_the_high_byte() {
        let values: [u16; 6] = [0x0000, 0x00ff, 0x0100, 0x7fff, 0x8000, 0xffff];
        // PNG stores 16-bit samples big-endian; the encoder takes native-endian bytes.
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let img = decode(&encode(ImageFormat::Png, ::image::ExtendedColorType::Rgb16, 2, 1, &bytes)).expect("decode");
        assert_eq!(img.rgb(), &[0x00, 0x00, 0x01, 0x7f, 0x80, 0xff]);
    }

    #[test]
    fn webp_lossless_round_trips() {
        let rgb: Vec<u8> = (0..7 * 4 * 3).map(|i| (i * 11) as u8).collect();
        let img = decode(&encode(ImageFormat::WebP, ::image::ExtendedColorType::Rgb8, 7, 4, &rgb)).expect("decode");
        assert_eq!((img.width(), img.height()), (7, 4));
        assert_eq!(img.rgb(), &rgb[..]);
    }

    #[test]
    fn jpeg_decodes_to_the_right_size_and_about_the_right_colour() {
        let (w, h) = (16, 8);
        let rgb: Vec<u8> = (0..w * h).flat_map(|_| [200u8, 40, 90]).collect();
        let img = decode(&encode(ImageFormat::Jpeg, ::image::ExtendedColorType::Rgb8, w, h, &rgb)).expect("decode");
        assert_eq!((img.width(), img.height()), (w, h));
        // Lossy: a flat colour survives to within a few units.
        for (got, want) in img.rgb().iter().zip(&rgb) {
            assert!((*got as i32 - *want as i32).abs() <= 4, "{got} vs {want}");
        }
    }

    #[test]
    fn gif_first_frame() {
        // Few distinct colours, so the GIF palette holds them exactly.
        let colours = [[255u8, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [255, 255, 255, 255]];
        let (w, h) = (6u32, 5u32);
        let rgba: Vec<u8> = (0..w * h).flat_map(|i| colours[(i % 4) as usize]).collect();
        let img = decode(&encode(ImageFormat::Gif, ::image::ExtendedColorType::Rgba8, w, h, &rgba)).expect("decode");
        assert_eq!((img.width(), img.height()), (w, h));
        let expected: Vec<u8> = rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
        assert_eq!(img.rgb(), &expected[..]);
    }

    #[test]
    fn digest_is_of_the_bytes() {
        let rgb = vec![10u8; 4 * 4 * 3];
        let png = encode(ImageFormat::Png, ::image::ExtendedColorType::Rgb8, 4, 4, &rgb);
        let a = decode(&png).expect("decode");
        let b = Image::decode(&png, "another name", &MediaLimits::default()).expect("decode");
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest(), digest_bytes(&png));
        let webp = encode(ImageFormat::WebP, ::image::ExtendedColorType::Rgb8, 4, 4, &rgb);
        let c = decode(&webp).expect("decode");
        assert_eq!(a.rgb(), c.rgb());
        assert_ne!(a.digest(), c.digest(), "same pixels, different bytes: different cache key");
        let media = super::super::Media::Image(a);
        assert_eq!(media.digest(), digest_bytes(&png));
        assert_eq!(media.kind_name(), "image");
    }

    #[test]
    fn corrupt_bytes_are_an_error_naming_the_source() {
        // A PNG signature followed by garbage.
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.extend_from_slice(&[0x55; 64]);
        let err = Image::decode(&bytes, "photo.png", &MediaLimits::default()).expect_err("corrupt");
        assert!(matches!(err, MediaError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("photo.png: corrupt or truncated PNG data"), "{msg}");

        let err = decode(b"").expect_err("empty");
        assert!(matches!(err, MediaError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn truncated_images_are_errors() {
        let img = RgbImage::from_fn(32, 32, |x, y| ::image::Rgb([x as u8 * 8, y as u8 * 8, 77]));
        let png = encode(ImageFormat::Png, ::image::ExtendedColorType::Rgb8, 32, 32, img.as_raw());
        let gif = encode(ImageFormat::Gif, ::image::ExtendedColorType::Rgb8, 32, 32, img.as_raw());
        let jpeg = encode(ImageFormat::Jpeg, ::image::ExtendedColorType::Rgb8, 32, 32, img.as_raw());
        let webp = encode(ImageFormat::WebP, ::image::ExtendedColorType::Rgb8, 32, 32, img.as_raw());
        for (name, bytes) in [("png", &png), ("gif", &gif), ("jpeg", &jpeg), ("webp", &webp)] {
            // Every cut must give an error or (JPEG decoders pad missing scan data) an image of the
            // right size, and never a panic.
            for cut in (1..bytes.len()).step_by(7).chain([bytes.len() / 2, bytes.len() - 1]) {
                let source = format!("{name} cut at {cut}");
                match Image::decode(&bytes[..cut], &source, &MediaLimits::default()) {
                    Ok(img) => assert_eq!((img.width(), img.height()), (32, 32), "{source}"),
                    Err(e) => assert!(e.to_string().starts_with(&source), "{e}"),
                }
            }
        }
        let err = decode(&png[..png.len() / 2]).expect_err("half a PNG");
        assert!(matches!(err, MediaError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn unsupported_formats_are_named() {
        // A 1x1 BMP file (header only is enough for the signature).
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0u8; 60]);
        let err = Image::decode(&bmp, "pic.bmp", &MediaLimits::default()).expect_err("bmp");
        assert!(matches!(err, MediaError::UnsupportedFormat { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("pic.bmp: unsupported image format (Bmp)"), "{msg}");
        assert!(msg.contains("PNG, JPEG, WebP, GIF"), "{msg}");

        let tiff = b"II*\0\x08\0\0\0\0\0\0\0".to_vec();
        let err = decode(&tiff).expect_err("tiff");
        assert!(err.to_string().contains("(Tiff)"), "{err}");

        let err = Image::decode(b"hello, this is not an image", "image 2 of the request", &MediaLimits::default())
            .expect_err("text");
        assert!(matches!(err, MediaError::UnsupportedFormat { .. }), "{err:?}");
        assert!(err.to_string().starts_with("image 2 of the request: unsupported image format"), "{err}");
    }

    #[test]
    fn byte_limit() {
        let png = encode(ImageFormat::Png, ::image::ExtendedColorType::Rgb8, 8, 8, &[1u8; 8 * 8 * 3]);
        let limits = MediaLimits { max_bytes: png.len() - 1, ..MediaLimits::default() };
        let err = Image::decode(&png, "big.png", &limits).expect_err("over");
        assert!(matches!(err, MediaError::TooManyBytes { .. }), "{err:?}");
        let msg = err.to_string();
        assert_eq!(msg, format!("big.png: {} bytes is over the limit of {} bytes per media item", png.len(), png.len() - 1));
        let limits = MediaLimits { max_bytes: png.len(), ..MediaLimits::default() };
        Image::decode(&png, "big.png", &limits).expect("at the limit");
    }

    #[test]
    fn pixel_limit_is_checked_from_the_header() {
        let png = encode(ImageFormat::Png, ::image::ExtendedColorType::Rgb8, 30, 20, &[9u8; 30 * 20 * 3]);
        let limits = MediaLimits { max_pixels: 599, ..MediaLimits::default() };
        let err = Image::decode(&png, "wide.png", &limits).expect_err("over");
        assert_eq!(err.to_string(), "wide.png: the image is 30x20 = 600 pixels, over the limit of 599 pixels");
        let limits = MediaLimits { max_pixels: 600, ..MediaLimits::default() };
        Image::decode(&png, "wide.png", &limits).expect("at the limit");

        // A header claiming 100000 x 100000 pixels with no data: rejected before any allocation.
        let mut huge = png.clone();
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        // The IHDR CRC covers bytes 12..29; fix it so the decoder reaches the size check.
        let crc = crc32(&huge[12..29]);
        huge[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode(&huge).expect_err("huge");
        assert!(matches!(err, MediaError::TooManyPixels { width: 100_000, height: 100_000, .. }), "{err:?}");
        assert!(err.to_string().contains("100000x100000"), "{err}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn from_rgb8_checks_the_length() {
        assert!(Image::from_rgb8(2, 2, vec![0; 12], "frame").is_some());
        assert!(Image::from_rgb8(2, 2, vec![0; 11], "frame").is_none());
        assert!(Image::from_rgb8(0, 2, vec![], "frame").is_none());
    }
}
