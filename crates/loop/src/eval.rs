//! One evaluation pass: the body of the tutorial's `test()`, shared by
//! [`crate::tutorial::test`] and the [`crate::Trainer`].
use crate::metrics::Metric;
use crate::{DataLoader, Model, Result};
use kiln_losses::Loss;
use kiln_tensor::amp::Precision;

/// Evaluates `model` on at most `limit` batches of `loader` in eval mode and
/// without gradients (forward and loss in `precision`'s autocast region, as
/// training runs them), accumulating `metrics` (reset first); the loss of
/// each batch is fed to every metric. The model's mode is restored afterwards.
pub fn evaluate(
    loader: &DataLoader<'_>,
    model: &mut dyn Model,
    loss_fn: &dyn Loss,
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
            let (pred, loss) = {
                let _autocast = precision.autocast(shared.device())?;
                let pred = shared.forward(&batch.inputs)?;
                let loss = loss_fn.forward(&pred, &batch.targets)?;
                (pred, loss)
            };
            let loss = loss.f_double_value(&[])?;
            for m in metrics.iter_mut() {
                m.update(&pred, &batch.targets, loss)?;
            }
        }
        Ok(())
    });
    model.set_training(was_training)?;
    result
}
