//! The generic optimizer: param groups, state keyed by parameter name,
//! gradient-less parameters skipped, state (de)serialisation. Each concrete
//! optimizer only provides a [`Rule`]: its hyperparameter table, its checks
//! and its per-tensor update function.
use crate::groups::{assign_groups, GroupOverride};
use crate::optimizer::{check_group, check_saved_by, check_unique_names, refuse_complex};
use crate::{Error, NamedParameter, Optimizer, OptimizerState, Result};
use kiln_tensor::spec::{ListItem, OptionValue, Options};
pub use kiln_tensor::spec::{OptionInfo, OptionVisitor};
#[doc(hidden)]
pub use kiln_tensor::Result as SpecResult;
use kiln_tensor::{ops, tch, Kind, Tensor};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// Per-parameter optimizer state: the step counter, named buffers
/// (`exp_avg`, `momentum_buffer`…) and named scalars (`mu_product`, `eta`…).
///
/// Buffers and scalars keep insertion order; nothing here is a hash map.
#[derive(Debug, Default)]
pub struct ParamState {
    /// Number of steps taken (PyTorch's `state["step"]`).
    pub step: f64,
    buffers: Vec<(String, Tensor)>,
    values: Vec<(String, f64)>,
    /// A float32 0-dim copy of `step` for libtorch's fused kernels, with the
    /// step it was last synchronised at.
    pub(crate) step_tensor: Option<(f64, Tensor)>,
}

impl ParamState {
    /// A buffer (a handle sharing storage), if it exists.
    pub fn buffer(&self, name: &str) -> Option<Tensor> {
        self.buffers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, t)| t.shallow_clone())
    }

    /// A buffer, created by `init` if it does not exist yet.
    pub fn buffer_or_init(
        &mut self,
        name: &str,
        init: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        if let Some(t) = self.buffer(name) {
            return Ok(t);
        }
        let t = init()?;
        self.buffers.push((name.to_string(), t.shallow_clone()));
        Ok(t)
    }

    /// Sets (or replaces) a buffer.
    pub fn set_buffer(&mut self, name: &str, tensor: Tensor) {
        match self.buffers.iter_mut().find(|(k, _)| k == name) {
            Some((_, t)) => *t = tensor,
            None => self.buffers.push((name.to_string(), tensor)),
        }
    }

    /// A named scalar, if set.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// Sets (or replaces) a named scalar.
    pub fn set_value(&mut self, name: &str, value: f64) {
        match self.values.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.values.push((name.to_string(), value)),
        }
    }

    /// The float32 0-dim `step` tensor of libtorch's fused kernels, still at
    /// the previous count, and the counter advanced: the caller increments
    /// all of a group's step tensors with one `_foreach_add_(steps, 1)`
    /// before the kernel, as PyTorch does.
    pub(crate) fn fused_step(&mut self, device: kiln_tensor::Device) -> Result<Tensor> {
        let step = match &self.step_tensor {
            Some((at, t)) if *at == self.step => t.shallow_clone(),
            _ => Tensor::f_scalar_tensor(self.step, (Kind::Float, device))?,
        };
        self.step += 1.0;
        self.step_tensor = Some((self.step, step.shallow_clone()));
        Ok(step)
    }

    /// Whether nothing is kept: no step counted, no buffer, no scalar.
    pub fn is_empty(&self) -> bool {
        self.step == 0.0 && self.buffers.is_empty() && self.values.is_empty()
    }

    /// Buffer names, in creation order.
    pub fn buffer_names(&self) -> impl Iterator<Item = &str> {
        self.buffers.iter().map(|(k, _)| k.as_str())
    }
}

/// One parameter handed to [`Rule::update_group`].
#[derive(Debug)]
pub struct Item<'a> {
    /// The parameter.
    pub param: &'a Tensor,
    /// Its gradient.
    pub grad: Tensor,
    /// Its state (fresh on the first step).
    pub state: &'a mut ParamState,
}

/// An optimizer's update rule and hyperparameter table: what a concrete
/// optimizer writes; [`Grouped`] does the rest.
///
/// [`hyperparameter_table!`](crate::hyperparameter_table) writes
/// `HYPERPARAMETERS`, `get`, `set` and `options` from one table.
pub trait Rule: Clone + std::fmt::Debug + Serialize + DeserializeOwned + Send + 'static {
    /// The name in spec strings and state dicts (`adam`).
    const NAME: &'static str;
    /// The hyperparameter names [`Rule::get`] and [`Rule::set`] accept
    /// (a tuple option `betas` is `betas.0`, `betas.1`).
    const HYPERPARAMETERS: &'static [&'static str];

    /// PyTorch's constructor checks, with PyTorch's messages.
    fn validate(&self) -> Result<()>;

    /// A hyperparameter by PyTorch name (booleans as 0/1, `betas.0`…).
    fn get(&self, name: &str) -> Option<f64>;

    /// Sets a hyperparameter without validating; `false` if the name is unknown.
    fn set(&mut self, name: &str, value: f64) -> bool;

    /// Visits each spec option (a tuple such as `betas` is one option) with
    /// its PyTorch name and help: how the registry reads a spec into the
    /// config and documents its defaults (see [`kiln_tensor::spec::Options`]).
    fn options(&mut self, visitor: &mut dyn OptionVisitor) -> kiln_tensor::Result<()>;

    /// One update of one parameter from its gradient (PyTorch's
    /// single-tensor path, operation for operation).
    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()>;

    /// Updates all parameters of a group that have gradients. The default
    /// calls [`Rule::update`] on each in order; fused fast paths override it.
    fn update_group(&self, items: &mut [Item<'_>]) -> Result<()> {
        for item in items.iter_mut() {
            self.update(item.param, &item.grad, item.state)?;
        }
        Ok(())
    }

    /// Checks that this rule can optimize `param` (Muon: 2-D only).
    fn check_param(&self, _param: &NamedParameter) -> Result<()> {
        Ok(())
    }

    /// Checks that this rule can step on `grad` (SparseAdam: sparse only),
    /// with the message its update would give.
    fn check_grad(&self, _grad: &Tensor) -> Result<()> {
        Ok(())
    }

    /// The shape buffer `buffer` has for `param` (the parameter's, by default).
    fn buffer_shape(&self, _buffer: &str, param: &Tensor) -> Vec<i64> {
        param.size()
    }

    /// State PyTorch's constructor already creates for every parameter,
    /// gradient or not (Adagrad's `sum` and `step`); `None` (the default)
    /// creates it at the parameter's first step.
    fn init_state(&self, _param: &Tensor) -> Result<Option<ParamState>> {
        Ok(None)
    }

    /// The constructor's checks over all param groups: by default
    /// [`Rule::check_param`] on every parameter, then a refusal of complex
    /// parameters (kiln-optim does not implement them). SparseAdam
    /// overrides it to report PyTorch's group/parameter indices.
    fn check_groups(groups: &[ParamGroup<Self>]) -> Result<()> {
        for g in groups {
            for p in &g.params {
                g.config.check_param(p)?;
                refuse_complex(Self::NAME, p)?;
            }
        }
        Ok(())
    }
}

/// A [`Rule`] config seen as [`Options`] (what the registry reads specs into).
#[derive(Debug)]
pub struct RuleOptions<'a, C>(pub &'a mut C);

impl<C: Rule> Options for RuleOptions<'_, C> {
    fn options(&mut self, visitor: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        self.0.options(visitor)
    }
}

/// A hyperparameter field seen as numbers, for [`Rule::get`] / [`Rule::set`]:
/// a scalar has one part (`part` is `None`), a tuple one per element
/// (`Some(i)` for `name.i`).
pub trait Hyperparameter: OptionValue {
    /// The number `part` names; `None` if there is no such part.
    fn get_part(&self, part: Option<usize>) -> Option<f64>;
    /// Sets the number `part` names; `false` if there is no such part.
    fn set_part(&mut self, part: Option<usize>, value: f64) -> bool;
}

impl Hyperparameter for f64 {
    fn get_part(&self, part: Option<usize>) -> Option<f64> {
        part.is_none().then_some(*self)
    }
    fn set_part(&mut self, part: Option<usize>, value: f64) -> bool {
        part.is_none() && {
            *self = value;
            true
        }
    }
}

/// 0 or 1; any value but 0 sets `true`.
impl Hyperparameter for bool {
    fn get_part(&self, part: Option<usize>) -> Option<f64> {
        part.is_none().then_some(if *self { 1.0 } else { 0.0 })
    }
    fn set_part(&mut self, part: Option<usize>, value: f64) -> bool {
        part.is_none() && {
            *self = value != 0.0;
            true
        }
    }
}

/// A count; a negative or non-finite value sets `usize::MAX` (which the
/// rule's checks then refuse).
impl Hyperparameter for usize {
    fn get_part(&self, part: Option<usize>) -> Option<f64> {
        part.is_none().then_some(*self as f64)
    }
    fn set_part(&mut self, part: Option<usize>, value: f64) -> bool {
        part.is_none() && {
            *self = if value >= 0.0 && value.is_finite() {
                value as usize
            } else {
                usize::MAX
            };
            true
        }
    }
}

/// An optional number reads as NaN while it is `None`; setting NaN makes it `None`.
impl Hyperparameter for Option<f64> {
    fn get_part(&self, part: Option<usize>) -> Option<f64> {
        part.is_none().then_some(self.unwrap_or(f64::NAN))
    }
    fn set_part(&mut self, part: Option<usize>, value: f64) -> bool {
        part.is_none() && {
            *self = (!value.is_nan()).then_some(value);
            true
        }
    }
}

macro_rules! tuple_hyperparameter {
    ($($t:ident $i:tt),+) => {
        /// `name.0`, `name.1`… for each element.
        impl<$($t: Hyperparameter + ListItem),+> Hyperparameter for ($($t,)+) {
            fn get_part(&self, part: Option<usize>) -> Option<f64> {
                match part {
                    $(Some($i) => self.$i.get_part(None),)+
                    _ => None,
                }
            }
            fn set_part(&mut self, part: Option<usize>, value: f64) -> bool {
                match part {
                    $(Some($i) => self.$i.set_part(None, value),)+
                    _ => false,
                }
            }
        }
    };
}

tuple_hyperparameter!(A 0, B 1);
tuple_hyperparameter!(A 0, B 1, C 2);

/// `betas.1` → (`betas`, `Some(1)`); `lr` → (`lr`, `None`).
#[doc(hidden)]
pub fn split_part(name: &str) -> (&str, Option<usize>) {
    match name.rsplit_once('.') {
        Some((base, i)) if !i.is_empty() && i.chars().all(|c| c.is_ascii_digit()) => {
            (base, i.parse().ok())
        }
        _ => (name, None),
    }
}

/// Writes a [`Rule`]'s `HYPERPARAMETERS`, `get`, `set` and `options` from one
/// table of its spec options, inside `impl Rule for Config { ... }` (or in
/// an inherent impl, as LBFGS's config, which is no `Rule`, does):
///
/// ```text
/// kiln_optim::hyperparameter_table! {
///     lr: f64 = "learning rate",
///     betas: (f64, f64) = "coefficients of the running averages",
///     amsgrad: bool = "use the maximum of past squared averages",
/// }
/// ```
///
/// Each entry is `field: Type = "help"`, the field named as PyTorch names the
/// argument; the type is one token (`f64`, `bool`, `usize`, an enum) or a
/// parenthesised pair or triple, and implements [`Hyperparameter`]. A tuple
/// is one spec option (`betas=0.9;0.999`) and one hyperparameter per element
/// (`betas.0`, `betas.1`). `@adam_like` first stands for the Adam family's
/// `lr`, `betas`, `eps` and `weight_decay`.
#[macro_export]
macro_rules! hyperparameter_table {
    // The Adam family's leading entries: lr, betas, eps, weight_decay.
    (@adam_like $($rest:tt)*) => {
        $crate::hyperparameter_table! {
            lr: f64 = "learning rate",
            betas: (f64, f64) = "decay rates of the running averages of the gradient and of its square",
            eps: f64 = "term added to the denominator for numerical stability",
            weight_decay: f64 = "weight decay",
            $($rest)*
        }
    };
    // Hyperparameter names: one per scalar, `name.i` per tuple element.
    (@names [$($acc:expr,)*]) => { &[$($acc,)*] };
    (@names [$($acc:expr,)*] $field:ident ($a:ty, $b:ty, $c:ty) $($rest:tt)*) => {
        $crate::hyperparameter_table!(@names [$($acc,)*
            concat!(stringify!($field), ".0"),
            concat!(stringify!($field), ".1"),
            concat!(stringify!($field), ".2"),] $($rest)*)
    };
    (@names [$($acc:expr,)*] $field:ident ($a:ty, $b:ty) $($rest:tt)*) => {
        $crate::hyperparameter_table!(@names [$($acc,)*
            concat!(stringify!($field), ".0"),
            concat!(stringify!($field), ".1"),] $($rest)*)
    };
    (@names [$($acc:expr,)*] $field:ident $kind:tt $($rest:tt)*) => {
        $crate::hyperparameter_table!(@names [$($acc,)* stringify!($field),] $($rest)*)
    };
    ($($field:ident : $kind:tt = $help:literal),* $(,)?) => {
        const HYPERPARAMETERS: &'static [&'static str] =
            $crate::hyperparameter_table!(@names [] $($field $kind)*);
        fn get(&self, name: &str) -> Option<f64> {
            let (base, part) = $crate::rule::split_part(name);
            $(if base == stringify!($field) {
                return $crate::rule::Hyperparameter::get_part(&self.$field, part);
            })*
            None
        }
        fn set(&mut self, name: &str, value: f64) -> bool {
            let (base, part) = $crate::rule::split_part(name);
            $(if base == stringify!($field) {
                return $crate::rule::Hyperparameter::set_part(&mut self.$field, part, value);
            })*
            false
        }
        fn options(
            &mut self,
            visitor: &mut dyn $crate::rule::OptionVisitor,
        ) -> $crate::rule::SpecResult<()> {
            $(visitor.option(
                $crate::rule::OptionInfo::new(stringify!($field), $help),
                &mut self.$field,
            )?;)*
            Ok(())
        }
    };
}

/// A param group: parameters sharing hyperparameters.
#[derive(Debug)]
pub struct ParamGroup<C> {
    /// The group's hyperparameters.
    pub config: C,
    /// The group's parameters.
    pub params: Vec<NamedParameter>,
}

/// A torch.optim optimizer made of a [`Rule`]: param groups, per-parameter
/// state keyed by name, and the [`Optimizer`] trait.
#[derive(Debug)]
pub struct Grouped<C: Rule> {
    groups: Vec<ParamGroup<C>>,
    states: Vec<Vec<Option<ParamState>>>,
}

impl<C: Rule> Grouped<C> {
    /// One param group with hyperparameters `config`.
    pub fn new(config: C, params: Vec<NamedParameter>) -> Result<Self> {
        Self::with_groups(vec![ParamGroup { config, params }])
    }

    /// Several param groups, each with its own hyperparameters.
    pub fn with_groups(groups: Vec<ParamGroup<C>>) -> Result<Self> {
        if groups.iter().all(|g| g.params.is_empty()) {
            return Err(Error::InvalidArgument(
                "optimizer got an empty parameter list".into(),
            ));
        }
        let lists: Vec<&[NamedParameter]> = groups.iter().map(|g| g.params.as_slice()).collect();
        check_unique_names(&lists)?;
        for g in &groups {
            g.config.validate()?;
        }
        C::check_groups(&groups)?;
        let states = groups
            .iter()
            .map(|g| {
                g.params
                    .iter()
                    .map(|p| g.config.init_state(&p.tensor))
                    .collect::<Result<_>>()
            })
            .collect::<Result<_>>()?;
        Ok(Self { groups, states })
    }

    /// Groups by selectors ([`GroupOverride`], see [`crate::groups`]): group 0
    /// holds the parameters no override selects, with `config`; group
    /// `i + 1` holds those override `i` is the first to select (a name glob
    /// or an `ndim` comparison), with `config` changed by that override.
    /// Parameter order within a group is kept. An unknown selector, an
    /// override that selects no parameter and a hyperparameter the rule does
    /// not have (or out of its range) are errors naming the group.
    pub fn with_overrides(
        config: C,
        params: Vec<NamedParameter>,
        overrides: &[GroupOverride],
    ) -> Result<Self> {
        let lists = assign_groups(params, overrides)?;
        let mut groups = Vec::with_capacity(lists.len());
        for (i, params) in lists.into_iter().enumerate() {
            let mut cfg = config.clone();
            if let Some(o) = i.checked_sub(1).and_then(|i| overrides.get(i)) {
                for (name, value) in &o.hyperparameters {
                    set_checked(&mut cfg, name, *value).map_err(|e| in_group(e, i, o))?;
                }
            }
            groups.push(ParamGroup {
                config: cfg,
                params,
            });
        }
        Self::with_groups(groups)
    }

    /// The param groups.
    pub fn groups(&self) -> &[ParamGroup<C>] {
        &self.groups
    }

    /// The hyperparameters of group `group`.
    pub fn config(&self, group: usize) -> Option<&C> {
        self.groups.get(group).map(|g| &g.config)
    }

    /// The state of a parameter by name (`None` before its first step).
    pub fn param_state(&self, name: &str) -> Option<&ParamState> {
        self.groups.iter().zip(&self.states).find_map(|(g, s)| {
            g.params
                .iter()
                .position(|p| p.name == name)
                .and_then(|i| s.get(i))
                .and_then(Option::as_ref)
        })
    }
}

/// `error` with the param group `group` made by `o` named first.
fn in_group(error: Error, group: usize, o: &GroupOverride) -> Error {
    let named = |m: String| format!("param group {group} ({}): {m}", o.patterns.join("|"));
    match error {
        Error::InvalidHyperparameter(m) => Error::InvalidHyperparameter(named(m)),
        Error::InvalidArgument(m) => Error::InvalidArgument(named(m)),
        other => other,
    }
}

fn set_checked<C: Rule>(cfg: &mut C, name: &str, value: f64) -> Result<()> {
    let mut next = cfg.clone();
    if !next.set(name, value) {
        return Err(Error::InvalidArgument(format!(
            "{} has no hyperparameter '{name}' (it has {})",
            C::NAME,
            C::HYPERPARAMETERS.join(", ")
        )));
    }
    next.validate()?;
    *cfg = next;
    Ok(())
}

fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

impl<C: Rule> Optimizer for Grouped<C> {
    fn name(&self) -> &str {
        C::NAME
    }

    fn check_gradients(&self) -> Result<()> {
        for group in &self.groups {
            for p in &group.params {
                if ops::has_grad(&p.tensor)? {
                    group.config.check_grad(&p.tensor.f_grad()?)?;
                }
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        tch::no_grad(|| {
            for (group, states) in self.groups.iter().zip(self.states.iter_mut()) {
                let mut items = Vec::with_capacity(group.params.len());
                for (p, st) in group.params.iter().zip(states.iter_mut()) {
                    if !ops::has_grad(&p.tensor)? {
                        continue;
                    }
                    let grad = p.tensor.f_grad()?;
                    items.push(Item {
                        param: &p.tensor,
                        grad,
                        state: st.get_or_insert_with(ParamState::default),
                    });
                }
                if !items.is_empty() {
                    group.config.update_group(&mut items)?;
                }
            }
            Ok(())
        })
    }

    fn num_groups(&self) -> usize {
        self.groups.len()
    }

    fn group_params(&self, group: usize) -> &[NamedParameter] {
        self.groups.get(group).map_or(&[], |g| g.params.as_slice())
    }

    fn hyperparameter(&self, group: usize, name: &str) -> Option<f64> {
        self.groups.get(group).and_then(|g| g.config.get(name))
    }

    fn set_hyperparameter(&mut self, group: usize, name: &str, value: f64) -> Result<()> {
        check_group(group, self.groups.len())?;
        match self.groups.get_mut(group) {
            Some(g) => set_checked(&mut g.config, name, value),
            None => Ok(()),
        }
    }

    fn state_dict(&self) -> Result<OptimizerState> {
        let mut tensors = Vec::new();
        let mut state = Map::new();
        let mut groups = Vec::with_capacity(self.groups.len());
        for (group, states) in self.groups.iter().zip(&self.states) {
            let mut g = serde_json::to_value(&group.config)
                .map_err(|e| Error::State(format!("cannot serialise hyperparameters: {e}")))?;
            let names: Vec<&str> = group.params.iter().map(|p| p.name.as_str()).collect();
            if let Value::Object(m) = &mut g {
                m.insert("params".into(), json!(names));
            }
            groups.push(g);
            for (p, st) in group.params.iter().zip(states) {
                // As in PyTorch, a parameter whose rule keeps nothing (SGD
                // without momentum) has no entry.
                let Some(st) = st.as_ref().filter(|st| !st.is_empty()) else {
                    continue;
                };
                for (b, t) in &st.buffers {
                    tensors.push((format!("{}.{b}", p.name), t.shallow_clone()));
                }
                let values: Map<String, Value> = st
                    .values
                    .iter()
                    .map(|(k, v)| (k.clone(), number(*v)))
                    .collect();
                let buffers: Vec<&str> = st.buffer_names().collect();
                state.insert(
                    p.name.clone(),
                    json!({ "step": number(st.step), "buffers": buffers, "values": values }),
                );
            }
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let scalars = json!({ "optimizer": C::NAME, "param_groups": groups, "state": state });
        Ok(OptimizerState { tensors, scalars })
    }

    fn load_state_dict(&mut self, saved: &OptimizerState) -> Result<()> {
        check_saved_by(saved, C::NAME)?;
        let s = &saved.scalars;
        let groups = s
            .get("param_groups")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::State("it has no param_groups".into()))?;
        if groups.len() != self.groups.len() {
            return Err(Error::State(format!(
                "it has {} param groups but this optimizer has {}",
                groups.len(),
                self.groups.len()
            )));
        }
        let empty = Map::new();
        let state = s.get("state").and_then(Value::as_object).unwrap_or(&empty);
        let mut configs = Vec::with_capacity(groups.len());
        let mut new_states = Vec::with_capacity(groups.len());
        let mut used = vec![false; saved.tensors.len()];
        for (gi, (saved_group, group)) in groups.iter().zip(&self.groups).enumerate() {
            let names: Vec<&str> = saved_group
                .get("params")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let ours: Vec<&str> = group.params.iter().map(|p| p.name.as_str()).collect();
            if names != ours {
                return Err(Error::State(format!(
                    "param group {gi} holds parameters {names:?} but this optimizer's holds {ours:?}"
                )));
            }
            let cfg: C = serde_json::from_value(saved_group.clone())
                .map_err(|e| Error::State(format!("hyperparameters of param group {gi}: {e}")))?;
            cfg.validate()?;
            let mut states = Vec::with_capacity(group.params.len());
            for p in &group.params {
                let Some(entry) = state.get(&p.name) else {
                    states.push(None);
                    continue;
                };
                let mut st = ParamState {
                    step: entry.get("step").and_then(Value::as_f64).ok_or_else(|| {
                        Error::State(format!("the state of '{}' has no step", p.name))
                    })?,
                    ..ParamState::default()
                };
                if let Some(values) = entry.get("values").and_then(Value::as_object) {
                    for (k, v) in values {
                        let v = v.as_f64().ok_or_else(|| {
                            Error::State(format!("'{}' value '{k}' is not a number", p.name))
                        })?;
                        st.values.push((k.clone(), v));
                    }
                }
                let buffers = entry
                    .get("buffers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for b in buffers.iter().filter_map(Value::as_str) {
                    let key = format!("{}.{b}", p.name);
                    let Some(i) = saved.tensors.iter().position(|(k, _)| *k == key) else {
                        return Err(Error::State(format!("the tensor '{key}' is missing")));
                    };
                    let t = saved
                        .tensors
                        .get(i)
                        .map(|(_, t)| t)
                        .ok_or_else(|| Error::State(key.clone()))?;
                    let want = cfg.buffer_shape(b, &p.tensor);
                    if t.size() != want {
                        return Err(Error::State(format!(
                            "'{key}' has shape {:?} but this optimizer needs {want:?}",
                            t.size()
                        )));
                    }
                    if let Some(u) = used.get_mut(i) {
                        *u = true;
                    }
                    let kind = if t.is_floating_point() {
                        p.tensor.kind()
                    } else {
                        t.kind()
                    };
                    let t =
                        ops::detached_clone(&t.f_to_device(p.tensor.device())?.f_to_kind(kind)?)?;
                    st.buffers.push((b.to_string(), t));
                }
                states.push(Some(st));
            }
            configs.push(cfg);
            new_states.push(states);
        }
        if let Some(name) = state.keys().find(|k| {
            !self
                .groups
                .iter()
                .any(|g| g.params.iter().any(|p| &p.name == *k))
        }) {
            return Err(Error::State(format!(
                "it has state for '{name}', which names no parameter of this optimizer"
            )));
        }
        if let Some((key, _)) = saved
            .tensors
            .iter()
            .zip(&used)
            .find(|(_, u)| !**u)
            .map(|(t, _)| t)
        {
            return Err(Error::State(format!(
                "the tensor '{key}' belongs to no parameter's state"
            )));
        }
        for (g, cfg) in self.groups.iter_mut().zip(configs) {
            g.config = cfg;
        }
        self.states = new_states;
        Ok(())
    }
}

/// The dtype PyTorch keeps 0-dim optimizer scalars in (`_get_scalar_dtype()`:
/// NAdam's `mu_product`, ASGD's `eta` and `mu`): float64 when libtorch's
/// default dtype ([`kiln_tensor::default_dtype`]) is float64, else float32,
/// whatever the parameters' dtype.
pub(crate) fn scalar_kind() -> Result<Kind> {
    Ok(if kiln_tensor::default_dtype()? == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    })
}

/// `v` rounded to `kind` (float64 or float32), as storing it in a 0-dim
/// tensor of that dtype does.
pub(crate) fn round_to(kind: Kind, v: f64) -> f64 {
    if kind == Kind::Double {
        v
    } else {
        f64::from(v as f32)
    }
}

/// `torch.as_tensor(v)`: `v` rounded to libtorch's default dtype.
pub(crate) fn as_default_tensor(v: f64) -> Result<f64> {
    Ok(match kiln_tensor::default_dtype()? {
        k @ (Kind::Double | Kind::Float) => round_to(k, v),
        k => Tensor::f_scalar_tensor(v, (k, kiln_tensor::Device::Cpu))?.f_double_value(&[])?,
    })
}
