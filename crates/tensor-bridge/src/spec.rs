//! Component spec strings: `name` or `name:key=value,key=value`.
//!
//! The CLI names losses, optimizers and schedulers this way
//! (`sgd:lr=1e-3,momentum=0.9`, `cross-entropy:label_smoothing=0.1`). A list
//! value is written with `;` between items (`weight=1;2;0.5`) or in brackets
//! (`betas=[0.9;0.999]`). Each registry reads the options it knows with the
//! typed getters and then calls [`Spec::finish`], which rejects leftovers by
//! listing what is accepted.
use crate::{Error, Result};

/// A parsed spec string.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The component name (`sgd`).
    pub name: String,
    options: Vec<(String, String)>,
    used: Vec<bool>,
}

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
        let mut options = Vec::new();
        for item in rest.into_iter().flat_map(|r| r.split(',')).map(str::trim) {
            if item.is_empty() {
                continue;
            }
            let Some((key, value)) = item.split_once('=') else {
                return Err(Error::InvalidArgument(format!(
                    "option '{item}' in spec '{text}' is not key=value"
                )));
            };
            let key = key.trim().to_string();
            if options.iter().any(|(k, _)| *k == key) {
                return Err(Error::InvalidArgument(format!(
                    "option '{key}' is given twice in spec '{text}'"
                )));
            }
            options.push((key, value.trim().to_string()));
        }
        let used = vec![false; options.len()];
        Ok(Self {
            name: name.to_string(),
            options,
            used,
        })
    }
}

impl std::fmt::Display for Spec {
    /// The canonical text: `name` or `name:key=value,...` in option order.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        for (i, (k, v)) in self.options.iter().enumerate() {
            f.write_str(if i == 0 { ":" } else { "," })?;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl Spec {
    /// A spec with a name and no options.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            options: Vec::new(),
            used: Vec::new(),
        }
    }

    /// Sets option `key` to `value` (text as written in a spec), replacing
    /// its value if it is there and appending it otherwise.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.options.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => {
                self.options.push((key.to_string(), value.to_string()));
                self.used.push(false);
            }
        }
    }

    /// Whether option `key` was given (without marking it used).
    pub fn contains(&self, key: &str) -> bool {
        self.options.iter().any(|(k, _)| k == key)
    }

    /// The raw text of option `key`, marking it used.
    pub fn raw(&mut self, key: &str) -> Option<String> {
        let i = self.options.iter().position(|(k, _)| k == key)?;
        self.used[i] = true;
        Some(self.options[i].1.clone())
    }

    fn bad(&self, key: &str, value: &str, what: &str) -> Error {
        Error::InvalidArgument(format!("{}: option {key}={value} is not {what}", self.name))
    }

    /// Option `key` as an f64 (`1e-3`, `inf`, `-inf`, `nan` accepted as Rust parses them).
    pub fn f64(&mut self, key: &str) -> Result<Option<f64>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<f64>()
                .map(Some)
                .map_err(|_| self.bad(key, &v, "a number")),
        }
    }

    /// Option `key` as an i64.
    pub fn i64(&mut self, key: &str) -> Result<Option<i64>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| self.bad(key, &v, "an integer")),
        }
    }

    /// Option `key` as a bool (`true`/`false`/`1`/`0`).
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(self.bad(key, &v, "true or false")),
            },
        }
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
        let Some(v) = self.raw(key) else {
            return Ok(None);
        };
        let inner = v.trim_start_matches('[').trim_end_matches(']');
        inner
            .split(';')
            .map(|x| x.trim().parse::<f64>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Some)
            .map_err(|_| self.bad(key, &v, "a ;-separated list of numbers"))
    }

    /// Errors if an option was not read by the component, listing `accepted`.
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
        let accepted = if accepted.is_empty() {
            "none".to_string()
        } else {
            accepted.join(", ")
        };
        Err(Error::InvalidArgument(format!(
            "{}: unknown option(s) {}; accepted: {accepted}",
            self.name,
            unknown.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_options_and_lists() {
        let mut s: Spec = "sgd:lr=1e-3, momentum=0.9,nesterov=true,weight=[1;2.5]"
            .parse()
            .unwrap_or_else(|_| Spec {
                name: String::new(),
                options: vec![],
                used: vec![],
            });
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
        let msg = |r: Result<Spec>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg(":lr=1".parse()).contains("has no name"));
        assert!(msg("sgd:lr".parse()).contains("'lr' in spec 'sgd:lr' is not key=value"));
        assert!(msg("sgd:lr=1,lr=2".parse()).contains("given twice"));
        let mut s: Spec = "adam:lr=x,foo=1".parse().unwrap_or_else(|_| Spec {
            name: String::new(),
            options: vec![],
            used: vec![],
        });
        assert_eq!(
            s.f64("lr").err().map(|e| e.to_string()).as_deref(),
            Some("adam: option lr=x is not a number")
        );
        let err = s
            .finish(&["lr", "betas"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(err, "adam: unknown option(s) foo; accepted: lr, betas");
    }
}
