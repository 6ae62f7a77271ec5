//! Any PyTorch module saved as TorchScript, trained by kiln:
//! `--model torchscript:PATH`.
//!
//! ```python
//! torch.jit.save(torch.jit.script(model), "model.pt")   # or torch.jit.trace(model, example)
//! ```
//!
//! [`TorchScriptModel`] is a [`Model`] over kiln-tensor's
//! [`ScriptModule`]: the module's own forward pass, its `train()`/`eval()`
//! (dropout and batch norm follow the mode), its parameters and buffers
//! under the names PyTorch's `state_dict()` gives them (`conv1.weight`,
//! `bn1.running_mean`, `bn1.num_batches_tracked`). kiln's optimizers,
//! losses, schedulers and loop train it; checkpoints hold parameters and
//! buffers, so a resumed run is bit-identical; the weights load back in
//! PyTorch with `model.load_state_dict(safetensors.torch.load_file(…))`,
//! and [`Model::save_torchscript`] writes the trained module back as
//! TorchScript (a run writes `RUN/model.pt` when it ends).
//!
//! The forward pass runs with the TorchScript graph executor's
//! optimisations off (see [`kiln_tensor::jit`]): operations run as written,
//! as in PyTorch's eager mode, independent of how many calls came before.
//!
//! TorchScript is deprecated upstream from PyTorch 2.11, but it is the only
//! format that carries a trainable graph from Python to libtorch; it works
//! with torch ≤ 2.11, and `torch.jit.script` with Python ≤ 3.13.
use crate::models::Model;
use crate::{Error, Result};
use kiln_tensor::jit::{Output, ScriptModule};
use kiln_tensor::params::NamedParameter;
use kiln_tensor::{Device, Tensor};
use std::path::{Path, PathBuf};

/// A TorchScript module as a [`Model`].
#[derive(Debug)]
pub struct TorchScriptModel {
    module: ScriptModule,
    path: PathBuf,
    training: bool,
    output: Output,
}

fn data_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl TorchScriptModel {
    /// Loads the module at `path` onto `device`, in training mode. A missing
    /// file, one that is not a TorchScript module, and a module without
    /// trainable parameters are errors naming the file.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        if !path.is_file() {
            return Err(data_error(
                path,
                "no such TorchScript file (write one with torch.jit.save(torch.jit.script(model), PATH))",
            ));
        }
        let mut module = ScriptModule::load(path, device).map_err(|e| {
            let text = e.to_string();
            let text = text.strip_prefix("libtorch: ").unwrap_or(&text);
            // libtorch appends a paragraph on checkpoint corruption to archive errors.
            let reason = text
                .split_once(" This is an internal miniz error")
                .map_or(text, |(head, _)| head)
                .trim_end_matches('.');
            let what = if reason.contains("constants.pkl") || reason.contains("code/") {
                "a PyTorch archive without TorchScript code (torch.save writes those)"
            } else {
                "not a TorchScript module"
            };
            data_error(
                path,
                format!(
                    "{what}: {reason}; write one with torch.jit.save(torch.jit.script(model), PATH)"
                ),
            )
        })?;
        let params = module.named_parameters()?;
        if !params.iter().any(|(_, t)| t.requires_grad()) {
            let why = if params.is_empty() {
                "has no parameters"
            } else {
                "has no parameters that require grad"
            };
            return Err(data_error(
                path,
                format!("the TorchScript module {why}: nothing to train"),
            ));
        }
        module.set_training(true)?;
        Ok(Self {
            module,
            path: path.to_path_buf(),
            training: true,
            output: Output::Whole,
        })
    }

    /// The same model, trained on the part of its forward's result that
    /// `output` selects (`torchscript:PATH,output=0` for the first element
    /// of a tuple, `output=logits` for a dict's entry).
    pub fn with_output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The module.
    pub fn module(&self) -> &ScriptModule {
        &self.module
    }
}

impl Model for TorchScriptModel {
    fn forward(&self, inputs: &Tensor) -> Result<Tensor> {
        self.forward_all(&[inputs])
    }

    /// `module(*inputs)`, as many as the data names (`inputs=ids;mask`),
    /// in that order.
    fn forward_all(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        self.module
            .forward_all(inputs, &self.output)
            .map_err(|e| match e {
                kiln_tensor::Error::InvalidArgument(m) => data_error(&self.path, m),
                kiln_tensor::Error::Torch(m) => Error::Model(m),
                other => Error::Tensor(other),
            })
    }

    fn set_training(&mut self, training: bool) -> Result<()> {
        self.module.set_training(training)?;
        self.training = training;
        Ok(())
    }

    fn is_training(&self) -> bool {
        self.training
    }

    fn parameters(&self) -> Result<Vec<NamedParameter>> {
        Ok(self
            .module
            .named_parameters()?
            .into_iter()
            .map(|(name, tensor)| NamedParameter { name, tensor })
            .collect())
    }

    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self.module.named_buffers()?)
    }

    fn device(&self) -> Device {
        self.module.device()
    }

    fn save_torchscript(&self, path: &Path) -> Result<bool> {
        self.module.save(path)?;
        Ok(true)
    }
}
