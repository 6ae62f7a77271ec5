//! Optimizers by spec string: `adamw:lr=3e-4,weight_decay=0.05`,
//! `sgd:lr=1e-3,momentum=0.9`, `adam:betas=0.9;0.999,amsgrad=true`.
//!
//! Every option is a hyperparameter under its PyTorch name; a pair
//! (`betas`, `etas`, `step_sizes`) is written `a;b` (or `[a;b]`); booleans are
//! `true`/`false`/`1`/`0`. A downstream crate adds its own optimizers with
//! [`OptimizerRegistry::register`].
use crate::rule::{GroupOverride, Grouped, Rule};
use crate::{py_float, Error, NamedParameter, Optimizer, Result};
use kiln_tensor::spec::Spec;

/// Builds an optimizer from a parsed spec and the parameters.
/// Extra param groups chosen by name pattern ([`GroupOverride`]) may be passed.
pub type Builder = Box<
    dyn Fn(&mut Spec, Vec<NamedParameter>, &[GroupOverride]) -> Result<Box<dyn Optimizer>>
        + Send
        + Sync,
>;

struct Entry {
    name: String,
    options: String,
    build: Builder,
}

/// A set of named optimizer builders.
pub struct OptimizerRegistry {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for OptimizerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimizerRegistry")
            .field("names", &self.names())
            .finish()
    }
}

/// Reads the options of `spec` into a default `C` (pairs as `name.0`/`name.1`).
pub fn config_from_spec<C: Rule + Default>(spec: &mut Spec) -> Result<C> {
    let mut cfg = C::default();
    let mut accepted: Vec<String> = Vec::new();
    for &h in C::HYPERPARAMETERS {
        if let Some(base) = h.strip_suffix(".0") {
            accepted.push(base.to_string());
            let parts = tuple_len::<C>(base);
            if let Some(list) = spec.f64_list(base)? {
                if list.len() != parts {
                    return Err(Error::InvalidArgument(format!(
                        "{}: option {base} needs {parts} values written a;b{}, got {}",
                        C::NAME,
                        if parts == 3 { ";c" } else { "" },
                        list.len()
                    )));
                }
                for (i, v) in list.iter().enumerate() {
                    cfg.set(&format!("{base}.{i}"), *v);
                }
            }
            continue;
        }
        if is_tuple_tail(h) {
            continue;
        }
        accepted.push(h.to_string());
        let is_bool = BOOLS.contains(&h);
        let value = if is_bool {
            spec.bool(h)?.map(|b| f64::from(u8::from(b)))
        } else {
            spec.f64(h)?
        };
        if let Some(v) = value {
            cfg.set(h, v);
        }
    }
    let accepted: Vec<&str> = accepted.iter().map(String::as_str).collect();
    spec.finish(&accepted)?;
    cfg.validate()?;
    Ok(cfg)
}

/// How many `base.N` entries a rule's table has.
fn tuple_len<C: Rule>(base: &str) -> usize {
    C::HYPERPARAMETERS
        .iter()
        .filter(|h| {
            h.strip_prefix(base)
                .and_then(|r| r.strip_prefix('.'))
                .is_some()
        })
        .count()
}

/// `x.1`, `x.2`… (the tail of a tuple hyperparameter).
fn is_tuple_tail(h: &str) -> bool {
    h.rsplit_once('.')
        .is_some_and(|(_, i)| i != "0" && i.chars().all(|c| c.is_ascii_digit()))
}

const BOOLS: &[&str] = &[
    "nesterov",
    "maximize",
    "amsgrad",
    "centered",
    "decoupled_weight_decay",
    "fused",
    "nesterov_momentum",
];

fn describe_options<C: Rule + Default>() -> String {
    let cfg = C::default();
    let mut out = Vec::new();
    for &h in C::HYPERPARAMETERS {
        if is_tuple_tail(h) {
            continue;
        }
        if let Some(base) = h.strip_suffix(".0") {
            let values: Vec<String> = (0..tuple_len::<C>(base))
                .map(|i| {
                    cfg.get(&format!("{base}.{i}"))
                        .map_or_else(String::new, |v| {
                            if v.is_nan() {
                                "none".into()
                            } else {
                                py_float(v)
                            }
                        })
                })
                .collect();
            out.push(format!("{base}={}", values.join(";")));
        } else if BOOLS.contains(&h) {
            out.push(format!("{h}={}", cfg.get(h).is_some_and(|v| v != 0.0)));
        } else {
            out.push(format!(
                "{h}={}",
                cfg.get(h).map_or_else(String::new, py_float)
            ));
        }
    }
    out.join(",")
}

impl OptimizerRegistry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Registers (or replaces) `name` with its option summary and builder.
    pub fn register(&mut self, name: &str, options: &str, build: Builder) {
        self.entries.retain(|e| e.name != name);
        self.entries.push(Entry {
            name: name.to_string(),
            options: options.to_string(),
            build,
        });
    }

    /// Registers a [`Rule`]-based optimizer under its name, with options
    /// read by [`config_from_spec`].
    pub fn register_rule<C: Rule + Default>(&mut self) {
        self.register(
            C::NAME,
            &describe_options::<C>(),
            Box::new(|spec, params, overrides| {
                let cfg: C = config_from_spec(spec)?;
                Ok(Box::new(Grouped::with_overrides(cfg, params, overrides)?)
                    as Box<dyn Optimizer>)
            }),
        );
    }

    /// Builds the optimizer a spec string names over `params`.
    pub fn build(&self, spec: &str, params: Vec<NamedParameter>) -> Result<Box<dyn Optimizer>> {
        self.build_with_overrides(spec, params, &[])
    }

    /// Like [`OptimizerRegistry::build`], with extra param groups chosen by
    /// parameter-name patterns (see [`Grouped::with_overrides`]).
    pub fn build_with_overrides(
        &self,
        spec: &str,
        params: Vec<NamedParameter>,
        overrides: &[GroupOverride],
    ) -> Result<Box<dyn Optimizer>> {
        let mut spec: Spec = spec.parse()?;
        let Some(entry) = self.entries.iter().find(|e| e.name == spec.name) else {
            return Err(Error::InvalidArgument(format!(
                "unknown optimizer '{}'; known: {}",
                spec.name,
                self.names().join(", ")
            )));
        };
        (entry.build)(&mut spec, params, overrides)
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// One line per optimizer: its name and its options with their defaults
    /// (what `kiln optimizers` prints).
    pub fn describe(&self) -> String {
        let width = self.entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
        self.entries
            .iter()
            .map(|e| format!("{:width$}  {}\n", e.name, e.options))
            .collect()
    }
}

/// The registry of every kiln optimizer.
pub fn optimizers() -> OptimizerRegistry {
    let mut r = OptimizerRegistry::empty();
    r.register_rule::<crate::SgdConfig>();
    r.register_rule::<crate::AdamConfig>();
    r.register_rule::<crate::AdamWConfig>();
    r.register_rule::<crate::AdagradConfig>();
    r.register_rule::<crate::AdadeltaConfig>();
    r.register_rule::<crate::AdamaxConfig>();
    r.register_rule::<crate::NAdamConfig>();
    r.register_rule::<crate::RAdamConfig>();
    r.register_rule::<crate::RmspropConfig>();
    r.register_rule::<crate::RpropConfig>();
    r.register_rule::<crate::AsgdConfig>();
    r.register_rule::<crate::AdafactorConfig>();
    r.register_rule::<crate::MuonConfig>();
    r.register_rule::<crate::SparseAdamConfig>();
    crate::lbfgs::register(&mut r);
    r
}
