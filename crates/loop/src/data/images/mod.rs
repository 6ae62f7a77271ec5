//! Image folders with torchvision's pixels: `ImageFolder`'s scan
//! ([`ImageFolder`]) and its default loader's decoding ([`decode`]: PIL's
//! `Image.open(f).convert("RGB")` + `ToImage()`).
pub mod decode;
pub mod folder;

pub use decode::{decode, decode_file, RgbImage};
pub use folder::{has_file_allowed_extension, ImageFolder, IMG_EXTENSIONS};
