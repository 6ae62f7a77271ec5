//! The built-in models.
use kiln_tensor::init::linear;
use kiln_tensor::nn::{self, Module, ModuleT};
use kiln_tensor::Tensor;

/// The PyTorch quickstart network:
/// `Flatten, Linear(in, 512), ReLU, Linear(512, 512), ReLU, Linear(512, classes)`,
/// its parameters named as PyTorch names them (`linear_relu_stack.0.weight`, …)
/// and initialised with PyTorch's defaults in PyTorch's order.
#[derive(Debug)]
pub struct QuickstartMlp {
    layers: [nn::Linear; 3],
}

impl QuickstartMlp {
    /// Creates the network under `path` for `inputs` features and `classes` outputs.
    pub fn new(path: &nn::Path<'_>, inputs: i64, classes: i64) -> kiln_tensor::Result<Self> {
        let stack = path / "linear_relu_stack";
        Ok(Self {
            layers: [
                linear(&(&stack / "0"), inputs, 512, true)?,
                linear(&(&stack / "2"), 512, 512, true)?,
                linear(&(&stack / "4"), 512, classes, true)?,
            ],
        })
    }
}

impl ModuleT for QuickstartMlp {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let [l0, l2, l4] = &self.layers;
        let x = xs.flatten(1, -1);
        l4.forward(&l2.forward(&l0.forward(&x).relu()).relu())
    }
}

/// A regression MLP for tabular data:
/// `Linear(features, 64), ReLU, Linear(64, 64), ReLU, Linear(64, 1)` over
/// features standardised with the training split's mean and standard
/// deviation (kept as buffers, so checkpoints carry them).
#[derive(Debug)]
pub struct TabularMlp {
    mean: Tensor,
    std: Tensor,
    layers: [nn::Linear; 3],
}

impl TabularMlp {
    /// Creates the network for `features` inputs; `train_inputs` give the
    /// standardisation statistics.
    pub fn new(path: &nn::Path<'_>, train_inputs: &Tensor) -> kiln_tensor::Result<Self> {
        let features = train_inputs.size().get(1).copied().unwrap_or(0);
        let stack = path / "layers";
        let layers = [
            linear(&(&stack / "0"), features, 64, true)?,
            linear(&(&stack / "2"), 64, 64, true)?,
            linear(&(&stack / "4"), 64, 1, true)?,
        ];
        let stats = path / "standardize";
        let mean = stats.f_zeros_no_train("mean", &[features])?;
        let std = stats.f_ones_no_train("std", &[features])?;
        kiln_tensor::tch::no_grad(|| -> kiln_tensor::Result<()> {
            let (mut m, mut s) = (mean.shallow_clone(), std.shallow_clone());
            if train_inputs.size().first().copied().unwrap_or(0) > 1 {
                m.f_copy_(&train_inputs.f_mean_dim(
                    [0i64].as_slice(),
                    false,
                    kiln_tensor::Kind::Float,
                )?)?;
                // Constant columns keep a unit scale instead of dividing by zero.
                let sd = train_inputs.f_std_dim([0i64].as_slice(), true, false)?;
                s.f_copy_(&sd.f_where_scalarother(&sd.f_gt(0.0)?, 1.0)?)?;
            }
            Ok(())
        })?;
        Ok(Self { mean, std, layers })
    }
}

impl ModuleT for TabularMlp {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let [l0, l2, l4] = &self.layers;
        let x = (xs - &self.mean) / &self.std;
        l4.forward(&l2.forward(&l0.forward(&x).relu()).relu())
    }
}
