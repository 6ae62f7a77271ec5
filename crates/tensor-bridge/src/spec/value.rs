//! What an option can hold: [`OptionValue`] and its implementations.

/// A value an option can hold: read from and written as spec text.
///
/// `format_text` writes what `parse_text` reads back to the same value, so
/// a resolved spec rebuilds the same component. Implemented for `f64`,
/// `i64`, `usize`, `u64`, `bool`, `String`, `Option<T>` (`none`), lists
/// `Vec<T>` (`a;b;c`), pairs and triples (`a;b`), and word choices
/// ([`choices!`](crate::choices)).
pub trait OptionValue: Send + Sync + CloneOptionValue {
    /// Reads `text` into the value. On failure, returns what was expected,
    /// completing "option k=v is not ..." (`a number`).
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String>;
    /// The value as spec text (`0.001`, `true`, `none`, `0.9;0.999`).
    fn format_text(&self) -> String;
}

/// A boxed copy of an [`OptionValue`]; implemented for every `Clone` value.
pub trait CloneOptionValue {
    /// A copy of the value, boxed.
    fn clone_value(&self) -> Box<dyn OptionValue>;
}

impl<T: OptionValue + Clone + 'static> CloneOptionValue for T {
    fn clone_value(&self) -> Box<dyn OptionValue> {
        Box::new(self.clone())
    }
}

/// A value that can be an item of a `;`-list or a tuple option.
pub trait ListItem: OptionValue + Default + Clone + 'static {
    /// What a list of these is called in errors (`numbers`).
    const PLURAL: &'static str;
}

/// Formats a float as Python's `repr(float)` does (`-1.0`, `1e-05`, `inf`,
/// `nan`), with the shortest digits that read back to the same value: how
/// kiln writes floats in specs and in PyTorch's messages.
pub fn py_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Shortest round-trip digits and decimal exponent, e.g. "1.5e-5".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp >= 0 {
            let int_len = exp + 1;
            if n <= int_len {
                format!("{digits}{}.0", "0".repeat((int_len - n) as usize))
            } else {
                let (a, b) = digits.split_at(int_len as usize);
                format!("{a}.{b}")
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { "-" } else { "+" };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    }
}

impl OptionValue for f64 {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        *self = text.parse().map_err(|_| "a number".to_string())?;
        Ok(())
    }
    fn format_text(&self) -> String {
        py_float(*self)
    }
}

impl ListItem for f64 {
    const PLURAL: &'static str = "numbers";
}

macro_rules! integer_value {
    ($($ty:ty: $expected:literal, $plural:literal;)*) => {$(
        impl OptionValue for $ty {
            fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
                *self = text.parse().map_err(|_| $expected.to_string())?;
                Ok(())
            }
            fn format_text(&self) -> String {
                self.to_string()
            }
        }
        impl ListItem for $ty {
            const PLURAL: &'static str = $plural;
        }
    )*};
}

integer_value! {
    i64: "an integer", "integers";
    usize: "a non-negative integer", "non-negative integers";
    u64: "a non-negative integer", "non-negative integers";
}

impl OptionValue for bool {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        *self = match text {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err("true or false".into()),
        };
        Ok(())
    }
    fn format_text(&self) -> String {
        self.to_string()
    }
}

impl ListItem for bool {
    const PLURAL: &'static str = "booleans";
}

/// Free text (a value cannot hold `,`).
impl OptionValue for String {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        text.clone_into(self);
        Ok(())
    }
    fn format_text(&self) -> String {
        self.clone()
    }
}

/// `none` is `None`; anything else is read as a `T`.
impl<T: OptionValue + Default + Clone + 'static> OptionValue for Option<T> {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        if text == "none" {
            *self = None;
            return Ok(());
        }
        let mut v = T::default();
        v.parse_text(text).map_err(|e| format!("none or {e}"))?;
        *self = Some(v);
        Ok(())
    }
    fn format_text(&self) -> String {
        self.as_ref()
            .map_or_else(|| "none".to_string(), OptionValue::format_text)
    }
}

impl<T: ListItem> ListItem for Option<T> {
    const PLURAL: &'static str = "values (none or a value)";
}

/// The items of a `;`-list, brackets removed (`[1;2]` and `1;2`); `[]` is empty.
fn list_items(text: &str) -> Vec<&str> {
    let inner = text.trim();
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let inner = inner.strip_suffix(']').unwrap_or(inner).trim();
    if inner.is_empty() {
        Vec::new()
    } else {
        inner.split(';').map(str::trim).collect()
    }
}

/// `a;b;c` (or `[a;b;c]`); `[]` is the empty list.
impl<T: ListItem> OptionValue for Vec<T> {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        let expected = || format!("a ;-separated list of {}", T::PLURAL);
        let mut out = Vec::new();
        for item in list_items(text) {
            let mut v = T::default();
            v.parse_text(item).map_err(|_| expected())?;
            out.push(v);
        }
        *self = out;
        Ok(())
    }
    fn format_text(&self) -> String {
        if self.is_empty() {
            return "[]".into();
        }
        self.iter()
            .map(OptionValue::format_text)
            .collect::<Vec<_>>()
            .join(";")
    }
}

macro_rules! tuple_value {
    ($n:literal, $written:literal: $($t:ident $i:tt),+) => {
        /// A tuple written with `;` between its values (or in brackets).
        impl<$($t: ListItem),+> OptionValue for ($($t,)+) {
            fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
                let expected = || format!("{} values written {}", $n, $written);
                let items = list_items(text);
                if items.len() != $n {
                    return Err(expected());
                }
                let mut out = <($($t,)+)>::default();
                $(
                    let item = items.get($i).copied().unwrap_or_default();
                    out.$i.parse_text(item).map_err(|_| expected())?;
                )+
                *self = out;
                Ok(())
            }
            fn format_text(&self) -> String {
                [$(self.$i.format_text()),+].join(";")
            }
        }
    };
}

tuple_value!(2, "a;b": A 0, B 1);
tuple_value!(3, "a;b;c": A 0, B 1, C 2);

/// A fieldless enum whose values are written as words (`mean`, `cos`),
/// usually implemented with [`choices!`](crate::choices).
pub trait Choice: Copy + PartialEq + Send + Sync + 'static {
    /// Every value with its word, in the order they are listed.
    const CHOICES: &'static [(&'static str, Self)];

    /// The word of `self`.
    fn word(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(w, _)| *w)
    }

    /// The value a word names.
    fn from_word(word: &str) -> Option<Self> {
        Self::CHOICES
            .iter()
            .find(|(w, _)| *w == word)
            .map(|(_, v)| *v)
    }

    /// `one of a, b, c`, for errors.
    fn expected() -> String {
        let words: Vec<&str> = Self::CHOICES.iter().map(|(w, _)| *w).collect();
        format!("one of {}", words.join(", "))
    }
}

/// Implements [`Choice`] and [`OptionValue`] for a fieldless enum from its
/// words: `choices!(Reduction { None = "none", Mean = "mean", Sum = "sum" });`.
#[macro_export]
macro_rules! choices {
    ($ty:ty { $($variant:ident = $word:literal),+ $(,)? }) => {
        impl $crate::spec::Choice for $ty {
            const CHOICES: &'static [(&'static str, Self)] = &[$(($word, <$ty>::$variant)),+];
        }
        impl $crate::spec::OptionValue for $ty {
            fn parse_text(&mut self, text: &str) -> ::std::result::Result<(), String> {
                match <Self as $crate::spec::Choice>::from_word(text) {
                    Some(v) => {
                        *self = v;
                        Ok(())
                    }
                    None => Err(<Self as $crate::spec::Choice>::expected()),
                }
            }
            fn format_text(&self) -> String {
                $crate::spec::Choice::word(*self).to_string()
            }
        }
    };
}
