//! What an option can hold: [`OptionValue`] and its implementations.
use super::brackets::{bracket_for, protect, split_outside_brackets, unbracket};
use super::Spec;

/// A value an option can hold: read from and written as spec text.
///
/// `format_text` writes what `parse_text` reads back to the same value, so
/// a resolved spec rebuilds the same component. Implemented for `f64`,
/// `i64`, `usize`, `u64`, `bool`, `String`, [`Spec`] (a nested component),
/// `Option<T>` (`none`), lists `Vec<T>` (`a;b;c`), pairs and triples (`a;b`),
/// and word choices ([`choices!`](crate::choices)).
///
/// The bracket rule of the [module docs](super): `parse_text` reads text
/// wholly inside one pair of brackets as the text inside ([`unbracket`]);
/// `format_text` may return text holding `,` or `;` (a spec or a list puts
/// brackets around it where it must) but brackets it itself where reading it
/// would otherwise drop brackets that belong to the value.
pub trait OptionValue: Send + Sync + CloneOptionValue {
    /// Reads `text` into the value. On failure, returns what was expected,
    /// completing "option k=v is not ..." (`a number`).
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String>;
    /// The value as spec text (`0.001`, `true`, `none`, `0.9;0.999`).
    fn format_text(&self) -> String;
    /// The component specs this value holds (a list of specs: SequentialLR's
    /// schedulers). A [`Registry`](super::Registry) resolving the spec that
    /// holds this value resolves them through itself, so they name
    /// components of that same registry. Nothing by default.
    fn nested_specs(&mut self) -> Vec<&mut Spec> {
        Vec::new()
    }
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
        *self = unbracket(text)
            .trim()
            .parse()
            .map_err(|_| "a number".to_string())?;
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
                *self = unbracket(text).trim().parse().map_err(|_| $expected.to_string())?;
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
        *self = match unbracket(text).trim() {
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

/// Free text; in brackets it can hold `,` and `;` (`[data/a,b.csv]`), and
/// keep spaces at its ends.
impl OptionValue for String {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        unbracket(text).clone_into(self);
        Ok(())
    }
    fn format_text(&self) -> String {
        protect(self)
    }
}

impl ListItem for String {
    const PLURAL: &'static str = "texts";
}

/// A list of lists: each inner list holding `;` is bracketed (`[1;2];[3]`).
impl<T: ListItem> ListItem for Vec<T> {
    const PLURAL: &'static str = "lists";
}

/// `none` is `None`; anything else is read as a `T` (`[none]` is the text
/// `none` of an optional string).
impl<T: OptionValue + Default + Clone + 'static> OptionValue for Option<T> {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        if text.trim() == "none" {
            *self = None;
            return Ok(());
        }
        let mut v = T::default();
        v.parse_text(text).map_err(|e| format!("none or {e}"))?;
        *self = Some(v);
        Ok(())
    }
    fn format_text(&self) -> String {
        match self {
            None => "none".to_string(),
            Some(v) => match v.format_text() {
                text if text == "none" => "[none]".to_string(),
                text => text,
            },
        }
    }
    fn nested_specs(&mut self) -> Vec<&mut Spec> {
        self.as_mut()
            .map_or_else(Vec::new, OptionValue::nested_specs)
    }
}

/// A component spec as an option's value (`linear:total_iters=5`; in a spec
/// or a list it is bracketed where it holds `,` or `;`). Printed as given;
/// the registry holding the outer spec resolves it ([`OptionValue::nested_specs`]).
impl OptionValue for Spec {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        *self = unbracket(text)
            .parse()
            .map_err(|e: crate::Error| format!("a spec NAME[:key=value,...] ({e})"))?;
        Ok(())
    }
    fn format_text(&self) -> String {
        self.to_string()
    }
    fn nested_specs(&mut self) -> Vec<&mut Spec> {
        vec![self]
    }
}

/// An empty spec named `none`, the placeholder a list of specs starts from.
impl Default for Spec {
    fn default() -> Self {
        Self {
            name: "none".into(),
            options: Vec::new(),
            used: Vec::new(),
        }
    }
}

impl ListItem for Spec {
    const PLURAL: &'static str = "specs";
}

impl<T: ListItem> ListItem for Option<T> {
    const PLURAL: &'static str = "values (none or a value)";
}

/// The items of a `;`-list (`1;2` or `[1;2]`; an item holding `;` is
/// bracketed itself); `[]` is empty. `None` if brackets do not pair up.
fn list_items(text: &str) -> Option<Vec<&str>> {
    let inner = unbracket(text);
    if inner.is_empty() {
        Some(Vec::new())
    } else {
        split_outside_brackets(inner, ';').ok()
    }
}

/// The items written as a `;`-list: each item holding `;` in brackets, and
/// the whole in brackets where reading it would drop brackets of its own
/// (one bracketed item); `[]` when empty.
fn write_list(items: Vec<String>) -> String {
    if items.is_empty() {
        return "[]".into();
    }
    let text = items
        .iter()
        .map(|item| bracket_for(item, ';'))
        .collect::<Vec<_>>()
        .join(";");
    protect(&text)
}

/// `a;b;c` (or `[a;b;c]`); `[]` is the empty list.
impl<T: ListItem> OptionValue for Vec<T> {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        let expected = || format!("a ;-separated list of {}", T::PLURAL);
        let mut out = Vec::new();
        for item in list_items(text).ok_or_else(expected)? {
            let mut v = T::default();
            v.parse_text(item).map_err(|_| expected())?;
            out.push(v);
        }
        *self = out;
        Ok(())
    }
    fn format_text(&self) -> String {
        write_list(self.iter().map(OptionValue::format_text).collect())
    }
    fn nested_specs(&mut self) -> Vec<&mut Spec> {
        self.iter_mut()
            .flat_map(OptionValue::nested_specs)
            .collect()
    }
}

macro_rules! tuple_value {
    ($n:literal, $written:literal: $($t:ident $i:tt),+) => {
        /// A tuple written with `;` between its values (or in brackets).
        impl<$($t: ListItem),+> OptionValue for ($($t,)+) {
            fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
                let expected = || format!("{} values written {}", $n, $written);
                let items = list_items(text).unwrap_or_default();
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
                write_list(vec![$(self.$i.format_text()),+])
            }
            fn nested_specs(&mut self) -> Vec<&mut Spec> {
                let mut out = Vec::new();
                $(out.extend(self.$i.nested_specs());)+
                out
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
                match <Self as $crate::spec::Choice>::from_word($crate::spec::unbracket(text)) {
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
