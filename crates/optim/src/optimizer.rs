//! The `Optimizer` trait every kiln optimizer implements, and its state.
use crate::{Error, NamedParameter, Result};
use kiln_tensor::{io, Tensor};
use std::path::Path;

/// Everything an optimizer needs to continue exactly where it stopped:
/// per-parameter buffers keyed by `"{parameter name}.{buffer}"` (e.g.
/// `linear.weight.momentum_buffer`), in a fixed order, and the scalars
/// (hyperparameters of every group, step counters) as JSON.
#[derive(Debug, Default)]
pub struct OptimizerState {
    /// Buffers, keyed by parameter name and buffer name, sorted by key.
    pub tensors: Vec<(String, Tensor)>,
    /// Hyperparameters and counters; its layout is the optimizer's own.
    pub scalars: serde_json::Value,
}

/// File name of the buffers inside a state directory.
pub const STATE_TENSORS_FILE: &str = "optimizer.safetensors";
/// File name of the scalars inside a state directory.
pub const STATE_SCALARS_FILE: &str = "optimizer.json";

impl OptimizerState {
    /// Saves the state into directory `dir` (created if needed) as
    /// [`STATE_TENSORS_FILE`] (safetensors) and [`STATE_SCALARS_FILE`] (JSON),
    /// each written atomically. The JSON lists every tensor's name and shape,
    /// so [`OptimizerState::load`] detects files from two different saves.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| kiln_tensor::Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let index: Vec<serde_json::Value> = self
            .tensors
            .iter()
            .map(|(k, t)| serde_json::json!([k, t.size()]))
            .collect();
        let doc = serde_json::json!({ "format": "kiln-optim-state/1", "tensors": index, "scalars": self.scalars });
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| Error::State(format!("cannot serialise optimizer scalars: {e}")))?;
        let cpu: Vec<(String, Tensor)> = self
            .tensors
            .iter()
            .map(|(k, t)| {
                Ok((
                    k.clone(),
                    t.f_to_device(kiln_tensor::Device::Cpu)?.f_contiguous()?,
                ))
            })
            .collect::<Result<_>>()?;
        io::write_safetensors(&dir.join(STATE_TENSORS_FILE), &cpu)?;
        io::write_atomic(&dir.join(STATE_SCALARS_FILE), text.as_bytes())?;
        Ok(())
    }

    /// Loads a state saved by [`OptimizerState::save`] (tensors on the CPU;
    /// [`Optimizer::load_state_dict`] moves them to the parameters' device).
    pub fn load(dir: &Path) -> Result<Self> {
        let json_path = dir.join(STATE_SCALARS_FILE);
        let text = io::read(&json_path)?;
        let doc: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| Error::State(format!("{}: {e}", json_path.display())))?;
        if doc.get("format").and_then(|f| f.as_str()) != Some("kiln-optim-state/1") {
            return Err(Error::State(format!(
                "{} is not a kiln optimizer state",
                json_path.display()
            )));
        }
        let tensors = io::read_safetensors(&dir.join(STATE_TENSORS_FILE))?;
        let index = doc
            .get("tensors")
            .and_then(|t| t.as_array())
            .cloned()
            .unwrap_or_default();
        let listed: Vec<(String, Vec<i64>)> = index
            .iter()
            .filter_map(|e| {
                let name = e.get(0)?.as_str()?.to_string();
                let shape = e
                    .get(1)?
                    .as_array()?
                    .iter()
                    .filter_map(|d| d.as_i64())
                    .collect();
                Some((name, shape))
            })
            .collect();
        let mut found: Vec<(String, Vec<i64>)> =
            tensors.iter().map(|(k, t)| (k.clone(), t.size())).collect();
        let mut want = listed;
        found.sort();
        want.sort();
        if found != want {
            return Err(Error::State(format!(
                "{} and {} do not belong to the same save",
                json_path.display(),
                dir.join(STATE_TENSORS_FILE).display()
            )));
        }
        let scalars = doc
            .get("scalars")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        Ok(Self { tensors, scalars })
    }
}

/// An optimizer over named parameters grouped into param groups.
///
/// Object safe: the CLI holds a `Box<dyn Optimizer>` chosen at run time.
/// Implementors provide the update ([`Optimizer::step`]), access to groups and
/// their hyperparameters, and state (de)serialisation; `zero_grad` and
/// closure-based stepping have PyTorch's default behaviour.
pub trait Optimizer {
    /// The optimizer's name as spec strings use it (`sgd`).
    fn name(&self) -> &str;

    /// Applies one update from the gradients stored on the parameters.
    /// Parameters whose `grad` is `None` are skipped, as in PyTorch.
    fn step(&mut self) -> Result<()>;

    /// `optimizer.step(closure)`: evaluates `closure` (which recomputes the
    /// loss and its gradients) and then steps; returns the closure's loss.
    /// Optimizers that need several evaluations (LBFGS) override this.
    fn step_with_closure(&mut self, closure: &mut dyn FnMut() -> Result<f64>) -> Result<f64> {
        let loss = closure()?;
        self.step()?;
        Ok(loss)
    }

    /// Whether [`Optimizer::step`] cannot work alone and training loops must
    /// call [`Optimizer::step_with_closure`] (LBFGS re-evaluates the loss).
    fn requires_closure(&self) -> bool {
        false
    }

    /// Checks, before training, that the gradients the parameters hold now
    /// (from a trial backward pass) are ones this optimizer can step on —
    /// SparseAdam needs sparse ones — with the error its step would give.
    fn check_gradients(&self) -> Result<()> {
        Ok(())
    }

    /// Number of param groups.
    fn num_groups(&self) -> usize;

    /// The parameters of group `group` (empty if there is no such group).
    fn group_params(&self, group: usize) -> &[NamedParameter];

    /// A hyperparameter of a group by its PyTorch name (`lr`, `momentum`,
    /// `weight_decay`, `betas.0`…); `None` if the group or name does not exist.
    fn hyperparameter(&self, group: usize, name: &str) -> Option<f64>;

    /// Sets a hyperparameter of a group (what schedulers do); validates it
    /// like the optimizer's constructor and errors on unknown names.
    fn set_hyperparameter(&mut self, group: usize, name: &str, value: f64) -> Result<()>;

    /// All state needed to resume, keyed by parameter name.
    fn state_dict(&self) -> Result<OptimizerState>;

    /// Restores state produced by [`Optimizer::state_dict`] of the same kind
    /// of optimizer over parameters with the same names and shapes.
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()>;

    /// The learning rate of a group.
    fn lr(&self, group: usize) -> Option<f64> {
        self.hyperparameter(group, "lr")
    }

    /// Sets the learning rate of a group.
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.set_hyperparameter(group, "lr", lr)
    }

    /// `optimizer.zero_grad()`: sets every parameter's `grad` to `None`
    /// (PyTorch's default `set_to_none=True`).
    fn zero_grad(&mut self) -> Result<()> {
        for group in 0..self.num_groups() {
            for p in self.group_params(group) {
                kiln_tensor::ops::clear_grad(&p.tensor)?;
            }
        }
        Ok(())
    }
}

/// Checks that `saved` was written by the optimizer named `name` (its
/// `optimizer` scalar).
pub(crate) fn check_saved_by(saved: &OptimizerState, name: &str) -> Result<()> {
    let kind = saved
        .scalars
        .get("optimizer")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("nothing known");
    // SparseAdam's state was tagged `sparse_adam` before names became kebab-case.
    if kind != name && !(kind == "sparse_adam" && name == "sparse-adam") {
        return Err(Error::State(format!(
            "it was saved by {kind}, not by {name}"
        )));
    }
    Ok(())
}

/// Refuses a complex parameter: no kiln optimizer implements them (PyTorch
/// refuses them only in some optimizers, some only at the first step).
pub(crate) fn refuse_complex(optimizer: &str, param: &NamedParameter) -> Result<()> {
    if param.tensor.f_is_complex()? {
        return Err(Error::InvalidArgument(format!(
            "{optimizer} does not support complex parameters ('{}'): kiln-optim does not implement them",
            param.name
        )));
    }
    Ok(())
}

/// Checks that `group` exists among `len` groups.
pub(crate) fn check_group(group: usize, len: usize) -> Result<()> {
    if group < len {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "param group {group} does not exist (the optimizer has {len})"
        )))
    }
}

/// Errors unless every parameter name is unique (state is keyed by name):
/// a name in two param groups is PyTorch's "some parameters appear in more
/// than one parameter group"; a name twice in one group (PyTorch only warns
/// about a repeated tensor) is refused too.
pub(crate) fn check_unique_names(groups: &[&[NamedParameter]]) -> Result<()> {
    let mut names: Vec<(&str, usize)> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, ps)| ps.iter().map(move |p| (p.name.as_str(), g)))
        .collect();
    names.sort_unstable();
    let mut repeated = None;
    for w in names.windows(2) {
        if let [(a, ga), (b, gb)] = w {
            if a == b {
                if ga != gb {
                    return Err(Error::InvalidArgument(
                        "some parameters appear in more than one parameter group".into(),
                    ));
                }
                repeated.get_or_insert(*a);
            }
        }
    }
    match repeated {
        Some(name) => Err(Error::InvalidArgument(format!(
            "parameter name '{name}' appears more than once; optimizer state is keyed by name"
        ))),
        None => Ok(()),
    }
}
