//! Samples and batches of named tensors, and PyTorch's `default_collate`.
//!
//! A [`Sample`] is what a [`Dataset`](crate::data::Dataset) gives for one
//! index: named tensors (`inputs`, `targets`, or whatever a dataset names
//! them: `ids`, `mask`, `label`…). [`collate`] stacks samples into a
//! [`Batch`] as `torch.utils.data.default_collate` stacks a list of dicts of
//! tensors (`torch.stack(values, 0)` per key). Which fields the model takes
//! as its inputs, in order, and which one the loss compares with, is the
//! dataset's [`Fields`]; a batch carries them so that a training step can
//! ask for "the inputs" without knowing the names.
use crate::{Error, Result};
use kiln_tensor::Tensor;
use std::sync::Arc;

/// What the fields of a dataset's samples are for: the model's inputs (in
/// the order its `forward` takes them) and the target the loss compares
/// the output with. A dataset without targets (predictions only) has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The model's inputs, in order (`["inputs"]`, or `["ids", "mask"]`).
    pub inputs: Vec<String>,
    /// The field the loss compares the model's output with (`targets`).
    pub target: Option<String>,
}

impl Default for Fields {
    /// One input named `inputs` and a target named `targets`.
    fn default() -> Self {
        Self {
            inputs: vec![INPUTS.into()],
            target: Some(TARGETS.into()),
        }
    }
}

/// A model output and class-index targets as a loss or a metric compares
/// them when they are sequences: outputs `[B, T, C]` (or `[B, T1, …, C]`)
/// and integer targets `[B, T]` (`[B, T1, …]`) of the same leading shape
/// are flattened to `[B·T, C]` and `[B·T]`, as nanoGPT's
/// `F.cross_entropy(logits.view(-1, V), targets.view(-1))` does; `None`
/// for anything else (targets `[B]`, regression values, PyTorch's
/// `[N, C, d1, …]` layout), which is compared as it is. The class
/// dimension is the last one.
pub fn flatten_sequences(output: &Tensor, targets: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
    let integer = matches!(
        targets.kind(),
        kiln_tensor::Kind::Int64
            | kiln_tensor::Kind::Int
            | kiln_tensor::Kind::Int16
            | kiln_tensor::Kind::Int8
            | kiln_tensor::Kind::Uint8
    );
    let (o, t) = (output.size(), targets.size());
    if !integer || t.len() < 2 || o.len() != t.len() + 1 || o[..t.len()] != t[..] {
        return Ok(None);
    }
    let classes = o[t.len()];
    Ok(Some((
        output.f_reshape([-1, classes])?,
        targets.f_reshape([-1])?,
    )))
}

/// The conventional name of a sample's (single) input.
pub const INPUTS: &str = "inputs";
/// The conventional name of a sample's target.
pub const TARGETS: &str = "targets";

/// One sample: named tensors, in the dataset's order.
#[derive(Debug, Default)]
pub struct Sample {
    fields: Vec<(String, Tensor)>,
}

impl Sample {
    /// An empty sample, to fill with [`Sample::with`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The sample with `tensor` added under `name` (replacing a field of
    /// that name).
    pub fn with(mut self, name: impl Into<String>, tensor: Tensor) -> Self {
        self.insert(name, tensor);
        self
    }

    /// Adds `tensor` under `name`, replacing a field of that name.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        let name = name.into();
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t = tensor,
            None => self.fields.push((name, tensor)),
        }
    }

    /// The field `name`.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        find(&self.fields, name, "sample")
    }

    /// Every field, in order.
    pub fn fields(&self) -> &[(String, Tensor)] {
        &self.fields
    }

    /// The fields, by value.
    pub fn into_fields(self) -> Vec<(String, Tensor)> {
        self.fields
    }
}

fn find<'t>(fields: &'t [(String, Tensor)], name: &str, what: &str) -> Result<&'t Tensor> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| {
            let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            Error::InvalidArgument(format!(
                "the {what} has no field '{name}'; it has {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
}

/// A batch: named tensors `[B, ...]` and what they are for.
#[derive(Debug)]
pub struct Batch {
    fields: Vec<(String, Tensor)>,
    roles: Arc<Fields>,
}

impl Batch {
    /// A batch of `fields` (each `[B, ...]`) whose roles `roles` names.
    pub fn new(fields: Vec<(String, Tensor)>, roles: Arc<Fields>) -> Self {
        Self { fields, roles }
    }

    /// A batch of one input and its targets, named `inputs` and `targets`.
    pub fn of(inputs: Tensor, targets: Tensor) -> Self {
        Self::new(
            vec![(INPUTS.into(), inputs), (TARGETS.into(), targets)],
            Arc::new(Fields::default()),
        )
    }

    /// The field `name`.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        find(&self.fields, name, "batch")
    }

    /// The model's inputs, in the order its `forward` takes them.
    pub fn inputs(&self) -> Result<Vec<&Tensor>> {
        self.roles.inputs.iter().map(|n| self.get(n)).collect()
    }

    /// The first (usually the only) model input.
    pub fn input(&self) -> Result<&Tensor> {
        match self.roles.inputs.first() {
            Some(name) => self.get(name),
            None => Err(Error::InvalidArgument(
                "the batch names no model input".into(),
            )),
        }
    }

    /// The targets the loss compares the model's output with.
    pub fn targets(&self) -> Result<&Tensor> {
        match &self.roles.target {
            Some(name) => self.get(name),
            None => Err(Error::InvalidArgument(
                "the batch has no targets (the data names no target field)".into(),
            )),
        }
    }

    /// What the fields are for.
    pub fn roles(&self) -> &Arc<Fields> {
        &self.roles
    }

    /// Every field, in order.
    pub fn fields(&self) -> &[(String, Tensor)] {
        &self.fields
    }

    /// Number of samples (the first dimension of the first field).
    pub fn len(&self) -> usize {
        self.fields
            .first()
            .and_then(|(_, t)| t.size().first().copied())
            .map_or(0, |n| n as usize)
    }

    /// Whether the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same batch with every field moved to `device` (`non_blocking`:
    /// copies from pinned memory overlap with compute, as PyTorch's
    /// `tensor.to(device, non_blocking=True)`).
    pub fn to_device(self, device: kiln_tensor::Device, non_blocking: bool) -> Result<Self> {
        if self.fields.iter().all(|(_, t)| t.device() == device) {
            return Ok(self);
        }
        let fields = self
            .fields
            .into_iter()
            .map(|(n, t)| {
                let kind = t.kind();
                Ok((n, t.f_to_device_(device, kind, non_blocking, false)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            fields,
            roles: self.roles,
        })
    }

    /// The same batch in page-locked (pinned) host memory for copies to
    /// `device`, so that they can run without blocking
    /// (`DataLoader(pin_memory=True)`).
    pub fn pinned(self, device: kiln_tensor::Device) -> Result<Self> {
        let fields = self
            .fields
            .into_iter()
            .map(|(n, t)| Ok((n, t.f_pin_memory(device)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            fields,
            roles: self.roles,
        })
    }
}

/// `torch.utils.data.default_collate` for samples of named tensors: each
/// field stacked over the samples (`torch.stack(values, 0)`), in the first
/// sample's field order. Every sample must have the same fields with the
/// same shapes.
pub fn collate(samples: Vec<Sample>, roles: Arc<Fields>) -> Result<Batch> {
    let Some(first) = samples.first() else {
        return Err(Error::InvalidArgument(
            "cannot collate an empty list of samples".into(),
        ));
    };
    let names: Vec<String> = first.fields.iter().map(|(n, _)| n.clone()).collect();
    let mut columns: Vec<Vec<Tensor>> = names.iter().map(|_| Vec::new()).collect();
    for (i, sample) in samples.into_iter().enumerate() {
        if sample.fields.len() != names.len() {
            return Err(Error::InvalidArgument(format!(
                "sample {i} of the batch has fields {:?}, the first one {names:?}",
                sample
                    .fields
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
            )));
        }
        for (column, (name, tensor)) in columns.iter_mut().zip(sample.fields) {
            if column
                .first()
                .is_some_and(|t: &Tensor| t.size() != tensor.size())
            {
                return Err(Error::InvalidArgument(format!(
                    "field '{name}' of sample {i} of the batch is {:?}, of the first sample {:?}: stacking needs equal shapes",
                    tensor.size(),
                    column.first().map(Tensor::size).unwrap_or_default()
                )));
            }
            column.push(tensor);
        }
    }
    let fields = names
        .into_iter()
        .zip(columns)
        .map(|(name, column)| Ok((name, Tensor::f_stack(&column, 0)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Batch::new(fields, roles))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_tensor::{Device, Kind};

    #[test]
    fn collate_stacks_each_field_as_default_collate() -> Result<()> {
        let sample = |i: i64| -> Result<Sample> {
            Ok(Sample::new()
                .with(
                    "x",
                    Tensor::f_full([2], i as f64, (Kind::Float, Device::Cpu))?,
                )
                .with(
                    "y",
                    Tensor::f_full([] as [i64; 0], i, (Kind::Int64, Device::Cpu))?,
                ))
        };
        let roles = Arc::new(Fields {
            inputs: vec!["x".into()],
            target: Some("y".into()),
        });
        let batch = collate(vec![sample(1)?, sample(2)?, sample(3)?], roles)?;
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.input()?.size(), vec![3, 2]);
        assert_eq!(Vec::<i64>::try_from(batch.targets()?)?, vec![1, 2, 3]);
        let err = batch
            .get("z")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no field 'z'; it has x, y"), "{err}");
        Ok(())
    }

    #[test]
    fn collate_refuses_ragged_samples() -> Result<()> {
        let a = Sample::new().with("x", Tensor::f_zeros([2], (Kind::Float, Device::Cpu))?);
        let b = Sample::new().with("x", Tensor::f_zeros([3], (Kind::Float, Device::Cpu))?);
        let err = collate(vec![a, b], Arc::new(Fields::default()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("stacking needs equal shapes"), "{err}");
        Ok(())
    }
}
