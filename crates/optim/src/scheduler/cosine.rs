//! CosineAnnealingLR and CosineAnnealingWarmRestarts (SGDR).
use super::{
    apply_lrs, cannot_restart, div, fnum, group_lrs, Attributes, Composable, Core, InitialLrs,
    LrScheduler, Schedule, StateReader,
};
use crate::{Error, Optimizer, Result};
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use serde_json::{Map, Value};
use std::f64::consts::PI;

/// Options of [`CosineAnnealingLr`] (`CosineAnnealingLR(optimizer, T_max, eta_min=0.0)`).
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingLrConfig {
    /// Half period of the cosine, in steps. No default in PyTorch; the spec
    /// string `cosine` takes the total steps hint when `t_max` is omitted.
    pub t_max: usize,
    /// Minimum learning rate (default 0.0).
    pub eta_min: f64,
}

impl CosineAnnealingLrConfig {
    /// `t_max` with PyTorch's default `eta_min=0.0`.
    pub fn new(t_max: usize) -> Self {
        Self {
            t_max,
            eta_min: 0.0,
        }
    }

    /// Builds the scheduler (records `initial_lr`, performs the initial step).
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<CosineAnnealingLr> {
        Ok(CosineAnnealingLr {
            core: Core::build("cosine", CosineRule { cfg: self }, opt)?,
        })
    }
}

struct CosineRule {
    cfg: CosineAnnealingLrConfig,
}

impl Schedule for CosineRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let lrs = group_lrs(opt)?;
        if attrs.is_initial {
            return Ok(lrs);
        }
        let (e, t, eta) = (attrs.last_epoch, self.cfg.t_max as i64, self.cfg.eta_min);
        let what = "CosineAnnealingLR (T_max is 0)";
        if attrs.step_count == 1 && e > 0 {
            let c = (div(e as f64 * PI, t as f64, what)?).cos();
            return Ok(attrs
                .base_lrs
                .iter()
                .map(|b| eta + (b - eta) * (1.0 + c) / 2.0)
                .collect());
        }
        if t == 0 {
            return Err(Error::InvalidArgument(format!(
                "{what}: integer modulo by zero"
            )));
        }
        if (e - 1 - t).rem_euclid(2 * t) == 0 {
            let c = div(PI, t as f64, what)?.cos();
            return Ok(lrs
                .iter()
                .zip(attrs.base_lrs)
                .map(|(lr, b)| lr + (b - eta) * (1.0 - c) / 2.0)
                .collect());
        }
        let num = 1.0 + div(PI * e as f64, t as f64, what)?.cos();
        let den = 1.0 + div(PI * (e - 1) as f64, t as f64, what)?.cos();
        let ratio = div(num, den, "CosineAnnealingLR")?;
        Ok(lrs.iter().map(|lr| ratio * (lr - eta) + eta).collect())
    }
    fn closed_form(&self, attrs: &Attributes<'_>) -> Option<Result<Vec<f64>>> {
        let eta = self.cfg.eta_min;
        Some(
            div(
                PI * attrs.last_epoch as f64,
                self.cfg.t_max as f64,
                "CosineAnnealingLR (T_max is 0)",
            )
            .map(|x| {
                let c = x.cos();
                attrs
                    .base_lrs
                    .iter()
                    .map(|b| eta + (b - eta) * (1.0 + c) / 2.0)
                    .collect()
            }),
        )
    }
    fn save(&self, map: &mut Map<String, Value>) {
        map.insert("T_max".into(), Value::from(self.cfg.t_max));
        map.insert("eta_min".into(), fnum(self.cfg.eta_min));
    }
    fn load(&mut self, r: &StateReader<'_>) -> Result<()> {
        self.cfg = CosineAnnealingLrConfig {
            t_max: r.usize("T_max")?,
            eta_min: r.f64("eta_min")?,
        };
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.CosineAnnealingLR`: anneals from `base_lr` to
/// `eta_min` over `T_max` steps along
/// `eta_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2`,
/// computed as PyTorch's `step()` does, recursively:
/// `eta_t = (1 + cos(pi t / T)) / (1 + cos(pi (t-1) / T)) * (eta_{t-1} - eta_min) + eta_min`,
/// with `eta_t = eta_{t-1} + (base_lr - eta_min) * (1 - cos(pi / T)) / 2` when
/// `(t - 1 - T) % 2T == 0`. Past `T_max` it keeps following the cosine back up
/// (no restarts).
///
/// Stepped per epoch or per batch; `T_max` counts whichever is used.
pub struct CosineAnnealingLr {
    core: Core<CosineRule>,
}
super::core_scheduler!(CosineAnnealingLr);

// ---------------------------------------------------------------------------

/// Options of [`CosineAnnealingWarmRestarts`]
/// (`CosineAnnealingWarmRestarts(optimizer, T_0, T_mult=1, eta_min=0.0)`).
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingWarmRestartsConfig {
    /// Steps until the first restart (a positive integer). No default.
    pub t_0: i64,
    /// Factor by which the period grows after each restart (>= 1, default 1).
    pub t_mult: i64,
    /// Minimum learning rate (default 0.0).
    pub eta_min: f64,
}

impl CosineAnnealingWarmRestartsConfig {
    /// `t_0` with PyTorch's defaults `T_mult=1`, `eta_min=0.0`.
    pub fn new(t_0: i64) -> Self {
        Self {
            t_0,
            t_mult: 1,
            eta_min: 0.0,
        }
    }

    /// Builds the scheduler; PyTorch's checks of `T_0` and `T_mult`.
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<CosineAnnealingWarmRestarts> {
        if self.t_0 <= 0 {
            return Err(Error::InvalidHyperparameter(format!(
                "Expected positive integer T_0, but got {}",
                self.t_0
            )));
        }
        if self.t_mult < 1 {
            return Err(Error::InvalidHyperparameter(format!(
                "Expected integer T_mult >= 1, but got {}",
                self.t_mult
            )));
        }
        let initial_lrs = super::setdefault_initial_lrs(opt)?;
        let mut s = CosineAnnealingWarmRestarts {
            t_i: self.t_0,
            t_cur: -1.0,
            cfg: self,
            base_lrs: initial_lrs.clone(),
            initial_lrs,
            last_epoch: -1,
            last_lr: Vec::new(),
        };
        s.step(opt)?;
        Ok(s)
    }
}

/// `torch.optim.lr_scheduler.CosineAnnealingWarmRestarts` (SGDR):
/// `eta_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2`,
/// where `T_cur` counts steps since the last restart and `T_i` is the current
/// period (`T_0`, then `T_0 * T_mult`, ...).
///
/// [`LrScheduler::step`] adds 1 to `T_cur` (per epoch or per batch);
/// [`CosineAnnealingWarmRestarts::step_to`] sets a fractional epoch, e.g.
/// `epoch + i / iters` after batch `i`, as PyTorch's `step(epoch)`.
pub struct CosineAnnealingWarmRestarts {
    cfg: CosineAnnealingWarmRestartsConfig,
    t_i: i64,
    t_cur: f64,
    base_lrs: Vec<f64>,
    initial_lrs: Vec<f64>,
    last_epoch: i64,
    last_lr: Vec<f64>,
}

impl CosineAnnealingWarmRestarts {
    fn get_lr(&self) -> Result<Vec<f64>> {
        let eta = self.cfg.eta_min;
        let c = div(
            PI * self.t_cur,
            self.t_i as f64,
            "CosineAnnealingWarmRestarts",
        )?
        .cos();
        Ok(self
            .base_lrs
            .iter()
            .map(|b| eta + (b - eta) * (1.0 + c) / 2.0)
            .collect())
    }

    /// PyTorch's `step(epoch)` with an explicit (possibly fractional) epoch:
    /// `T_cur` and `T_i` are derived from `epoch` in closed form and
    /// `last_epoch = floor(epoch)`. Errors on a negative epoch.
    pub fn step_to(&mut self, opt: &mut dyn Optimizer, epoch: f64) -> Result<()> {
        // Python compares `epoch < 0` and `epoch >= T_0` on the number as given.
        if epoch < 0.0 || epoch.is_nan() {
            return Err(Error::InvalidArgument(format!(
                "Expected non-negative epoch, but got {epoch}"
            )));
        }
        let (t0, tm) = (self.cfg.t_0, self.cfg.t_mult);
        if epoch >= t0 as f64 {
            if tm == 1 {
                self.t_cur = epoch % t0 as f64;
            } else {
                let x = epoch / t0 as f64 * (tm - 1) as f64 + 1.0;
                let n = (x.ln() / (tm as f64).ln()) as u32;
                let pow = tm.checked_pow(n).ok_or_else(|| {
                    Error::InvalidArgument(format!("epoch {epoch} is out of range"))
                })?;
                self.t_cur = epoch - (t0 * (pow - 1)) as f64 / (tm - 1) as f64;
                self.t_i = t0 * pow;
            }
        } else {
            self.t_i = t0;
            self.t_cur = epoch;
        }
        self.last_epoch = epoch.floor() as i64;
        self.last_lr = apply_lrs(opt, &self.get_lr()?)?;
        Ok(())
    }

    /// `T_cur`, the (possibly fractional) steps since the last restart.
    pub fn t_cur(&self) -> f64 {
        self.t_cur
    }

    /// `T_i`, the length of the current period.
    pub fn t_i(&self) -> i64 {
        self.t_i
    }
}

impl LrScheduler for CosineAnnealingWarmRestarts {
    fn name(&self) -> &str {
        "cosine-restarts"
    }

    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        if self.last_epoch < 0 {
            return self.step_to(opt, 0.0);
        }
        let mut t_cur = self.t_cur + 1.0;
        let mut t_i = self.t_i;
        if t_cur >= t_i as f64 {
            t_cur %= t_i as f64;
            t_i *= self.cfg.t_mult;
        }
        let (old_cur, old_i) = (self.t_cur, self.t_i);
        self.t_cur = t_cur;
        self.t_i = t_i;
        match self.get_lr() {
            Ok(lrs) => {
                self.last_epoch += 1;
                self.last_lr = apply_lrs(opt, &lrs)?;
                Ok(())
            }
            Err(e) => {
                self.t_cur = old_cur;
                self.t_i = old_i;
                Err(e)
            }
        }
    }

    fn last_lr(&self) -> &[f64] {
        &self.last_lr
    }

    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    fn state_dict(&self) -> Value {
        serde_json::json!({
            "scheduler": "cosine-restarts",
            "last_epoch": self.last_epoch,
            "T_0": self.cfg.t_0,
            "T_mult": self.cfg.t_mult,
            "eta_min": fnum(self.cfg.eta_min),
            "T_i": self.t_i,
            "T_cur": fnum(self.t_cur),
            "base_lrs": super::flist(&self.base_lrs),
            "initial_lrs": super::flist(&self.initial_lrs),
            "last_lr": super::flist(&self.last_lr),
        })
    }

    fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        let r = StateReader::new("cosine-restarts", state)?;
        let base_lrs = r.f64_list("base_lrs")?;
        if base_lrs.len() != self.base_lrs.len() {
            return Err(Error::State(format!(
                "cosine-restarts scheduler state has {} param groups, this scheduler has {}",
                base_lrs.len(),
                self.base_lrs.len()
            )));
        }
        let cfg = CosineAnnealingWarmRestartsConfig {
            t_0: r.i64("T_0")?,
            t_mult: r.i64("T_mult")?,
            eta_min: r.f64("eta_min")?,
        };
        let (t_i, t_cur) = (r.i64("T_i")?, r.f64("T_cur")?);
        let (initial_lrs, last_lr, last_epoch) = (
            r.f64_list("initial_lrs")?,
            r.f64_list("last_lr")?,
            r.i64("last_epoch")?,
        );
        self.cfg = cfg;
        self.t_i = t_i;
        self.t_cur = t_cur;
        self.base_lrs = base_lrs;
        self.initial_lrs = initial_lrs;
        self.last_lr = last_lr;
        self.last_epoch = last_epoch;
        Ok(())
    }

    fn update_lr_at(&mut self, opt: &mut dyn Optimizer, epoch: i64) -> Result<()> {
        // PyTorch's base `_update_lr(epoch)`: no closed form here, so `get_lr()`
        // with the current T_cur and T_i.
        let lrs = self.get_lr()?;
        self.last_epoch = epoch;
        self.last_lr = apply_lrs(opt, &lrs)?;
        Ok(())
    }

    fn composable(&mut self) -> Option<&mut dyn Composable> {
        Some(self)
    }
}

impl Composable for CosineAnnealingWarmRestarts {
    fn undo_initial_step(&mut self) {
        self.last_epoch -= 1;
    }

    fn initial_step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.step(opt)
    }

    fn initial_lrs(&mut self) -> Option<InitialLrs> {
        Some(InitialLrs {
            lrs: self.initial_lrs.clone(),
            overwritten: false,
        })
    }

    fn rebase(&mut self, initial_lrs: &[f64]) {
        if initial_lrs.len() == self.base_lrs.len() {
            self.base_lrs = initial_lrs.to_vec();
            self.initial_lrs = initial_lrs.to_vec();
        }
    }

    fn restart_at(&mut self, _: &mut dyn Optimizer, _: i64, _: &[f64]) -> Result<()> {
        Err(cannot_restart(self.name()))
    }
}

// ---------------------------------------------------------------------------
// Spec options (see `kiln_tensor::spec::Options`), with PyTorch's names.

impl Options for CosineAnnealingWarmRestartsConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("t_0", "steps until the first restart")
                .aliases(&["T_0"])
                .required(),
            &mut self.t_0,
        )?;
        v.option(
            OptionInfo::new("t_mult", "period growth factor after a restart").aliases(&["T_mult"]),
            &mut self.t_mult,
        )?;
        v.option(OptionInfo::new("eta_min", "minimum lr"), &mut self.eta_min)
    }
}
