//! SequentialLR and ChainedScheduler: schedulers made of schedulers.
use super::{
    apply_lrs, bad_state, bisect_right, cannot_restart, group_lrs, stores_initial_lr, Composable,
    InitialLrs, LrScheduler, StateReader,
};
use crate::{Error, Optimizer, Result};
use serde_json::Value;

fn check_children(
    kind: &str,
    opt: &dyn Optimizer,
    schedulers: &[Box<dyn LrScheduler>],
) -> Result<()> {
    for (i, s) in schedulers.iter().enumerate() {
        if s.needs_metric() {
            return Err(Error::InvalidArgument(format!(
                "{kind} does not support `ReduceLROnPlateau` scheduler as it requires additional kwargs to be \
                 specified when calling `step`, but got one at index {i} in the given schedulers sequence."
            )));
        }
        if s.last_lr().len() != opt.num_groups() {
            return Err(Error::InvalidArgument(format!(
                "{kind} expects all schedulers to belong to the same optimizer, but got scheduler {} at index \
                 {i} with {} param groups, while the optimizer has {}.",
                s.name(),
                s.last_lr().len(),
                opt.num_groups()
            )));
        }
    }
    Ok(())
}

/// The groups' `initial_lr` after all `schedulers` were built, as PyTorch's
/// groups would hold it. Where the optimizer cannot store it, this replays
/// PyTorch's bookkeeping: the first scheduler sets it, OneCycleLR overwrites
/// it, and each scheduler is rebased onto the value current when it was built.
fn shared_initial_lrs(
    opt: &dyn Optimizer,
    schedulers: &mut [Box<dyn LrScheduler>],
) -> Option<Vec<f64>> {
    if stores_initial_lr(opt) {
        return (0..opt.num_groups())
            .map(|g| opt.hyperparameter(g, "initial_lr"))
            .collect();
    }
    let mut current: Option<Vec<f64>> = None;
    for s in schedulers.iter_mut() {
        let Some(s) = s.composable() else {
            continue;
        };
        match (s.initial_lrs(), &current) {
            (Some(recorded), _) if recorded.overwritten => current = Some(recorded.lrs),
            (recorded, None) => current = recorded.map(|r| r.lrs),
            (_, Some(lrs)) => s.rebase(lrs),
        }
    }
    current
}

/// The [`Composable`] methods a composite passes on to its schedulers
/// (`undo_initial_step`, `initial_lrs`, `rebase`), and its refusal to be
/// resumed with `last_epoch`, inside the impl for a struct with a
/// `schedulers: Vec<Box<dyn LrScheduler>>` field. Its initial step is its
/// own `step`.
macro_rules! composable_composite {
    ($ty:ty) => {
        impl Composable for $ty {
            fn undo_initial_step(&mut self) {
                for s in &mut self.schedulers {
                    if let Some(s) = s.composable() {
                        s.undo_initial_step();
                    }
                }
            }

            fn initial_step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
                self.step(opt)
            }

            fn initial_lrs(&mut self) -> Option<InitialLrs> {
                self.schedulers
                    .iter_mut()
                    .filter_map(|s| s.composable())
                    .find_map(|s| s.initial_lrs())
                    .map(|first| InitialLrs {
                        overwritten: false,
                        ..first
                    })
            }

            fn rebase(&mut self, initial_lrs: &[f64]) {
                for s in &mut self.schedulers {
                    if let Some(s) = s.composable() {
                        s.rebase(initial_lrs);
                    }
                }
            }

            fn restart_at(&mut self, _: &mut dyn Optimizer, _: i64, _: &[f64]) -> Result<()> {
                Err(cannot_restart(self.name()))
            }
        }
    };
}

fn children_state(schedulers: &[Box<dyn LrScheduler>]) -> Value {
    Value::Array(schedulers.iter().map(|s| s.state_dict()).collect())
}

fn load_children(
    name: &str,
    r: &StateReader<'_>,
    schedulers: &mut [Box<dyn LrScheduler>],
) -> Result<()> {
    let states = r
        .value("schedulers")?
        .as_array()
        .ok_or_else(|| bad_state(name, "schedulers"))?;
    if states.len() != schedulers.len() {
        return Err(Error::State(format!(
            "{name} scheduler state has {} schedulers, this one has {}",
            states.len(),
            schedulers.len()
        )));
    }
    for (s, st) in schedulers.iter_mut().zip(states) {
        s.load_state_dict(st)?;
    }
    Ok(())
}

/// `torch.optim.lr_scheduler.SequentialLR`: runs `schedulers[0]` until
/// `milestones[0]`, then `schedulers[1]` (restarted at its epoch 0 through
/// its closed form, [`LrScheduler::update_lr_at`]) until `milestones[1]`, and
/// so on.
///
/// Build the schedulers on the optimizer, then pass them here, or name them
/// in a spec (`sequential:schedulers=[constant:factor=0.5;exponential:gamma=0.9],milestones=3`,
/// see [`schedulers()`](super::schedulers)). The constructor does what PyTorch's does: resets every group's
/// lr to `initial_lr`, undoes the initial steps of all schedulers and redoes
/// the first one's. Milestones count this scheduler's steps (per epoch or per
/// batch, as its children expect).
pub struct SequentialLr {
    schedulers: Vec<Box<dyn LrScheduler>>,
    milestones: Vec<i64>,
    last_epoch: i64,
    last_lr: Vec<f64>,
}

impl SequentialLr {
    /// `SequentialLR(optimizer, schedulers, milestones)` with PyTorch's checks.
    pub fn new(
        opt: &mut dyn Optimizer,
        mut schedulers: Vec<Box<dyn LrScheduler>>,
        milestones: Vec<usize>,
    ) -> Result<Self> {
        if schedulers.is_empty() {
            return Err(Error::InvalidArgument(
                "SequentialLR expects at least one scheduler, but got no scheduler.".into(),
            ));
        }
        check_children("SequentialLR", opt, &schedulers)?;
        if milestones.len() + 1 != schedulers.len() {
            return Err(Error::InvalidArgument(format!(
                "Sequential Schedulers expects number of schedulers provided to be one more than the number of \
                 milestone points, but got number of schedulers {} and the number of milestones to be equal to {}",
                schedulers.len(),
                milestones.len()
            )));
        }
        let milestones = milestones
            .into_iter()
            .map(|m| {
                i64::try_from(m)
                    .map_err(|_| Error::InvalidArgument(format!("milestone {m} is too large")))
            })
            .collect::<Result<Vec<_>>>()?;
        let initial = shared_initial_lrs(opt, &mut schedulers).ok_or_else(|| {
            Error::InvalidArgument("param 'initial_lr' is not specified in param_groups".into())
        })?;
        apply_lrs(opt, &initial)?;
        for s in &mut schedulers {
            if let Some(s) = s.composable() {
                s.undo_initial_step();
            }
        }
        let first = schedulers
            .first_mut()
            .ok_or_else(|| Error::InvalidArgument("SequentialLR has no scheduler".into()))?;
        match first.composable() {
            Some(first) => first.initial_step(opt)?,
            // No bookkeeping: its initial step is a step.
            None => first.step(opt)?,
        }
        let last_lr = first.last_lr().to_vec();
        Ok(Self {
            schedulers,
            milestones,
            last_epoch: 0,
            last_lr,
        })
    }

    /// The wrapped schedulers.
    pub fn schedulers(&self) -> &[Box<dyn LrScheduler>] {
        &self.schedulers
    }
}

impl LrScheduler for SequentialLr {
    fn name(&self) -> &str {
        "sequential"
    }

    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        let epoch = self.last_epoch + 1;
        let idx = bisect_right(&self.milestones, epoch);
        let at_milestone = idx > 0 && self.milestones.get(idx - 1) == Some(&epoch);
        let s = self.schedulers.get_mut(idx).ok_or_else(|| {
            Error::InvalidArgument(format!("SequentialLR has no scheduler {idx}"))
        })?;
        if at_milestone {
            s.update_lr_at(opt, 0)?;
        } else {
            s.step(opt)?;
        }
        self.last_lr = s.last_lr().to_vec();
        self.last_epoch = epoch;
        Ok(())
    }

    fn last_lr(&self) -> &[f64] {
        &self.last_lr
    }

    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    fn state_dict(&self) -> Value {
        serde_json::json!({
            "scheduler": "sequential",
            "last_epoch": self.last_epoch,
            "milestones": self.milestones,
            "last_lr": super::flist(&self.last_lr),
            "schedulers": children_state(&self.schedulers),
        })
    }

    fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        let r = StateReader::new("sequential", state)?;
        let (last_epoch, milestones, last_lr) = (
            r.i64("last_epoch")?,
            r.i64_list("milestones")?,
            r.f64_list("last_lr")?,
        );
        load_children("sequential", &r, &mut self.schedulers)?;
        self.last_epoch = last_epoch;
        self.milestones = milestones;
        self.last_lr = last_lr;
        Ok(())
    }

    fn update_lr_at(&mut self, _opt: &mut dyn Optimizer, _epoch: i64) -> Result<()> {
        Err(Error::InvalidArgument(
            "SequentialLR has no get_lr, so it cannot be a later scheduler of another SequentialLR \
             (PyTorch raises NotImplementedError)"
                .into(),
        ))
    }

    fn composable(&mut self) -> Option<&mut dyn Composable> {
        Some(self)
    }
}

composable_composite!(SequentialLr);

/// `torch.optim.lr_scheduler.ChainedScheduler`: each step steps every
/// scheduler in order, so their (chainable, recursive) changes compose, e.g.
/// a ConstantLR warm-up times an ExponentialLR decay.
///
/// Built from code only: build the schedulers on the optimizer, then pass
/// them here. Stepped as its children are (per epoch or per batch).
pub struct ChainedScheduler {
    schedulers: Vec<Box<dyn LrScheduler>>,
    last_lr: Vec<f64>,
}

impl ChainedScheduler {
    /// `ChainedScheduler(schedulers, optimizer)` with PyTorch's checks.
    pub fn new(opt: &mut dyn Optimizer, mut schedulers: Vec<Box<dyn LrScheduler>>) -> Result<Self> {
        if schedulers.is_empty() {
            return Err(Error::InvalidArgument(
                "ChainedScheduler expects at least one scheduler to be chained, but got no scheduler.".into(),
            ));
        }
        check_children("ChainedScheduler", opt, &schedulers)?;
        let _ = shared_initial_lrs(opt, &mut schedulers);
        Ok(Self {
            last_lr: group_lrs(opt)?,
            schedulers,
        })
    }

    /// The wrapped schedulers.
    pub fn schedulers(&self) -> &[Box<dyn LrScheduler>] {
        &self.schedulers
    }
}

impl LrScheduler for ChainedScheduler {
    fn name(&self) -> &str {
        "chained"
    }

    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        for s in &mut self.schedulers {
            s.step(opt)?;
        }
        self.last_lr = group_lrs(opt)?;
        Ok(())
    }

    fn last_lr(&self) -> &[f64] {
        &self.last_lr
    }

    fn last_epoch(&self) -> i64 {
        self.schedulers.last().map_or(0, |s| s.last_epoch())
    }

    fn state_dict(&self) -> Value {
        serde_json::json!({
            "scheduler": "chained",
            "last_lr": super::flist(&self.last_lr),
            "schedulers": children_state(&self.schedulers),
        })
    }

    fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        let r = StateReader::new("chained", state)?;
        let last_lr = r.f64_list("last_lr")?;
        load_children("chained", &r, &mut self.schedulers)?;
        self.last_lr = last_lr;
        Ok(())
    }

    fn composable(&mut self) -> Option<&mut dyn Composable> {
        Some(self)
    }
}

composable_composite!(ChainedScheduler);
