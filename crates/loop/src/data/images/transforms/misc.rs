//! `v2.ToDtype`, `v2.Normalize` (`v2/_misc.py`) and `v2.RandomErasing`
//! (`v2/_augment.py`), with their image kernels.
use super::geometry::{exp_uniform, log_ratio};
use super::values::{ErasingValue, TensorKind};
use super::{chw, is_float_kind, py_round, randint, skip, uniform, Transform};
use crate::{Error, Result};
use kiln_tensor::rng::Generator;
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::{Device, Kind, Tensor};

/// `_max_value`: the largest value of an integer dtype, 1 for floats.
pub fn max_value(kind: Kind) -> Result<f64> {
    Ok(match kind {
        Kind::Uint8 => 255.0,
        Kind::Int8 => 127.0,
        Kind::Int16 => 32767.0,
        Kind::Int => 2147483647.0,
        Kind::Int64 => 9223372036854775807.0,
        k if is_float_kind(k) => 1.0,
        k => {
            return Err(Error::InvalidArgument(format!(
                "no value range for dtype {k:?}"
            )))
        }
    })
}

/// `F.to_dtype` on an image tensor (`to_dtype_image`): with `scale`, values
/// move from the input dtype's range to the output's (uint8 → float:
/// `· (1 / 255)`; float → uint8: `· 255.999`, truncated).
pub fn to_dtype(image: &Tensor, kind: Kind, scale: bool) -> Result<Tensor> {
    let from = image.f_kind()?;
    if from == kind {
        return Ok(image.shallow_clone());
    }
    if !scale {
        return Ok(image.f_to_kind(kind)?);
    }
    match (is_float_kind(from), is_float_kind(kind)) {
        (true, true) => Ok(image.f_to_kind(kind)?),
        (true, false) => {
            if (from == Kind::Float && matches!(kind, Kind::Int | Kind::Int64))
                || (from == Kind::Double && kind == Kind::Int64)
            {
                return Err(Error::InvalidArgument(format!(
                    "The conversion from {from:?} to {kind:?} cannot be performed safely."
                )));
            }
            let eps = 1e-3;
            Ok(image
                .f_mul_scalar(max_value(kind)? + 1.0 - eps)?
                .f_to_kind(kind)?)
        }
        (false, true) => Ok(image
            .f_to_kind(kind)?
            .f_mul_scalar_(1.0 / max_value(from)?)?),
        (false, false) => Err(Error::InvalidArgument(format!(
            "scaling from {from:?} to {kind:?} is not supported"
        ))),
    }
}

/// `F.normalize` on an image tensor: `(image - mean) / std` per channel.
pub fn normalize(image: &Tensor, mean: &[f64], std: &[f64], inplace: bool) -> Result<Tensor> {
    let kind = image.f_kind()?;
    if !is_float_kind(kind) {
        return Err(Error::InvalidArgument(format!(
            "Input tensor should be a float tensor. Got {}.",
            torch_dtype(kind)
        )));
    }
    if image.dim() < 3 {
        return Err(Error::InvalidArgument(format!(
            "Expected tensor to be a tensor image of size (..., C, H, W). Got {:?}.",
            image.size()
        )));
    }
    if std.contains(&0.0) {
        return Err(Error::InvalidArgument(
            "std evaluated to zero, leading to division by zero.".into(),
        ));
    }
    let as_tensor = |v: &[f64]| -> Result<Tensor> {
        Ok(Tensor::f_from_slice(v)?
            .f_to_kind(kind)?
            .f_view([-1, 1, 1])?)
    };
    let (mean, std) = (as_tensor(mean)?, as_tensor(std)?);
    let mut out = if inplace {
        let mut x = image.shallow_clone();
        x.f_sub_(&mean)?
    } else {
        image.f_sub(&mean)?
    };
    Ok(out.f_div_(&std)?)
}

/// PyTorch's name of a dtype (`torch.uint8`), for its messages.
fn torch_dtype(kind: Kind) -> String {
    match kind {
        Kind::Uint8 => "torch.uint8".into(),
        Kind::Int8 => "torch.int8".into(),
        Kind::Int16 => "torch.int16".into(),
        Kind::Int => "torch.int32".into(),
        Kind::Int64 => "torch.int64".into(),
        Kind::Float => "torch.float32".into(),
        Kind::Double => "torch.float64".into(),
        k => format!("{k:?}"),
    }
}

/// `F.erase` on an image tensor: a copy (unless `inplace`) whose
/// `[..., i:i+h, j:j+w]` is set to `v` (broadcast, converted to the image's dtype).
pub fn erase(
    image: &Tensor,
    i: i64,
    j: i64,
    h: i64,
    w: i64,
    v: &Tensor,
    inplace: bool,
) -> Result<Tensor> {
    let image = if inplace {
        image.shallow_clone()
    } else {
        // image.clone(): empty_like keeps the layout as clone's preserve_format does.
        let mut copy = image.f_empty_like()?;
        copy.f_copy_(image)?;
        copy
    };
    let mut region = image.f_slice(-2, i, i + h, 1)?.f_slice(-1, j, j + w, 1)?;
    region.f_copy_(v)?;
    Ok(image)
}

/// Options of [`ToDtype`]: `v2.ToDtype(dtype, scale=False)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToDtypeConfig {
    /// The dtype to convert to.
    pub dtype: TensorKind,
    /// Scale values to the new dtype's range.
    pub scale: bool,
}

impl Default for ToDtypeConfig {
    fn default() -> Self {
        Self {
            dtype: TensorKind::Float32,
            scale: false,
        }
    }
}

impl Options for ToDtypeConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("dtype", "float32, float64, float16, bfloat16 or uint8").required(),
            &mut self.dtype,
        )?;
        v.option(
            OptionInfo::new(
                "scale",
                "scale values to the new dtype's range (uint8 0..255 <-> float 0..1)",
            ),
            &mut self.scale,
        )
    }
}

/// `v2.ToDtype`.
#[derive(Debug, Clone)]
pub struct ToDtype {
    cfg: ToDtypeConfig,
}

impl ToDtype {
    /// The spec name.
    pub const NAME: &'static str = "to-dtype";

    /// A `ToDtype` (no checks: every option value is valid).
    pub fn new(cfg: ToDtypeConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
}

impl Transform for ToDtype {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn is_to_dtype(&self) -> bool {
        true
    }
    fn apply(&self, image: Tensor, _rng: &mut Generator) -> Result<Tensor> {
        to_dtype(&image, self.cfg.dtype.kind(), self.cfg.scale)
    }
}

/// Options of [`Normalize`]: `v2.Normalize(mean, std, inplace=False)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NormalizeConfig {
    /// Per-channel means.
    pub mean: Vec<f64>,
    /// Per-channel standard deviations.
    pub std: Vec<f64>,
    /// Subtract in place (changes nothing else).
    pub inplace: bool,
}

impl Options for NormalizeConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("mean", "per-channel means, a;b;c").required(),
            &mut self.mean,
        )?;
        v.option(
            OptionInfo::new("std", "per-channel standard deviations, a;b;c").required(),
            &mut self.std,
        )?;
        v.option(
            OptionInfo::new("inplace", "subtract the mean in place"),
            &mut self.inplace,
        )
    }
}

/// `v2.Normalize`; needs a float image.
#[derive(Debug, Clone)]
pub struct Normalize {
    cfg: NormalizeConfig,
}

impl Normalize {
    /// The spec name.
    pub const NAME: &'static str = "normalize";

    /// A `Normalize` (torchvision checks the values when it runs).
    pub fn new(cfg: NormalizeConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
}

impl Transform for Normalize {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn needs_float(&self) -> bool {
        true
    }
    fn apply(&self, image: Tensor, _rng: &mut Generator) -> Result<Tensor> {
        normalize(&image, &self.cfg.mean, &self.cfg.std, self.cfg.inplace)
    }
}

/// Options of [`RandomErasing`]:
/// `v2.RandomErasing(p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0, inplace=False)`.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomErasingConfig {
    /// Probability of erasing.
    pub p: f64,
    /// Bounds of the erased area, as fractions of the image's.
    pub scale: (f64, f64),
    /// Bounds of the erased rectangle's aspect ratio.
    pub ratio: (f64, f64),
    /// The erased pixels' value(s), or `random`.
    pub value: ErasingValue,
    /// Erase in place (changes nothing else).
    pub inplace: bool,
}

impl Default for RandomErasingConfig {
    fn default() -> Self {
        Self {
            p: 0.5,
            scale: (0.02, 0.33),
            ratio: (0.3, 3.3),
            value: ErasingValue::default(),
            inplace: false,
        }
    }
}

impl Options for RandomErasingConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(OptionInfo::new("p", "probability of erasing"), &mut self.p)?;
        v.option(
            OptionInfo::new(
                "scale",
                "min;max of the erased area, as a fraction of the image's",
            ),
            &mut self.scale,
        )?;
        v.option(
            OptionInfo::new("ratio", "min;max of the erased rectangle's aspect ratio"),
            &mut self.ratio,
        )?;
        v.option(
            OptionInfo::new(
                "value",
                "the erased value: a number, one per channel (a;b;c), or random (normal draws)",
            ),
            &mut self.value,
        )?;
        v.option(
            OptionInfo::new("inplace", "erase in place"),
            &mut self.inplace,
        )
    }
}

/// `v2.RandomErasing`: `torch.rand(1)`, then up to ten tries of a `uniform_`
/// area draw and a `uniform_` log-ratio draw; on success the `normal_`
/// values (for `random`) and two `torch.randint` draws.
#[derive(Debug)]
pub struct RandomErasing {
    log_ratio: (f64, f64),
    cfg: RandomErasingConfig,
}

impl RandomErasing {
    /// The spec name.
    pub const NAME: &'static str = "random-erasing";

    /// Checks the options as torchvision's constructor does.
    pub fn new(cfg: RandomErasingConfig) -> Result<Self> {
        if !(0.0..=1.0).contains(&cfg.p) {
            return Err(Error::InvalidArgument(format!(
                "{}: `p` should be a floating point value in the interval [0.0, 1.0].",
                Self::NAME
            )));
        }
        if cfg.scale.0 < 0.0 || cfg.scale.1 > 1.0 {
            return Err(Error::InvalidArgument(format!(
                "{}: Scale should be between 0 and 1",
                Self::NAME
            )));
        }
        Ok(Self {
            log_ratio: log_ratio(cfg.ratio)?,
            cfg,
        })
    }
}

impl Transform for RandomErasing {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn needs_float(&self) -> bool {
        true
    }
    fn apply(&self, image: Tensor, rng: &mut Generator) -> Result<Tensor> {
        if skip(rng, self.cfg.p)? {
            return Ok(image);
        }
        let (c, img_h, img_w) = chw(&image)?;
        if let ErasingValue::Values(v) = &self.cfg.value {
            if !(v.len() == 1 || v.len() as i64 == c) {
                return Err(Error::InvalidArgument(format!(
                    "If value is a sequence, it should have either a single value or {c} \
                     (number of inpt channels)"
                )));
            }
        }
        let area = (img_h * img_w) as f64;
        for _ in 0..10 {
            let erase_area = area * uniform(rng, self.cfg.scale.0, self.cfg.scale.1)?;
            let aspect_ratio = exp_uniform(rng, self.log_ratio)?;
            let h = py_round((erase_area * aspect_ratio).sqrt());
            let w = py_round((erase_area / aspect_ratio).sqrt());
            if !(h < img_h && w < img_w) {
                continue;
            }
            let v = match &self.cfg.value {
                ErasingValue::Random => {
                    let v = Tensor::f_empty([c, h, w], (Kind::Float, Device::Cpu))?;
                    rng.normal_(&v, 0.0, 1.0)?;
                    v
                }
                ErasingValue::Values(values) => {
                    let values: Vec<f32> = values.iter().map(|&x| x as f32).collect();
                    Tensor::f_from_slice(&values)?.f_view([-1, 1, 1])?
                }
            };
            let i = randint(rng, 0, img_h - h + 1, &[1])?;
            let j = randint(rng, 0, img_w - w + 1, &[1])?;
            return erase(&image, i, j, h, w, &v, self.cfg.inplace);
        }
        Ok(image)
    }
}
