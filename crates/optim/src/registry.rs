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
pub type Builder =
    Box<dyn Fn(&mut Spec, Vec<NamedParameter>, &[GroupOverride]) -> Result<Box<dyn Optimizer>> + Send + Sync>;

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
        f.debug_struct("OptimizerRegistry").field("names", &self.names()).finish()
    }
}

/// Reads the options of `spec` into a default `C` (pairs as `name.0`/`name.1`).
pub fn config_from_spec<C: Rule + Default>(spec: &mut Spec) -> Result<C> {
    let mut cfg = C::default();
    let mut accepted: Vec<String> = Vec::new();
    for &h in C::HYPERPARAMETERS {
        if let Some(base) = h.strip_suffix(".0") {
            accepted.push(base.to_string());
            if let Some(list) = spec.f64_list(base)? {
                let [a, b] = list.as_slice() else {
                    return Err(Error::InvalidArgument(format!(
                        "{}: option {base} needs two values written a;b, got {}",
                        C::NAME,
                        list.len()
                    )));
                };
                cfg.set(&format!("{base}.0"), *a);
                cfg.set(&format!("{base}.1"), *b);
            }
            continue;
        }
        if h.ends_with(".1") {
            continue;
        }
        accepted.push(h.to_string());
        let is_bool = matches!(cfg.get(h), Some(v) if v == 0.0 || v == 1.0) && BOOLS.contains(&h);
        let value = if is_bool { spec.bool(h)?.map(|b| f64::from(u8::from(b))) } else { spec.f64(h)? };
        if let Some(v) = value {
            cfg.set(h, v);
        }
    }
    let accepted: Vec<&str> = accepted.iter().map(String::as_str).collect();
    spec.finish(&accepted)?;
    cfg.validate()?;
    Ok(cfg)
}

const BOOLS: &[&str] =
    &["nesterov", "maximize", "amsgrad", "centered", "decoupled_weight_decay", "fused", "nesterov_momentum"];

fn describe_options<C: Rule + Default>() -> String {
    let cfg = C::default();
    let mut out = Vec::new();
    for &h in C::HYPERPARAMETERS {
        if h.ends_with(".1") {
            continue;
        }
        if let Some(base) = h.strip_suffix(".0") {
            let a = cfg.get(h).map_or_else(String::new, py_float);
            let b = cfg.get(&format!("{base}.1")).map_or_else(String::new, py_float);
            out.push(format!("{base}={a};{b}"));
        } else if BOOLS.contains(&h) {
            out.push(format!("{h}={}", cfg.get(h).is_some_and(|v| v != 0.0)));
        } else {
            out.push(format!("{h}={}", cfg.get(h).map_or_else(String::new, py_float)));
        }
    }
    out.join(",")
}

impl OptimizerRegistry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self { entries: Vec::new() }
    }

    /// Registers (or replaces) `name` with its option summary and builder.
    pub fn register(&mut self, name: &str, options: &str, build: Builder) {
        self.entries.retain(|e| e.name != name);
        self.entries.push(Entry { name: name.to_string(), options: options.to_string(), build });
    }

    /// Registers a [`Rule`]-based optimizer under its name, with options
    /// read by [`config_from_spec`].
    pub fn register_rule<C: Rule + Default>(&mut self) {
        self.register(
            C::NAME,
            &describe_options::<C>(),
            Box::new(|spec, params, overrides| {
                let cfg: C = config_from_spec(spec)?;
                Ok(Box::new(Grouped::with_overrides(cfg, params, overrides)?) as Box<dyn Optimizer>)
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
        self.entries.iter().map(|e| format!("{:width$}  {}\n", e.name, e.options)).collect()
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
    crate::lbfgs::register(&mut r);
    r
}
