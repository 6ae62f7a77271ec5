//! Weight averaging during a fit (`--ema`, `--swa`): kiln-optim's
//! `AveragedModel` (and `SWALR` for SWA) driven as PyTorch's
//! `torch.optim.swa_utils` recipe drives them, the averaged weights swapped
//! into the model for evaluations and for the file written at the end.
use super::config::{Averaging, Swa};
use crate::{Error, Model, Result};
use kiln_optim::scheduler::{LrScheduler, Swalr, SwalrConfig};
use kiln_optim::swa::{AveragedModel, AveragedState, AveragingStrategy};
use kiln_optim::{NamedParameter, Optimizer};
use kiln_tensor::{ops, Tensor};
use serde_json::Value;

/// The averaged weights of a fit and, for SWA, its lr schedule.
pub(super) struct Averager {
    config: Averaging,
    averaged: AveragedModel,
    swalr: Option<Swalr>,
}

/// The tensors averaging follows: the parameters, and for EMA the buffers
/// too (`use_buffers=True`: PyTorch chains `parameters()` and `buffers()`).
fn tracked(config: &Averaging, model: &dyn Model) -> Result<Vec<NamedParameter>> {
    let mut tensors = model.parameters()?;
    if matches!(config, Averaging::Ema { .. }) {
        tensors.extend(
            model
                .buffers()?
                .into_iter()
                .map(|(name, tensor)| NamedParameter { name, tensor }),
        );
    }
    Ok(tensors)
}

impl Averager {
    /// `AveragedModel(model, …)` (and `SWALR(optimizer, …)` for SWA, built
    /// where PyTorch's recipe builds it: next to the optimizer, before
    /// training).
    pub fn new(
        config: &Averaging,
        model: &dyn Model,
        optimizer: &mut dyn Optimizer,
    ) -> Result<Self> {
        let strategy = match config {
            Averaging::Ema { decay } => AveragingStrategy::Ema { decay: *decay },
            Averaging::Swa(_) => AveragingStrategy::Swa,
        };
        let averaged = AveragedModel::new(&tracked(config, model)?, strategy)?;
        let swalr = match config {
            Averaging::Swa(Swa {
                lr,
                anneal_epochs,
                anneal_strategy,
                ..
            }) => Some(
                SwalrConfig {
                    swa_lr: (*lr).into(),
                    anneal_epochs: *anneal_epochs,
                    anneal_strategy: *anneal_strategy,
                }
                .build(optimizer)?,
            ),
            Averaging::Ema { .. } => None,
        };
        Ok(Self {
            config: config.clone(),
            averaged,
            swalr,
        })
    }

    /// After an optimizer step: EMA's `update_parameters(model)`.
    pub fn after_step(&mut self, model: &dyn Model) -> Result<()> {
        if matches!(self.config, Averaging::Ema { .. }) {
            self.averaged.update(&tracked(&self.config, model)?)?;
        }
        Ok(())
    }

    /// Whether `epoch` (1-based) is one of SWA's: its end averages and
    /// steps SWALR instead of the run's scheduler.
    pub fn swa_epoch(&self, epoch: usize) -> bool {
        matches!(&self.config, Averaging::Swa(swa) if epoch >= swa.start_epoch)
    }

    /// At the end of an SWA epoch: `swa_model.update_parameters(model)`.
    pub fn end_of_epoch(&mut self, epoch: usize, model: &dyn Model) -> Result<()> {
        if self.swa_epoch(epoch) {
            self.averaged.update(&tracked(&self.config, model)?)?;
        }
        Ok(())
    }

    /// After an SWA epoch's evaluation: `swa_scheduler.step()`.
    pub fn step_lr(&mut self, optimizer: &mut dyn Optimizer) -> Result<()> {
        match &mut self.swalr {
            Some(swalr) => Ok(swalr.step(optimizer)?),
            None => Ok(()),
        }
    }

    /// Runs `f` on the model holding the averaged weights (once anything
    /// was averaged; the model as it is before), then puts the trained
    /// weights back.
    pub fn with_averaged<T>(
        &self,
        model: &mut dyn Model,
        f: impl FnOnce(&mut dyn Model) -> Result<T>,
    ) -> Result<T> {
        if self.averaged.n_averaged() == 0 {
            return f(model);
        }
        let tensors = tracked(&self.config, &*model)?;
        let trained = tensors
            .iter()
            .map(|p| {
                Ok(NamedParameter {
                    name: p.name.clone(),
                    tensor: ops::detached_clone(&p.tensor)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.averaged.copy_to(&tensors)?;
        let result = f(model);
        let restored = kiln_tensor::tch::no_grad(|| -> Result<()> {
            for (dst, src) in tensors.iter().zip(&trained) {
                dst.tensor.shallow_clone().f_copy_(&src.tensor)?;
            }
            Ok(())
        });
        let value = result?;
        restored?;
        Ok(value)
    }

    /// The averaged model's state dict, named as the model's
    /// (`swa_model.module.state_dict()`): what `RUN/averaged.safetensors`
    /// holds.
    pub fn state_dict(&self, model: &mut dyn Model) -> Result<Vec<(String, Tensor)>> {
        // Copies: the model's state dict shares storage with the weights
        // put back afterwards.
        self.with_averaged(model, |m| {
            m.state_dict()?
                .into_iter()
                .map(|(name, t)| Ok((name, ops::detached_clone(&t)?)))
                .collect()
        })
    }

    /// What a checkpoint keeps: the averaged tensors (`module.{name}`) and
    /// the scalars (`n_averaged`, the strategy, SWALR's state).
    pub fn save(&self) -> Result<(Vec<(String, Tensor)>, Value)> {
        let AveragedState { tensors, scalars } = self.averaged.state_dict()?;
        let swalr = self.swalr.as_ref().map(|s| s.state_dict());
        Ok((
            tensors,
            serde_json::json!({"averaged": scalars, "swalr": swalr}),
        ))
    }

    /// Restores what [`Averager::save`] kept.
    pub fn load(&mut self, tensors: Vec<(String, Tensor)>, scalars: &Value) -> Result<()> {
        let missing = || {
            Error::InvalidArgument(
                "the checkpoint has no averaged weights; resume it with the --ema/--swa it was trained with".into(),
            )
        };
        let state = AveragedState {
            tensors,
            scalars: scalars.get("averaged").cloned().ok_or_else(missing)?,
        };
        self.averaged.load_state_dict(&state)?;
        if let Some(swalr) = &mut self.swalr {
            match scalars.get("swalr") {
                Some(saved) if !saved.is_null() => swalr.load_state_dict(saved)?,
                _ => return Err(missing()),
            }
        }
        Ok(())
    }
}
