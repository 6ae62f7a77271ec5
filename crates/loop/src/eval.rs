//! One evaluation pass: the body of the tutorial's `test()`, shared by
//! [`crate::tutorial::test`] and the [`crate::Trainer`].
use crate::metrics::{Evaluated, Metric};
use crate::step::Step;
use crate::{DataLoader, Model, Result};
use kiln_tensor::amp::Precision;

/// Evaluates `model` with `step` on at most `limit` batches of `loader` in
/// eval mode and without gradients (the step in `precision`'s autocast
/// region, as training runs it), accumulating `metrics` (reset first) with
/// each batch's output, targets, loss and the step's extra metrics. The
/// model's mode is restored afterwards.
pub fn evaluate(
    loader: &DataLoader,
    model: &mut dyn Model,
    step: &dyn Step,
    metrics: &mut [Box<dyn Metric>],
    limit: Option<usize>,
    precision: Precision,
) -> Result<()> {
    metrics.iter_mut().for_each(|m| m.reset());
    let was_training = model.is_training();
    model.set_training(false)?;
    let shared: &dyn Model = model;
    let result = kiln_tensor::tch::no_grad(|| -> Result<()> {
        for batch in loader.iter()?.take(limit.unwrap_or(usize::MAX)) {
            let batch = batch?;
            let out = {
                let _autocast = precision.autocast(shared.device())?;
                step.forward(shared, &batch)?
            };
            let loss = out.loss.f_double_value(&[])?;
            let extra = out.metric_values()?;
            let evaluated = Evaluated {
                output: out.output.as_ref(),
                targets: batch.targets().ok(),
                loss,
                metrics: &extra,
            };
            for m in metrics.iter_mut() {
                m.update(&evaluated)?;
            }
        }
        Ok(())
    });
    model.set_training(was_training)?;
    result
}

/// The model's outputs for every sample of a loader, in the loader's order
/// ([`predict`]), on the CPU.
#[derive(Debug)]
pub struct Predictions {
    /// `model(inputs)` for each sample, concatenated over batches: `[N, ...]`.
    pub outputs: kiln_tensor::Tensor,
    /// The samples' targets, `[N, ...]`, when the data has them.
    pub targets: Option<kiln_tensor::Tensor>,
}

/// Runs `model` on every batch of `loader` in eval mode and without
/// gradients (`model.eval()` + `torch.no_grad()`, float32) and gathers its
/// outputs (and the targets, where batches have them) in order;
/// `on_batch(done)` is told after each batch. The model's mode is restored.
pub fn predict(
    loader: &DataLoader,
    model: &mut dyn Model,
    on_batch: &mut dyn FnMut(usize),
) -> Result<Predictions> {
    use kiln_tensor::{Device, Tensor};
    let was_training = model.is_training();
    model.set_training(false)?;
    let shared: &dyn Model = model;
    let result = kiln_tensor::tch::no_grad(|| -> Result<Predictions> {
        let mut outputs = Vec::new();
        let mut targets = Vec::new();
        for (done, batch) in loader.iter()?.enumerate() {
            let batch = batch?;
            let output = shared.forward_all(&batch.inputs()?)?;
            outputs.push(output.f_to_device(Device::Cpu)?);
            if let Ok(t) = batch.targets() {
                targets.push(t.f_to_device(Device::Cpu)?);
            }
            on_batch(done + 1);
        }
        if outputs.is_empty() {
            return Err(crate::Error::InvalidArgument(
                "the data set to predict is empty".into(),
            ));
        }
        let outputs = Tensor::f_cat(&outputs, 0)?;
        let targets = match targets.len() == loader.len() {
            true => Some(Tensor::f_cat(&targets, 0)?),
            false => None,
        };
        Ok(Predictions { outputs, targets })
    });
    model.set_training(was_training)?;
    result
}
