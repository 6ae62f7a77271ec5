//! PyTorch's quickstart `train` and `test` loops, printing the same lines.
use crate::{DataLoader, Error, Result};
use kiln_losses::Loss;
use kiln_optim::Optimizer;
use kiln_tensor::nn::ModuleT;
use kiln_tensor::{Kind, Tensor};
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

/// Runs `model` without letting a libtorch panic escape as a crash.
fn forward(model: &dyn ModuleT, inputs: &Tensor, train: bool) -> Result<Tensor> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.forward_t(inputs, train)
    }))
    .map_err(|payload| {
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("the model panicked");
        Error::Model(text.lines().next().unwrap_or(text).to_string())
    })
}

/// One epoch of training, as the tutorial's `train(dataloader, model, loss_fn, optimizer)`:
/// forward, loss, backward, `optimizer.step()`, `optimizer.zero_grad()`, and
/// every 100 batches `loss: {loss:>7f}  [{current:>5d}/{size:>5d}]` with
/// `current = batch * len(X)`.
pub fn train(
    loader: &DataLoader<'_>,
    model: &dyn ModuleT,
    loss_fn: &dyn Loss,
    optimizer: &mut dyn Optimizer,
    out: &mut dyn Write,
) -> Result<TrainSummary> {
    let size = loader.dataset().len();
    let mut summary = TrainSummary {
        steps: 0,
        last_loss: f64::NAN,
    };
    for (batch_index, batch) in loader.iter()?.enumerate() {
        let batch = batch?;
        let pred = forward(model, &batch.inputs, true)?;
        let loss = loss_fn.forward(&pred, &batch.targets)?;
        loss.f_backward()?;
        optimizer.step()?;
        optimizer.zero_grad()?;
        summary.steps += 1;
        if batch_index % 100 == 0 {
            let value = loss.f_double_value(&[])?;
            let current = batch_index * batch.len();
            writeln!(out, "loss: {value:>7.6}  [{current:>5}/{size:>5}]")?;
            summary.last_loss = value;
        }
    }
    Ok(summary)
}

/// One evaluation pass, as the tutorial's `test(dataloader, model, loss_fn)`:
/// prints `Test Error: \n Accuracy: {100*correct:>0.1f}%, Avg loss: {test_loss:>8f} \n`
/// followed by a newline, exactly as Python's `print` leaves it.
pub fn test(
    loader: &DataLoader<'_>,
    model: &dyn ModuleT,
    loss_fn: &dyn Loss,
    out: &mut dyn Write,
) -> Result<TestSummary> {
    let size = loader.dataset().len();
    let num_batches = loader.len();
    let (mut test_loss, mut correct) = (0f64, 0f64);
    kiln_tensor::tch::no_grad(|| -> Result<()> {
        for batch in loader.iter()? {
            let batch = batch?;
            let pred = forward(model, &batch.inputs, false)?;
            test_loss += loss_fn
                .forward(&pred, &batch.targets)?
                .f_double_value(&[])?;
            let hits = pred
                .f_argmax(1, false)?
                .f_eq_tensor(&batch.targets)?
                .f_to_kind(Kind::Float)?;
            correct += hits.f_sum(Kind::Float)?.f_double_value(&[])?;
        }
        Ok(())
    })?;
    // Python divides by zero here; report NaN instead of crashing.
    let avg_loss = if num_batches == 0 {
        f64::NAN
    } else {
        test_loss / num_batches as f64
    };
    let accuracy = if size == 0 {
        f64::NAN
    } else {
        correct / size as f64
    };
    writeln!(
        out,
        "Test Error: \n Accuracy: {:>0.1}%, Avg loss: {avg_loss:>8.6} \n",
        100.0 * accuracy
    )?;
    Ok(TestSummary { accuracy, avg_loss })
}
