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
