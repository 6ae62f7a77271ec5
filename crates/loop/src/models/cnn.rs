//! The convolutional network of PyTorch's MNIST example
//! (pytorch/examples, `mnist/main.py`) and its variations.
//!
//! The default is the example's `Net`:
//!
//! ```python
//! self.conv1 = nn.Conv2d(1, 32, 3, 1)
//! self.conv2 = nn.Conv2d(32, 64, 3, 1)
//! self.dropout1 = nn.Dropout(0.25)
//! self.dropout2 = nn.Dropout(0.5)
//! self.fc1 = nn.Linear(9216, 128)
//! self.fc2 = nn.Linear(128, 10)
//!
//! def forward(self, x):
//!     x = F.relu(self.conv1(x))
//!     x = F.relu(self.conv2(x))
//!     x = F.max_pool2d(x, 2)
//!     x = self.dropout1(x)
//!     x = torch.flatten(x, 1)
//!     x = F.relu(self.fc1(x))
//!     x = self.dropout2(x)
//!     x = self.fc2(x)
//!     return F.log_softmax(x, dim=1)
//! ```
//!
//! Parameters are named as `Net` names them (`conv1.weight` … `fc2.bias`)
//! and initialised with PyTorch's defaults in `__init__`'s order (each
//! `Conv2d`, then each `Linear`: weight, then bias). Every operation is the
//! libtorch call PyTorch's makes (`at::conv2d`, `at::max_pool2d`,
//! `at::dropout` — what `nn.Dropout` and `F.dropout` both reach, drawing a
//! `bernoulli_` mask from the global generator in training mode —
//! `at::linear`, `log_softmax`), so a seed gives PyTorch's numbers. The
//! network ends in `log_softmax`: it is trained with `nll` (the default loss
//! with `--model cnn`, as in the example); `cross-entropy` on its
//! log-probabilities is the same loss mathematically.
use crate::models::{Network, VarStoreModel};
use crate::{Error, Result};
use kiln_tensor::init::{conv2d, linear, Conv2d};
use kiln_tensor::nn;
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::{Device, Tensor};

/// The network's shape; `Default` is the example's `Net`.
#[derive(Debug, Clone, PartialEq)]
pub struct CnnConfig {
    /// Output channels of each convolution (`conv1`, `conv2`, …), each
    /// followed by ReLU.
    pub channels: Vec<i64>,
    /// Square kernel size of the convolutions (stride 1, no padding).
    pub kernel_size: i64,
    /// `F.max_pool2d(x, pool)` after the convolutions.
    pub pool: i64,
    /// Width of the hidden linear layer (`fc1`).
    pub hidden: i64,
    /// `nn.Dropout(p)` after pooling.
    pub dropout1: f64,
    /// `nn.Dropout(p)` after `fc1`'s ReLU.
    pub dropout2: f64,
}

impl Default for CnnConfig {
    fn default() -> Self {
        Self {
            channels: vec![32, 64],
            kernel_size: 3,
            pool: 2,
            hidden: 128,
            dropout1: 0.25,
            dropout2: 0.5,
        }
    }
}

impl Options for CnnConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "channels",
                "output channels of conv1, conv2, …, ;-separated (each + ReLU)",
            ),
            &mut self.channels,
        )?;
        v.option(
            OptionInfo::new(
                "kernel_size",
                "square kernel of each convolution (stride 1)",
            )
            .aliases(&["kernel"]),
            &mut self.kernel_size,
        )?;
        v.option(
            OptionInfo::new(
                "pool",
                "max_pool2d kernel and stride after the convolutions",
            ),
            &mut self.pool,
        )?;
        v.option(
            OptionInfo::new("hidden", "width of fc1 (then ReLU)"),
            &mut self.hidden,
        )?;
        v.option(
            OptionInfo::new("dropout1", "nn.Dropout(p) after pooling"),
            &mut self.dropout1,
        )?;
        v.option(
            OptionInfo::new("dropout2", "nn.Dropout(p) after fc1"),
            &mut self.dropout2,
        )
    }
}

/// The network; build it with [`build`].
#[derive(Debug)]
pub struct Cnn {
    convs: Vec<Conv2d>,
    fc1: nn::Linear,
    fc2: nn::Linear,
    pool: i64,
    dropout1: f64,
    dropout2: f64,
    /// Samples are `[H, W]`: a channel axis is added in front.
    add_channel: bool,
}

impl Network for Cnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = if self.add_channel {
            xs.f_unsqueeze(1)?
        } else {
            xs.shallow_clone()
        };
        for conv in &self.convs {
            x = conv.forward(&x)?.f_relu()?;
        }
        // F.max_pool2d(x, pool): no stride given, so libtorch uses the kernel's.
        let no_stride: [i64; 0] = [];
        x = x.f_max_pool2d([self.pool, self.pool], no_stride, [0, 0], [1, 1], false)?;
        x = x.f_dropout(self.dropout1, train)?;
        x = x.f_flatten(1, -1)?;
        x = x.f_linear(&self.fc1.ws, self.fc1.bs.as_ref())?.f_relu()?;
        x = x.f_dropout(self.dropout2, train)?;
        x = x.f_linear(&self.fc2.ws, self.fc2.bs.as_ref())?;
        Ok(x.f_log_softmax(1, None)?)
    }

    /// The MNIST example's `Net`: `conv1`, `conv2`…, `dropout1`,
    /// `dropout2`, `fc1`, `fc2`.
    fn modules(&self) -> Vec<(String, String)> {
        let convs = (1..=self.convs.len()).map(|i| (format!("conv{i}"), "Conv2d"));
        convs
            .chain([
                ("dropout1".to_string(), "Dropout"),
                ("dropout2".to_string(), "Dropout"),
                ("fc1".to_string(), "Linear"),
                ("fc2".to_string(), "Linear"),
            ])
            .map(|(name, kind)| (name, kind.to_string()))
            .collect()
    }
}

fn usage(message: String) -> Error {
    Error::Usage(format!("--model cnn: {message}"))
}

/// The CNN for samples of shape `sample` (`[C, H, W]`, or `[H, W]` for one
/// channel) and `classes` outputs on `device`, initialised as PyTorch does.
/// Its default loss ([`crate::Model::default_loss`]) is `nll`.
pub fn build(
    cfg: &CnnConfig,
    sample: &[i64],
    classes: i64,
    device: Device,
) -> Result<VarStoreModel<Cnn>> {
    let (channels, h, w, add_channel) = match *sample {
        [c, h, w] => (c, h, w, false),
        [h, w] => (1, h, w, true),
        _ => {
            return Err(usage(format!(
                "images must be [C, H, W] (or [H, W]) per sample, but the data's samples are {sample:?}"
            )))
        }
    };
    for (name, p) in [("dropout1", cfg.dropout1), ("dropout2", cfg.dropout2)] {
        if !(0.0..=1.0).contains(&p) {
            return Err(usage(format!(
                "{name}: dropout probability has to be between 0 and 1, but got {p}"
            )));
        }
    }
    if cfg.channels.is_empty() || cfg.channels.iter().any(|&c| c < 1) {
        return Err(usage(format!(
            "channels must list at least one positive channel count, got {:?}",
            cfg.channels
        )));
    }
    if cfg.kernel_size < 1 || cfg.pool < 1 || cfg.hidden < 1 {
        return Err(usage(format!(
            "kernel_size, pool and hidden must be at least 1, got {}, {} and {}",
            cfg.kernel_size, cfg.pool, cfg.hidden
        )));
    }
    let shrink = cfg.channels.len() as i64 * (cfg.kernel_size - 1);
    let (oh, ow) = ((h - shrink) / cfg.pool, (w - shrink) / cfg.pool);
    if h - shrink < 1 || w - shrink < 1 || oh < 1 || ow < 1 {
        return Err(usage(format!(
            "{} convolutions of {k}x{k} and a {p}x{p} pooling leave nothing of a {h}x{w} image; use fewer channels entries, a smaller kernel_size or pool",
            cfg.channels.len(),
            k = cfg.kernel_size,
            p = cfg.pool
        )));
    }
    let last = cfg.channels.last().copied().unwrap_or(1);
    let flat = last * oh * ow;
    let model = VarStoreModel::new(device, |root| {
        let k = [cfg.kernel_size, cfg.kernel_size];
        let mut convs = Vec::with_capacity(cfg.channels.len());
        let mut in_c = channels;
        for (i, &out_c) in cfg.channels.iter().enumerate() {
            let path = root / format!("conv{}", i + 1);
            convs.push(conv2d(&path, in_c, out_c, k, [1, 1], [0, 0], true)?);
            in_c = out_c;
        }
        let fc1 = linear(&(root / "fc1"), flat, cfg.hidden, true)?;
        let fc2 = linear(&(root / "fc2"), cfg.hidden, classes, true)?;
        Ok(Cnn {
            convs,
            fc1,
            fc2,
            pool: cfg.pool,
            dropout1: cfg.dropout1,
            dropout2: cfg.dropout2,
            add_channel,
        })
    })?;
    Ok(model.with_default_loss("nll"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Model;

    #[test]
    fn default_is_the_examples_net() -> Result<()> {
        let model = build(&CnnConfig::default(), &[1, 28, 28], 10, Device::Cpu)?;
        let shapes: Vec<(String, Vec<i64>)> = model
            .parameters()?
            .into_iter()
            .map(|p| (p.name, p.tensor.size()))
            .collect();
        let expected: Vec<(String, Vec<i64>)> = [
            ("conv1.weight", vec![32, 1, 3, 3]),
            ("conv1.bias", vec![32]),
            ("conv2.weight", vec![64, 32, 3, 3]),
            ("conv2.bias", vec![64]),
            ("fc1.weight", vec![128, 9216]),
            ("fc1.bias", vec![128]),
            ("fc2.weight", vec![10, 128]),
            ("fc2.bias", vec![10]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        assert_eq!(shapes, expected);
        assert_eq!(model.default_loss(), Some("nll"));
        let too_small = build(&CnnConfig::default(), &[1, 5, 5], 10, Device::Cpu);
        assert!(
            matches!(too_small, Err(Error::Usage(m)) if m.contains("leave nothing of a 5x5 image"))
        );
        Ok(())
    }
}
