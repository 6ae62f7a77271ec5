//! PyTorch's quickstart `train` and `test` functions, printing the same
//! lines: the reference loop the [`crate::Trainer`] is checked against.
use crate::eval::evaluate;
use crate::metrics::{Accuracy, MeanLoss, Metric};
use crate::step::{LossStep, Step};
use crate::{DataLoader, Model, Result};
use kiln_losses::Loss;
use kiln_optim::Optimizer;
use std::io::Write;

/// What one training pass did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Optimizer steps taken.
    pub steps: usize,
    /// Loss of the last batch.
    pub last_loss: f64,
}

/// What one evaluation pass measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSummary {
    /// Fraction of samples whose arg-max prediction equals the label.
    pub accuracy: f64,
    /// Mean over batches of the batch loss (PyTorch's `test_loss / num_batches`).
    pub avg_loss: f64,
}

/// The tutorial's progress line: `loss: {loss:>7f}  [{current:>5d}/{size:>5d}]`.
pub fn loss_line(loss: f64, current: usize, size: usize) -> String {
    format!("loss: {loss:>7.6}  [{current:>5}/{size:>5}]")
}

/// The tutorial's evaluation block (Python's `print` adds the final newline):
/// `Test Error: \n Accuracy: {(100*correct):>0.1f}%, Avg loss: {test_loss:>8f} \n`.
pub fn test_report(accuracy: f64, avg_loss: f64) -> String {
    format!(
        "Test Error: \n Accuracy: {:>0.1}%, Avg loss: {avg_loss:>8.6} \n",
        100.0 * accuracy
    )
}

/// One epoch of training, as the tutorial's `train(dataloader, model, loss_fn, optimizer)`:
/// `model.train()`, then per batch forward, loss, backward, `optimizer.step()`, `optimizer.zero_grad()`, and
/// every 100 batches `loss: {loss:>7f}  [{current:>5d}/{size:>5d}]` with
/// `current = batch * len(X)`.
pub fn train(
    loader: &DataLoader,
    model: &mut dyn Model,
    loss_fn: &dyn Loss,
    optimizer: &mut dyn Optimizer,
    out: &mut dyn Write,
) -> Result<TrainSummary> {
    let size = loader.dataset().len();
    model.set_training(true)?;
    let mut summary = TrainSummary {
        steps: 0,
        last_loss: f64::NAN,
    };
    for (batch_index, batch) in loader.iter()?.enumerate() {
        let batch = batch?;
        let loss = LossStep::new(loss_fn).forward(&*model, &batch)?.loss;
        loss.f_backward()?;
        optimizer.step()?;
        optimizer.zero_grad()?;
        summary.steps += 1;
        if batch_index % 100 == 0 {
            let value = loss.f_double_value(&[])?;
            let current = batch_index * batch.len();
            writeln!(out, "{}", loss_line(value, current, size))?;
            summary.last_loss = value;
        }
    }
    Ok(summary)
}

/// One evaluation pass, as the tutorial's `test(dataloader, model, loss_fn)`
/// (`model.eval()`, no gradients): prints `Test Error: \n Accuracy: {100*correct:>0.1f}%, Avg loss: {test_loss:>8f} \n`
/// followed by a newline, exactly as Python's `print` leaves it.
pub fn test(
    loader: &DataLoader,
    model: &mut dyn Model,
    loss_fn: &dyn Loss,
    out: &mut dyn Write,
) -> Result<TestSummary> {
    let mut metrics: [Box<dyn Metric>; 2] =
        [Box::new(MeanLoss::default()), Box::new(Accuracy::default())];
    evaluate(
        loader,
        model,
        &LossStep::new(loss_fn),
        &mut metrics,
        None,
        kiln_tensor::amp::Precision::F32True,
    )?;
    // An empty loader gives NaN where Python would divide by zero.
    let (avg_loss, accuracy) = (metrics[0].value(), metrics[1].value());
    writeln!(out, "{}", test_report(accuracy, avg_loss))?;
    Ok(TestSummary { accuracy, avg_loss })
}
