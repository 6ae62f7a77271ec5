//! Param groups chosen by selectors: which parameters get options other
//! than the optimizer's (`--param-group SELECTOR:options`), as
//! [`Grouped::with_overrides`](crate::Grouped::with_overrides) applies them.
//!
//! A selector is a name glob (`*.bias`) or a comparison of the parameter's
//! number of dimensions (`ndim<2`, `ndim<=1`, `ndim==1`, `ndim>=2`,
//! `ndim>2`). Group 0 holds the parameters no selector takes, with the
//! optimizer's options; group `i + 1` those of override `i`, the first
//! override that selects a parameter taking it, each group in parameter
//! order. nanoGPT's `configure_optimizers` is
//! `adamw:weight_decay=0.1` with `ndim<2:weight_decay=0`: decayed `dim() >= 2`
//! parameters first, then the others, as its `optim_groups` list them.
//!
//! An override that ends up with no parameter is refused: it is almost
//! always a misspelt selector, and silently training everything with the
//! optimizer's options is worse than stopping. (PyTorch accepts empty
//! groups; group 0 may still be empty, as nanoGPT's would be for a model
//! without matrices, so every group keeps its index.)
use crate::{py_float, Error, NamedParameter, Result};
use kiln_tensor::spec::{unbracket, OptionValue, Spec};
use std::fmt;
use std::str::FromStr;

/// The forms a selector takes, for errors.
const SELECTOR_FORMS: &str =
    "a name glob (*.bias, blocks.*.ln_?.weight) or ndim<N, ndim<=N, ndim==N, ndim>=N, ndim>N";

/// Which parameters a param group takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Parameters whose dotted name matches the glob ([`glob_match`]).
    Name(String),
    /// Parameters whose number of dimensions (`p.dim()`) compares so with the number.
    Ndim(Comparison, usize),
}

/// How [`Selector::Ndim`] compares a parameter's number of dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `==`
    Equal,
    /// `>=`
    GreaterOrEqual,
    /// `>`
    Greater,
}

impl Comparison {
    /// The operators as selectors write them, longest first (so `<=` is not read as `<`).
    const OPERATORS: [(&'static str, Comparison); 5] = [
        ("<=", Comparison::LessOrEqual),
        (">=", Comparison::GreaterOrEqual),
        ("==", Comparison::Equal),
        ("<", Comparison::Less),
        (">", Comparison::Greater),
    ];

    fn operator(self) -> &'static str {
        Self::OPERATORS
            .iter()
            .find(|(_, c)| *c == self)
            .map_or("", |(op, _)| *op)
    }

    fn holds(self, a: usize, b: usize) -> bool {
        match self {
            Comparison::Less => a < b,
            Comparison::LessOrEqual => a <= b,
            Comparison::Equal => a == b,
            Comparison::GreaterOrEqual => a >= b,
            Comparison::Greater => a > b,
        }
    }
}

impl Selector {
    /// Whether this selector takes `param`.
    pub fn matches(&self, param: &NamedParameter) -> bool {
        match self {
            Selector::Name(glob) => glob_match(glob, &param.name),
            Selector::Ndim(cmp, n) => cmp.holds(param.tensor.dim(), *n),
        }
    }
}

/// `*.bias` (a glob: any text without `<`, `>`, `=`, `!`, `:`, `,`) or
/// `ndim<2` and the other comparisons; anything else is an error naming
/// the accepted forms.
impl FromStr for Selector {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        let unknown = || {
            Error::InvalidArgument(format!(
                "param group selector '{text}' is unknown; a selector is {SELECTOR_FORMS}"
            ))
        };
        if text.is_empty() || text.contains([':', ',']) {
            return Err(unknown());
        }
        if !text.contains(['<', '>', '=', '!']) {
            return Ok(Selector::Name(text.to_string()));
        }
        let rest = text.strip_prefix("ndim").ok_or_else(unknown)?.trim_start();
        Comparison::OPERATORS
            .iter()
            .find_map(|(op, cmp)| rest.strip_prefix(op).map(|n| (*cmp, n.trim())))
            .and_then(|(cmp, n)| n.parse().ok().map(|n| Selector::Ndim(cmp, n)))
            .ok_or_else(unknown)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Name(glob) => f.write_str(glob),
            Selector::Ndim(cmp, n) => write!(f, "ndim{}{n}", cmp.operator()),
        }
    }
}

/// Whether `name` matches the glob `pattern` (`*` any run of characters,
/// including dots; `?` exactly one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == n.get(ni) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// A param group of its own for the parameters its selectors take, with
/// hyperparameters changed from the optimizer's
/// (`ndim<2` → `weight_decay=0`); see [`Grouped::with_overrides`](crate::Grouped::with_overrides).
///
/// Parsed from `SELECTOR[|SELECTOR...]:key=value,...` (what
/// `--param-group` takes: `'ndim<2:weight_decay=0'`, `'*.bias|*norm*:lr=0.01'`);
/// the options are the optimizer's hyperparameters by PyTorch name as
/// numbers, as [`Optimizer::set_hyperparameter`](crate::Optimizer::set_hyperparameter)
/// reads them: a tuple written `betas=0.9;0.95` is `betas.0` and `betas.1`,
/// booleans are 1/0, `none` is NaN. Which names the optimizer has, and
/// their ranges, are checked when it is built. `Display` writes the same
/// form back.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupOverride {
    /// The selectors, as [`Selector`] parses them: a name glob (`*.bias`) or
    /// an `ndim` comparison (`ndim<2`); the group takes the parameters any
    /// of them selects.
    pub patterns: Vec<String>,
    /// Hyperparameters (PyTorch names) and their values in this group.
    pub hyperparameters: Vec<(String, f64)>,
}

impl GroupOverride {
    /// The parsed [`patterns`](GroupOverride::patterns); an error names an
    /// unknown one and the accepted forms.
    pub fn selectors(&self) -> Result<Vec<Selector>> {
        self.patterns.iter().map(|p| p.parse()).collect()
    }
}

impl FromStr for GroupOverride {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        let Some((selectors, options)) = text.split_once(':') else {
            return Err(Error::InvalidArgument(format!(
                "param group '{text}' is not SELECTOR:key=value,... (e.g. ndim<2:weight_decay=0); a selector is {SELECTOR_FORMS}"
            )));
        };
        let patterns: Vec<String> = selectors
            .split('|')
            .map(|s| Ok(s.trim().parse::<Selector>()?.to_string()))
            .collect::<Result<_>>()?;
        let spec: Spec = format!("param-group:{options}")
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("param group '{text}': {e}")))?;
        let mut hyperparameters = Vec::new();
        for (key, value) in spec.options() {
            let numbers = hyperparameter_numbers(value).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "param group '{text}': option {key}={value} is not a number, true or false, none, or numbers written a;b"
                ))
            })?;
            match numbers.as_slice() {
                [one] => hyperparameters.push((key.to_string(), *one)),
                parts => hyperparameters.extend(
                    parts
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (format!("{key}.{i}"), *v)),
                ),
            }
        }
        Ok(Self {
            patterns,
            hyperparameters,
        })
    }
}

/// A value of a group option as the numbers of the hyperparameter view:
/// `true`/`false` → 1/0, `none` → NaN, a number or a `;`-list of them.
fn hyperparameter_numbers(value: &str) -> Option<Vec<f64>> {
    match unbracket(value) {
        "true" => return Some(vec![1.0]),
        "false" => return Some(vec![0.0]),
        "none" => return Some(vec![f64::NAN]),
        _ => {}
    }
    let mut numbers: Vec<f64> = Vec::new();
    numbers.parse_text(value).ok()?;
    (!numbers.is_empty()).then_some(numbers)
}

impl fmt::Display for GroupOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.patterns.join("|"))?;
        for (i, (name, value)) in self.hyperparameters.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{name}={}", py_float(*value))?;
        }
        Ok(())
    }
}

/// `params` split into param groups: group 0 for the parameters no
/// override selects, group `i + 1` for those override `i` is the first to
/// select, parameter order kept. Errors on an unknown selector and on an
/// override left without parameters.
pub(crate) fn assign_groups(
    params: Vec<NamedParameter>,
    overrides: &[GroupOverride],
) -> Result<Vec<Vec<NamedParameter>>> {
    let selectors = overrides
        .iter()
        .map(GroupOverride::selectors)
        .collect::<Result<Vec<_>>>()?;
    let mut groups: Vec<Vec<NamedParameter>> = (0..=overrides.len()).map(|_| Vec::new()).collect();
    for p in params {
        let slot = selectors
            .iter()
            .position(|sel| sel.iter().any(|s| s.matches(&p)))
            .map_or(0, |i| i + 1);
        if let Some(g) = groups.get_mut(slot) {
            g.push(p);
        }
    }
    for (i, (o, group)) in overrides.iter().zip(groups.iter().skip(1)).enumerate() {
        if group.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "param group {} ({}) selects no parameter: no parameter matches it, or an earlier group took every one that does",
                i + 1,
                o.patterns.join("|")
            )));
        }
    }
    Ok(groups)
}
