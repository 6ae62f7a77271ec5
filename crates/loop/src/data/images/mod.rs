//! Image folders with torchvision's pixels: `ImageFolder`'s scan
//! ([`ImageFolder`]), its default loader's decoding ([`decode`]: PIL's
//! `Image.open(f).convert("RGB")` + `ToImage()`) and `transforms.v2`
//! ([`transforms`]: the same bits and the same random draws, from the
//! generator a worker passes in). [`source`] makes a folder a run's data
//! (`--data images:DIR`, `--transform`, `--test-transform`).
//!
//! ```no_run
//! use kiln_loop::data::images::{transforms, ImageFolder};
//! use kiln_tensor::rng::Generator;
//!
//! let folder = ImageFolder::scan("data/train")?;
//! let pipeline = transforms().pipeline(&[
//!     "random-resized-crop:size=24,scale=0.5;1.0",
//!     "random-horizontal-flip",
//!     "normalize:mean=0.5;0.5;0.5,std=0.5;0.5;0.5",
//! ])?;
//! let mut rng = Generator::new(0)?;
//! let (image, label) = folder.load(0)?; // uint8 [3, H, W], class index
//! let input = pipeline.apply(image, &mut rng)?; // float32 [3, 24, 24]
//! # let _ = (input, label);
//! # Ok::<(), kiln_loop::Error>(())
//! ```
pub mod decode;
pub mod folder;
pub mod source;
pub mod transforms;

pub use decode::{decode, decode_file, RgbImage};
pub use folder::{has_file_allowed_extension, ImageFolder, IMG_EXTENSIONS};
pub use source::{ImageDataset, ImagesConfig};
pub use transforms::{transforms, Pipeline, Transform, TransformRegistry};
