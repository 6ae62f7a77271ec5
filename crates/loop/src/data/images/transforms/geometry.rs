//! Geometry: `torchvision/transforms/v2/_geometry.py` and the image kernels
//! of `v2/functional/_geometry.py` — flips, resize, crops, padding.
use super::values::{Fill, Interpolation, PaddingMode};
use super::{chw, is_float_kind, py_round, randint, skip, uniform, Transform};
use crate::{Error, Result};
use kiln_tensor::rng::Generator;
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::{Device, Kind, Tensor};

// --- kernels (v2.functional) ----------------------------------------------------

/// `F.horizontal_flip` (`image.flip(-1)`).
pub fn horizontal_flip(image: &Tensor) -> Result<Tensor> {
    Ok(image.f_flip([-1])?)
}

/// `F.vertical_flip` (`image.flip(-2)`).
pub fn vertical_flip(image: &Tensor) -> Result<Tensor> {
    Ok(image.f_flip([-2])?)
}

/// `_compute_resized_output_size`: `[new_h, new_w]` of an `h × w` image for
/// `size` (one value: the smaller edge; two: `[h, w]`; none: from
/// `max_size`) and `max_size` (the longer edge's limit).
pub fn resized_output_size(
    (h, w): (i64, i64),
    size: Option<&[i64]>,
    max_size: Option<i64>,
) -> Result<(i64, i64)> {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    // Python's `int(a * b / c)`: an exact product, a rounded division, truncated.
    let scaled =
        |a: i64, b: i64, c: i64| ((i128::from(a) * i128::from(b)) as f64 / c as f64) as i64;
    let (new_short, new_long) =
        match (size, max_size) {
            (None, Some(max)) => (scaled(max, short, long), max),
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "max_size must be an integer when size is None".into(),
                ))
            }
            (Some([requested]), max_size) => {
                let (mut s, mut l) = (*requested, scaled(*requested, long, short));
                if let Some(max) = max_size {
                    if max <= *requested {
                        return Err(Error::InvalidArgument(format!(
                        "max_size = {max} must be strictly greater than the requested size for \
                         the smaller edge size = [{requested}]"
                    )));
                    }
                    if l > max {
                        (s, l) = (scaled(max, s, l), max);
                    }
                }
                (s, l)
            }
            (Some([new_h, new_w]), None) => return Ok((*new_h, *new_w)),
            (Some(_), _) => return Err(Error::InvalidArgument(
                "max_size should only be passed if size is None or specifies the length of the \
                 smaller edge, i.e. size should be an int or a sequence of length 1"
                    .into(),
            )),
        };
    Ok(if w <= h {
        (new_long, new_short)
    } else {
        (new_short, new_long)
    })
}

/// Whether libtorch interpolates uint8 bilinear images natively
/// (`_do_native_uint8_resize_on_cpu`: ATen's CPU capability is AVX2 or
/// AVX512). The capability is ATen's: `ATEN_CPU_CAPABILITY` when set to a
/// known value, else AVX2 and FMA present (AVX512 implies both).
fn native_uint8_bilinear() -> bool {
    match std::env::var("ATEN_CPU_CAPABILITY").as_deref() {
        Ok("avx2") | Ok("avx512") => return true,
        Ok("default") => return false,
        _ => {}
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `is_contiguous(memory_format=torch.channels_last)` of a 4-d tensor.
fn channels_last_contiguous(size: &[i64], stride: &[i64]) -> bool {
    let mut expected = 1;
    for d in [1usize, 3, 2, 0] {
        let (Some(&n), Some(&s)) = (size.get(d), stride.get(d)) else {
            return false;
        };
        if n != 1 {
            if s != expected {
                return false;
            }
            expected *= n;
        }
    }
    true
}

/// `F.resize` on an image tensor (`resize_image`): `size` and `max_size` as
/// [`resized_output_size`] takes them; bilinear and bicubic antialiased
/// when `antialias`. uint8 images are interpolated natively where
/// torchvision does so, otherwise in float32 and rounded back.
pub fn resize(
    image: &Tensor,
    size: Option<&[i64]>,
    interpolation: Interpolation,
    max_size: Option<i64>,
    antialias: bool,
) -> Result<Tensor> {
    let smooth = matches!(
        interpolation,
        Interpolation::Bilinear | Interpolation::Bicubic
    );
    let antialias = antialias && smooth;
    let shape = image.size();
    let numel = image.numel() as i64;
    let (c, old_h, old_w) = chw(image)?;
    let (new_h, new_w) = resized_output_size((old_h, old_w), size, max_size)?;
    let mut out_shape = shape.get(..shape.len() - 3).unwrap_or(&[]).to_vec();
    out_shape.extend([c, new_h, new_w]);
    if (new_h, new_w) == (old_h, old_w) {
        return Ok(image.shallow_clone());
    }
    if numel == 0 {
        return Ok(image.f_reshape(&out_shape)?);
    }
    let kind = image.f_kind()?;
    let native_uint8 = match interpolation {
        Interpolation::Nearest | Interpolation::NearestExact | Interpolation::Bicubic => true,
        Interpolation::Bilinear => native_uint8_bilinear(),
    };
    let acceptable =
        matches!(kind, Kind::Float | Kind::Double) || (kind == Kind::Uint8 && native_uint8);
    let mut x = image.f_reshape([-1, c, old_h, old_w])?;
    let strides = x.stride();
    if channels_last_contiguous(&x.size(), &strides)
        && x.size().first() == Some(&1)
        && strides.first() != Some(&numel)
    {
        // torchvision restrides a channels-last 1CHW tensor so that
        // interpolate allocates its output channels-last too.
        let mut new_strides = strides.clone();
        if let Some(s) = new_strides.first_mut() {
            *s = numel;
        }
        x = x.f_as_strided([1, c, old_h, old_w], new_strides, None)?;
    }
    if !acceptable {
        x = x.f_to_kind(Kind::Float)?;
    }
    let out_size = [new_h, new_w];
    let mut y = match (interpolation, antialias) {
        (Interpolation::Nearest, _) => x.f_upsample_nearest2d(out_size, None, None)?,
        (Interpolation::NearestExact, _) => {
            x.f_internal_upsample_nearest_exact2d(out_size, None, None)?
        }
        (Interpolation::Bilinear, true) => {
            x.f_internal_upsample_bilinear2d_aa(out_size, false, None, None)?
        }
        (Interpolation::Bilinear, false) => x.f_upsample_bilinear2d(out_size, false, None, None)?,
        (Interpolation::Bicubic, true) => {
            x.f_internal_upsample_bicubic2d_aa(out_size, false, None, None)?
        }
        (Interpolation::Bicubic, false) => x.f_upsample_bicubic2d(out_size, false, None, None)?,
    };
    if !acceptable {
        if interpolation == Interpolation::Bicubic && kind == Kind::Uint8 {
            y = y.f_clamp_(0, 255)?;
        }
        if matches!(
            kind,
            Kind::Uint8 | Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64
        ) {
            y = y.f_round_()?;
        }
        y = y.f_to_kind(kind)?;
    }
    Ok(y.f_reshape(&out_shape)?)
}

/// `_parse_pad_padding`: `[left, right, top, bottom]` from 1, 2
/// (`left/right;top/bottom`) or 4 (`left;top;right;bottom`) values.
pub fn parse_padding(padding: &[i64]) -> Result<[i64; 4]> {
    match *padding {
        [p] => Ok([p, p, p, p]),
        [lr, tb] => Ok([lr, lr, tb, tb]),
        [l, t, r, b] => Ok([l, r, t, b]),
        _ => Err(Error::InvalidArgument(format!(
            "Padding must be an int or a 1, 2, or 4 element tuple or list. Found {}",
            padding.len()
        ))),
    }
}

/// `torch.nn.functional.pad`.
fn torch_pad(image: &Tensor, pad: [i64; 4], mode: &str, value: Option<f64>) -> Result<Tensor> {
    Ok(image.f_pad(pad, mode, value)?)
}

/// `_pad_with_scalar_fill`: `torch_padding` is `[left, right, top, bottom]`.
fn pad_with_scalar_fill(
    image: &Tensor,
    torch_padding: [i64; 4],
    fill: f64,
    mode: PaddingMode,
) -> Result<Tensor> {
    let shape = image.size();
    let (c, h, w) = chw(image)?;
    let lead = shape.get(..shape.len() - 3).unwrap_or(&[]);
    let batch: i64 = lead.iter().product();
    let x = image.f_reshape([batch, c, h, w])?;
    let x = match mode {
        PaddingMode::Constant => torch_pad(&x, torch_padding, "constant", Some(fill))?,
        PaddingMode::Reflect | PaddingMode::Edge => {
            let torch_mode = if mode == PaddingMode::Edge {
                "replicate"
            } else {
                "reflect"
            };
            // torch's reflect and replicate padding take floating point only.
            let kind = x.f_kind()?;
            if is_float_kind(kind) {
                torch_pad(&x, torch_padding, torch_mode, None)?
            } else {
                torch_pad(&x.f_to_kind(Kind::Float)?, torch_padding, torch_mode, None)?
                    .f_to_kind(kind)?
            }
        }
        PaddingMode::Symmetric => pad_symmetric(&x, torch_padding)?,
    };
    let (new_h, new_w) = match x.size().as_slice() {
        [.., nh, nw] => (*nh, *nw),
        _ => (h, w),
    };
    let mut out_shape = lead.to_vec();
    out_shape.extend([c, new_h, new_w]);
    Ok(x.f_reshape(&out_shape)?)
}

/// `_pad_symmetric` (torchvision's own: indices mirrored with the edge
/// repeated), on a 4-d tensor; `padding` is `[left, right, top, bottom]`.
fn pad_symmetric(image: &Tensor, padding: [i64; 4]) -> Result<Tensor> {
    let mut img = image.shallow_clone();
    let mut padding = padding;
    if padding.iter().any(|&p| p < 0) {
        let [cl, cr, ct, cb] = padding.map(|p| -p.min(0));
        let (_, h, w) = chw(&img)?;
        img = img.f_slice(-2, ct, h - cb, 1)?.f_slice(-1, cl, w - cr, 1)?;
        padding = padding.map(|p| p.max(0));
    }
    let (_, h, w) = chw(&img)?;
    let [left, right, top, bottom] = padding;
    let indices = |before: i64, n: i64, after: i64| -> Vec<i64> {
        (0..before)
            .rev()
            .chain(0..n)
            .chain((0..after).map(|i| -(i + 1)))
            .collect()
    };
    let cpu = |v: Vec<i64>| Tensor::f_from_slice(&v);
    let x_indices = cpu(indices(left, w, right))?;
    let y_indices = cpu(indices(top, h, bottom))?;
    // img[:, :, y_indices[:, None], x_indices[None, :]]
    let rows = y_indices.f_unsqueeze(1)?;
    let cols = x_indices.f_unsqueeze(0)?;
    Ok(img.f_index(&[None, None, Some(rows), Some(cols)])?)
}

/// `F.pad` on an image tensor (`pad_image`): `padding` as [`parse_padding`]
/// reads it; a one-value `fill` for every channel, or one per channel
/// (constant mode only).
pub fn pad(image: &Tensor, padding: &[i64], fill: &[f64], mode: PaddingMode) -> Result<Tensor> {
    let torch_padding = parse_padding(padding)?;
    match fill {
        [] => pad_with_scalar_fill(image, torch_padding, 0.0, mode),
        [value] => pad_with_scalar_fill(image, torch_padding, *value, mode),
        values => {
            if mode != PaddingMode::Constant {
                return Err(Error::InvalidArgument(format!(
                    "Padding mode '{}' is not supported if fill is not scalar",
                    kiln_tensor::spec::Choice::word(mode)
                )));
            }
            let output = pad_with_scalar_fill(image, torch_padding, 0.0, mode)?;
            let [left, right, top, bottom] = torch_padding;
            // torch.tensor(fill): int64 when every value is an integer, else float32.
            let fill = if values.iter().all(|v| v.fract() == 0.0) {
                Tensor::f_from_slice(&values.iter().map(|v| *v as i64).collect::<Vec<_>>())?
            } else {
                Tensor::f_from_slice(&values.iter().map(|v| *v as f32).collect::<Vec<_>>())?
            };
            let fill = fill.f_to_kind(output.f_kind()?)?.f_reshape([-1, 1, 1])?;
            let regions = [
                (top > 0, -2, 0, top),
                (left > 0, -1, 0, left),
                (bottom > 0, -2, -bottom, i64::MAX),
                (right > 0, -1, -right, i64::MAX),
            ];
            for (needed, dim, start, end) in regions {
                if needed {
                    // output[..., region] = fill
                    let mut region = output.f_slice(dim, start, end, 1)?;
                    region.f_copy_(&fill)?;
                }
            }
            Ok(output)
        }
    }
}

/// `F.crop` on an image tensor (`crop_image`); parts outside the image are
/// zeros.
pub fn crop(image: &Tensor, top: i64, left: i64, height: i64, width: i64) -> Result<Tensor> {
    let (_, h, w) = chw(image)?;
    let (right, bottom) = (left + width, top + height);
    if left < 0 || top < 0 || right > w || bottom > h {
        let inside =
            image
                .f_slice(-2, top.max(0), bottom, 1)?
                .f_slice(-1, left.max(0), right, 1)?;
        let torch_padding = [
            (right.min(0) - left).max(0),
            (right - w.max(left)).max(0),
            (bottom.min(0) - top).max(0),
            (bottom - h.max(top)).max(0),
        ];
        return pad_with_scalar_fill(&inside, torch_padding, 0.0, PaddingMode::Constant);
    }
    Ok(image
        .f_slice(-2, top, bottom, 1)?
        .f_slice(-1, left, right, 1)?)
}

/// `F.center_crop` on an image tensor: an image smaller than the crop is
/// padded with zeros first.
pub fn center_crop(image: &Tensor, crop_h: i64, crop_w: i64) -> Result<Tensor> {
    let shape = image.size();
    if image.numel() == 0 {
        let mut s = shape
            .get(..shape.len().saturating_sub(2))
            .unwrap_or(&[])
            .to_vec();
        s.extend([crop_h, crop_w]);
        return Ok(image.f_reshape(&s)?);
    }
    let (_, mut h, mut w) = chw(image)?;
    let mut image = image.shallow_clone();
    if crop_h > h || crop_w > w {
        let half = |crop: i64, size: i64, up: i64| {
            if crop > size {
                (crop - size + up).div_euclid(2)
            } else {
                0
            }
        };
        // [left, top, right, bottom] parsed into torch's [left, right, top, bottom].
        let ltrb = [
            half(crop_w, w, 0),
            half(crop_h, h, 0),
            half(crop_w, w, 1),
            half(crop_h, h, 1),
        ];
        image = torch_pad(&image, parse_padding(&ltrb)?, "constant", Some(0.0))?;
        (_, h, w) = chw(&image)?;
        if crop_w == w && crop_h == h {
            return Ok(image);
        }
    }
    let top = py_round((h - crop_h) as f64 / 2.0);
    let left = py_round((w - crop_w) as f64 / 2.0);
    Ok(image
        .f_slice(-2, top, top + crop_h, 1)?
        .f_slice(-1, left, left + crop_w, 1)?)
}

/// `_setup_size`: one value is a square, two are `[h, w]`.
fn setup_size(name: &str, size: &[i64]) -> Result<(i64, i64)> {
    match *size {
        [s] => Ok((s, s)),
        [h, w] => Ok((h, w)),
        _ => Err(Error::InvalidArgument(format!(
            "{name}: Please provide only two dimensions (h, w) for size."
        ))),
    }
}

/// `_check_padding_arg`.
fn check_padding(name: &str, padding: &[i64]) -> Result<()> {
    if matches!(padding.len(), 1 | 2 | 4) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{name}: Padding must be an int or a 1, 2, or 4 element of tuple or list, got {}",
            padding.len()
        )))
    }
}

fn check_p(name: &str, p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{name}: `p` should be a floating point value in the interval [0.0, 1.0]."
        )))
    }
}

// --- transforms -----------------------------------------------------------------

const SIZE_HELP: &str = "output size: h;w, or one value (a square)";
const FILL_HELP: &str = "the constant padding value: one number or one per channel (a;b;c)";
const MODE_HELP: &str = "constant, edge, reflect or symmetric";
const INTERPOLATION_HELP: &str = "nearest, nearest-exact, bilinear or bicubic";
const ANTIALIAS_HELP: &str = "antialias bilinear and bicubic resizing";

/// Options of [`RandomHorizontalFlip`] and [`RandomVerticalFlip`].
#[derive(Debug, Clone, PartialEq)]
pub struct FlipConfig {
    /// Probability of flipping.
    pub p: f64,
}

impl Default for FlipConfig {
    fn default() -> Self {
        Self { p: 0.5 }
    }
}

impl Options for FlipConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(OptionInfo::new("p", "probability of flipping"), &mut self.p)
    }
}

/// `v2.RandomHorizontalFlip(p)`: one `torch.rand(1)` draw, flip when below `p`.
#[derive(Debug, Clone)]
pub struct RandomHorizontalFlip {
    p: f64,
}

impl RandomHorizontalFlip {
    /// The spec name.
    pub const NAME: &'static str = "random-horizontal-flip";

    /// Checks `p` as torchvision does.
    pub fn new(cfg: FlipConfig) -> Result<Self> {
        check_p(Self::NAME, cfg.p)?;
        Ok(Self { p: cfg.p })
    }
}

impl Transform for RandomHorizontalFlip {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn apply(&self, image: Tensor, rng: &mut Generator) -> Result<Tensor> {
        if skip(rng, self.p)? {
            return Ok(image);
        }
        horizontal_flip(&image)
    }
}

/// `v2.RandomVerticalFlip(p)`: one `torch.rand(1)` draw, flip when below `p`.
#[derive(Debug, Clone)]
pub struct RandomVerticalFlip {
    p: f64,
}

impl RandomVerticalFlip {
    /// The spec name.
    pub const NAME: &'static str = "random-vertical-flip";

    /// Checks `p` as torchvision does.
    pub fn new(cfg: FlipConfig) -> Result<Self> {
        check_p(Self::NAME, cfg.p)?;
        Ok(Self { p: cfg.p })
    }
}

impl Transform for RandomVerticalFlip {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn apply(&self, image: Tensor, rng: &mut Generator) -> Result<Tensor> {
        if skip(rng, self.p)? {
            return Ok(image);
        }
        vertical_flip(&image)
    }
}

/// Options of [`Resize`]: `v2.Resize(size, interpolation, max_size, antialias)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeConfig {
    /// `h;w`, or one value for the smaller edge, or none (then `max_size`
    /// sets the longer edge).
    pub size: Option<Vec<i64>>,
    /// The interpolation.
    pub interpolation: Interpolation,
    /// The longest the longer edge may be.
    pub max_size: Option<i64>,
    /// Antialias bilinear and bicubic resizing.
    pub antialias: bool,
}

impl Default for ResizeConfig {
    fn default() -> Self {
        Self {
            size: Some(Vec::new()),
            interpolation: Interpolation::Bilinear,
            max_size: None,
            antialias: true,
        }
    }
}

impl Options for ResizeConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "size",
                "h;w, or one value for the smaller edge, or none (max_size sets the longer edge)",
            )
            .required(),
            &mut self.size,
        )?;
        v.option(
            OptionInfo::new("interpolation", INTERPOLATION_HELP),
            &mut self.interpolation,
        )?;
        v.option(
            OptionInfo::new("max_size", "the longest the longer edge may be"),
            &mut self.max_size,
        )?;
        v.option(
            OptionInfo::new("antialias", ANTIALIAS_HELP),
            &mut self.antialias,
        )
    }
}

/// `v2.Resize`.
#[derive(Debug, Clone)]
pub struct Resize {
    cfg: ResizeConfig,
}

impl Resize {
    /// The spec name.
    pub const NAME: &'static str = "resize";

    /// Checks the options as torchvision's constructor (and its size
    /// computation) does.
    pub fn new(cfg: ResizeConfig) -> Result<Self> {
        match (&cfg.size, cfg.max_size) {
            (None, None) => {
                return Err(Error::InvalidArgument(format!(
                    "{}: max_size must be an integer when size is None, but got None instead.",
                    Self::NAME
                )))
            }
            (Some(s), _) if !matches!(s.len(), 1 | 2) => {
                return Err(Error::InvalidArgument(format!(
                    "{}: size can be an integer, a sequence of one or two integers, or None, but \
                     got {s:?} instead.",
                    Self::NAME
                )))
            }
            _ => {}
        }
        // The size rules' own errors (max_size with two sizes, max_size too small).
        resized_output_size((1, 1), cfg.size.as_deref(), cfg.max_size)
            .map_err(|e| super::named(Self::NAME, e))?;
        Ok(Self { cfg })
    }
}

impl Transform for Resize {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn apply(&self, image: Tensor, _rng: &mut Generator) -> Result<Tensor> {
        resize(
            &image,
            self.cfg.size.as_deref(),
            self.cfg.interpolation,
            self.cfg.max_size,
            self.cfg.antialias,
        )
    }
}

/// Options of [`CenterCrop`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CenterCropConfig {
    /// `h;w`, or one value for a square.
    pub size: Vec<i64>,
}

impl Options for CenterCropConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("size", SIZE_HELP).required(),
            &mut self.size,
        )
    }
}

/// `v2.CenterCrop(size)`.
#[derive(Debug, Clone)]
pub struct CenterCrop {
    size: (i64, i64),
}

impl CenterCrop {
    /// The spec name.
    pub const NAME: &'static str = "center-crop";

    /// Checks the size.
    pub fn new(cfg: CenterCropConfig) -> Result<Self> {
        Ok(Self {
            size: setup_size(Self::NAME, &cfg.size)?,
        })
    }
}

impl Transform for CenterCrop {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn apply(&self, image: Tensor, _rng: &mut Generator) -> Result<Tensor> {
        center_crop(&image, self.size.0, self.size.1)
    }
}

/// Options of [`Pad`].
#[derive(Debug, Clone, PartialEq)]
pub struct PadConfig {
    /// All borders, `left/right;top/bottom` or `left;top;right;bottom`.
    pub padding: Vec<i64>,
    /// The constant mode's value(s).
    pub fill: Fill,
    /// How the border is filled.
    pub padding_mode: PaddingMode,
}

impl Default for PadConfig {
    fn default() -> Self {
        Self {
            padding: Vec::new(),
            fill: Fill(vec![0.0]),
            padding_mode: PaddingMode::Constant,
        }
    }
}

impl Options for PadConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "padding",
                "all borders, left/right;top/bottom, or left;top;right;bottom",
            )
            .required(),
            &mut self.padding,
        )?;
        v.option(OptionInfo::new("fill", FILL_HELP), &mut self.fill)?;
        v.option(
            OptionInfo::new("padding_mode", MODE_HELP),
            &mut self.padding_mode,
        )
    }
}

/// `v2.Pad(padding, fill, padding_mode)`.
#[derive(Debug, Clone)]
pub struct Pad {
    cfg: PadConfig,
}

impl Pad {
    /// The spec name.
    pub const NAME: &'static str = "pad";

    /// Checks the padding as torchvision does.
    pub fn new(cfg: PadConfig) -> Result<Self> {
        check_padding(Self::NAME, &cfg.padding)?;
        Ok(Self { cfg })
    }
}

impl Transform for Pad {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn apply(&self, image: Tensor, _rng: &mut Generator) -> Result<Tensor> {
        pad(
            &image,
            &self.cfg.padding,
            &self.cfg.fill.0,
            self.cfg.padding_mode,
        )
    }
}

/// Options of [`RandomCrop`].
#[derive(Debug, Clone, PartialEq)]
pub struct RandomCropConfig {
    /// `h;w`, or one value for a square.
    pub size: Vec<i64>,
    /// Padding before the crop, as [`Pad`] takes it.
    pub padding: Option<Vec<i64>>,
    /// Pad an image smaller than the crop (on both sides, by the difference).
    pub pad_if_needed: bool,
    /// The constant mode's value(s).
    pub fill: Fill,
    /// How the border is filled.
    pub padding_mode: PaddingMode,
}

impl Default for RandomCropConfig {
    fn default() -> Self {
        Self {
            size: Vec::new(),
            padding: None,
            pad_if_needed: false,
            fill: Fill(vec![0.0]),
            padding_mode: PaddingMode::Constant,
        }
    }
}

impl Options for RandomCropConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("size", SIZE_HELP).required(),
            &mut self.size,
        )?;
        v.option(
            OptionInfo::new(
                "padding",
                "padding before the crop: all borders, left/right;top/bottom, or left;top;right;bottom",
            ),
            &mut self.padding,
        )?;
        v.option(
            OptionInfo::new(
                "pad_if_needed",
                "pad an image smaller than the crop instead of refusing it",
            ),
            &mut self.pad_if_needed,
        )?;
        v.option(OptionInfo::new("fill", FILL_HELP), &mut self.fill)?;
        v.option(
            OptionInfo::new("padding_mode", MODE_HELP),
            &mut self.padding_mode,
        )
    }
}

/// `v2.RandomCrop`: pad, then a `torch.randint` draw for the top (when the
/// padded height exceeds the crop) and one for the left (same for widths).
#[derive(Debug, Clone)]
pub struct RandomCrop {
    size: (i64, i64),
    /// `[left, right, top, bottom]`.
    padding: Option<[i64; 4]>,
    cfg: RandomCropConfig,
}

impl RandomCrop {
    /// The spec name.
    pub const NAME: &'static str = "random-crop";

    /// Checks the options as torchvision does.
    pub fn new(cfg: RandomCropConfig) -> Result<Self> {
        let size = setup_size(Self::NAME, &cfg.size)?;
        if let Some(p) = &cfg.padding {
            check_padding(Self::NAME, p)?;
        }
        // `F._parse_pad_padding(padding) if padding else None`: 0 and [] are no padding.
        let padding = match cfg.padding.as_deref() {
            None | Some([]) | Some([0]) => None,
            Some(p) => Some(parse_padding(p)?),
        };
        Ok(Self { size, padding, cfg })
    }
}

impl Transform for RandomCrop {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn apply(&self, image: Tensor, rng: &mut Generator) -> Result<Tensor> {
        let (_, mut padded_h, mut padded_w) = chw(&image)?;
        let [mut left, mut right, mut top, mut bottom] = self.padding.unwrap_or([0; 4]);
        padded_h += top + bottom;
        padded_w += left + right;
        let (crop_h, crop_w) = self.size;
        if self.cfg.pad_if_needed {
            if padded_h < crop_h {
                let diff = crop_h - padded_h;
                top += diff;
                bottom += diff;
                padded_h += 2 * diff;
            }
            if padded_w < crop_w {
                let diff = crop_w - padded_w;
                left += diff;
                right += diff;
                padded_w += 2 * diff;
            }
        }
        if padded_h < crop_h || padded_w < crop_w {
            return Err(Error::InvalidArgument(format!(
                "Required crop size ({crop_h}, {crop_w}) is larger than {}input image size \
                 ({padded_h}, {padded_w}).",
                if self.padding.is_some() {
                    "padded "
                } else {
                    ""
                }
            )));
        }
        let top_draw = if padded_h > crop_h {
            Some(randint(rng, 0, padded_h - crop_h + 1, &[])?)
        } else {
            None
        };
        let left_draw = if padded_w > crop_w {
            Some(randint(rng, 0, padded_w - crop_w + 1, &[])?)
        } else {
            None
        };
        let mut image = image;
        if [left, top, right, bottom].iter().any(|&p| p != 0) {
            image = pad(
                &image,
                &[left, top, right, bottom],
                &self.cfg.fill.0,
                self.cfg.padding_mode,
            )?;
        }
        if top_draw.is_some() || left_draw.is_some() {
            image = crop(
                &image,
                top_draw.unwrap_or(0),
                left_draw.unwrap_or(0),
                crop_h,
                crop_w,
            )?;
        }
        Ok(image)
    }
}

/// Options of [`RandomResizedCrop`].
#[derive(Debug, Clone, PartialEq)]
pub struct RandomResizedCropConfig {
    /// `h;w`, or one value for a square.
    pub size: Vec<i64>,
    /// Bounds of the crop's area, as fractions of the image's.
    pub scale: (f64, f64),
    /// Bounds of the crop's aspect ratio (width / height).
    pub ratio: (f64, f64),
    /// The interpolation.
    pub interpolation: Interpolation,
    /// Antialias bilinear and bicubic resizing.
    pub antialias: bool,
}

impl Default for RandomResizedCropConfig {
    fn default() -> Self {
        Self {
            size: Vec::new(),
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            interpolation: Interpolation::Bilinear,
            antialias: true,
        }
    }
}

impl Options for RandomResizedCropConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("size", SIZE_HELP).required(),
            &mut self.size,
        )?;
        v.option(
            OptionInfo::new(
                "scale",
                "min;max of the crop's area, as a fraction of the image's",
            ),
            &mut self.scale,
        )?;
        v.option(
            OptionInfo::new(
                "ratio",
                "min;max of the crop's aspect ratio (width / height)",
            ),
            &mut self.ratio,
        )?;
        v.option(
            OptionInfo::new("interpolation", INTERPOLATION_HELP),
            &mut self.interpolation,
        )?;
        v.option(
            OptionInfo::new("antialias", ANTIALIAS_HELP),
            &mut self.antialias,
        )
    }
}

/// `v2.RandomResizedCrop`: up to ten tries of a `uniform_` area draw, a
/// `uniform_` log-ratio draw (`exp` in float32) and, on success, two
/// `torch.randint` draws; otherwise the center crop of the clamped ratio.
#[derive(Debug)]
pub struct RandomResizedCrop {
    size: (i64, i64),
    /// `torch.log(torch.tensor(ratio))`, float32, as Python floats.
    log_ratio: (f64, f64),
    cfg: RandomResizedCropConfig,
}

impl RandomResizedCrop {
    /// The spec name.
    pub const NAME: &'static str = "random-resized-crop";

    /// Checks the size; precomputes the float32 log of the ratio bounds.
    pub fn new(cfg: RandomResizedCropConfig) -> Result<Self> {
        let size = setup_size(Self::NAME, &cfg.size)?;
        let log_ratio = log_ratio(cfg.ratio)?;
        Ok(Self {
            size,
            log_ratio,
            cfg,
        })
    }

    /// `make_params`: `(top, left, height, width)` of the crop.
    fn params(&self, height: i64, width: i64, rng: &mut Generator) -> Result<(i64, i64, i64, i64)> {
        let area = (height * width) as f64;
        for _ in 0..10 {
            let target_area = area * uniform(rng, self.cfg.scale.0, self.cfg.scale.1)?;
            let aspect_ratio = exp_uniform(rng, self.log_ratio)?;
            let w = py_round((target_area * aspect_ratio).sqrt());
            let h = py_round((target_area / aspect_ratio).sqrt());
            if 0 < w && w <= width && 0 < h && h <= height {
                let i = randint(rng, 0, height - h + 1, &[1])?;
                let j = randint(rng, 0, width - w + 1, &[1])?;
                return Ok((i, j, h, w));
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (lo, hi) = (
            self.cfg.ratio.0.min(self.cfg.ratio.1),
            self.cfg.ratio.0.max(self.cfg.ratio.1),
        );
        let (w, h) = if in_ratio < lo {
            (width, py_round(width as f64 / lo))
        } else if in_ratio > hi {
            (py_round(height as f64 * hi), height)
        } else {
            (width, height)
        };
        Ok(((height - h).div_euclid(2), (width - w).div_euclid(2), h, w))
    }
}

impl Transform for RandomResizedCrop {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn apply(&self, image: Tensor, rng: &mut Generator) -> Result<Tensor> {
        let (_, height, width) = chw(&image)?;
        let (top, left, h, w) = self.params(height, width, rng)?;
        let cropped = crop(&image, top, left, h, w)?;
        resize(
            &cropped,
            Some(&[self.size.0, self.size.1]),
            self.cfg.interpolation,
            None,
            self.cfg.antialias,
        )
    }
}

/// `torch.log(torch.tensor(ratio))` (float32), as two Python floats.
pub(super) fn log_ratio((lo, hi): (f64, f64)) -> Result<(f64, f64)> {
    let t = Tensor::f_from_slice(&[lo as f32, hi as f32])?.f_log()?;
    Ok((t.f_double_value(&[0])?, t.f_double_value(&[1])?))
}

/// `torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()`.
pub(super) fn exp_uniform(rng: &mut Generator, (lo, hi): (f64, f64)) -> Result<f64> {
    let t = Tensor::f_empty([1], (Kind::Float, Device::Cpu))?;
    rng.uniform_(&t, lo, hi)?;
    Ok(t.f_exp()?.f_double_value(&[0])?)
}
