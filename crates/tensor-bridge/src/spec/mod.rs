//! Component specs (`name` or `name:key=value,key=value`) and the one
//! registry type that names components by them.
//!
//! The CLI names losses, optimizers, schedulers (and models) this way
//! (`sgd:lr=1e-3,momentum=0.9`, `cross-entropy:label_smoothing=0.1`). A list
//! value is written with `;` between items (`weight=1;2;0.5`) or in brackets
//! (`betas=[0.9;0.999]`).
//!
//! **Brackets group** — the one quoting rule, for every spec and every value
//! (see [`split_outside_brackets`] and [`unbracket`]): `,` ends an option and
//! `;` ends a list item only outside square brackets, and brackets nest. Any
//! value or list item may be written inside one pair of brackets that enclose
//! all of it; it reads as the text inside. So a value can hold `,` or `;`:
//!
//! - `tensors:path=[data/a,b.safetensors]`: the path `data/a,b.safetensors`;
//! - `sequential:schedulers=[linear:start_factor=0.1,total_iters=5;cosine:t_max=10],milestones=5`:
//!   a list of two specs, the first holding `,`; a spec inside such a list
//!   that holds `;` itself is bracketed in turn (`[adam:betas=0.9;0.95]`);
//! - `milestones=[]` is the empty list, `[0.5]` is `0.5`, and `[none]` is
//!   the text `none` where `none` alone would mean "no value".
//!
//! Printing ([`Spec`]'s `Display`, [`OptionValue::format_text`]) brackets
//! exactly what needs it (a value holding `,` outside brackets, a list item
//! holding `;`, a text that is itself wholly bracketed), so printed specs
//! parse back to equal specs and a resolved spec stays a fixed point.
//! Brackets inside a value must pair up; that is the one thing a value cannot
//! hold.
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
//! ```no_run
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

mod brackets;
mod options;
mod registry;
#[cfg(test)]
mod tests;
mod value;

use brackets::{balanced, bracket_for};
pub use brackets::{split_outside_brackets, unbracket};
pub use options::{OptionInfo, OptionVisitor, Options};
use options::{Reader, Writer};
pub use registry::{Entry, OptionDoc, Registry};
pub use value::{py_float, Choice, CloneOptionValue, ListItem, OptionValue};

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
        let items = match rest {
            Some(rest) => split_outside_brackets(rest, ',')
                .map_err(|e| Error::InvalidArgument(format!("spec '{text}': {e}")))?,
            None => Vec::new(),
        };
        for item in items {
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
            if key.contains(['[', ']']) {
                return Err(Error::InvalidArgument(format!(
                    "option '{item}' in spec '{text}': brackets go around values, not keys"
                )));
            }
            if spec.contains(key) {
                return Err(Error::InvalidArgument(format!(
                    "option '{key}' is given twice in spec '{text}'"
                )));
            }
            spec.push(key, value.trim())?;
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
    /// holds `:`, `,`, `;` or brackets (it could not be written back as a
    /// spec, alone or in a list).
    pub fn new(name: &str) -> Result<Self> {
        let name = name.trim();
        if name.is_empty() || name.contains([':', ',', ';', '[', ']']) {
            return Err(Error::InvalidArgument(format!(
                "'{name}' cannot name a component: a name is non-empty and has no ':', ',', ';', '[' or ']'"
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

    /// Appends option `key` with the spec text `value` (bracketed if it
    /// holds `,`); errors on unbalanced brackets.
    pub(crate) fn push(&mut self, key: &str, value: &str) -> Result<()> {
        let value = self.slot_text(key, value)?;
        self.options.push((key.to_string(), value));
        self.used.push(false);
        Ok(())
    }

    /// `value` as it is stored and printed after `key=`: in brackets if it
    /// holds `,` outside brackets (the bracket rule of the module docs).
    fn slot_text(&self, key: &str, value: &str) -> Result<String> {
        if !balanced(value) {
            return Err(Error::InvalidArgument(format!(
                "{}: option {key}={value}: brackets in a value must pair up ([ and ] group text holding ',' or ';')",
                self.name
            )));
        }
        Ok(bracket_for(value, ','))
    }

    /// Sets option `key` to the spec text `value` (replacing it in place, or
    /// appending it); a value holding `,` is stored in brackets, so it reads
    /// back the same. Errors if the key is empty or holds `=`, `,` or
    /// brackets, or if the value's brackets do not pair up: such a spec could
    /// not be written back as text.
    pub fn set(&mut self, key: &str, value: impl fmt::Display) -> Result<()> {
        let (key, value) = (key.trim(), value.to_string());
        let value = value.trim();
        if key.is_empty() || key.contains(['=', ',', '[', ']']) {
            return Err(Error::InvalidArgument(format!(
                "{}: '{key}' cannot be an option key (non-empty, without '=', ',' or brackets)",
                self.name
            )));
        }
        match self.options.iter().position(|(k, _)| k == key) {
            Some(i) => {
                let value = self.slot_text(key, value)?;
                if let Some(slot) = self.options.get_mut(i) {
                    slot.1 = value;
                }
                Ok(())
            }
            None => self.push(key, value),
        }
    }

    /// Removes option `key`, returning its text.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.options.iter().position(|(k, _)| k == key)?;
        self.used.remove(i);
        Some(self.options.remove(i).1)
    }

    /// The spec text of option `key` (without marking it used), brackets
    /// kept: `[a,b]` for a value holding `,` ([`unbracket`] or
    /// [`Spec::value`] read it).
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

    /// The spec text of option `key`, brackets kept, marking it used (a
    /// path that may hold `,` is read with `value::<String>`, which removes
    /// them).
    pub fn raw(&mut self, key: &str) -> Option<String> {
        let i = self.options.iter().position(|(k, _)| k == key)?;
        if let Some(u) = self.used.get_mut(i) {
            *u = true;
        }
        self.options.get(i).map(|(_, v)| v.clone())
    }

    pub(crate) fn bad(&self, key: &str, value: &str, expected: &str) -> Error {
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
pub(crate) fn bad_value(name: &str, key: &str, value: &str, expected: &str) -> Error {
    Error::InvalidArgument(format!("{name}: option {key}={value} is not {expected}"))
}

/// `NAME: unknown option(s) a (did you mean b?), c; accepted: ...`; the
/// suggestions come from `candidates` (names and aliases), the list from `accepted`.
pub(crate) fn unknown_options<'a>(
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
