//! Component specs (`name` or `name:key=value,key=value`) and the one
//! registry type that names components by them.
//!
//! The CLI names losses, optimizers, schedulers (and models) this way
//! (`sgd:lr=1e-3,momentum=0.9`, `cross-entropy:label_smoothing=0.1`). A list
//! value is written with `;` between items (`weight=1;2;0.5`) or in brackets
//! (`betas=[0.9;0.999]`).
//!
//! Three pieces, used the same way by every kiln registry:
//! - [`Spec`]: a parsed spec, a value that can be edited ([`Spec::set`]),
//!   printed (`Display` writes the canonical text) and (de)serialised as a
//!   string.
//! - [`Options`]: a config visits each of its fields once with its name,
//!   aliases and help. From that one visit kiln derives both *reading* a spec
//!   into the config ([`Spec::apply`]) and *documenting* the options with
//!   their defaults ([`OptionDoc::collect`], read from the config's `Default`
//!   rather than written a second time). Field types implement
//!   [`OptionValue`] (numbers, booleans, `Option<_>`, `;`-lists, tuples, and
//!   word choices through [`choices!`](crate::choices)).
//! - [`Registry`]: entries with a canonical kebab-case name, aliases
//!   (PyTorch's class names), a summary, documented options and a builder.
//!   It finds entries by name or alias, rejects unknown names and options
//!   before any builder runs (with "did you mean"), [resolves](Registry::resolve)
//!   a spec to its canonical name with every option's effective value, and
//!   prints one [`describe`](Registry::describe) layout for all registries.
//!
//! ```
//! use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options, Spec};
//!
//! #[derive(Debug, PartialEq)]
//! struct Halve { every: usize, factor: f64 }
//! impl Default for Halve {
//!     fn default() -> Self { Self { every: 10, factor: 0.5 } }
//! }
//! impl Options for Halve {
//!     fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
//!         v.option(OptionInfo::new("every", "period, in steps"), &mut self.every)?;
//!         v.option(OptionInfo::new("factor", "lr multiplier").aliases(&["gamma"]), &mut self.factor)
//!     }
//! }
//!
//! let mut spec: Spec = "halve:gamma=0.25".parse()?;
//! let mut cfg = Halve::default();
//! spec.apply(&mut cfg)?;
//! assert_eq!(cfg, Halve { every: 10, factor: 0.25 });
//! assert_eq!(Spec::from_config("halve", &mut cfg)?.to_string(), "halve:every=10,factor=0.25");
//! # Ok::<(), kiln_tensor::Error>(())
//! ```
use crate::{Error, Result};
use std::fmt;
use std::sync::Arc;

// ---------------------------------------------------------------------------
// Spec

/// A parsed spec: a component name and its `key=value` options, in order.
///
/// `Display` writes the canonical text (`name` or `name:k=v,k=v`), which
/// parses back to an equal spec; serde reads and writes it as that string.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The component name (`sgd`).
    pub name: String,
    options: Vec<(String, String)>,
    used: Vec<bool>,
}

/// Equal names and equal options in the same order (what was read is ignored).
impl PartialEq for Spec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.options == other.options
    }
}

impl Eq for Spec {}

impl std::str::FromStr for Spec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        let (name, rest) = match text.split_once(':') {
            Some((name, rest)) => (name.trim(), Some(rest)),
            None => (text, None),
        };
        if name.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "spec '{text}' has no name: write name or name:key=value,..."
            )));
        }
        let mut spec = Spec::new(name)?;
        for item in rest.into_iter().flat_map(|r| r.split(',')).map(str::trim) {
            if item.is_empty() {
                continue;
            }
            let Some((key, value)) = item.split_once('=') else {
                return Err(Error::InvalidArgument(format!(
                    "option '{item}' in spec '{text}' is not key=value"
                )));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "option '{item}' in spec '{text}' has no key"
                )));
            }
            if spec.contains(key) {
                return Err(Error::InvalidArgument(format!(
                    "option '{key}' is given twice in spec '{text}'"
                )));
            }
            spec.push(key, value.trim());
        }
        Ok(spec)
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (i, (k, v)) in self.options.iter().enumerate() {
            f.write_str(if i == 0 { ":" } else { "," })?;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Spec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Spec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Spec {
    /// A spec named `name` without options. Errors if the name is empty or
    /// holds `:` or `,` (it could not be written back as a spec).
    pub fn new(name: &str) -> Result<Self> {
        let name = name.trim();
        if name.is_empty() || name.contains([':', ',']) {
            return Err(Error::InvalidArgument(format!(
                "'{name}' cannot name a component: a name is non-empty and has no ':' or ','"
            )));
        }
        Ok(Self {
            name: name.to_string(),
            options: Vec::new(),
            used: Vec::new(),
        })
    }

    /// A spec named `name` with every option of `config` at its current value,
    /// in the order the config visits them.
    pub fn from_config(name: &str, config: &mut (impl Options + ?Sized)) -> Result<Self> {
        let mut spec = Spec::new(name)?;
        let mut writer = Writer { spec: &mut spec };
        config.options(&mut writer)?;
        Ok(spec)
    }

    fn push(&mut self, key: &str, value: &str) {
        self.options.push((key.to_string(), value.to_string()));
        self.used.push(false);
    }

    /// Sets option `key` to `value` (replacing it in place, or appending it).
    /// Errors if the key is empty or holds `=` or `,`, or if the value holds
    /// `,`: such a spec could not be written back as text.
    pub fn set(&mut self, key: &str, value: impl fmt::Display) -> Result<()> {
        let (key, value) = (key.trim(), value.to_string());
        let value = value.trim();
        if key.is_empty() || key.contains(['=', ',']) {
            return Err(Error::InvalidArgument(format!(
                "{}: '{key}' cannot be an option key (non-empty, without '=' or ',')",
                self.name
            )));
        }
        if value.contains(',') {
            return Err(Error::InvalidArgument(format!(
                "{}: option {key}={value}: a value cannot hold ',' (write lists as a;b;c)",
                self.name
            )));
        }
        match self.options.iter().position(|(k, _)| k == key) {
            Some(i) => {
                if let Some(slot) = self.options.get_mut(i) {
                    slot.1 = value.to_string();
                }
            }
            None => self.push(key, value),
        }
        Ok(())
    }

    /// Removes option `key`, returning its text.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.options.iter().position(|(k, _)| k == key)?;
        self.used.remove(i);
        Some(self.options.remove(i).1)
    }

    /// The text of option `key` (without marking it used).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The options as `(key, value)` text, in order.
    pub fn options(&self) -> impl Iterator<Item = (&str, &str)> {
        self.options.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether option `key` was given (without marking it used).
    pub fn contains(&self, key: &str) -> bool {
        self.options.iter().any(|(k, _)| k == key)
    }

    /// The raw text of option `key`, marking it used.
    pub fn raw(&mut self, key: &str) -> Option<String> {
        let i = self.options.iter().position(|(k, _)| k == key)?;
        if let Some(u) = self.used.get_mut(i) {
            *u = true;
        }
        self.options.get(i).map(|(_, v)| v.clone())
    }

    fn bad(&self, key: &str, value: &str, expected: &str) -> Error {
        bad_value(&self.name, key, value, expected)
    }

    /// Option `key` read as a `T` (any [`OptionValue`]), marking it used.
    pub fn value<T: OptionValue + Default>(&mut self, key: &str) -> Result<Option<T>> {
        let Some(text) = self.raw(key) else {
            return Ok(None);
        };
        let mut v = T::default();
        v.parse_text(&text)
            .map_err(|expected| self.bad(key, &text, &expected))?;
        Ok(Some(v))
    }

    /// Option `key` as an f64 (`1e-3`, `inf`, `-inf`, `nan` accepted as Rust parses them).
    pub fn f64(&mut self, key: &str) -> Result<Option<f64>> {
        self.value(key)
    }

    /// Option `key` as an i64.
    pub fn i64(&mut self, key: &str) -> Result<Option<i64>> {
        self.value(key)
    }

    /// Option `key` as a bool (`true`/`false`/`1`/`0`).
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>> {
        self.value(key)
    }

    /// Option `key` as one of `choices`.
    pub fn choice(&mut self, key: &str, choices: &[&str]) -> Result<Option<String>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) if choices.contains(&v.as_str()) => Ok(Some(v)),
            Some(v) => Err(self.bad(key, &v, &format!("one of {}", choices.join(", ")))),
        }
    }

    /// Option `key` as a list of f64 (`1;2;3` or `[1;2;3]`).
    pub fn f64_list(&mut self, key: &str) -> Result<Option<Vec<f64>>> {
        self.value(key)
    }

    /// Reads the spec's options into `config`: each option the config visits
    /// is looked up by its name or an alias and parsed into the field; absent
    /// ones keep the config's value, except required ones, which are an
    /// error. Then errors on options the config does not have, listing the
    /// ones it has ([`Spec::finish`]).
    pub fn apply(&mut self, config: &mut (impl Options + ?Sized)) -> Result<()> {
        let mut reader = Reader {
            spec: self,
            accepted: Vec::new(),
        };
        config.options(&mut reader)?;
        let accepted = reader.accepted;
        self.finish(&accepted)
    }

    /// Errors if an option was not read by the component, listing `accepted`
    /// (and the nearest accepted name to each unknown one).
    pub fn finish(&self, accepted: &[&str]) -> Result<()> {
        let unknown: Vec<&str> = self
            .options
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|((k, _), _)| k.as_str())
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(unknown_options(
            &self.name,
            &unknown,
            accepted.iter().copied(),
            accepted.iter().copied(),
        ))
    }
}

/// `NAME: option KEY=VALUE is not EXPECTED`.
fn bad_value(name: &str, key: &str, value: &str, expected: &str) -> Error {
    Error::InvalidArgument(format!("{name}: option {key}={value} is not {expected}"))
}

/// `NAME: unknown option(s) a (did you mean b?), c; accepted: ...`; the
/// suggestions come from `candidates` (names and aliases), the list from `accepted`.
fn unknown_options<'a>(
    name: &str,
    unknown: &[&str],
    candidates: impl Iterator<Item = &'a str> + Clone,
    accepted: impl Iterator<Item = &'a str>,
) -> Error {
    let unknown: Vec<String> = unknown
        .iter()
        .map(|u| match suggest(u, candidates.clone()) {
            Some(s) => format!("{u} (did you mean {s}?)"),
            None => (*u).to_string(),
        })
        .collect();
    let accepted: Vec<&str> = accepted.collect();
    let accepted = if accepted.is_empty() {
        "none".to_string()
    } else {
        accepted.join(", ")
    };
    Error::InvalidArgument(format!(
        "{name}: unknown option(s) {}; accepted: {accepted}",
        unknown.join(", ")
    ))
}

/// The candidate nearest to `word` if it is near enough to be a likely typo
/// or another spelling: equal ignoring case, within a small edit distance,
/// or one containing the other (`smoothing` → `label_smoothing`).
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let w = word.to_lowercase();
    let budget = (w.chars().count() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        let lc = c.to_lowercase();
        let d = if lc == w {
            0
        } else {
            let d = edit_distance(&w, &lc);
            let contains = (w.len() >= 4 && lc.contains(&w)) || (lc.len() >= 4 && w.contains(&lc));
            if d <= budget {
                d
            } else if contains {
                budget + 1
            } else {
                continue;
            }
        };
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Edit distance over chars counting a swap of neighbours as one edit
/// (optimal string alignment), so `stesp` is one edit from `steps`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    let at = |i: usize, j: usize| i * w + j;
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            let v = if i == 0 || j == 0 {
                i + j
            } else {
                let same = a.get(i - 1) == b.get(j - 1);
                let get = |i, j| d.get(at(i, j)).copied().unwrap_or(usize::MAX - 1);
                let mut v = (get(i - 1, j) + 1)
                    .min(get(i, j - 1) + 1)
                    .min(get(i - 1, j - 1) + usize::from(!same));
                if i > 1 && j > 1 && a.get(i - 1) == b.get(j - 2) && a.get(i - 2) == b.get(j - 1) {
                    v = v.min(get(i - 2, j - 2) + 1);
                }
                v
            };
            if let Some(slot) = d.get_mut(at(i, j)) {
                *slot = v;
            }
        }
    }
    d.last().copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Values

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

// ---------------------------------------------------------------------------
// Options

/// How a config names, documents and constrains one option for an
/// [`OptionVisitor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionInfo {
    /// The canonical key (`t_max`).
    pub name: &'static str,
    /// Other accepted keys, e.g. PyTorch's argument name (`T_max`).
    pub aliases: &'static [&'static str],
    /// One line on what it does.
    pub help: &'static str,
    /// Whether a spec must give it (no default).
    pub required: bool,
}

impl OptionInfo {
    /// An optional option `name` described by `help`.
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            aliases: &[],
            help,
            required: false,
        }
    }

    /// The same option, also accepted under `aliases`.
    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    /// The same option, without a default: a spec must give it.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

/// Receives a config's options one by one (see [`Options`]).
pub trait OptionVisitor {
    /// One option: how it is named and documented, and the field holding it.
    fn option(&mut self, info: OptionInfo, value: &mut dyn OptionValue) -> Result<()>;
}

/// A config whose fields are spec options: it visits each field once, in
/// the order specs list them. Reading a spec ([`Spec::apply`]), writing one
/// ([`Spec::from_config`]) and documenting the options with the config's
/// current values as defaults ([`OptionDoc::collect`]) all come from this one
/// visit.
pub trait Options {
    /// Calls `visitor.option(info, &mut field)` for each option.
    fn options(&mut self, visitor: &mut dyn OptionVisitor) -> Result<()>;
}

/// Reads a spec into the visited fields.
struct Reader<'s> {
    spec: &'s mut Spec,
    accepted: Vec<&'static str>,
}

impl OptionVisitor for Reader<'_> {
    fn option(&mut self, info: OptionInfo, value: &mut dyn OptionValue) -> Result<()> {
        self.accepted.push(info.name);
        let mut given = std::iter::once(info.name)
            .chain(info.aliases.iter().copied())
            .filter(|k| self.spec.contains(k));
        let Some(key) = given.next() else {
            if info.required {
                return Err(Error::InvalidArgument(format!(
                    "{}: option {} is required",
                    self.spec.name, info.name
                )));
            }
            return Ok(());
        };
        if let Some(other) = given.next() {
            return Err(Error::InvalidArgument(format!(
                "{}: option {} is given twice (as {key} and {other})",
                self.spec.name, info.name
            )));
        }
        let text = self.spec.raw(key).unwrap_or_default();
        value
            .parse_text(&text)
            .map_err(|expected| self.spec.bad(key, &text, &expected))
    }
}

/// Writes the visited fields into a spec.
struct Writer<'s> {
    spec: &'s mut Spec,
}

impl OptionVisitor for Writer<'_> {
    fn option(&mut self, info: OptionInfo, value: &mut dyn OptionValue) -> Result<()> {
        self.spec.set(info.name, value.format_text())
    }
}

/// Documents the visited fields.
struct Collector {
    docs: Vec<OptionDoc>,
}

impl OptionVisitor for Collector {
    fn option(&mut self, info: OptionInfo, value: &mut dyn OptionValue) -> Result<()> {
        self.docs.push(OptionDoc {
            name: info.name.to_string(),
            aliases: info.aliases.iter().map(|a| a.to_string()).collect(),
            help: info.help.to_string(),
            default: (!info.required).then(|| value.format_text()),
            value: value.clone_value(),
        });
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Registry

/// One option of a registry entry: its key, aliases, default and help, and
/// its type (to check and normalise values before any builder runs).
pub struct OptionDoc {
    /// The canonical key (`t_max`).
    pub name: String,
    /// Other accepted keys (`T_max`).
    pub aliases: Vec<String>,
    /// One line on what it does.
    pub help: String,
    /// The default as spec text, `None` when the option is required.
    pub default: Option<String>,
    value: Box<dyn OptionValue>,
}

impl Clone for OptionDoc {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            aliases: self.aliases.clone(),
            help: self.help.clone(),
            default: self.default.clone(),
            value: self.value.clone_value(),
        }
    }
}

impl fmt::Debug for OptionDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionDoc")
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .field("help", &self.help)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl OptionDoc {
    /// An option `name` whose default is `default` (its type is the option's type).
    pub fn new(name: &str, default: impl OptionValue + Clone + 'static, help: &str) -> Self {
        Self {
            name: name.to_string(),
            aliases: Vec::new(),
            help: help.to_string(),
            default: Some(default.format_text()),
            value: Box::new(default),
        }
    }

    /// A required option `name` of the type of `example`.
    pub fn required(name: &str, example: impl OptionValue + Clone + 'static, help: &str) -> Self {
        Self {
            default: None,
            ..Self::new(name, example, help)
        }
    }

    /// The same option, also accepted as `alias`.
    pub fn alias(mut self, alias: &str) -> Self {
        self.aliases.push(alias.to_string());
        self
    }

    /// The options `config` visits, with its current values as defaults.
    /// An error the config's [`Options::options`] raises itself ends the list there.
    pub fn collect(config: &mut (impl Options + ?Sized)) -> Vec<OptionDoc> {
        let mut c = Collector { docs: Vec::new() };
        // The collector never fails; a config that fails on its own is documented up to there.
        let _ = config.options(&mut c);
        c.docs
    }

    /// Whether `key` is this option's name or one of its aliases.
    pub fn matches(&self, key: &str) -> bool {
        self.name == key || self.aliases.iter().any(|a| a == key)
    }

    /// `text` checked against the option's type and written canonically
    /// (`1e-3` → `0.001`, `1` → `true` for a boolean); on failure, what was expected.
    pub fn normalise(&self, text: &str) -> std::result::Result<String, String> {
        let mut v = self.value.clone_value();
        v.parse_text(text)?;
        Ok(v.format_text())
    }
}

/// A registered component: canonical kebab-case name, aliases, a one-line
/// summary, its options and its builder. `B` is the builder's type, e.g.
/// `dyn Fn(&mut Spec) -> Result<Box<dyn Loss>> + Send + Sync` for losses.
pub struct Entry<B: ?Sized> {
    /// The canonical name, kebab-case (`cross-entropy`).
    pub name: String,
    /// Other accepted names, e.g. PyTorch's class name (`CrossEntropyLoss`).
    pub aliases: Vec<String>,
    /// One line on what the component is.
    pub summary: String,
    /// Its options, in the order resolved specs list them.
    pub options: Vec<OptionDoc>,
    /// Builds the component from a resolved spec (canonical name and keys,
    /// every option present with a checked value).
    pub build: Arc<B>,
}

impl<B: ?Sized> Clone for Entry<B> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            aliases: self.aliases.clone(),
            summary: self.summary.clone(),
            options: self.options.clone(),
            build: Arc::clone(&self.build),
        }
    }
}

impl<B: ?Sized> fmt::Debug for Entry<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .field("summary", &self.summary)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<B: ?Sized> Entry<B> {
    /// An entry without options or aliases.
    pub fn new(name: &str, summary: &str, build: Arc<B>) -> Self {
        Self {
            name: name.to_string(),
            aliases: Vec::new(),
            summary: summary.to_string(),
            options: Vec::new(),
            build,
        }
    }

    /// The same entry, also found as `alias`.
    pub fn alias(mut self, alias: &str) -> Self {
        self.aliases.push(alias.to_string());
        self
    }

    /// The same entry with each of `aliases`.
    pub fn aliases(self, aliases: &[&str]) -> Self {
        aliases.iter().fold(self, |e, a| e.alias(a))
    }

    /// The same entry with one more option.
    pub fn option(mut self, doc: OptionDoc) -> Self {
        self.options.push(doc);
        self
    }

    /// The same entry with the options `config` visits, documented with its
    /// current values as defaults (pass the config's `Default`).
    pub fn options_of(mut self, config: &mut (impl Options + ?Sized)) -> Self {
        self.options.extend(OptionDoc::collect(config));
        self
    }

    /// Whether `name` is the entry's name or one of its aliases.
    pub fn matches(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|a| a == name)
    }
}

/// Something that exists under a name but is built from code, not from a
/// spec (schedulers taking closures): listed by [`Registry::describe`] and
/// named in the error for its name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CodeOnly {
    name: String,
    aliases: Vec<String>,
    summary: String,
}

/// Components by spec: the one registry type of kiln (losses, optimizers,
/// schedulers, models). `B` is the builder type of its entries; each crate
/// calls the builder of the entry [`Registry::prepare`] returns with its own
/// arguments (parameters, an optimizer…).
pub struct Registry<B: ?Sized> {
    kind: String,
    title: String,
    entries: Vec<Entry<B>>,
    code_only: Vec<CodeOnly>,
}

impl<B: ?Sized> Clone for Registry<B> {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind.clone(),
            title: self.title.clone(),
            entries: self.entries.clone(),
            code_only: self.code_only.clone(),
        }
    }
}

impl<B: ?Sized> fmt::Debug for Registry<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("kind", &self.kind)
            .field("names", &self.names())
            .finish_non_exhaustive()
    }
}

impl<B: ?Sized> Registry<B> {
    /// An empty registry of `kind` (`loss`, used in errors: "unknown loss
    /// 'x'") titled `title` (`Losses`, the heading of [`Registry::describe`]).
    pub fn new(kind: &str, title: &str) -> Self {
        Self {
            kind: kind.to_string(),
            title: title.to_string(),
            entries: Vec::new(),
            code_only: Vec::new(),
        }
    }

    /// What the registry holds (`loss`).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Adds `entry`, replacing an entry of the same name (in its place).
    pub fn register(&mut self, entry: Entry<B>) {
        self.code_only.retain(|c| c.name != entry.name);
        match self.entries.iter_mut().find(|e| e.name == entry.name) {
            Some(slot) => *slot = entry,
            None => self.entries.push(entry),
        }
    }

    /// Names something built from code only (a scheduler taking a closure):
    /// [`Registry::describe`] lists it and a spec naming it gets an error
    /// that says so.
    pub fn register_code_only(&mut self, name: &str, aliases: &[&str], summary: &str) {
        self.code_only.retain(|c| c.name != name);
        self.code_only.push(CodeOnly {
            name: name.to_string(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            summary: summary.to_string(),
        });
    }

    /// The canonical names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// The entries, in registration order.
    pub fn entries(&self) -> &[Entry<B>] {
        &self.entries
    }

    /// The entry named `name` or, failing that, having it as an alias.
    pub fn get(&self, name: &str) -> Option<&Entry<B>> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .or_else(|| self.entries.iter().find(|e| e.matches(name)))
    }

    /// The entry for `name`, or an error naming the accepted names (and the
    /// nearest one).
    pub fn lookup(&self, name: &str) -> Result<&Entry<B>> {
        if let Some(e) = self.get(name) {
            return Ok(e);
        }
        let kind = &self.kind;
        let accepted = self.names().join(", ");
        if let Some(c) = self
            .code_only
            .iter()
            .find(|c| c.name == name || c.aliases.iter().any(|a| a == name))
        {
            return Err(Error::InvalidArgument(format!(
                "{kind} '{name}' is built from code, not from a spec string ({}); accepted: {accepted}",
                c.summary
            )));
        }
        let candidates = self.entries.iter().flat_map(|e| {
            std::iter::once(e.name.as_str()).chain(e.aliases.iter().map(String::as_str))
        });
        let hint = suggest(name, candidates)
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        Err(Error::InvalidArgument(format!(
            "unknown {kind} '{name}'{hint}; accepted: {accepted}"
        )))
    }

    /// The entry `spec` names and the spec resolved against it (see
    /// [`Registry::resolve`]): what a builder receives. Unknown names and
    /// options, bad values and missing required options are errors here,
    /// before any builder runs.
    pub fn prepare(&self, spec: &Spec) -> Result<(&Entry<B>, Spec)> {
        let entry = self.lookup(&spec.name)?;
        let mut given: Vec<Option<(&str, &str)>> = vec![None; entry.options.len()];
        let mut unknown = Vec::new();
        for (key, value) in spec.options() {
            match entry.options.iter().position(|o| o.matches(key)) {
                Some(i) => {
                    if let Some(Some((first, _))) = given.get(i) {
                        return Err(Error::InvalidArgument(format!(
                            "{}: option {} is given twice (as {first} and {key})",
                            entry.name,
                            entry.options.get(i).map_or("", |o| o.name.as_str())
                        )));
                    }
                    if let Some(slot) = given.get_mut(i) {
                        *slot = Some((key, value));
                    }
                }
                None => unknown.push(key),
            }
        }
        if !unknown.is_empty() {
            let candidates = entry.options.iter().flat_map(|o| {
                std::iter::once(o.name.as_str()).chain(o.aliases.iter().map(String::as_str))
            });
            return Err(unknown_options(
                &entry.name,
                &unknown,
                candidates,
                entry.options.iter().map(|o| o.name.as_str()),
            ));
        }
        let mut out = Spec::new(&entry.name)?;
        for (doc, given) in entry.options.iter().zip(given) {
            let text = match (given, &doc.default) {
                (Some((key, value)), _) => doc
                    .normalise(value)
                    .map_err(|expected| bad_value(&entry.name, key, value, &expected))?,
                (None, Some(default)) => default.clone(),
                (None, None) => {
                    return Err(Error::InvalidArgument(format!(
                        "{}: option {} is required",
                        entry.name, doc.name
                    )))
                }
            };
            out.push(&doc.name, &text);
        }
        Ok((entry, out))
    }

    /// `spec` resolved: the canonical name, then every option of the entry
    /// in its declared order with its effective value (the one given, or the
    /// default), written canonically. The text can be pasted back: building
    /// from it gives the same component, and resolving it again gives it
    /// back unchanged. Values the builder derives from its arguments (a
    /// scheduler's total steps) stay as the entry writes them (`none`).
    pub fn resolve(&self, spec: &Spec) -> Result<Spec> {
        self.prepare(spec).map(|(_, s)| s)
    }

    /// Every entry, its aliases, summary and options with their defaults:
    /// the listing `kiln losses`, `kiln optimizers` and `kiln schedulers` print.
    ///
    /// ```text
    /// Losses (spec: NAME[:key=value,...]; ...)
    ///
    /// cross-entropy (CrossEntropyLoss)
    ///     log-softmax + negative log-likelihood
    ///     weight=none                 per-class weights, ;-separated (C values)
    /// ```
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{} (spec: NAME[:key=value,...]; lists as a;b;c; PyTorch's class and argument names work too)\n",
            self.title
        );
        let header = |name: &str, aliases: &[String]| {
            if aliases.is_empty() {
                name.to_string()
            } else {
                format!("{name} ({})", aliases.join(", "))
            }
        };
        for e in &self.entries {
            out.push('\n');
            out.push_str(&header(&e.name, &e.aliases));
            out.push('\n');
            out.push_str(&format!("    {}\n", e.summary));
            for o in &e.options {
                let lhs = match &o.default {
                    Some(d) => format!("{}={d}", o.name),
                    None => format!("{} (required)", o.name),
                };
                let also = if o.aliases.is_empty() {
                    String::new()
                } else {
                    format!(" (also {})", o.aliases.join(", "))
                };
                let pad = 28usize.saturating_sub(lhs.chars().count()).max(2);
                out.push_str(&format!("    {lhs}{}{}{also}\n", " ".repeat(pad), o.help));
            }
        }
        if !self.code_only.is_empty() {
            out.push_str("\nBuilt from code only (no spec string):\n");
            for c in &self.code_only {
                out.push_str(&format!(
                    "    {}  {}\n",
                    header(&c.name, &c.aliases),
                    c.summary
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Build = dyn Fn(&mut Spec) -> Result<String> + Send + Sync;

    fn msg<T: fmt::Debug>(r: Result<T>) -> String {
        match r {
            Ok(v) => format!("unexpectedly Ok: {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn spec(text: &str) -> Spec {
        text.parse().unwrap_or_else(|_| Spec {
            name: format!("unparsable {text}"),
            options: vec![],
            used: vec![],
        })
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Mode {
        Min,
        Max,
    }
    crate::choices!(Mode { Min = "min", Max = "max" });

    #[derive(Debug, Clone, PartialEq)]
    struct Cfg {
        lr: f64,
        steps: usize,
        nesterov: bool,
        t_max: Option<usize>,
        betas: (f64, f64),
        weight: Option<Vec<f64>>,
        mode: Mode,
        milestones: Vec<usize>,
    }

    impl Default for Cfg {
        fn default() -> Self {
            Self {
                lr: 1e-3,
                steps: 0,
                nesterov: false,
                t_max: None,
                betas: (0.9, 0.999),
                weight: None,
                mode: Mode::Min,
                milestones: vec![],
            }
        }
    }

    impl Options for Cfg {
        fn options(&mut self, v: &mut dyn OptionVisitor) -> Result<()> {
            v.option(OptionInfo::new("lr", "learning rate"), &mut self.lr)?;
            v.option(
                OptionInfo::new("steps", "steps").required(),
                &mut self.steps,
            )?;
            v.option(OptionInfo::new("nesterov", "nesterov"), &mut self.nesterov)?;
            v.option(
                OptionInfo::new("t_max", "period").aliases(&["T_max"]),
                &mut self.t_max,
            )?;
            v.option(OptionInfo::new("betas", "betas"), &mut self.betas)?;
            v.option(OptionInfo::new("weight", "weights"), &mut self.weight)?;
            v.option(OptionInfo::new("mode", "min | max"), &mut self.mode)?;
            v.option(OptionInfo::new("milestones", "when"), &mut self.milestones)
        }
    }

    fn registry() -> Registry<Build> {
        let mut r: Registry<Build> = Registry::new("thing", "Things");
        let build: Arc<Build> = Arc::new(|s: &mut Spec| {
            let mut c = Cfg::default();
            s.apply(&mut c)?;
            Ok(format!("{c:?}"))
        });
        r.register(
            Entry::new("demo-thing", "a demo", build)
                .alias("DemoThing")
                .options_of(&mut Cfg::default()),
        );
        r.register(Entry::new(
            "plain",
            "no options",
            Arc::new(|_: &mut Spec| Ok("plain".to_string())) as Arc<Build>,
        ));
        r.register_code_only("lambda", &["LambdaLR"], "needs a closure");
        r
    }

    fn build(r: &Registry<Build>, text: &str) -> Result<String> {
        let (entry, mut s) = r.prepare(&text.parse()?)?;
        (entry.build)(&mut s)
    }

    #[test]
    fn parses_names_options_and_lists() {
        let mut s = spec("sgd:lr=1e-3, momentum=0.9,nesterov=true,weight=[1;2.5]");
        assert_eq!(s.name, "sgd");
        assert_eq!(s.f64("lr").ok().flatten(), Some(1e-3));
        assert_eq!(s.f64("momentum").ok().flatten(), Some(0.9));
        assert_eq!(s.bool("nesterov").ok().flatten(), Some(true));
        assert_eq!(s.f64_list("weight").ok().flatten(), Some(vec![1.0, 2.5]));
        assert_eq!(s.f64("dampening").ok().flatten(), None);
        assert!(s.finish(&["lr"]).is_ok());
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(msg(":lr=1".parse::<Spec>()).contains("has no name"));
        assert!(msg("sgd:lr".parse::<Spec>()).contains("'lr' in spec 'sgd:lr' is not key=value"));
        assert!(msg("sgd:lr=1,lr=2".parse::<Spec>()).contains("given twice"));
        let mut s = spec("adam:lr=x,foo=1");
        assert_eq!(msg(s.f64("lr")), "adam: option lr=x is not a number");
        assert_eq!(
            msg(s.finish(&["lr", "betas"])),
            "adam: unknown option(s) foo; accepted: lr, betas"
        );
        let s = spec("adam:mommentum=1");
        assert_eq!(
            msg(s.finish(&["lr", "momentum"])),
            "adam: unknown option(s) mommentum (did you mean momentum?); accepted: lr, momentum"
        );
    }

    #[test]
    fn set_display_and_serde_round_trip() -> Result<()> {
        let mut s: Spec = "sgd".parse()?;
        assert_eq!(s.to_string(), "sgd");
        s.set("lr", 0.5)?;
        s.set("momentum", "0.9")?;
        s.set("lr", py_float(1e-8))?;
        assert_eq!(s.to_string(), "sgd:lr=1e-08,momentum=0.9");
        assert_eq!(s.get("lr"), Some("1e-08"));
        assert_eq!(s.to_string().parse::<Spec>()?, s);
        assert!(s.set("bad,key", 1).is_err() && s.set("k", "1,2").is_err());
        assert_eq!(s.remove("momentum").as_deref(), Some("0.9"));
        assert_eq!(s.to_string(), "sgd:lr=1e-08");
        let json = serde_json::to_string(&s).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        assert_eq!(json, "\"sgd:lr=1e-08\"");
        let back: Spec =
            serde_json::from_str(&json).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        assert_eq!(back, s);
        assert!(serde_json::from_str::<Spec>("\":x=1\"").is_err());
        assert!(Spec::new("a:b").is_err() && Spec::new("").is_err());
        Ok(())
    }

    #[test]
    fn values_read_and_write_canonically() {
        let norm = |mut v: Box<dyn OptionValue>, t: &str| -> std::result::Result<String, String> {
            v.parse_text(t)?;
            Ok(v.format_text())
        };
        assert_eq!(norm(Box::new(0.0f64), "1e-3"), Ok("0.001".into()));
        assert_eq!(norm(Box::new(0.0f64), "1e-8"), Ok("1e-08".into()));
        assert_eq!(norm(Box::new(0.0f64), "-inf"), Ok("-inf".into()));
        assert_eq!(norm(Box::new(0.0f64), "x"), Err("a number".into()));
        assert_eq!(norm(Box::new(false), "1"), Ok("true".into()));
        assert_eq!(
            norm(Box::new(0usize), "-1"),
            Err("a non-negative integer".into())
        );
        assert_eq!(norm(Box::new(None::<usize>), "none"), Ok("none".into()));
        assert_eq!(norm(Box::new(None::<usize>), "7"), Ok("7".into()));
        assert_eq!(
            norm(Box::new(None::<usize>), "x"),
            Err("none or a non-negative integer".into())
        );
        assert_eq!(
            norm(Box::new((0.0, 0.0)), "[0.8; 0.99]"),
            Ok("0.8;0.99".into())
        );
        assert_eq!(
            norm(Box::new((0.0, 0.0)), "0.8"),
            Err("2 values written a;b".into())
        );
        assert_eq!(
            norm(Box::new((None::<f64>, 0.0)), "none;1e-3"),
            Ok("none;0.001".into())
        );
        assert_eq!(norm(Box::new(Vec::<f64>::new()), "[]"), Ok("[]".into()));
        assert_eq!(
            norm(Box::new(Vec::<f64>::new()), "1;2"),
            Ok("1.0;2.0".into())
        );
        assert_eq!(
            norm(Box::new(Vec::<f64>::new()), "1;x"),
            Err("a ;-separated list of numbers".into())
        );
        assert_eq!(norm(Box::new(Mode::Min), "max"), Ok("max".into()));
        assert_eq!(
            norm(Box::new(Mode::Min), "mid"),
            Err("one of min, max".into())
        );
        for v in [
            0.1,
            1e-300,
            123456789012345680.0,
            -2.5e-7,
            3.0,
            f64::MIN_POSITIVE,
        ] {
            assert_eq!(py_float(v).parse::<f64>().ok(), Some(v), "{v}");
        }
        assert_eq!(py_float(1e16), "1e+16");
        assert_eq!(py_float(-0.0), "-0.0");
    }

    #[test]
    fn apply_reads_fields_aliases_and_checks_required() -> Result<()> {
        let mut c = Cfg::default();
        spec("demo:steps=3,T_max=9,betas=0.5;0.6,weight=1;2,mode=max,milestones=[2;5]")
            .apply(&mut c)?;
        assert_eq!(
            c,
            Cfg {
                steps: 3,
                t_max: Some(9),
                betas: (0.5, 0.6),
                weight: Some(vec![1.0, 2.0]),
                mode: Mode::Max,
                milestones: vec![2, 5],
                ..Cfg::default()
            }
        );
        assert_eq!(
            msg(spec("demo").apply(&mut Cfg::default())),
            "demo: option steps is required"
        );
        assert_eq!(
            msg(spec("demo:steps=1,t_max=1,T_max=2").apply(&mut Cfg::default())),
            "demo: option t_max is given twice (as t_max and T_max)"
        );
        assert_eq!(
            msg(spec("demo:steps=1,stesp=2").apply(&mut Cfg::default())),
            "demo: unknown option(s) stesp (did you mean steps?); accepted: lr, steps, nesterov, t_max, betas, weight, mode, milestones"
        );
        let mut c = Cfg {
            steps: 4,
            ..Cfg::default()
        };
        let written = Spec::from_config("demo", &mut c)?;
        assert_eq!(
            written.to_string(),
            "demo:lr=0.001,steps=4,nesterov=false,t_max=none,betas=0.9;0.999,weight=none,mode=min,milestones=[]"
        );
        let mut back = Cfg::default();
        written.clone().apply(&mut back)?;
        assert_eq!(back, c);
        Ok(())
    }

    #[test]
    fn docs_come_from_the_config() {
        let docs = OptionDoc::collect(&mut Cfg::default());
        let lines: Vec<String> = docs
            .iter()
            .map(|d| format!("{}={}", d.name, d.default.as_deref().unwrap_or("REQUIRED")))
            .collect();
        assert_eq!(
            lines,
            [
                "lr=0.001",
                "steps=REQUIRED",
                "nesterov=false",
                "t_max=none",
                "betas=0.9;0.999",
                "weight=none",
                "mode=min",
                "milestones=[]"
            ]
        );
        assert_eq!(
            docs.get(3).map(|d| d.aliases.clone()),
            Some(vec!["T_max".to_string()])
        );
    }

    #[test]
    fn registry_finds_by_name_or_alias_and_resolves() -> Result<()> {
        let r = registry();
        assert_eq!(r.names(), ["demo-thing", "plain"]);
        let resolved = r.resolve(&"DemoThing:T_max=5,steps=2,lr=1e-2,nesterov=1".parse()?)?;
        assert_eq!(
            resolved.to_string(),
            "demo-thing:lr=0.01,steps=2,nesterov=true,t_max=5,betas=0.9;0.999,weight=none,mode=min,milestones=[]"
        );
        // Idempotent, and building from it gives the same component.
        assert_eq!(r.resolve(&resolved)?, resolved);
        assert_eq!(
            build(&r, "DemoThing:T_max=5,steps=2,lr=1e-2,nesterov=1")?,
            build(&r, &resolved.to_string())?
        );
        assert_eq!(r.resolve(&"plain".parse()?)?.to_string(), "plain");
        Ok(())
    }

    #[test]
    fn registry_errors_come_before_the_builder() {
        let r = registry();
        assert_eq!(
            msg(build(&r, "demo-thng")),
            "unknown thing 'demo-thng' (did you mean 'demo-thing'?); accepted: demo-thing, plain"
        );
        assert_eq!(
            msg(build(&r, "demothing")),
            "unknown thing 'demothing' (did you mean 'DemoThing'?); accepted: demo-thing, plain"
        );
        assert_eq!(
            msg(build(&r, "warp")),
            "unknown thing 'warp'; accepted: demo-thing, plain"
        );
        assert_eq!(
            msg(build(&r, "LambdaLR")),
            "thing 'LambdaLR' is built from code, not from a spec string (needs a closure); accepted: demo-thing, plain"
        );
        assert_eq!(
            msg(build(&r, "demo-thing:steps=1,tmax=3,foo=1")),
            "demo-thing: unknown option(s) tmax (did you mean t_max?), foo; accepted: lr, steps, nesterov, t_max, betas, weight, mode, milestones"
        );
        assert_eq!(
            msg(build(&r, "plain:x=1")),
            "plain: unknown option(s) x; accepted: none"
        );
        assert_eq!(
            msg(build(&r, "demo-thing:steps=x")),
            "demo-thing: option steps=x is not a non-negative integer"
        );
        assert_eq!(
            msg(build(&r, "demo-thing:lr=0.1")),
            "demo-thing: option steps is required"
        );
        assert_eq!(
            msg(build(&r, "demo-thing:steps=1,t_max=1,T_max=2")),
            "demo-thing: option t_max is given twice (as t_max and T_max)"
        );
    }

    #[test]
    fn register_replaces_and_describe_has_one_layout() {
        let mut r = registry();
        r.register(
            Entry::new(
                "plain",
                "replaced",
                Arc::new(|_: &mut Spec| Ok("new".to_string())) as Arc<Build>,
            )
            .option(OptionDoc::new("k", 2usize, "a count").alias("K"))
            .option(OptionDoc::required("who", String::new(), "a name")),
        );
        assert_eq!(r.names(), ["demo-thing", "plain"]);
        assert_eq!(
            msg(build(&r, "plain:who=me,K=x")),
            "plain: option K=x is not a non-negative integer"
        );
        assert_eq!(build(&r, "plain:who=me").ok().as_deref(), Some("new"));
        let text = r.describe();
        assert!(
            text.starts_with("Things (spec: NAME[:key=value,...]"),
            "{text}"
        );
        for want in [
            "\ndemo-thing (DemoThing)\n    a demo\n",
            "    lr=0.001                    learning rate\n",
            "    steps (required)            steps\n",
            "    t_max=none                  period (also T_max)\n",
            "\nplain\n    replaced\n    k=2                         a count (also K)\n",
            "    who (required)              a name\n",
            "Built from code only (no spec string):\n    lambda (LambdaLR)  needs a closure\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn suggestions() {
        let c = [
            "cross-entropy",
            "CrossEntropyLoss",
            "label_smoothing",
            "adam",
            "adamw",
        ];
        assert_eq!(suggest("cross-entropi", c), Some("cross-entropy"));
        assert_eq!(suggest("crossentropyloss", c), Some("CrossEntropyLoss"));
        assert_eq!(suggest("smoothing", c), Some("label_smoothing"));
        assert_eq!(suggest("adamm", c), Some("adam"));
        assert_eq!(suggest("sgd", c), None);
        assert_eq!(edit_distance("stesp", "steps"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
