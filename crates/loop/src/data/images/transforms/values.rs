//! The option types of the transforms that kiln-tensor's spec values do not
//! already cover: torchvision's arguments that take a number or a pair
//! (`ColorJitter`), a number or a list (`fill`), a list or a word
//! (`RandomErasing`'s `value`), and its word choices.
use kiln_tensor::spec::{py_float, OptionValue};
use kiln_tensor::Kind;

/// `torchvision.transforms.InterpolationMode` (the modes tensors support).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// `NEAREST` (`upsample_nearest2d`).
    Nearest,
    /// `NEAREST_EXACT` (`_upsample_nearest_exact2d`).
    NearestExact,
    /// `BILINEAR` (antialiased by default).
    Bilinear,
    /// `BICUBIC` (antialiased by default).
    Bicubic,
}

kiln_tensor::choices!(Interpolation {
    Nearest = "nearest",
    NearestExact = "nearest-exact",
    Bilinear = "bilinear",
    Bicubic = "bicubic",
});

/// How `pad` fills the border (`padding_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingMode {
    /// The `fill` value.
    Constant,
    /// The edge pixel repeated (`torch.nn.functional.pad`'s `replicate`).
    Edge,
    /// Mirrored without repeating the edge.
    Reflect,
    /// Mirrored, repeating the edge.
    Symmetric,
}

kiln_tensor::choices!(PaddingMode {
    Constant = "constant",
    Edge = "edge",
    Reflect = "reflect",
    Symmetric = "symmetric",
});

/// A dtype `to-dtype` converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// `torch.float32`.
    Float32,
    /// `torch.float64`.
    Float64,
    /// `torch.float16`.
    Float16,
    /// `torch.bfloat16`.
    BFloat16,
    /// `torch.uint8`.
    Uint8,
}

kiln_tensor::choices!(TensorKind {
    Float32 = "float32",
    Float64 = "float64",
    Float16 = "float16",
    BFloat16 = "bfloat16",
    Uint8 = "uint8",
});

impl TensorKind {
    /// libtorch's scalar type.
    pub fn kind(self) -> Kind {
        match self {
            TensorKind::Float32 => Kind::Float,
            TensorKind::Float64 => Kind::Double,
            TensorKind::Float16 => Kind::Half,
            TensorKind::BFloat16 => Kind::BFloat16,
            TensorKind::Uint8 => Kind::Uint8,
        }
    }
}

/// A `ColorJitter` argument: `none`, one number `x` (a range around the
/// center, `[c - x, c + x]`) or a range `min;max`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Jitter {
    /// No jitter of this property (`None`).
    #[default]
    None,
    /// A number.
    Amount(f64),
    /// `(min, max)`.
    Range(f64, f64),
}

impl OptionValue for Jitter {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        let expected = || "none, a number or two numbers written min;max".to_string();
        let text = text.trim();
        if text == "none" {
            *self = Jitter::None;
            return Ok(());
        }
        let items: Vec<&str> = text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(';')
            .map(str::trim)
            .collect();
        let number = |s: &str| s.parse::<f64>().map_err(|_| expected());
        *self = match items.as_slice() {
            [x] => Jitter::Amount(number(x)?),
            [a, b] => Jitter::Range(number(a)?, number(b)?),
            _ => return Err(expected()),
        };
        Ok(())
    }
    fn format_text(&self) -> String {
        match self {
            Jitter::None => "none".into(),
            Jitter::Amount(x) => py_float(*x),
            Jitter::Range(a, b) => format!("{};{}", py_float(*a), py_float(*b)),
        }
    }
}

/// A fill value: one number for every channel, or one per channel (`a;b;c`).
/// Written as integers where they are (`fill=0`, `fill=127;0;255`), as
/// torchvision keeps Python's ints and floats apart.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fill(pub Vec<f64>);

impl OptionValue for Fill {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        let mut values: Vec<f64> = Vec::new();
        values
            .parse_text(text)
            .map_err(|_| "a number or a ;-separated list of numbers".to_string())?;
        if values.is_empty() {
            return Err("a number or a ;-separated list of numbers".into());
        }
        self.0 = values;
        Ok(())
    }
    fn format_text(&self) -> String {
        self.0
            .iter()
            .map(|v| number_text(*v))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// An integral value as an integer, any other as Python writes a float.
fn number_text(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        py_float(v)
    }
}

/// `RandomErasing`'s `value`: `random` (per-pixel normal draws) or one
/// number, or one per channel.
#[derive(Debug, Clone, PartialEq)]
pub enum ErasingValue {
    /// `value="random"`.
    Random,
    /// The values erased pixels get.
    Values(Vec<f64>),
}

impl Default for ErasingValue {
    fn default() -> Self {
        ErasingValue::Values(vec![0.0])
    }
}

impl OptionValue for ErasingValue {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        if text.trim() == "random" {
            *self = ErasingValue::Random;
            return Ok(());
        }
        let mut fill = Fill::default();
        fill.parse_text(text)
            .map_err(|_| "random, a number or a ;-separated list of numbers".to_string())?;
        *self = ErasingValue::Values(fill.0);
        Ok(())
    }
    fn format_text(&self) -> String {
        match self {
            ErasingValue::Random => "random".into(),
            ErasingValue::Values(v) => v.iter().map(|x| py_float(*x)).collect::<Vec<_>>().join(";"),
        }
    }
}
