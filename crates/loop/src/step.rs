//! The training step a crate can own: how a batch becomes a loss.
//!
//! [`Step`] computes the loss (and any extra metrics) of a model on a
//! [`Batch`] of named tensors: PyTorch Lightning's `training_step`, burn's
//! `TrainStep`. Everything around it stays the Trainer's — mixed precision
//! (the step runs inside the autocast region, backward outside it) and the
//! gradient scaler, gradient accumulation, data-parallel buckets, clipping,
//! the optimizer (closure optimizers call the step again), schedulers,
//! evaluation (the same step in eval mode, without gradients), checkpoints
//! and resume, and logging. kiln's own step, [`LossStep`], is one
//! implementation: `loss(model(inputs…), targets)`.
//!
//! A step written for its own network reaches it behind `&dyn Model` with
//! [`downcast_ref`](crate::Model::downcast_ref) (see the `aux_loss`
//! example of kiln-loop).
use crate::data::batch::flatten_sequences;
use crate::data::Batch;
use crate::{Error, Model, Result};
use kiln_losses::Loss;
use kiln_tensor::Tensor;

/// What a step computed on one batch.
#[derive(Debug)]
pub struct StepOutput {
    /// The scalar loss to minimise (backward runs on it).
    pub loss: Tensor,
    /// The model's main output, which the evaluation metrics (accuracy,
    /// top-k) compare with the batch's targets; `None`: only the loss and
    /// the extra metrics are reported.
    pub output: Option<Tensor>,
    /// Extra scalar metrics by name (`aux_loss`): logged per training step
    /// as `train_{name}` and averaged over an evaluation's batches as
    /// `{set}_{name}`.
    pub metrics: Vec<(String, Tensor)>,
}

impl StepOutput {
    /// A step's loss, with no output for metrics and no extra metrics.
    pub fn new(loss: Tensor) -> Self {
        Self {
            loss,
            output: None,
            metrics: Vec::new(),
        }
    }

    /// The same, with the model's main output for the evaluation metrics.
    pub fn output(mut self, output: Tensor) -> Self {
        self.output = Some(output);
        self
    }

    /// The same, with an extra scalar metric `name`.
    pub fn metric(mut self, name: impl Into<String>, value: Tensor) -> Self {
        self.metrics.push((name.into(), value));
        self
    }

    /// The extra metrics as numbers.
    pub fn metric_values(&self) -> Result<Vec<(String, f64)>> {
        self.metrics
            .iter()
            .map(|(name, value)| {
                let v = value.f_double_value(&[]).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "step metric '{name}' must be a scalar tensor of {:?}: {e}",
                        value.size()
                    ))
                })?;
                Ok((name.clone(), v))
            })
            .collect()
    }
}

/// Computes the loss of a model on a batch. Object safe: a run picks one at
/// run time.
pub trait Step {
    /// The loss (and extra metrics) of `model` on `batch`, in the model's
    /// current mode. Called inside the precision's autocast region, with
    /// gradients recorded while training and not while evaluating.
    fn forward(&self, model: &dyn Model, batch: &Batch) -> Result<StepOutput>;

    /// Whether this step's forward and backward passes in float32 keep
    /// their bits when ATen's elementwise kernels run on the calling thread
    /// alone (see `kiln_tensor::device::SerialAtenKernels`); the Trainer
    /// then runs them so. The default, `false`, claims nothing.
    fn exact_on_one_thread(&self, model: &dyn Model, batch: &Batch) -> bool {
        let _ = (model, batch);
        false
    }
}

/// kiln's own step: the model on the batch's inputs, the loss against its
/// targets (`loss_fn(model(*inputs), targets)`, PyTorch's tutorial loop);
/// sequence targets flattened as nanoGPT's `GPT.forward` does.
pub struct LossStep<'l> {
    loss: &'l dyn Loss,
}

impl std::fmt::Debug for LossStep<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossStep")
            .field("loss", &self.loss.name())
            .finish()
    }
}

impl<'l> LossStep<'l> {
    /// The step of `loss`.
    pub fn new(loss: &'l dyn Loss) -> Self {
        Self { loss }
    }

    /// The loss.
    pub fn loss(&self) -> &'l dyn Loss {
        self.loss
    }
}

impl Step for LossStep<'_> {
    /// Sequence targets (`[B, T]` class indices for an output `[B, T,
    /// C]`) are compared flattened, as nanoGPT's loss compares them
    /// ([`flatten_sequences`]).
    fn forward(&self, model: &dyn Model, batch: &Batch) -> Result<StepOutput> {
        let output = model.forward_all(&batch.inputs()?)?;
        let targets = batch.targets()?;
        let loss = match flatten_sequences(&output, targets)? {
            Some((flat_output, flat_targets)) => self.loss.forward(&flat_output, &flat_targets)?,
            None => self.loss.forward(&output, targets)?,
        };
        Ok(StepOutput::new(loss).output(output))
    }

    fn exact_on_one_thread(&self, model: &dyn Model, batch: &Batch) -> bool {
        model.exact_on_one_thread()
            && batch
                .targets()
                .is_ok_and(|t| self.loss.exact_on_one_thread(t))
    }
}
