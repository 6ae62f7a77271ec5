//! What the Trainer trains: the [`Model`] trait and its adapters.
//!
//! A `Model` is PyTorch's `nn.Module` as a training loop sees it: a forward
//! pass, train/eval mode, named parameters (in `named_parameters()` order and
//! names), named buffers, and a state dict of both. Checkpoints, `--init`,
//! `kiln eval`, interop with PyTorch and data-parallel training all go
//! through this trait, so a model plugs into kiln in one place.
//!
//! Three ways to bring a model, all the same trait:
//! - the built-in networks by spec string, from the [`registry`] (`mlp`,
//!   the quickstart's; `cnn`, PyTorch's MNIST example's), which a
//!   downstream crate extends with its own entries;
//! - any module saved by PyTorch with `torch.jit.save(torch.jit.script(model))`
//!   ([`torchscript`]);
//! - your own tch `nn::ModuleT` over a `VarStore`, through [`VarStoreModel`]
//!   (kiln does not invent a module system); the built-in networks are such
//!   modules.
use crate::{Error, Result};
use kiln_tensor::nn::{ModuleT, VarStore};
use kiln_tensor::params::NamedParameter;
use kiln_tensor::{Device, Tensor};
use std::path::Path;

pub mod cnn;
pub mod freeze;
pub mod gpt;
pub mod mlp;
pub mod registry;
pub mod summary;
pub mod torchscript;

pub use freeze::freeze;
pub use registry::{models, ModelData, ModelRegistry};
pub use summary::ModelSummary;

/// Any `'static` value seen as [`std::any::Any`]: what lets a training step
/// ([`crate::step::Step`]) reach its own model type behind `&dyn Model`
/// ([`downcast_ref`](trait.Model.html#method.downcast_ref)).
pub trait AsAny: std::any::Any {
    /// `self` as `Any`.
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: std::any::Any> AsAny for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A trainable network. Object safe: the CLI picks one at run time.
pub trait Model: AsAny {
    /// The forward pass on a batch, in the current mode.
    fn forward(&self, inputs: &Tensor) -> Result<Tensor>;

    /// The forward pass on several inputs, in the order the data names
    /// them (`forward(ids, mask)`). The default takes exactly one input.
    fn forward_all(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        match inputs {
            [input] => self.forward(input),
            _ => Err(Error::Usage(format!(
                "the model takes one input, but the data gives {}; name one with inputs=KEY",
                inputs.len()
            ))),
        }
    }

    /// `model.train()` (`true`) or `model.eval()` (`false`): dropout and
    /// batch-norm statistics follow it, as in PyTorch.
    fn set_training(&mut self, training: bool) -> Result<()>;

    /// Whether the model is in training mode.
    fn is_training(&self) -> bool;

    /// The trainable parameters, in PyTorch's `named_parameters()` order,
    /// named as PyTorch names them (`linear_relu_stack.0.weight`). Each is a
    /// handle sharing storage and gradient with the model's own tensor.
    fn parameters(&self) -> Result<Vec<NamedParameter>>;

    /// The buffers (tensors in the state dict that are not trained: batch-norm
    /// running statistics, normalisation constants), in the model's order
    /// (PyTorch's `named_buffers()` order where it has one, else by name).
    fn buffers(&self) -> Result<Vec<(String, Tensor)>>;

    /// Where the parameters live.
    fn device(&self) -> Device;

    /// Whether the forward and backward passes in float32 compute the same
    /// bits when ATen's OpenMP kernels run on one thread, the matrix
    /// products staying on MKL's threads: true only where every other op
    /// computes each output independently of how ATen splits the work. The
    /// training step then runs them serially (see
    /// `kiln_tensor::device::SerialAtenKernels`). The default, `false`,
    /// claims nothing.
    fn exact_on_one_thread(&self) -> bool {
        false
    }

    /// The loss spec this network is trained with when none is given
    /// (`nll` for networks ending in `log_softmax`); `None`: the data's
    /// default (cross-entropy for classes, mse for values).
    fn default_loss(&self) -> Option<&str> {
        None
    }

    /// `--gradient-checkpointing`: recompute the activations of each block
    /// in backward instead of keeping them (`torch.utils.checkpoint`), with
    /// the same numbers. Models without blocks to checkpoint refuse `true`.
    fn set_gradient_checkpointing(&mut self, on: bool) -> Result<()> {
        if on {
            return Err(Error::Usage(
                "--gradient-checkpointing checkpoints the blocks of a gpt model; this model has none: drop the flag or use --model gpt".into(),
            ));
        }
        Ok(())
    }

    /// The top-level modules (`named_children()`), in registration order,
    /// with their PyTorch types: `[("flatten", "Flatten"),
    /// ("linear_relu_stack", "Sequential")]`. What [`ModelSummary`] lists;
    /// empty (the default) lists the parameter names' first components.
    fn modules(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Writes the model as a TorchScript module (`torch.jit.load` reads it)
    /// when it is one, and says whether it did; other models write nothing.
    fn save_torchscript(&self, path: &Path) -> Result<bool> {
        let _ = path;
        Ok(false)
    }

    /// `model.state_dict()`: the parameters, then the buffers.
    fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = self
            .parameters()?
            .into_iter()
            .map(|p| (p.name, p.tensor))
            .collect();
        out.extend(self.buffers()?);
        Ok(out)
    }

    /// `model.load_state_dict(tensors, strict=True)`: every parameter and
    /// buffer is overwritten in place; missing, unexpected and mis-shaped
    /// entries are reported in PyTorch's words before anything changes.
    fn load_state_dict(&self, tensors: &[(String, Tensor)]) -> Result<()> {
        kiln_tensor::params::copy_state(&self.state_dict()?, tensors)?;
        Ok(())
    }
}

impl dyn Model {
    /// The model as its concrete type `T`, if it is one: how a
    /// [`Step`](crate::step::Step) written for its own network reaches
    /// methods beyond [`Model::forward`] (a second head, say).
    pub fn downcast_ref<T: Model>(&self) -> Option<&T> {
        self.as_any().downcast_ref::<T>()
    }
}

/// Turns a panic inside libtorch (tch's infallible `Module` API) into an
/// [`Error::Model`] instead of a crash.
pub fn catch_forward(forward: impl FnOnce() -> Tensor) -> Result<Tensor> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(forward)).map_err(|payload| {
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("the model panicked");
        Error::Model(text.lines().next().unwrap_or(text).to_string())
    })
}

/// A network's forward pass, fallible. Every tch `nn::ModuleT` is one
/// (its panics become errors through [`catch_forward`]); kiln's own networks
/// implement it directly with tch's `f_*` calls.
pub trait Network {
    /// The forward pass; `train` selects training behaviour (dropout…).
    fn forward_t(&self, inputs: &Tensor, train: bool) -> Result<Tensor>;

    /// [`Model::exact_on_one_thread`] for this network; `false` by default.
    fn exact_on_one_thread(&self) -> bool {
        false
    }

    /// [`Model::modules`] for this network; none by default.
    fn modules(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

impl<M: ModuleT> Network for M {
    fn forward_t(&self, inputs: &Tensor, train: bool) -> Result<Tensor> {
        catch_forward(|| ModuleT::forward_t(self, inputs, train))
    }
}

/// A tch module over its `VarStore`: the store's trainable variables are the
/// parameters (in creation order, which is PyTorch's registration order when
/// the module creates them as PyTorch does) and its other variables the
/// buffers.
#[derive(Debug)]
pub struct VarStoreModel<M> {
    vs: VarStore,
    module: M,
    training: bool,
    default_loss: Option<String>,
}

impl<M: Network> VarStoreModel<M> {
    /// Builds the module with `build` (which creates its variables under
    /// the root path) and moves it to `device`, in training mode. As in
    /// PyTorch's `Net().to(device)`, the variables are created and
    /// initialised on the CPU (drawing from the CPU generator), so a seed
    /// gives the same initial weights on every device.
    pub fn new(
        device: Device,
        build: impl FnOnce(&kiln_tensor::nn::Path<'_>) -> Result<M>,
    ) -> Result<Self> {
        let mut vs = VarStore::new(Device::Cpu);
        let module = build(&vs.root())?;
        if device != Device::Cpu {
            vs.set_device(device);
        }
        Ok(Self {
            vs,
            module,
            training: true,
            default_loss: None,
        })
    }

    /// The same model, trained with the loss `spec` unless a run names
    /// another ([`Model::default_loss`]).
    pub fn with_default_loss(mut self, spec: &str) -> Self {
        self.default_loss = Some(spec.to_string());
        self
    }

    /// The store.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// The module.
    pub fn module(&self) -> &M {
        &self.module
    }
}

impl<M: Network + 'static> Model for VarStoreModel<M> {
    fn forward(&self, inputs: &Tensor) -> Result<Tensor> {
        self.module.forward_t(inputs, self.training)
    }

    fn set_training(&mut self, training: bool) -> Result<()> {
        self.training = training;
        Ok(())
    }

    fn is_training(&self) -> bool {
        self.training
    }

    fn parameters(&self) -> Result<Vec<NamedParameter>> {
        Ok(kiln_tensor::params::named_parameters(&self.vs)?)
    }

    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(kiln_tensor::params::buffers(&self.vs)?)
    }

    fn device(&self) -> Device {
        self.vs.device()
    }

    fn exact_on_one_thread(&self) -> bool {
        self.module.exact_on_one_thread()
    }

    fn modules(&self) -> Vec<(String, String)> {
        self.module.modules()
    }

    fn default_loss(&self) -> Option<&str> {
        self.default_loss.as_deref()
    }
}
