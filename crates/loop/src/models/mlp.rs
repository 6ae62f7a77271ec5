//! The multi-layer perceptron: PyTorch's quickstart network and its
//! variations.
//!
//! The default is the quickstart's `NeuralNetwork`:
//!
//! ```python
//! self.flatten = nn.Flatten()
//! self.linear_relu_stack = nn.Sequential(
//!     nn.Linear(28*28, 512), nn.ReLU(),
//!     nn.Linear(512, 512), nn.ReLU(),
//!     nn.Linear(512, 10))
//! ```
//!
//! Parameters are named as that `nn.Sequential` names them
//! (`linear_relu_stack.0.weight`, …; with dropout each hidden block is
//! `Linear, activation, Dropout`, so the indices step by 3) and initialised
//! with PyTorch's defaults in PyTorch's order. Dropout is libtorch's
//! `dropout` on the global generator, as `nn.Dropout` draws.
use crate::models::{Network, VarStoreModel};
use crate::{Error, Result};
use kiln_tensor::init::linear;
use kiln_tensor::nn;
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::{Device, Kind, Tensor};
use serde::{Deserialize, Serialize};

/// The nonlinearity between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `nn.ReLU`.
    Relu,
    /// `nn.Tanh`.
    Tanh,
    /// `nn.Sigmoid`.
    Sigmoid,
    /// `nn.GELU()` (exact, not the tanh approximation).
    Gelu,
    /// `nn.SiLU`.
    Silu,
}

kiln_tensor::choices!(Activation {
    Relu = "relu",
    Tanh = "tanh",
    Sigmoid = "sigmoid",
    Gelu = "gelu",
    Silu = "silu",
});

impl Activation {
    /// Every activation with its spec name.
    pub const ALL: [(&'static str, Activation); 5] = [
        ("relu", Activation::Relu),
        ("tanh", Activation::Tanh),
        ("sigmoid", Activation::Sigmoid),
        ("gelu", Activation::Gelu),
        ("silu", Activation::Silu),
    ];

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => x.f_relu()?,
            Activation::Tanh => x.f_tanh()?,
            Activation::Sigmoid => x.f_sigmoid()?,
            Activation::Gelu => x.f_gelu("none")?,
            Activation::Silu => x.f_silu()?,
        })
    }
}

/// The network's shape; `Default` is the quickstart's hidden layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Widths of the hidden layers.
    pub hidden: Vec<i64>,
    /// The nonlinearity after each hidden layer.
    pub activation: Activation,
    /// `nn.Dropout(p)` after each activation (0 = none, and no module).
    pub dropout: f64,
    /// Standardise the inputs with the training set's mean and standard
    /// deviation (buffers `standardize.mean`/`standardize.std`): the
    /// default for regression data.
    #[serde(default)]
    pub standardize: bool,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            hidden: vec![512, 512],
            activation: Activation::Relu,
            dropout: 0.0,
            standardize: false,
        }
    }
}

impl Options for MlpConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("hidden", "widths of the hidden layers, ;-separated"),
            &mut self.hidden,
        )?;
        v.option(
            OptionInfo::new(
                "activation",
                "after each hidden layer: relu, tanh, sigmoid, gelu or silu",
            ),
            &mut self.activation,
        )?;
        v.option(
            OptionInfo::new("dropout", "nn.Dropout(p) after each activation (0: none)"),
            &mut self.dropout,
        )?;
        v.option(
            OptionInfo::new(
                "standardize",
                "standardise inputs by the training set's mean and std (buffers)",
            ),
            &mut self.standardize,
        )
    }
}

/// Standardisation of the inputs with fixed statistics (buffers
/// `standardize.mean` and `standardize.std`), for tabular data.
#[derive(Debug)]
struct Standardize {
    mean: Tensor,
    std: Tensor,
}

/// The MLP module: `Flatten`, optional standardisation, then the stack.
#[derive(Debug)]
pub struct Mlp {
    standardize: Option<Standardize>,
    layers: Vec<nn::Linear>,
    activation: Activation,
    dropout: f64,
}

impl Mlp {
    /// Creates the network under `path` for `inputs` features and `outputs`
    /// outputs, initialised as PyTorch initialises it (layer by layer,
    /// weight then bias).
    pub fn new(
        path: &nn::Path<'_>,
        cfg: &MlpConfig,
        inputs: i64,
        outputs: i64,
    ) -> kiln_tensor::Result<Self> {
        if !(0.0..1.0).contains(&cfg.dropout) {
            return Err(kiln_tensor::Error::InvalidArgument(format!(
                "mlp: dropout probability has to be between 0 and 1, but got {}",
                cfg.dropout
            )));
        }
        if let Some(w) = cfg.hidden.iter().find(|w| **w < 1) {
            return Err(kiln_tensor::Error::InvalidArgument(format!(
                "mlp: hidden layer widths must be at least 1, got {w}"
            )));
        }
        let stack = path / "linear_relu_stack";
        // Sequential indices: Linear, activation[, Dropout] per hidden layer.
        let block = if cfg.dropout > 0.0 { 3 } else { 2 };
        let mut layers = Vec::with_capacity(cfg.hidden.len() + 1);
        let mut width = inputs;
        for (i, &next) in cfg.hidden.iter().chain([outputs].iter()).enumerate() {
            let name = (i * block).to_string();
            layers.push(linear(&(&stack / name.as_str()), width, next, true)?);
            width = next;
        }
        Ok(Self {
            standardize: None,
            layers,
            activation: cfg.activation,
            dropout: cfg.dropout,
        })
    }

    /// Adds input standardisation with the mean and (unbiased) standard
    /// deviation of `train_inputs` `[N, F]`, kept as buffers so checkpoints
    /// carry them; constant columns keep a unit scale.
    pub fn standardized(mut self, path: &nn::Path<'_>, train_inputs: &Tensor) -> Result<Self> {
        let features = train_inputs.size().get(1).copied().unwrap_or(0);
        let stats = path / "standardize";
        let mean = stats.f_zeros_no_train("mean", &[features])?;
        let std = stats.f_ones_no_train("std", &[features])?;
        kiln_tensor::tch::no_grad(|| -> Result<()> {
            let (mut m, mut s) = (mean.shallow_clone(), std.shallow_clone());
            if train_inputs.size().first().copied().unwrap_or(0) > 1 {
                m.f_copy_(&train_inputs.f_mean_dim([0i64].as_slice(), false, Kind::Float)?)?;
                let sd = train_inputs.f_std_dim([0i64].as_slice(), true, false)?;
                s.f_copy_(&sd.f_where_scalarother(&sd.f_gt(0.0)?, 1.0)?)?;
            }
            Ok(())
        })?;
        self.standardize = Some(Standardize { mean, std });
        Ok(self)
    }
}

impl Network for Mlp {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = xs.f_flatten(1, -1)?;
        if let Some(s) = &self.standardize {
            x = x.f_sub(&s.mean)?.f_div(&s.std)?;
        }
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            x = x.f_linear(&layer.ws, layer.bs.as_ref())?;
            if i < last {
                x = self.activation.apply(&x)?;
                if self.dropout > 0.0 {
                    x = x.f_dropout(self.dropout, train)?;
                }
            }
        }
        Ok(x)
    }

    /// Linear layers (MKL GEMMs for the products; the bias copy and its
    /// gradient's column sums split over outputs), ReLU and its backward
    /// (exact comparisons, the same in ATen's vector and scalar loops) and
    /// the standardisation (elementwise). Other activations evaluate
    /// vectorised approximations whose scalar remainder rounds differently,
    /// so where a thread's chunk ends matters; dropout draws random numbers.
    fn exact_on_one_thread(&self) -> bool {
        self.activation == Activation::Relu && self.dropout == 0.0
    }

    /// The quickstart's `NeuralNetwork`: `flatten`, `linear_relu_stack`
    /// (kiln's input standardisation, buffers only, between them).
    fn modules(&self) -> Vec<(String, String)> {
        let mut out = vec![("flatten".to_string(), "Flatten".to_string())];
        if self.standardize.is_some() {
            out.push(("standardize".into(), "Standardize".into()));
        }
        out.push(("linear_relu_stack".into(), "Sequential".into()));
        out
    }
}

/// An MLP for `inputs` features and `outputs` outputs on `device`, as a
/// [`crate::Model`]; `standardize` gives the training inputs to standardise
/// with.
pub fn build(
    cfg: &MlpConfig,
    inputs: i64,
    outputs: i64,
    standardize: Option<&Tensor>,
    device: Device,
) -> Result<VarStoreModel<Mlp>> {
    VarStoreModel::new(device, |root| {
        let mlp = Mlp::new(root, cfg, inputs, outputs)?;
        match standardize {
            Some(train) => mlp.standardized(root, &train.f_to(Device::Cpu)?),
            None => Ok(mlp),
        }
    })
    .map_err(|e| match e {
        Error::Tensor(kiln_tensor::Error::InvalidArgument(m)) => Error::InvalidArgument(m),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Model;

    /// Only ReLU without dropout claims split-invariant ops: the other
    /// activations' vector and scalar loops round differently, and dropout
    /// draws random numbers.
    #[test]
    fn only_relu_without_dropout_runs_its_small_ops_serially() -> Result<()> {
        for (activation, dropout, exact) in [
            (Activation::Relu, 0.0, true),
            (Activation::Relu, 0.1, false),
            (Activation::Tanh, 0.0, false),
            (Activation::Gelu, 0.0, false),
        ] {
            let cfg = MlpConfig {
                hidden: vec![8],
                activation,
                dropout,
                standardize: false,
            };
            let model = build(&cfg, 4, 3, None, Device::Cpu)?;
            assert_eq!(
                model.exact_on_one_thread(),
                exact,
                "{activation:?} {dropout}"
            );
        }
        Ok(())
    }
}
