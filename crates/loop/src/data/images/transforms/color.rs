//! Colour: `v2.ColorJitter` and the image kernels of
//! `v2/functional/_color.py` it calls (brightness, contrast, saturation,
//! hue, with the HSV round trip), operation for operation.
use super::misc::{max_value, to_dtype};
use super::values::Jitter;
use super::{chw, is_float_kind, uniform, Transform};
use crate::{Error, Result};
use kiln_tensor::ops::add_;
use kiln_tensor::rng::Generator;
use kiln_tensor::spec::{py_float, OptionInfo, OptionVisitor, Options};
use kiln_tensor::{Kind, Tensor};

fn check_channels(image: &Tensor) -> Result<i64> {
    let (c, _, _) = chw(image)?;
    if c == 1 || c == 3 {
        Ok(c)
    } else {
        Err(Error::InvalidArgument(format!(
            "Input image tensor permitted channel values are 1 or 3, but found {c}"
        )))
    }
}

fn is_float(image: &Tensor) -> Result<bool> {
    Ok(is_float_kind(image.f_kind()?))
}

/// `_rgb_to_grayscale_image(image, num_output_channels=1, preserve_dtype=False)`
/// of a 3-channel image: `0.2989 r + 0.587 g + 0.114 b` as
/// `r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114)`, `[..., 1, H, W]`.
pub fn rgb_to_grayscale(image: &Tensor) -> Result<Tensor> {
    let channels = image.f_unbind(-3)?;
    let [r, g, b] = channels.as_slice() else {
        return Err(Error::InvalidArgument(
            "grayscale conversion needs 3 channels".into(),
        ));
    };
    let l = r.f_mul_scalar(0.2989)?;
    add_(&l, g, 0.587)?;
    add_(&l, b, 0.114)?;
    Ok(l.f_unsqueeze(-3)?)
}

/// `_blend`: `image1 · ratio + image2 · (1 - ratio)`, clamped to the dtype's
/// range, back in `image1`'s dtype.
fn blend(image1: &Tensor, image2: &Tensor, ratio: f64) -> Result<Tensor> {
    let kind = image1.f_kind()?;
    let bound = max_value(kind)?;
    let mut output = image1.f_mul_scalar(ratio)?;
    add_(&output, image2, 1.0 - ratio)?;
    output = output.f_clamp_(0.0, bound)?;
    if is_float_kind(kind) {
        Ok(output)
    } else {
        Ok(output.f_to_kind(kind)?)
    }
}

/// `F.adjust_brightness` on an image tensor.
pub fn adjust_brightness(image: &Tensor, factor: f64) -> Result<Tensor> {
    if factor < 0.0 {
        return Err(Error::InvalidArgument(format!(
            "brightness_factor ({}) is not non-negative.",
            py_float(factor)
        )));
    }
    check_channels(image)?;
    let kind = image.f_kind()?;
    let output = image
        .f_mul_scalar(factor)?
        .f_clamp_(0.0, max_value(kind)?)?;
    if is_float_kind(kind) {
        Ok(output)
    } else {
        Ok(output.f_to_kind(kind)?)
    }
}

/// `F.adjust_saturation` on an image tensor.
pub fn adjust_saturation(image: &Tensor, factor: f64) -> Result<Tensor> {
    if factor < 0.0 {
        return Err(Error::InvalidArgument(format!(
            "saturation_factor ({}) is not non-negative.",
            py_float(factor)
        )));
    }
    if check_channels(image)? == 1 {
        return Ok(image.shallow_clone());
    }
    let mut gray = rgb_to_grayscale(image)?;
    if !is_float(image)? {
        gray = gray.f_floor_()?;
    }
    blend(image, &gray, factor)
}

/// `F.adjust_contrast` on an image tensor: blends with the mean of the
/// (floored, for integer images) grayscale image.
pub fn adjust_contrast(image: &Tensor, factor: f64) -> Result<Tensor> {
    if factor < 0.0 {
        return Err(Error::InvalidArgument(format!(
            "contrast_factor ({}) is not non-negative.",
            py_float(factor)
        )));
    }
    let c = check_channels(image)?;
    let fp = is_float(image)?;
    let gray = if c == 3 {
        let mut gray = rgb_to_grayscale(image)?;
        if fp {
            gray
        } else {
            gray.f_floor_()?
        }
    } else if fp {
        image.shallow_clone()
    } else {
        image.f_to_kind(Kind::Float)?
    };
    let mean = gray.f_mean_dim(Some(&[-3i64, -2, -1][..]), true, None)?;
    blend(image, &mean, factor)
}

/// `_rgb_to_hsv` (torchvision's, after Pillow's) of a float image.
fn rgb_to_hsv(image: &Tensor) -> Result<Tensor> {
    let channels = image.f_unbind(-3)?;
    let [r, g, _] = channels.as_slice() else {
        return Err(Error::InvalidArgument("HSV needs 3 channels".into()));
    };
    let (minc, maxc) = image.f_aminmax(-3, false)?;
    let eqc = maxc.f_eq_tensor(&minc)?;
    let channels_range = maxc.f_sub(&minc)?;
    let ones = maxc.f_ones_like()?;
    // torch.where(eqc, ones, x) is ones.where_self(eqc, x).
    let s = channels_range.f_div(&ones.f_where_self(&eqc, &maxc)?)?;
    let mut divisor = ones.f_where_self(&eqc, &channels_range)?;
    let divisor = divisor.f_unsqueeze_(-3)?;
    let scaled = maxc
        .f_unsqueeze(-3)?
        .f_sub(image)?
        .f_div(&divisor)?
        .f_unbind(-3)?;
    let [rc, gc, bc] = scaled.as_slice() else {
        return Err(Error::InvalidArgument("HSV needs 3 channels".into()));
    };
    let (rc, mut gc, mut bc) = (rc.shallow_clone(), gc.shallow_clone(), bc.shallow_clone());
    let mut mask_maxc_neq_r = maxc.f_ne_tensor(r)?;
    let mut mask_maxc_eq_g = maxc.f_eq_tensor(g)?;

    // The in-place steps of torchvision's, in its order (bc, then gc, change in place).
    let hg = rc
        .f_add_scalar(2.0)?
        .f_sub_(&bc)?
        .f_mul_(&mask_maxc_eq_g.f_bitwise_and_tensor(&mask_maxc_neq_r)?)?;
    let mut hr = bc.f_sub_(&gc)?.f_mul_(&mask_maxc_neq_r.f_bitwise_not()?)?;
    let hb_mask = mask_maxc_neq_r.f_logical_and_(&mask_maxc_eq_g.f_logical_not_()?)?;
    let hb = gc.f_add_scalar_(4.0)?.f_sub_(&rc)?.f_mul_(&hb_mask)?;

    let h = hr
        .f_add_(&hg)?
        .f_add_(&hb)?
        .f_mul_scalar_(1.0 / 6.0)?
        .f_add_scalar_(1.0)?
        .f_fmod_(1.0)?;
    Ok(Tensor::f_stack(&[h, s, maxc], -3)?)
}

/// `_hsv_to_rgb` of a float HSV image.
fn hsv_to_rgb(image: &Tensor) -> Result<Tensor> {
    let channels = image.f_unbind(-3)?;
    let [h, s, v] = channels.as_slice() else {
        return Err(Error::InvalidArgument("HSV needs 3 channels".into()));
    };
    let mut h6 = h.f_mul_scalar(6)?;
    let i = h6.f_floor()?;
    let f = h6.f_sub_(&i)?;
    let mut i = i.f_to_kind(Kind::Int)?;

    let sxf = s.f_mul(&f)?;
    let mut one_minus_s = s.f_rsub_scalar(1.0)?;
    let q = sxf.f_rsub_scalar(1.0)?.f_mul_(v)?.f_clamp_(0.0, 1.0)?;
    let t = sxf
        .shallow_clone()
        .f_add_(&one_minus_s)?
        .f_mul_(v)?
        .f_clamp_(0.0, 1.0)?;
    let p = one_minus_s.f_mul_(v)?.f_clamp_(0.0, 1.0)?;
    let i = i.f_remainder_(6)?;

    let vpqt = Tensor::f_stack(&[v.shallow_clone(), p, q, t], -3)?;
    let select = Tensor::f_from_slice(&[0i64, 2, 1, 1, 3, 0, 3, 0, 0, 2, 1, 1, 1, 1, 3, 0, 0, 2])?
        .f_reshape([3, 6])?;
    // select[:, i]
    let mut select = select.f_index(&[None, Some(i)])?;
    if select.dim() > 3 {
        select = select.f_moveaxis(&[0i64][..], &[-3i64][..])?;
    }
    Ok(vpqt.f_gather(-3, &select, false)?)
}

/// `F.adjust_hue` on an image tensor: to float32 (scaled), HSV, hue shifted
/// modulo 1, back to RGB and to the image's dtype (scaled).
pub fn adjust_hue(image: &Tensor, factor: f64) -> Result<Tensor> {
    if !(-0.5..=0.5).contains(&factor) {
        return Err(Error::InvalidArgument(format!(
            "hue_factor ({}) is not in [-0.5, 0.5].",
            py_float(factor)
        )));
    }
    if check_channels(image)? == 1 || image.numel() == 0 {
        return Ok(image.shallow_clone());
    }
    let kind = image.f_kind()?;
    let float = to_dtype(image, Kind::Float, true)?;
    let hsv = rgb_to_hsv(&float)?;
    let parts = hsv.f_unbind(-3)?;
    let [h, s, v] = parts.as_slice() else {
        return Err(Error::InvalidArgument("HSV needs 3 channels".into()));
    };
    let h = h.shallow_clone().f_add_scalar_(factor)?.f_remainder_(1.0)?;
    let hsv = Tensor::f_stack(&[h, s.shallow_clone(), v.shallow_clone()], -3)?;
    let rgb = hsv_to_rgb(&hsv)?;
    to_dtype(&rgb, kind, true)
}

/// Options of [`ColorJitter`]: torchvision's four arguments, each none, a
/// number `x` (`[max(0, 1 - x), 1 + x]`, hue `[-x, x]`) or `min;max`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ColorJitterConfig {
    /// Brightness factor range.
    pub brightness: Jitter,
    /// Contrast factor range.
    pub contrast: Jitter,
    /// Saturation factor range.
    pub saturation: Jitter,
    /// Hue shift range, within [-0.5, 0.5].
    pub hue: Jitter,
}

impl Options for ColorJitterConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("brightness", "x: factor in [max(0, 1-x), 1+x]; or min;max"),
            &mut self.brightness,
        )?;
        v.option(
            OptionInfo::new("contrast", "x: factor in [max(0, 1-x), 1+x]; or min;max"),
            &mut self.contrast,
        )?;
        v.option(
            OptionInfo::new("saturation", "x: factor in [max(0, 1-x), 1+x]; or min;max"),
            &mut self.saturation,
        )?;
        v.option(
            OptionInfo::new("hue", "x: shift in [-x, x], x <= 0.5; or min;max"),
            &mut self.hue,
        )
    }
}

/// `v2.ColorJitter`: `torch.randperm(4)`, then a `uniform_` draw for each
/// property that jitters (brightness, contrast, saturation, hue), applied in
/// the permuted order.
#[derive(Debug, Clone)]
pub struct ColorJitter {
    brightness: Option<(f64, f64)>,
    contrast: Option<(f64, f64)>,
    saturation: Option<(f64, f64)>,
    hue: Option<(f64, f64)>,
}

/// `ColorJitter._check_input`.
fn check_input(
    value: Jitter,
    name: &str,
    center: f64,
    bound: (f64, f64),
    clip_first_on_zero: bool,
) -> Result<Option<(f64, f64)>> {
    let (lo, hi) = match value {
        Jitter::None => return Ok(None),
        Jitter::Amount(x) => {
            if x < 0.0 {
                return Err(Error::InvalidArgument(format!(
                    "{}: If {name} is a single number, it must be non negative.",
                    ColorJitter::NAME
                )));
            }
            let lo = center - x;
            (
                if clip_first_on_zero { lo.max(0.0) } else { lo },
                center + x,
            )
        }
        Jitter::Range(lo, hi) => (lo, hi),
    };
    if !(bound.0 <= lo && lo <= hi && hi <= bound.1) {
        return Err(Error::InvalidArgument(format!(
            "{}: {name} values should be between ({}, {}) and increasing, but got [{}, {}].",
            ColorJitter::NAME,
            py_float(bound.0),
            py_float(bound.1),
            py_float(lo),
            py_float(hi)
        )));
    }
    Ok(if lo == center && hi == center {
        None
    } else {
        Some((lo, hi))
    })
}

impl ColorJitter {
    /// The spec name.
    pub const NAME: &'static str = "color-jitter";

    /// Checks the ranges as torchvision's constructor does.
    pub fn new(cfg: ColorJitterConfig) -> Result<Self> {
        let unbounded = (0.0, f64::INFINITY);
        Ok(Self {
            brightness: check_input(cfg.brightness, "brightness", 1.0, unbounded, true)?,
            contrast: check_input(cfg.contrast, "contrast", 1.0, unbounded, true)?,
            saturation: check_input(cfg.saturation, "saturation", 1.0, unbounded, true)?,
            hue: check_input(cfg.hue, "hue", 0.0, (-0.5, 0.5), false)?,
        })
    }
}

impl Transform for ColorJitter {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn apply(&self, image: Tensor, rng: &mut Generator) -> Result<Tensor> {
        let order = rng.randperm(4)?;
        let mut draw = |range: Option<(f64, f64)>| -> Result<Option<f64>> {
            range.map(|(lo, hi)| uniform(rng, lo, hi)).transpose()
        };
        let b = draw(self.brightness)?;
        let c = draw(self.contrast)?;
        let s = draw(self.saturation)?;
        let h = draw(self.hue)?;
        let mut output = image;
        for k in 0..4 {
            output = match (order.f_int64_value(&[k])?, b, c, s, h) {
                (0, Some(b), ..) => adjust_brightness(&output, b)?,
                (1, _, Some(c), ..) => adjust_contrast(&output, c)?,
                (2, _, _, Some(s), _) => adjust_saturation(&output, s)?,
                (3, .., Some(h)) => adjust_hue(&output, h)?,
                _ => output,
            };
        }
        Ok(output)
    }
}
