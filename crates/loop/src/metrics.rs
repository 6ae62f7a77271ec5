//! Evaluation metrics, accumulated over batches.
use crate::Result;
use kiln_tensor::{Kind, Tensor};

/// What an evaluation measured on one batch, for [`Metric::update`].
#[derive(Debug, Clone, Copy)]
pub struct Evaluated<'a> {
    /// The model's main output (when the step gives one).
    pub output: Option<&'a Tensor>,
    /// The batch's targets (when the data has them).
    pub targets: Option<&'a Tensor>,
    /// The batch loss.
    pub loss: f64,
    /// The step's extra metrics on the batch, by name.
    pub metrics: &'a [(String, f64)],
}

impl<'a> Evaluated<'a> {
    /// A batch with an output, targets and a loss, and no extra metrics.
    pub fn of(output: &'a Tensor, targets: &'a Tensor, loss: f64) -> Self {
        Self {
            output: Some(output),
            targets: Some(targets),
            loss,
            metrics: &[],
        }
    }

    /// The output and the targets, or an error naming `metric`, which
    /// compares them; sequences flattened to one prediction per position
    /// ([`crate::data::batch::flatten_sequences`]).
    fn compared(&self, metric: &str) -> Result<(Tensor, Tensor)> {
        let (o, t) = self.compared_as_given(metric)?;
        Ok(crate::data::batch::flatten_sequences(&o, &t)?.unwrap_or((o, t)))
    }

    fn compared_as_given(&self, metric: &str) -> Result<(Tensor, Tensor)> {
        match (self.output, self.targets) {
            (Some(o), Some(t)) => Ok((o.shallow_clone(), t.shallow_clone())),
            _ => Err(crate::Error::InvalidArgument(format!(
                "the {metric} metric compares the model's output with targets, but the step gives {}",
                if self.output.is_none() { "no output" } else { "no targets" }
            ))),
        }
    }
}

/// A quantity accumulated over the batches of one evaluation pass.
pub trait Metric {
    /// Name of the quantity (`loss`, `accuracy`, `top5_accuracy`); the
    /// Trainer reports it per evaluation set as `test_accuracy`, `val_loss`….
    fn name(&self) -> String;
    /// Adds one batch.
    fn update(&mut self, batch: &Evaluated<'_>) -> Result<()>;
    /// The value over everything added since the last reset.
    fn value(&self) -> f64;
    /// Forgets everything added.
    fn reset(&mut self);
    /// The sums this metric accumulates, so that data-parallel evaluation
    /// can add them over ranks; `None` (the default) if it cannot be.
    fn totals(&self) -> Option<Vec<f64>> {
        None
    }
    /// Replaces the sums with `totals`, as [`Metric::totals`] returned them
    /// (summed over ranks).
    fn set_totals(&mut self, _totals: &[f64]) {}
}

/// A sum over a count: what each metric here accumulates (hits over
/// samples, losses over batches). Both add up over ranks.
#[derive(Debug, Default, Clone, Copy)]
struct Ratio {
    sum: f64,
    count: f64,
}

impl Ratio {
    fn add(&mut self, sum: f64, count: usize) {
        self.sum += sum;
        self.count += count as f64;
    }

    fn value(&self) -> f64 {
        if self.count == 0.0 {
            f64::NAN
        } else {
            self.sum / self.count
        }
    }
}

/// The [`Metric`] methods of a metric whose state is a `ratio: Ratio` field.
macro_rules! ratio_methods {
    () => {
        fn value(&self) -> f64 {
            self.ratio.value()
        }

        fn reset(&mut self) {
            self.ratio = Ratio::default();
        }

        fn totals(&self) -> Option<Vec<f64>> {
            Some(vec![self.ratio.sum, self.ratio.count])
        }

        fn set_totals(&mut self, totals: &[f64]) {
            if let [sum, count] = totals {
                self.ratio = Ratio {
                    sum: *sum,
                    count: *count,
                };
            }
        }
    };
}

/// Number of samples in a batch of targets.
fn samples(target: &Tensor) -> usize {
    target.size().first().map_or(0, |&n| n as usize)
}

/// Fraction of samples whose arg-max equals the label, accumulated as the
/// tutorial does (`(pred.argmax(1) == y).type(torch.float).sum().item()`);
/// for one output per sample (a binary logit), whether `logit > 0` agrees
/// with the target being 1 (above 0.5), as torchmetrics' `BinaryAccuracy`.
#[derive(Debug, Default, Clone)]
pub struct Accuracy {
    ratio: Ratio,
}

impl Metric for Accuracy {
    fn name(&self) -> String {
        "accuracy".into()
    }

    fn update(&mut self, batch: &Evaluated<'_>) -> Result<()> {
        let (pred, target) = batch.compared("accuracy")?;
        let hits = if pred.size().get(1) == Some(&1) {
            // One logit per sample (binary, `BCEWithLogitsLoss`): the
            // prediction is `logit > 0` (probability above 0.5), the
            // target a 0/1 label or a float value, 1 above 0.5.
            let predicted = pred.f_flatten(0, -1)?.f_gt(0.0)?;
            let actual = target
                .f_flatten(0, -1)?
                .f_to_kind(Kind::Double)?
                .f_gt(0.5)?;
            predicted.f_eq_tensor(&actual)?.f_to_kind(Kind::Float)?
        } else {
            pred.f_argmax(1, false)?
                .f_eq_tensor(&target)?
                .f_to_kind(Kind::Float)?
        };
        let correct = hits.f_sum(Kind::Float)?.f_double_value(&[])?;
        self.ratio.add(correct, samples(&target));
        Ok(())
    }

    ratio_methods!();
}

/// Fraction of samples whose label is among the `k` largest outputs.
#[derive(Debug, Clone)]
pub struct TopK {
    k: i64,
    ratio: Ratio,
}

impl TopK {
    /// Top-`k` accuracy.
    pub fn new(k: usize) -> Self {
        Self {
            k: k as i64,
            ratio: Ratio::default(),
        }
    }
}

impl Metric for TopK {
    fn name(&self) -> String {
        format!("top{}_accuracy", self.k)
    }

    fn update(&mut self, batch: &Evaluated<'_>) -> Result<()> {
        let (pred, target) = batch.compared("top-k accuracy")?;
        let classes = pred.size().last().copied().unwrap_or(0);
        let (_, idx) = pred.f_topk(self.k.min(classes), 1, true, true)?;
        let hits = idx
            .f_eq_tensor(&target.f_unsqueeze(1)?)?
            .f_any_dim(1, false)?;
        let correct = hits
            .f_to_kind(Kind::Float)?
            .f_sum(Kind::Float)?
            .f_double_value(&[])?;
        self.ratio.add(correct, samples(&target));
        Ok(())
    }

    ratio_methods!();
}

/// Mean of the batch losses: the tutorial's `test_loss / num_batches` (a
/// sum of Python floats), or with [`MeanLoss::float32`] nanoGPT's
/// `estimate_loss` (`losses = torch.zeros(K)`, `losses[k] = loss.item()`,
/// `losses.mean()`: float32 values averaged by libtorch in float32).
#[derive(Debug, Default, Clone)]
pub struct MeanLoss {
    ratio: Ratio,
    /// The batch losses as float32, in float32 mode (emptied when the
    /// totals are replaced by sums over ranks).
    float32: Option<Vec<f32>>,
}

impl MeanLoss {
    /// nanoGPT's mean: each batch loss stored as float32 and averaged by
    /// `torch.Tensor.mean` in float32 (the tutorial's is a float64 sum).
    pub fn float32() -> Self {
        Self {
            ratio: Ratio::default(),
            float32: Some(Vec::new()),
        }
    }
}

impl Metric for MeanLoss {
    fn name(&self) -> String {
        "loss".into()
    }

    fn update(&mut self, batch: &Evaluated<'_>) -> Result<()> {
        self.ratio.add(batch.loss, 1);
        if let Some(losses) = &mut self.float32 {
            losses.push(batch.loss as f32);
        }
        Ok(())
    }

    fn value(&self) -> f64 {
        match &self.float32 {
            Some(losses) if !losses.is_empty() => Tensor::from_slice(losses)
                .f_mean(Kind::Float)
                .and_then(|m| m.f_double_value(&[]))
                .unwrap_or(f64::NAN),
            _ => self.ratio.value(),
        }
    }

    fn reset(&mut self) {
        self.ratio = Ratio::default();
        if let Some(losses) = &mut self.float32 {
            losses.clear();
        }
    }

    fn totals(&self) -> Option<Vec<f64>> {
        Some(vec![self.ratio.sum, self.ratio.count])
    }

    fn set_totals(&mut self, totals: &[f64]) {
        if let [sum, count] = totals {
            self.ratio = Ratio {
                sum: *sum,
                count: *count,
            };
            // Summed over ranks: the float64 mean of every rank's losses.
            if let Some(losses) = &mut self.float32 {
                losses.clear();
            }
        }
    }
}

/// Mean over batches of one of the step's extra metrics (as the loss is
/// averaged), reported under its own name.
#[derive(Debug, Clone)]
pub struct StepMetric {
    name: String,
    ratio: Ratio,
}

impl StepMetric {
    /// The mean of the step metric `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ratio: Ratio::default(),
        }
    }
}

impl Metric for StepMetric {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn update(&mut self, batch: &Evaluated<'_>) -> Result<()> {
        let value = batch
            .metrics
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                crate::Error::InvalidArgument(format!(
                    "the step declared the metric '{}' but did not report it",
                    self.name
                ))
            })?;
        self.ratio.add(value, 1);
        Ok(())
    }

    ratio_methods!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_topk_and_mean_loss() -> anyhow::Result<()> {
        let pred =
            Tensor::from_slice(&[0.1f32, 0.7, 0.2, 0.5, 0.3, 0.2, 0.2, 0.3, 0.5]).f_view([3, 3])?;
        let target = Tensor::from_slice(&[1i64, 1, 0]);
        let mut acc = Accuracy::default();
        let mut top2 = TopK::new(2);
        let mut mean = MeanLoss::default();
        for m in [&mut acc as &mut dyn Metric, &mut top2, &mut mean] {
            m.update(&Evaluated::of(&pred, &target, 2.0))?;
            m.update(&Evaluated::of(&pred, &target, 4.0))?;
        }
        assert!((acc.value() - 1.0 / 3.0).abs() < 1e-12);
        assert!((top2.value() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(mean.value(), 3.0);
        // nanoGPT's float32 mean of float32 losses.
        let mut nano = MeanLoss::float32();
        for loss in [0.1, 0.2, 0.7] {
            nano.update(&Evaluated::of(&pred, &target, loss))?;
        }
        let expected = Tensor::from_slice(&[0.1f32, 0.2, 0.7])
            .f_mean(Kind::Float)?
            .f_double_value(&[])?;
        assert_eq!(nano.value(), expected);
        assert_ne!(nano.value(), (0.1 + 0.2 + 0.7) / 3.0);
        assert_eq!(top2.name(), "top2_accuracy");
        acc.reset();
        assert!(acc.value().is_nan());
        Ok(())
    }
}
