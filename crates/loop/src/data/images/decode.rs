//! Image files decoded as torchvision's default loader decodes them:
//! `PIL.Image.open(f).convert("RGB")`, then `transforms.v2.ToImage()`.
//!
//! The format comes from the file's first bytes, as PIL identifies it, never
//! from its extension. PNG goes through the `png` crate without any of its
//! transformations and is converted here with PIL's rules (its modes and raw
//! modes per bit depth and colour type, then `convert("RGB")`); JPEG goes
//! through libjpeg-turbo with PIL's decoder settings (accurate integer DCT,
//! fancy upsampling, no scaling), then PIL's conversions of the decoded
//! colour space. Differences from a textbook decoder that PIL has and kiln
//! keeps:
//! - 16-bit grayscale (`I;16`) converts to RGB by clipping at 255, not by
//!   scaling; other 16-bit samples keep their high byte.
//! - Transparency (alpha channels, `tRNS`) is dropped, never composited;
//!   palette indices past the palette's end are black.
//! - CMYK JPEGs are read with Adobe's inverted polarity and converted with
//!   PIL's naive formula (`255 - k - c·(255 - k)/255`, rounded as PIL rounds).
//! - libjpeg's warnings about recoverable corruption (stray bytes before a
//!   marker, a bad Huffman code…) are ignored, as PIL ignores them; a file
//!   that ends before its end-of-image marker is refused as truncated, as
//!   PIL refuses it.
use crate::{Error, Result};
use kiln_tensor::Tensor;
use std::cell::RefCell;
use std::io::Cursor;
use std::path::Path;

/// An image format, as the file's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PNG (`\x89PNG\r\n\x1a\n`).
    Png,
    /// JPEG (`FF D8 FF`, PIL's test).
    Jpeg,
}

/// The format of an image from its first bytes; `None` for anything kiln
/// does not decode.
pub fn detect(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else {
        None
    }
}

/// What a file kiln cannot decode seems to be, for the error message.
fn other_format(bytes: &[u8]) -> Option<&'static str> {
    let formats: [(&[u8], &str); 9] = [
        (b"GIF87a", "GIF"),
        (b"GIF89a", "GIF"),
        (b"BM", "BMP"),
        (b"II*\0", "TIFF"),
        (b"MM\0*", "TIFF"),
        (b"P5", "PGM"),
        (b"P6", "PPM"),
        (b"P2", "PGM (text)"),
        (b"P3", "PPM (text)"),
    ];
    if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        return Some("WebP");
    }
    formats
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|(_, name)| *name)
}

/// Pixels in PIL's `RGB` mode: `height` rows of `width` interleaved RGB bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `height * width * 3` bytes, row-major, R G B per pixel.
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// The image as `transforms.v2.ToImage()` gives it: a uint8 `[3, H, W]`
    /// tensor that is a channels-first view of the interleaved pixels
    /// (`torch.as_tensor(np.array(img)).view(H, W, 3).permute(2, 0, 1)`), so
    /// the transforms see the same memory layout as torchvision's.
    pub fn to_tensor(&self) -> Result<Tensor> {
        let (h, w) = (dim(self.height)?, dim(self.width)?);
        Ok(Tensor::f_from_slice(&self.pixels)?
            .f_view([h, w, 3])?
            .f_permute([2, 0, 1])?)
    }
}

fn dim(n: usize) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::InvalidArgument(format!("image size {n} is too large")))
}

/// Reads and decodes the image file at `path` into a uint8 `[3, H, W]`
/// tensor (see [`RgbImage::to_tensor`]). Errors name the file: unreadable,
/// not a PNG or JPEG, truncated or corrupt.
pub fn decode_file(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        message: format!("cannot read the image: {e}"),
    })?;
    decode(&bytes)
        .map_err(|message| Error::Data {
            path: path.to_path_buf(),
            message,
        })?
        .to_tensor()
}

/// Decodes an image held in memory as PIL's `Image.open(...).convert("RGB")`
/// does. On failure, one line on what is wrong (without the file name).
pub fn decode(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    match detect(bytes) {
        Some(Format::Png) => decode_png(bytes),
        Some(Format::Jpeg) => decode_jpeg(bytes),
        None => Err(match other_format(bytes) {
            Some(name) => format!("a {name} image: kiln decodes PNG and JPEG images only"),
            None if bytes.is_empty() => "empty file, not an image".to_string(),
            None => "not an image kiln can decode (neither PNG nor JPEG)".to_string(),
        }),
    }
}

// --- PNG ----------------------------------------------------------------------

fn decode_png(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    use png::{BitDepth, ColorType};
    // No size limit beyond memory: PIL opens large images too (with a warning).
    let limits = png::Limits { bytes: usize::MAX };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("corrupt PNG: {e}"))?;
    let mut raw = vec![0u8; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut raw).map_err(|e| match e {
        png::DecodingError::IoError(_) => format!("truncated PNG: {e}"),
        _ => format!("corrupt PNG: {e}"),
    })?;
    let info = reader.info();
    let (width, height) = (frame.width as usize, frame.height as usize);
    let line = frame.line_size;
    let bits = info.bit_depth as usize;
    let mut pixels = Vec::with_capacity(width * height * 3);
    let palette = info.palette.as_deref().unwrap_or(&[]);
    for y in 0..height {
        let row = raw
            .get(y * line..(y + 1) * line)
            .ok_or_else(|| "corrupt PNG: short image data".to_string())?;
        match (info.color_type, info.bit_depth) {
            // PIL's "1", "L;2", "L;4": samples scaled to 0..255 (·255, ·85, ·17).
            (ColorType::Grayscale, BitDepth::One | BitDepth::Two | BitDepth::Four) => {
                let scale = 255 / ((1u16 << bits) - 1) as u8;
                for x in 0..width {
                    let v = packed_sample(row, x, bits) * scale;
                    pixels.extend_from_slice(&[v, v, v]);
                }
            }
            (ColorType::Grayscale, BitDepth::Eight) => {
                for &v in row.iter().take(width) {
                    pixels.extend_from_slice(&[v, v, v]);
                }
            }
            // "I;16" -> "RGB" clips: values above 255 become 255.
            (ColorType::Grayscale, BitDepth::Sixteen) => {
                for s in row.chunks_exact(2).take(width) {
                    if let [hi, lo] = *s {
                        let v = if hi == 0 { lo } else { 255 };
                        pixels.extend_from_slice(&[v, v, v]);
                    }
                }
            }
            (ColorType::Rgb, BitDepth::Eight) => {
                pixels.extend_from_slice(row.get(..width * 3).unwrap_or(row));
            }
            // "RGB;16B", "RGBA;16B", "LA;16B": the high byte of each sample.
            (ColorType::Rgb, BitDepth::Sixteen) => {
                for p in row.chunks_exact(6).take(width) {
                    if let [r, _, g, _, b, _] = *p {
                        pixels.extend_from_slice(&[r, g, b]);
                    }
                }
            }
            (ColorType::Rgba, BitDepth::Eight) => {
                for p in row.chunks_exact(4).take(width) {
                    if let [r, g, b, _] = *p {
                        pixels.extend_from_slice(&[r, g, b]);
                    }
                }
            }
            (ColorType::Rgba, BitDepth::Sixteen) => {
                for p in row.chunks_exact(8).take(width) {
                    if let [r, _, g, _, b, _, _, _] = *p {
                        pixels.extend_from_slice(&[r, g, b]);
                    }
                }
            }
            (ColorType::GrayscaleAlpha, BitDepth::Eight) => {
                for p in row.chunks_exact(2).take(width) {
                    if let [l, _] = *p {
                        pixels.extend_from_slice(&[l, l, l]);
                    }
                }
            }
            (ColorType::GrayscaleAlpha, BitDepth::Sixteen) => {
                for p in row.chunks_exact(4).take(width) {
                    if let [l, _, _, _] = *p {
                        pixels.extend_from_slice(&[l, l, l]);
                    }
                }
            }
            // Palette lookup; PIL's palette is black past the PLTE entries.
            (ColorType::Indexed, _) => {
                for x in 0..width {
                    let i = if bits == 8 {
                        row.get(x).copied().unwrap_or(0)
                    } else {
                        packed_sample(row, x, bits)
                    } as usize;
                    let rgb = palette.get(3 * i..3 * i + 3).unwrap_or(&[0, 0, 0]);
                    pixels.extend_from_slice(rgb);
                }
            }
            (color, depth) => {
                return Err(format!(
                    "corrupt PNG: colour type {color:?} with bit depth {depth:?}"
                ))
            }
        }
    }
    if pixels.len() != width * height * 3 {
        return Err("corrupt PNG: short image data".to_string());
    }
    Ok(RgbImage {
        width,
        height,
        pixels,
    })
}

/// Sample `x` of a row packed `bits` (1, 2 or 4) per sample, most significant first.
fn packed_sample(row: &[u8], x: usize, bits: usize) -> u8 {
    let per_byte = 8 / bits;
    let byte = row.get(x / per_byte).copied().unwrap_or(0);
    let shift = 8 - bits * (x % per_byte + 1);
    (byte >> shift) & ((1u16 << bits) - 1) as u8
}

// --- JPEG ---------------------------------------------------------------------

thread_local! {
    // One TurboJPEG handle per thread: creating one allocates libjpeg's state.
    static DECOMPRESSOR: RefCell<Option<turbojpeg::Decompressor>> = const { RefCell::new(None) };
}

/// libjpeg's warnings (`JWRN_*`): the image was decoded anyway.
const WARNINGS: [&str; 6] = [
    "Corrupt JPEG data",
    "Unknown Adobe color transform code",
    "Inconsistent progression sequence",
    "Warning: unknown JFIF revision number",
    "Invalid SOS parameters for sequential JPEG",
    "Application transferred too many scanlines",
];
const PREMATURE_END: &str = "Premature end of JPEG file";

fn decode_jpeg(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                turbojpeg::Decompressor::new()
                    .map_err(|e| format!("cannot start libjpeg-turbo: {e}"))?,
            );
        }
        let result = match slot.as_mut() {
            Some(d) => decode_jpeg_with(d, bytes),
            None => Err("cannot start libjpeg-turbo".to_string()),
        };
        if result.is_err() {
            // A failed call can leave libjpeg's state mid-stream: start afresh.
            *slot = None;
        }
        result
    })
}

fn decode_jpeg_with(
    d: &mut turbojpeg::Decompressor,
    bytes: &[u8],
) -> std::result::Result<RgbImage, String> {
    use turbojpeg::{Colorspace, PixelFormat};
    let header = d
        .read_header(bytes)
        .map_err(|e| format!("corrupt JPEG: {}", message(&e)))?;
    let (width, height) = (header.width, header.height);
    if width == 0 || height == 0 {
        // A tables-only stream: TurboJPEG reports no size and would decode
        // the (absent) image at its own size, past the buffer.
        return Err("truncated JPEG: no image data".to_string());
    }
    let (format, channels) = match header.colorspace {
        Colorspace::Gray => (PixelFormat::GRAY, 1),
        Colorspace::RGB | Colorspace::YCbCr => (PixelFormat::RGB, 3),
        Colorspace::CMYK | Colorspace::YCCK => (PixelFormat::CMYK, 4),
    };
    let mut out = vec![0u8; width * height * channels];
    let image = |pixels| turbojpeg::Image {
        pixels,
        width,
        pitch: width * channels,
        height,
        format,
    };
    if let Err(e) = d.decompress(bytes, image(&mut out[..])) {
        let msg = message(&e);
        let warning = WARNINGS.iter().any(|w| msg.starts_with(w));
        if msg.starts_with(PREMATURE_END) {
            // PIL reads until the end-of-image marker; without it the file is truncated.
            return Err("truncated JPEG: the file ends before the end of the image".to_string());
        }
        if !warning {
            return Err(format!("corrupt JPEG: {msg}"));
        }
    }
    let pixels = match channels {
        1 => out.iter().flat_map(|&v| [v, v, v]).collect(),
        3 => out,
        _ => out.chunks_exact(4).flat_map(cmyk_to_rgb).collect(),
    };
    Ok(RgbImage {
        width,
        height,
        pixels,
    })
}

/// TurboJPEG's message without the crate's prefix.
fn message(e: &turbojpeg::Error) -> String {
    match e {
        turbojpeg::Error::TurboJpegError(m) => m.trim().to_string(),
        other => other.to_string(),
    }
}

/// PIL: CMYK JPEGs are read as "CMYK;I" (Adobe's inverted samples), then
/// `convert("RGB")` computes `255 - k - c·(255 - k)/255` per channel with
/// its MULDIV255 rounding.
fn cmyk_to_rgb(stored: &[u8]) -> [u8; 3] {
    let inv = |i: usize| 255 - i32::from(stored.get(i).copied().unwrap_or(0));
    let nk = 255 - inv(3);
    let channel = |c: i32| {
        let t = c * nk + 128;
        let mul = ((t >> 8) + t) >> 8;
        (nk - mul).clamp(0, 255) as u8
    };
    [channel(inv(0)), channel(inv(1)), channel(inv(2))]
}
