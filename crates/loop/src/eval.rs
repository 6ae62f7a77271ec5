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
