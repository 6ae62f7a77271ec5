//! L-BFGS (`torch.optim.LBFGS`), closure-based, with optional strong-Wolfe
//! line search.
//!
//! Each [`Optimizer::step_with_closure`] runs up to `max_iter` iterations:
//! the direction is `d = −H g` from the two-loop recursion over the last
//! `history_size` pairs `(s, y)` (with `H₀ = sᵀy / yᵀy`), the step is
//! `θ ← θ + t d` with `t = lr` (the first iteration ever uses
//! `min(1, 1/‖g‖₁) lr`) or the strong-Wolfe step. [`Optimizer::step`]
//! without a closure is an error, as in PyTorch.
//!
//! PyTorch computes several scalars of this algorithm (`gtd`, `ys`, `ro`,
//! `H_diag`, sometimes `t`) as 0-dim tensors of the parameters' dtype and
//! others as Python floats; kiln tracks which is which (`Scalar`) and
//! rounds to float32 exactly where PyTorch's float32 tensors do
//! (`ScalarMath`), so float32 runs follow the same branches and numbers.
//!
//! **What LBFGS shares with the other optimizers.** Its hyperparameters are
//! one [`hyperparameter_table!`](crate::hyperparameter_table) like every
//! [`Rule`](crate::Rule)'s (names, reading and writing them by PyTorch name,
//! the spec options), its constructor makes the same checks (empty, repeated
//! or complex parameters) and its state names the optimizer that saved it.
//! What does not fit: LBFGS is no `Rule` over [`Grouped`](crate::Grouped).
//! It has no per-tensor update — a step evaluates the closure several times
//! and moves all parameters along one direction over their flattened
//! concatenation — so it has one param group (PyTorch refuses more) and its
//! state is global (the direction, the previous gradient, the `(s, y)`
//! history, counters), not `Grouped`'s per-parameter buffers keyed by name:
//! its state dict holds flattened tensors and checks the parameters' names
//! and shapes instead.
use crate::optimizer::{check_group, check_saved_by, check_unique_names, refuse_complex};
use crate::rule::Hyperparameter;
use crate::util::{non_negative, py_float};
use crate::{Error, NamedParameter, Optimizer, OptimizerState, Result};
use kiln_tensor::spec::{OptionVisitor, Options};
use kiln_tensor::{ops, tch, Kind, Tensor};
use serde_json::{json, Value};

/// The line search LBFGS uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LineSearch {
    /// Fixed step `lr` (PyTorch's `line_search_fn=None`).
    None,
    /// Strong-Wolfe line search (`line_search_fn="strong_wolfe"`).
    StrongWolfe,
}

kiln_tensor::choices!(LineSearch {
    None = "none",
    StrongWolfe = "strong_wolfe",
});

/// 0 for none, 1 for strong_wolfe; any value but 0 sets strong_wolfe.
impl Hyperparameter for LineSearch {
    fn get_part(&self, part: Option<usize>) -> Option<f64> {
        part.is_none()
            .then_some(f64::from(u8::from(*self == LineSearch::StrongWolfe)))
    }
    fn set_part(&mut self, part: Option<usize>, value: f64) -> bool {
        part.is_none() && {
            *self = if value != 0.0 {
                LineSearch::StrongWolfe
            } else {
                LineSearch::None
            };
            true
        }
    }
}

/// LBFGS's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LbfgsConfig {
    /// Learning rate (1).
    pub lr: f64,
    /// Maximal number of iterations per step (20).
    pub max_iter: usize,
    /// Maximal number of closure evaluations per step (`max_iter * 5 / 4`
    /// when `None`, computed at construction as PyTorch does; the optimizer's
    /// [`Lbfgs::config`] holds the computed number).
    pub max_eval: Option<usize>,
    /// Termination tolerance on first-order optimality (1e-7).
    pub tolerance_grad: f64,
    /// Termination tolerance on function value / parameter changes (1e-9).
    pub tolerance_change: f64,
    /// Number of (s, y) pairs kept (100).
    pub history_size: usize,
    /// The line search (none).
    pub line_search_fn: LineSearch,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        Self {
            lr: 1.0,
            max_iter: 20,
            max_eval: None,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size: 100,
            line_search_fn: LineSearch::None,
        }
    }
}

/// `max_eval`'s type, named so the hyperparameter table takes it (one token).
type OptionalCount = Option<usize>;

/// Reads as NaN while it is `None` (never, once LBFGS has computed its
/// default); setting NaN makes it `None`, another value a count as `usize`
/// sets it.
impl Hyperparameter for OptionalCount {
    fn get_part(&self, part: Option<usize>) -> Option<f64> {
        part.is_none()
            .then_some(self.map_or(f64::NAN, |v| v as f64))
    }
    fn set_part(&mut self, part: Option<usize>, value: f64) -> bool {
        part.is_none() && {
            *self = if value.is_nan() {
                None
            } else {
                let mut count = 0usize;
                count.set_part(None, value);
                Some(count)
            };
            true
        }
    }
}

/// The hyperparameters that count something: setting one to anything but a
/// non-negative integer is refused (the table's `usize` would truncate it).
const COUNTS: [&str; 3] = ["max_iter", "max_eval", "history_size"];

// The same table as every `Rule`'s, in an inherent impl: `HYPERPARAMETERS`,
// `get`, `set` and `options` (LBFGS's config is no `Rule`: see the module docs).
impl LbfgsConfig {
    crate::hyperparameter_table! {
        lr: f64 = "learning rate",
        max_iter: usize = "maximal number of iterations per step",
        max_eval: OptionalCount = "maximal number of closure evaluations per step; none: max_iter * 5 / 4",
        tolerance_grad: f64 = "termination tolerance on first-order optimality",
        tolerance_change: f64 = "termination tolerance on function value and parameter changes",
        history_size: usize = "number of (s, y) pairs kept",
        line_search_fn: LineSearch = "none | strong_wolfe",
    }

    /// PyTorch's check (`Invalid learning rate`).
    pub fn validate(&self) -> Result<()> {
        non_negative(self.lr, "learning rate")?;
        Ok(())
    }

    /// Builds the optimizer over `params` (LBFGS has a single param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<Lbfgs> {
        Lbfgs::new(self, params)
    }

    /// `max_eval`, or PyTorch's default `max_iter * 5 // 4` when it is `None`.
    fn effective_max_eval(&self) -> usize {
        self.max_eval.unwrap_or(self.max_iter * 5 / 4)
    }
}

/// LBFGS's spec options, with PyTorch's names (from its hyperparameter table).
impl Options for LbfgsConfig {
    fn options(&mut self, visitor: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        LbfgsConfig::options(self, visitor)
    }
}

/// A scalar of the algorithm as PyTorch holds it: a Python float, or a
/// 0-dim tensor of the parameters' dtype (`is_tensor`), whose arithmetic
/// rounds to that dtype.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scalar {
    value: f64,
    is_tensor: bool,
}

/// A Python float.
fn float(value: f64) -> Scalar {
    Scalar {
        value,
        is_tensor: false,
    }
}

impl Scalar {
    /// As saved in the state dict: `{"value": v, "tensor": bool}`.
    fn to_json(self) -> Value {
        json!({ "value": self.value, "tensor": self.is_tensor })
    }

    fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            value: v.get("value")?.as_f64()?,
            is_tensor: v.get("tensor")?.as_bool()?,
        })
    }
}

/// Python's arithmetic on [`Scalar`]s: an operation with a 0-dim tensor
/// operand gives a 0-dim tensor rounded to the parameters' dtype (float32
/// unless they are float64); floats stay f64.
#[derive(Debug, Clone, Copy)]
struct ScalarMath {
    float32: bool,
    /// Where the parameters live (PyTorch's 0-dim tensors live there too).
    device: kiln_tensor::Device,
}

impl ScalarMath {
    /// `x` rounded to the parameters' dtype.
    fn round(self, x: f64) -> f64 {
        if self.float32 {
            f64::from(x as f32)
        } else {
            x
        }
    }

    /// A 0-dim tensor holding `value` (rounded to the parameters' dtype).
    fn tensor(self, value: f64) -> Scalar {
        Scalar {
            value: self.round(value),
            is_tensor: true,
        }
    }

    /// `f(a, b)` with Python's promotion: a tensor if either operand is one.
    fn binary(self, a: Scalar, b: Scalar, f: fn(f64, f64) -> f64) -> Scalar {
        if a.is_tensor || b.is_tensor {
            self.tensor(f(self.round(a.value), self.round(b.value)))
        } else {
            float(f(a.value, b.value))
        }
    }
    fn add(self, a: Scalar, b: Scalar) -> Scalar {
        self.binary(a, b, |x, y| x + y)
    }
    fn sub(self, a: Scalar, b: Scalar) -> Scalar {
        self.binary(a, b, |x, y| x - y)
    }
    fn mul(self, a: Scalar, b: Scalar) -> Scalar {
        self.binary(a, b, |x, y| x * y)
    }
    fn div(self, a: Scalar, b: Scalar) -> Scalar {
        if b.is_tensor && !a.is_tensor {
            // `float / tensor` is `tensor.reciprocal() * float`.
            let r = self.round(1.0 / b.value);
            self.tensor(r * self.round(a.value))
        } else {
            self.binary(a, b, |x, y| x / y)
        }
    }
    /// The operands as a comparison sees them (rounded where one is a tensor).
    fn operands(self, a: Scalar, b: Scalar) -> (f64, f64) {
        if a.is_tensor || b.is_tensor {
            (self.round(a.value), self.round(b.value))
        } else {
            (a.value, b.value)
        }
    }
    fn lt(self, a: Scalar, b: Scalar) -> bool {
        let (x, y) = self.operands(a, b);
        x < y
    }
    fn le(self, a: Scalar, b: Scalar) -> bool {
        let (x, y) = self.operands(a, b);
        x <= y
    }
    fn gt(self, a: Scalar, b: Scalar) -> bool {
        let (x, y) = self.operands(a, b);
        x > y
    }
    fn ge(self, a: Scalar, b: Scalar) -> bool {
        let (x, y) = self.operands(a, b);
        x >= y
    }
    fn abs(self, a: Scalar) -> Scalar {
        Scalar {
            value: a.value.abs(),
            is_tensor: a.is_tensor,
        }
    }
    /// Python's `max(a, b)`: `a` unless `b > a`.
    fn max(self, a: Scalar, b: Scalar) -> Scalar {
        if self.gt(b, a) {
            b
        } else {
            a
        }
    }
    /// Python's `min(a, b)`: `a` unless `b < a`.
    fn min(self, a: Scalar, b: Scalar) -> Scalar {
        if self.lt(b, a) {
            b
        } else {
            a
        }
    }

    /// `_cubic_interpolate`.
    #[allow(clippy::too_many_arguments)]
    fn cubic(
        self,
        x1: Scalar,
        f1: f64,
        g1: Scalar,
        x2: Scalar,
        f2: f64,
        g2: Scalar,
        bounds: Option<(Scalar, Scalar)>,
    ) -> Result<Scalar> {
        let (xmin, xmax) = bounds.unwrap_or(if self.le(x1, x2) { (x1, x2) } else { (x2, x1) });
        let d1 = self.sub(
            self.add(g1, g2),
            self.div(self.mul(float(3.0), float(f1 - f2)), self.sub(x1, x2)),
        );
        let d2_square = self.sub(self.mul(d1, d1), self.mul(g1, g2));
        if self.ge(d2_square, float(0.0)) {
            // `d2_square.sqrt()` on a 0-dim tensor: libtorch's kernel on the
            // parameters' device (on the CPU, MKL's vector sqrt, which is not
            // always correctly rounded).
            let d2 = if d2_square.is_tensor {
                let kind = if self.float32 {
                    Kind::Float
                } else {
                    Kind::Double
                };
                let t = Tensor::f_scalar_tensor(d2_square.value, (kind, self.device))?;
                self.tensor(item(&t.f_sqrt()?)?)
            } else {
                float(d2_square.value.sqrt())
            };
            let min_pos = if self.le(x1, x2) {
                let num = self.sub(self.add(g2, d2), d1);
                let den = self.add(self.sub(g2, g1), self.mul(float(2.0), d2));
                self.sub(x2, self.mul(self.sub(x2, x1), self.div(num, den)))
            } else {
                let num = self.sub(self.add(g1, d2), d1);
                let den = self.add(self.sub(g1, g2), self.mul(float(2.0), d2));
                self.sub(x1, self.mul(self.sub(x1, x2), self.div(num, den)))
            };
            Ok(self.min(self.max(min_pos, xmin), xmax))
        } else {
            Ok(self.div(self.add(xmin, xmax), float(2.0)))
        }
    }
}

#[derive(Debug, Default)]
struct LbfgsState {
    func_evals: usize,
    n_iter: usize,
    d: Option<Tensor>,
    t: Option<Scalar>,
    old_dirs: Vec<Tensor>,
    old_stps: Vec<Tensor>,
    ro: Vec<Scalar>,
    h_diag: Option<Scalar>,
    prev_flat_grad: Option<Tensor>,
    prev_loss: Option<f64>,
}

/// `torch.optim.LBFGS` (one param group).
#[derive(Debug)]
pub struct Lbfgs {
    /// The hyperparameters, `max_eval` always set (PyTorch's group holds the
    /// computed default too).
    cfg: LbfgsConfig,
    params: Vec<NamedParameter>,
    state: LbfgsState,
}

type Closure<'a> = &'a mut dyn FnMut() -> Result<f64>;

/// The value of a 0-dim tensor.
fn item(t: &Tensor) -> Result<f64> {
    Ok(t.f_double_value(&[])?)
}

impl Lbfgs {
    /// Validates `cfg` and creates the optimizer.
    pub fn new(mut cfg: LbfgsConfig, params: Vec<NamedParameter>) -> Result<Self> {
        cfg.validate()?;
        if params.is_empty() {
            return Err(Error::InvalidArgument(
                "optimizer got an empty parameter list".into(),
            ));
        }
        check_unique_names(&[params.as_slice()])?;
        for p in &params {
            refuse_complex("lbfgs", p)?;
        }
        cfg.max_eval = Some(cfg.effective_max_eval());
        Ok(Self {
            cfg,
            params,
            state: LbfgsState::default(),
        })
    }

    /// The current hyperparameters (`max_eval` as computed when it was `None`).
    pub fn config(&self) -> &LbfgsConfig {
        &self.cfg
    }

    fn max_eval(&self) -> usize {
        self.cfg.effective_max_eval()
    }

    /// The arithmetic of this optimizer's scalars (the parameters' dtype).
    fn math(&self) -> ScalarMath {
        let first = self.params.first();
        ScalarMath {
            float32: first.is_some_and(|p| p.tensor.kind() != Kind::Double),
            device: first.map_or(kiln_tensor::Device::Cpu, |p| p.tensor.device()),
        }
    }

    fn gather_flat_grad(&self) -> Result<Tensor> {
        let mut views = Vec::with_capacity(self.params.len());
        for p in &self.params {
            if ops::has_grad(&p.tensor)? {
                views.push(p.tensor.f_grad()?.f_reshape([-1])?);
            } else {
                views.push(p.tensor.f_new_zeros(
                    [p.tensor.numel() as i64],
                    (p.tensor.kind(), p.tensor.device()),
                )?);
            }
        }
        Ok(Tensor::f_cat(&views, 0)?)
    }

    fn add_grad(&self, step_size: f64, update: &Tensor) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let mut offset = 0i64;
        for p in &self.params {
            let numel = p.tensor.numel() as i64;
            let piece = update
                .f_narrow(0, offset, numel)?
                .f_reshape(p.tensor.size())?;
            ops::add_(&p.tensor, &piece, step_size)?;
            offset += numel;
        }
        Ok(())
    }

    fn clone_params(&self) -> Result<Vec<Tensor>> {
        self.params
            .iter()
            .map(|p| Ok(ops::detached_clone(&p.tensor)?))
            .collect()
    }

    fn set_params(&self, x: &[Tensor]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (p, v) in self.params.iter().zip(x) {
            p.tensor.shallow_clone().f_copy_(v)?;
        }
        Ok(())
    }

    fn directional_evaluate(
        &self,
        closure: Closure<'_>,
        x: &[Tensor],
        t: Scalar,
        d: &Tensor,
    ) -> Result<(f64, Tensor)> {
        self.add_grad(t.value, d)?;
        let loss = closure()?;
        let flat_grad = self.gather_flat_grad()?;
        self.set_params(x)?;
        Ok((loss, flat_grad))
    }

    /// `_strong_wolfe` with PyTorch's constants (c1 = 1e-4, c2 = 0.9,
    /// tolerance_change = 1e-9).
    #[allow(clippy::too_many_arguments)]
    fn strong_wolfe(
        &self,
        closure: Closure<'_>,
        x: &[Tensor],
        mut t: Scalar,
        d: &Tensor,
        f: f64,
        g: &Tensor,
        gtd: Scalar,
        max_ls: i64,
    ) -> Result<(f64, Tensor, Scalar, usize)> {
        let math = self.math();
        let (c1, c2, tolerance_change) = (1e-4, 0.9, 1e-9);
        let d_norm = math.tensor(item(&d.f_abs()?.f_max()?)?);
        let g = ops::detached_clone(g)?;
        let (mut f_new, mut g_new) = self.directional_evaluate(closure, x, t, d)?;
        let mut ls_func_evals = 1usize;
        let mut gtd_new = math.tensor(item(&g_new.f_dot(d)?)?);
        let (mut t_prev, mut f_prev, mut g_prev, mut gtd_prev) =
            (float(0.0), f, g.shallow_clone(), gtd);
        let mut done = false;
        let mut ls_iter = 0i64;
        let mut bracket: Vec<Scalar> = Vec::new();
        let mut bracket_f: Vec<f64> = Vec::new();
        let mut bracket_g: Vec<Tensor> = Vec::new();
        let mut bracket_gtd: Vec<Scalar> = Vec::new();
        let armijo = |t: Scalar| math.add(float(f), math.mul(math.mul(float(c1), t), gtd));
        let mut broke = false;
        while ls_iter < max_ls {
            let armijo_fails = math.gt(float(f_new), armijo(t)) || (ls_iter > 1 && f_new >= f_prev);
            let wolfe = !armijo_fails && math.le(math.abs(gtd_new), math.mul(float(-c2), gtd));
            if wolfe {
                bracket = vec![t];
                bracket_f = vec![f_new];
                bracket_g = vec![g_new.shallow_clone()];
                done = true;
                broke = true;
                break;
            }
            if armijo_fails || math.ge(gtd_new, float(0.0)) {
                bracket = vec![t_prev, t];
                bracket_f = vec![f_prev, f_new];
                bracket_g = vec![g_prev.shallow_clone(), ops::detached_clone(&g_new)?];
                bracket_gtd = vec![gtd_prev, gtd_new];
                broke = true;
                break;
            }
            let min_step = math.add(t, math.mul(float(0.01), math.sub(t, t_prev)));
            let max_step = math.mul(t, float(10.0));
            let tmp = t;
            t = math.cubic(
                t_prev,
                f_prev,
                gtd_prev,
                t,
                f_new,
                gtd_new,
                Some((min_step, max_step)),
            )?;
            t_prev = tmp;
            f_prev = f_new;
            g_prev = ops::detached_clone(&g_new)?;
            gtd_prev = gtd_new;
            (f_new, g_new) = self.directional_evaluate(closure, x, t, d)?;
            ls_func_evals += 1;
            gtd_new = math.tensor(item(&g_new.f_dot(d)?)?);
            ls_iter += 1;
        }
        if ls_iter == max_ls {
            bracket = vec![float(0.0), t];
            bracket_f = vec![f, f_new];
            bracket_g = vec![g.shallow_clone(), g_new.shallow_clone()];
        } else if !broke {
            return Err(Error::InvalidArgument(format!(
                "LBFGS line search got a negative budget ({max_ls})"
            )));
        }
        let order = |bf: &[f64]| match (bf.first(), bf.last()) {
            (Some(a), Some(b)) if a <= b => (0usize, 1usize),
            _ => (1, 0),
        };
        let (mut low, mut high) = order(&bracket_f);
        let at = |v: &[Scalar], i: usize| {
            v.get(i)
                .copied()
                .ok_or_else(|| Error::State("LBFGS line search bracket".into()))
        };
        let atf = |v: &[f64], i: usize| {
            v.get(i)
                .copied()
                .ok_or_else(|| Error::State("LBFGS line search bracket".into()))
        };
        let mut insuf_progress = false;
        while !done && ls_iter < max_ls {
            let (b0, b1) = (at(&bracket, 0)?, at(&bracket, 1)?);
            if math.lt(
                math.mul(math.abs(math.sub(b1, b0)), d_norm),
                float(tolerance_change),
            ) {
                break;
            }
            t = math.cubic(
                b0,
                atf(&bracket_f, 0)?,
                at(&bracket_gtd, 0)?,
                b1,
                atf(&bracket_f, 1)?,
                at(&bracket_gtd, 1)?,
                None,
            )?;
            let (bmax, bmin) = (math.max(b0, b1), math.min(b0, b1));
            let eps = math.mul(float(0.1), math.sub(bmax, bmin));
            if math.lt(math.min(math.sub(bmax, t), math.sub(t, bmin)), eps) {
                if insuf_progress || math.ge(t, bmax) || math.le(t, bmin) {
                    t = if math.lt(math.abs(math.sub(t, bmax)), math.abs(math.sub(t, bmin))) {
                        math.sub(bmax, eps)
                    } else {
                        math.add(bmin, eps)
                    };
                    insuf_progress = false;
                } else {
                    insuf_progress = true;
                }
            } else {
                insuf_progress = false;
            }
            (f_new, g_new) = self.directional_evaluate(closure, x, t, d)?;
            ls_func_evals += 1;
            gtd_new = math.tensor(item(&g_new.f_dot(d)?)?);
            ls_iter += 1;
            if math.gt(float(f_new), armijo(t)) || f_new >= atf(&bracket_f, low)? {
                set_at(&mut bracket, high, t)?;
                set_at(&mut bracket_f, high, f_new)?;
                set_at(&mut bracket_g, high, ops::detached_clone(&g_new)?)?;
                set_at(&mut bracket_gtd, high, gtd_new)?;
                (low, high) = order(&bracket_f);
            } else {
                if math.le(math.abs(gtd_new), math.mul(float(-c2), gtd)) {
                    done = true;
                } else if math.ge(
                    math.mul(gtd_new, math.sub(at(&bracket, high)?, at(&bracket, low)?)),
                    float(0.0),
                ) {
                    let (bl, bfl) = (at(&bracket, low)?, atf(&bracket_f, low)?);
                    set_at(&mut bracket, high, bl)?;
                    set_at(&mut bracket_f, high, bfl)?;
                    let gl = bracket_g
                        .get(low)
                        .map(Tensor::shallow_clone)
                        .ok_or_else(|| Error::State("bracket".into()))?;
                    set_at(&mut bracket_g, high, gl)?;
                    let bgl = at(&bracket_gtd, low)?;
                    set_at(&mut bracket_gtd, high, bgl)?;
                }
                set_at(&mut bracket, low, t)?;
                set_at(&mut bracket_f, low, f_new)?;
                set_at(&mut bracket_g, low, ops::detached_clone(&g_new)?)?;
                set_at(&mut bracket_gtd, low, gtd_new)?;
            }
        }
        let t = at(&bracket, low)?;
        let f_new = atf(&bracket_f, low)?;
        let g_new = bracket_g
            .get(low)
            .map(Tensor::shallow_clone)
            .ok_or_else(|| Error::State("bracket".into()))?;
        Ok((f_new, g_new, t, ls_func_evals))
    }

    fn run(&mut self, closure: Closure<'_>) -> Result<f64> {
        let math = self.math();
        let cfg = self.cfg;
        let orig_loss = closure()?;
        let mut loss = orig_loss;
        let mut current_evals = 1usize;
        self.state.func_evals += 1;
        let mut flat_grad = self.gather_flat_grad()?;
        let opt_cond = math.le(
            math.tensor(item(&flat_grad.f_abs()?.f_max()?)?),
            float(cfg.tolerance_grad),
        );
        if opt_cond {
            return Ok(orig_loss);
        }
        let mut st = std::mem::take(&mut self.state);
        let result = (|| -> Result<()> {
            let mut n_iter = 0usize;
            while n_iter < cfg.max_iter {
                n_iter += 1;
                st.n_iter += 1;
                let d = if st.n_iter == 1 {
                    st.old_dirs.clear();
                    st.old_stps.clear();
                    st.ro.clear();
                    st.h_diag = Some(float(1.0));
                    flat_grad.f_neg()?
                } else {
                    let (Some(prev), Some(d), Some(t)) = (&st.prev_flat_grad, &st.d, st.t) else {
                        return Err(Error::State(
                            "LBFGS state lost its previous direction".into(),
                        ));
                    };
                    let y = flat_grad.f_sub(prev)?;
                    let s = d.f_mul_scalar(t.value)?;
                    let ys = math.tensor(item(&y.f_dot(&s)?)?);
                    if math.gt(ys, float(1e-10)) {
                        if st.old_dirs.len() == cfg.history_size && !st.old_dirs.is_empty() {
                            let _ = st.old_dirs.remove(0);
                            let _ = st.old_stps.remove(0);
                            st.ro.remove(0);
                        }
                        let yy = math.tensor(item(&y.f_dot(&y)?)?);
                        st.old_dirs.push(y);
                        st.old_stps.push(s);
                        st.ro.push(math.div(float(1.0), ys));
                        st.h_diag = Some(math.div(ys, yy));
                    }
                    let num_old = st.old_dirs.len();
                    let mut al = vec![float(0.0); num_old];
                    let q = flat_grad.f_neg()?;
                    for i in (0..num_old).rev() {
                        let (Some(stp), Some(dir), Some(ro), Some(a)) = (
                            st.old_stps.get(i),
                            st.old_dirs.get(i),
                            st.ro.get(i).copied(),
                            al.get_mut(i),
                        ) else {
                            continue;
                        };
                        *a = math.mul(math.tensor(item(&stp.f_dot(&q)?)?), ro);
                        ops::add_(&q, dir, -a.value)?;
                    }
                    let h = st.h_diag.unwrap_or(float(1.0));
                    let r = q.f_mul_scalar(h.value)?;
                    for i in 0..num_old {
                        let (Some(stp), Some(dir), Some(ro), Some(a)) = (
                            st.old_stps.get(i),
                            st.old_dirs.get(i),
                            st.ro.get(i).copied(),
                            al.get(i).copied(),
                        ) else {
                            continue;
                        };
                        let be_i = math.mul(math.tensor(item(&dir.f_dot(&r)?)?), ro);
                        ops::add_(&r, stp, math.sub(a, be_i).value)?;
                    }
                    r
                };
                match &st.prev_flat_grad {
                    Some(p) => {
                        p.shallow_clone().f_copy_(&flat_grad)?;
                    }
                    None => st.prev_flat_grad = Some(ops::detached_clone(&flat_grad)?),
                }
                let prev_loss = loss;
                st.prev_loss = Some(prev_loss);
                let mut t = if st.n_iter == 1 {
                    let inv = math.div(
                        float(1.0),
                        math.tensor(item(&flat_grad.f_abs()?.f_sum(flat_grad.kind())?)?),
                    );
                    math.mul(math.min(float(1.0), inv), float(cfg.lr))
                } else {
                    float(cfg.lr)
                };
                st.d = Some(d.shallow_clone());
                st.t = Some(t);
                let gtd = math.tensor(item(&flat_grad.f_dot(&d)?)?);
                if math.gt(gtd, float(-cfg.tolerance_change)) {
                    break;
                }
                let mut ls_func_evals = 0usize;
                let mut opt_cond = false;
                match cfg.line_search_fn {
                    LineSearch::StrongWolfe => {
                        let x_init = self.clone_params()?;
                        let max_ls = self.max_eval() as i64 - current_evals as i64;
                        let (l, g, t_new, evals) = self.strong_wolfe(
                            &mut *closure,
                            &x_init,
                            t,
                            &d,
                            loss,
                            &flat_grad,
                            gtd,
                            max_ls,
                        )?;
                        loss = l;
                        flat_grad = g;
                        t = t_new;
                        st.t = Some(t);
                        ls_func_evals = evals;
                        self.add_grad(t.value, &d)?;
                        opt_cond = math.le(
                            math.tensor(item(&flat_grad.f_abs()?.f_max()?)?),
                            float(cfg.tolerance_grad),
                        );
                    }
                    LineSearch::None => {
                        self.add_grad(t.value, &d)?;
                        if n_iter != cfg.max_iter {
                            loss = closure()?;
                            flat_grad = self.gather_flat_grad()?;
                            opt_cond = math.le(
                                math.tensor(item(&flat_grad.f_abs()?.f_max()?)?),
                                float(cfg.tolerance_grad),
                            );
                            ls_func_evals = 1;
                        }
                    }
                }
                current_evals += ls_func_evals;
                st.func_evals += ls_func_evals;
                if n_iter == cfg.max_iter || current_evals >= self.max_eval() || opt_cond {
                    break;
                }
                if math.le(
                    math.tensor(item(&d.f_mul_scalar(t.value)?.f_abs()?.f_max()?)?),
                    float(cfg.tolerance_change),
                ) {
                    break;
                }
                if (loss - prev_loss).abs() < cfg.tolerance_change {
                    break;
                }
            }
            Ok(())
        })();
        self.state = st;
        result.map(|()| orig_loss)
    }
}

/// `v[i] = x` in the line search's bracket.
fn set_at<T>(v: &mut [T], i: usize, x: T) -> Result<()> {
    match v.get_mut(i) {
        Some(slot) => {
            *slot = x;
            Ok(())
        }
        None => Err(Error::State("LBFGS line search bracket".into())),
    }
}

impl Optimizer for Lbfgs {
    fn name(&self) -> &str {
        "lbfgs"
    }

    fn step(&mut self) -> Result<()> {
        Err(Error::InvalidArgument(
            "LBFGS needs a closure that re-evaluates the model: call step_with_closure".into(),
        ))
    }

    fn requires_closure(&self) -> bool {
        true
    }

    fn step_with_closure(&mut self, closure: &mut dyn FnMut() -> Result<f64>) -> Result<f64> {
        self.run(closure)
    }

    fn num_groups(&self) -> usize {
        1
    }

    fn group_params(&self, group: usize) -> &[NamedParameter] {
        if group == 0 {
            &self.params
        } else {
            &[]
        }
    }

    fn hyperparameter(&self, group: usize, name: &str) -> Option<f64> {
        if group != 0 {
            return None;
        }
        self.cfg.get(name)
    }

    fn set_hyperparameter(&mut self, group: usize, name: &str, value: f64) -> Result<()> {
        check_group(group, 1)?;
        let count = value >= 0.0 && value.fract() == 0.0 && value.is_finite();
        if COUNTS.contains(&name) && !count {
            return Err(Error::InvalidHyperparameter(format!(
                "lbfgs: {name} must be a non-negative integer, got {}",
                py_float(value)
            )));
        }
        let mut next = self.cfg;
        if !next.set(name, value) {
            return Err(Error::InvalidArgument(format!(
                "lbfgs has no hyperparameter '{name}' (it has {})",
                LbfgsConfig::HYPERPARAMETERS.join(", ")
            )));
        }
        next.validate()?;
        self.cfg = next;
        Ok(())
    }

    /// LBFGS's state is over the flattened parameters, not per parameter:
    /// tensors are `lbfgs.d`, `lbfgs.prev_flat_grad`, `lbfgs.old_dirs.NNNN`,
    /// `lbfgs.old_stps.NNNN`; the parameter names and sizes are checked on load.
    fn state_dict(&self) -> Result<OptimizerState> {
        let st = &self.state;
        let mut tensors = Vec::new();
        if let Some(d) = &st.d {
            tensors.push(("lbfgs.d".to_string(), d.shallow_clone()));
        }
        if let Some(p) = &st.prev_flat_grad {
            tensors.push(("lbfgs.prev_flat_grad".to_string(), p.shallow_clone()));
        }
        for (i, (y, s)) in st.old_dirs.iter().zip(&st.old_stps).enumerate() {
            tensors.push((format!("lbfgs.old_dirs.{i:06}"), y.shallow_clone()));
            tensors.push((format!("lbfgs.old_stps.{i:06}"), s.shallow_clone()));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let params: Vec<Value> = self
            .params
            .iter()
            .map(|p| json!([p.name, p.tensor.size()]))
            .collect();
        let scalars = json!({
            "optimizer": "lbfgs",
            "param_groups": [self.cfg],
            "params": params,
            "state": {
                "func_evals": st.func_evals,
                "n_iter": st.n_iter,
                "t": st.t.map(Scalar::to_json),
                "ro": st.ro.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
                "H_diag": st.h_diag.map(Scalar::to_json),
                "prev_loss": st.prev_loss,
                "history": st.old_dirs.len(),
            }
        });
        Ok(OptimizerState { tensors, scalars })
    }

    fn load_state_dict(&mut self, saved: &OptimizerState) -> Result<()> {
        check_saved_by(saved, "lbfgs")?;
        let s = &saved.scalars;
        let ours: Vec<Value> = self
            .params
            .iter()
            .map(|p| json!([p.name, p.tensor.size()]))
            .collect();
        if s.get("params").and_then(Value::as_array) != Some(&ours) {
            return Err(Error::State(format!(
                "it is for parameters {} but this optimizer has {}",
                s.get("params").cloned().unwrap_or(Value::Null),
                Value::Array(ours)
            )));
        }
        let cfg: LbfgsConfig = s
            .get("param_groups")
            .and_then(Value::as_array)
            .and_then(|g| g.first())
            .cloned()
            .ok_or_else(|| Error::State("it has no param group".into()))
            .and_then(|g| {
                serde_json::from_value(g)
                    .map_err(|e| Error::State(format!("lbfgs hyperparameters: {e}")))
            })?;
        cfg.validate()?;
        let st = s.get("state").cloned().unwrap_or(Value::Null);
        let numel: i64 = self.params.iter().map(|p| p.tensor.numel() as i64).sum();
        let (device, kind) = match self.params.first() {
            Some(p) => (p.tensor.device(), p.tensor.kind()),
            None => return Err(Error::State("no parameters".into())),
        };
        let mut used = 0usize;
        let mut take = |key: &str| -> Result<Option<Tensor>> {
            let Some((_, t)) = saved.tensors.iter().find(|(k, _)| k == key) else {
                return Ok(None);
            };
            if t.size() != [numel] {
                return Err(Error::State(format!(
                    "'{key}' has shape {:?} but the parameters have {numel} values",
                    t.size()
                )));
            }
            used += 1;
            Ok(Some(ops::detached_clone(
                &t.f_to_device(device)?.f_to_kind(kind)?,
            )?))
        };
        let history = st.get("history").and_then(Value::as_u64).unwrap_or(0) as usize;
        let mut new = LbfgsState {
            func_evals: st.get("func_evals").and_then(Value::as_u64).unwrap_or(0) as usize,
            n_iter: st.get("n_iter").and_then(Value::as_u64).unwrap_or(0) as usize,
            d: take("lbfgs.d")?,
            t: st.get("t").and_then(Scalar::from_json),
            prev_flat_grad: take("lbfgs.prev_flat_grad")?,
            ro: st
                .get("ro")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Scalar::from_json).collect())
                .unwrap_or_default(),
            h_diag: st.get("H_diag").and_then(Scalar::from_json),
            prev_loss: st.get("prev_loss").and_then(Value::as_f64),
            ..LbfgsState::default()
        };
        for i in 0..history {
            let y = take(&format!("lbfgs.old_dirs.{i:06}"))?;
            let s = take(&format!("lbfgs.old_stps.{i:06}"))?;
            match (y, s) {
                (Some(y), Some(s)) => {
                    new.old_dirs.push(y);
                    new.old_stps.push(s);
                }
                _ => return Err(Error::State(format!("history pair {i} is missing"))),
            }
        }
        if new.ro.len() != history {
            return Err(Error::State("ro does not match the history".into()));
        }
        if used != saved.tensors.len() {
            return Err(Error::State("it has tensors LBFGS does not know".into()));
        }
        self.cfg = LbfgsConfig {
            max_eval: Some(cfg.effective_max_eval()),
            ..cfg
        };
        self.state = new;
        Ok(())
    }
}
