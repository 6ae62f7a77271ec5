//! `torchvision.transforms.v2` on image tensors, bit for bit, with the same
//! random draws.
//!
//! Each transform computes what torchvision 0.26's kernel computes on the
//! same tensor (uint8 `[3, H, W]` as [`decode`](super::decode) and
//! `ToImage()` give it, or float after [`ToDtype`](misc::ToDtype)) with the
//! same libtorch operations in the same order, so the bits, and even the
//! memory layouts later kernels see, are torchvision's. Random parameters
//! are drawn with the calls torchvision makes (`torch.rand(1)`,
//! `torch.randint(...)`, `torch.empty(1).uniform_(...)`, `torch.randperm(4)`,
//! `normal_()`), in its order, from the [`Generator`] passed in: in PyTorch a
//! DataLoader worker draws from its global generator, seeded
//! `base_seed + worker_id`; kiln passes the worker's generator.
//!
//! Transforms are named by spec strings (`random-resized-crop:size=24,scale=0.5;1.0`)
//! through [`transforms()`], a [`Registry`] like kiln's losses: names are the
//! v2 class names in kebab-case (the class names work too), options are
//! torchvision's arguments with its defaults, lists are written `a;b;c`.
//! A [`Pipeline`] is torchvision's canonical composition: the uint8
//! transforms, `ToDtype(torch.float32, scale=True)` before the first
//! transform that needs floats (`normalize`, `random-erasing`) or at the end,
//! then the rest.
//!
//! Reductions (the mean in `color-jitter`'s contrast) sum in an order that
//! depends on libtorch's thread count for large images; PyTorch's DataLoader
//! workers run with one thread.
use crate::{Error, Result};
use kiln_tensor::rng::Generator;
use kiln_tensor::spec::{Entry, Options, Registry, Spec};
use kiln_tensor::Tensor;
use std::fmt;
use std::sync::Arc;

pub mod color;
pub mod geometry;
pub mod misc;
mod values;

pub use values::{ErasingValue, Fill, Interpolation, Jitter, PaddingMode, TensorKind};

/// One transform of an image tensor.
pub trait Transform: fmt::Debug + Send + Sync {
    /// The canonical spec name (`random-resized-crop`), for errors.
    fn name(&self) -> &'static str;

    /// Whether torchvision's canonical pipeline puts it after
    /// `ToDtype(torch.float32, scale=True)` (it needs a float image).
    fn needs_float(&self) -> bool {
        false
    }

    /// Whether it is a `ToDtype` (the pipeline then inserts none).
    fn is_to_dtype(&self) -> bool {
        false
    }

    /// The transformed image. Random parameters come from `rng`, drawn as
    /// torchvision draws them. Errors say what does not fit (named by the caller).
    fn apply(&self, image: Tensor, rng: &mut Generator) -> Result<Tensor>;
}

/// Builds a transform from a resolved spec (canonical keys, every option present).
pub type TransformBuild = dyn Fn(&mut Spec) -> Result<Box<dyn Transform>> + Send + Sync;

/// A registered transform: name, aliases, summary, options, builder.
pub type TransformEntry = Entry<TransformBuild>;

/// Transforms by spec: kiln-tensor's [`Registry`] of [`TransformEntry`]
/// (which it derefs to, for `register`, `resolve`, `describe`…) plus
/// [`TransformRegistry::build`] and [`TransformRegistry::pipeline`].
#[derive(Debug, Clone)]
pub struct TransformRegistry(Registry<TransformBuild>);

impl std::ops::Deref for TransformRegistry {
    type Target = Registry<TransformBuild>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for TransformRegistry {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Default for TransformRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl TransformRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self(Registry::new("transform", "Transforms"))
    }

    /// Builds the transform a spec names (`center-crop:size=24`,
    /// `CenterCrop:size=24`). Unknown names and options, bad values and
    /// missing required options are refused before the builder runs, then
    /// what torchvision's constructor refuses.
    pub fn build(&self, spec: &str) -> Result<Box<dyn Transform>> {
        let (entry, mut spec) = self.0.prepare(&spec.parse()?)?;
        (entry.build)(&mut spec)
    }

    /// The canonical pipeline of `specs`, in order (see [`Pipeline`]).
    pub fn pipeline<S: AsRef<str>>(&self, specs: &[S]) -> Result<Pipeline> {
        Pipeline::new(self, specs)
    }
}

/// An entry for a transform made from a config `C` by `make` (the
/// transform's `new`): its options and their defaults are what
/// `C::default()` visits.
pub fn transform_entry<C, T>(
    name: &str,
    summary: &str,
    make: impl Fn(C) -> Result<T> + Send + Sync + 'static,
) -> TransformEntry
where
    C: Options + Default + 'static,
    T: Transform + 'static,
{
    let build: Arc<TransformBuild> = Arc::new(move |spec: &mut Spec| {
        let mut cfg = C::default();
        spec.apply(&mut cfg)?;
        Ok(Box::new(make(cfg)?) as Box<dyn Transform>)
    });
    Entry::new(name, summary, build).options_of(&mut C::default())
}

/// Every transform kiln has, each also under its torchvision class name:
/// what `kiln transforms` lists.
pub fn transforms() -> TransformRegistry {
    use color::*;
    use geometry::*;
    use misc::*;
    let mut r = TransformRegistry::new();
    let entries = [
        transform_entry(
            Resize::NAME,
            "resize to a size (int: the smaller edge), antialiased",
            Resize::new,
        )
        .alias("Resize"),
        transform_entry(
            CenterCrop::NAME,
            "crop the center (padding with 0 where the image is smaller)",
            CenterCrop::new,
        )
        .alias("CenterCrop"),
        transform_entry(
            Pad::NAME,
            "pad the borders: padding = all, left/right;top/bottom or left;top;right;bottom",
            Pad::new,
        )
        .alias("Pad"),
        transform_entry(
            RandomCrop::NAME,
            "crop at a random place, after optional padding",
            RandomCrop::new,
        )
        .alias("RandomCrop"),
        transform_entry(
            RandomResizedCrop::NAME,
            "crop a random area and aspect ratio, then resize",
            RandomResizedCrop::new,
        )
        .alias("RandomResizedCrop"),
        transform_entry(
            RandomHorizontalFlip::NAME,
            "flip left-right with probability p",
            RandomHorizontalFlip::new,
        )
        .alias("RandomHorizontalFlip"),
        transform_entry(
            RandomVerticalFlip::NAME,
            "flip top-bottom with probability p",
            RandomVerticalFlip::new,
        )
        .alias("RandomVerticalFlip"),
        transform_entry(
            ColorJitter::NAME,
            "random brightness, contrast, saturation and hue, in random order",
            ColorJitter::new,
        )
        .alias("ColorJitter"),
        transform_entry(
            RandomErasing::NAME,
            "erase a random rectangle with probability p (after ToDtype)",
            RandomErasing::new,
        )
        .alias("RandomErasing"),
        transform_entry(
            Normalize::NAME,
            "(x - mean) / std per channel (after ToDtype)",
            Normalize::new,
        )
        .alias("Normalize"),
        transform_entry(
            ToDtype::NAME,
            "convert the dtype, scaling values to the new range if scale=true",
            ToDtype::new,
        )
        .alias("ToDtype"),
    ];
    for e in entries {
        r.register(e);
    }
    r
}

/// torchvision's canonical pipeline: `ToImage()` (the decoded image), the
/// given transforms in order with `ToDtype(torch.float32, scale=True)`
/// inserted before the first one that needs a float image, or at the end
/// when none does. A pipeline that names `to-dtype` itself gets none
/// inserted.
#[derive(Debug)]
pub struct Pipeline {
    steps: Vec<(Spec, Box<dyn Transform>)>,
}

impl Pipeline {
    /// Builds the pipeline of `specs` (each as [`TransformRegistry::build`]
    /// takes it) from `registry`.
    pub fn new<S: AsRef<str>>(registry: &TransformRegistry, specs: &[S]) -> Result<Self> {
        let mut steps = Vec::with_capacity(specs.len() + 1);
        for text in specs {
            let text = text.as_ref();
            let (entry, mut spec) = registry.prepare(&text.parse()?)?;
            let transform = (entry.build)(&mut spec)?;
            steps.push((spec, transform));
        }
        if !steps.iter().any(|(_, t)| t.is_to_dtype()) {
            let at = steps
                .iter()
                .position(|(_, t)| t.needs_float())
                .unwrap_or(steps.len());
            let (entry, mut spec) =
                registry.prepare(&"to-dtype:dtype=float32,scale=true".parse()?)?;
            let transform = (entry.build)(&mut spec)?;
            steps.insert(at, (spec, transform));
        }
        Ok(Self { steps })
    }

    /// The resolved spec of every step, the inserted `to-dtype` included:
    /// what a run records.
    pub fn specs(&self) -> Vec<String> {
        self.steps.iter().map(|(s, _)| s.to_string()).collect()
    }

    /// The steps' transforms, in order.
    pub fn transforms(&self) -> impl Iterator<Item = &dyn Transform> {
        self.steps.iter().map(|(_, t)| t.as_ref())
    }

    /// `image` (uint8 `[3, H, W]`, as decoded) through every step, drawing
    /// from `rng` as torchvision's `Compose` of the same transforms draws
    /// from the global generator. An error names the transform.
    pub fn apply(&self, image: Tensor, rng: &mut Generator) -> Result<Tensor> {
        self.steps.iter().try_fold(image, |image, (_, t)| {
            t.apply(image, rng).map_err(|e| named(t.name(), e))
        })
    }
}

/// `e` as one line starting with the transform's name.
fn named(name: &str, e: Error) -> Error {
    let message = match e {
        Error::InvalidArgument(m) | Error::Usage(m) => m,
        // libtorch's own message, as torchvision passes it on.
        Error::Tensor(kiln_tensor::Error::Torch(m)) => m
            .strip_prefix("Internal torch error: ")
            .unwrap_or(&m)
            .to_string(),
        other => other.to_string(),
    };
    let message = message.lines().next().unwrap_or_default().to_string();
    if message.starts_with(&format!("{name}:")) {
        Error::InvalidArgument(message)
    } else {
        Error::InvalidArgument(format!("{name}: {message}"))
    }
}

/// The `[C, H, W]` of an image tensor (its last three dimensions).
pub(crate) fn chw(image: &Tensor) -> Result<(i64, i64, i64)> {
    match image.size().as_slice() {
        [.., c, h, w] => Ok((*c, *h, *w)),
        size => Err(Error::InvalidArgument(format!(
            "expected an image tensor of shape [..., C, H, W], got {size:?}"
        ))),
    }
}

/// Python's `int(round(x))`: halves round to even.
pub(crate) fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// `torch.empty(1).uniform_(low, high).item()`: one float32 draw, as a Python float.
pub(crate) fn uniform(rng: &mut Generator, low: f64, high: f64) -> Result<f64> {
    let t = Tensor::f_empty([1], (kiln_tensor::Kind::Float, kiln_tensor::Device::Cpu))?;
    rng.uniform_(&t, low, high)?;
    Ok(t.f_double_value(&[0])?)
}

/// `torch.rand(1) >= p`: whether a `_RandomApplyTransform` passes the input through.
pub(crate) fn skip(rng: &mut Generator, p: f64) -> Result<bool> {
    let r = rng.rand(&[1], kiln_tensor::Kind::Float)?;
    // The comparison runs in float32: a Python float scalar takes the tensor's dtype.
    Ok(r.f_double_value(&[0])? as f32 >= p as f32)
}

/// `torch.randint(low, high, size=...).item()`.
pub(crate) fn randint(rng: &mut Generator, low: i64, high: i64, size: &[i64]) -> Result<i64> {
    Ok(rng
        .randint(low, high, size)?
        .f_reshape([-1])?
        .f_int64_value(&[0])?)
}

/// Whether `kind` is a floating-point dtype (`dtype.is_floating_point`).
pub(crate) fn is_float_kind(kind: kiln_tensor::Kind) -> bool {
    use kiln_tensor::Kind::*;
    matches!(
        kind,
        Half | Float
            | Double
            | BFloat16
            | Float8e5m2
            | Float8e4m3fn
            | Float8e5m2fnuz
            | Float8e4m3fnuz
    )
}
