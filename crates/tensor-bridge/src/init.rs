//! PyTorch's default initialisers, bit for bit.
//!
//! Bounds are computed in f64 with PyTorch's exact formulas and the draws go
//! through libtorch's `uniform_` on the global generator, in PyTorch's order
//! (weight, then bias), so `torch.manual_seed(s)` followed by building the same
//! layers gives identical parameters.
use crate::{Error, Result};
use tch::nn::{self, Init};

/// `nn.init.calculate_gain('leaky_relu', a)`.
pub fn leaky_relu_gain(negative_slope: f64) -> f64 {
    (2.0 / (1.0 + negative_slope.powi(2))).sqrt()
}

/// The bound of `kaiming_uniform_(w, a=sqrt(5))` for `fan_in` inputs: what
/// `nn.Linear.reset_parameters` draws the weight from, `U(-bound, bound)`.
pub fn linear_weight_bound(fan_in: i64) -> f64 {
    let gain = leaky_relu_gain(5f64.sqrt());
    let std = gain / (fan_in as f64).sqrt();
    3f64.sqrt() * std
}

/// The bound `nn.Linear.reset_parameters` draws the bias from: `1/sqrt(fan_in)`
/// (0 when there are no inputs).
pub fn linear_bias_bound(fan_in: i64) -> f64 {
    if fan_in > 0 {
        1.0 / (fan_in as f64).sqrt()
    } else {
        0.0
    }
}

/// Fills `tensor` from `U(-bound, bound)` with libtorch's generator, outside autograd.
pub fn uniform_(tensor: &mut tch::Tensor, bound: f64) -> Result<()> {
    if tensor.numel() == 0 {
        // PyTorch: "Initializing zero-element tensors is a no-op".
        return Ok(());
    }
    let _ = tch::no_grad(|| tensor.f_uniform_(-bound, bound))?;
    Ok(())
}

/// `nn.Linear(in_features, out_features, bias)` created under `path`
/// (parameters `weight` `[out, in]` and `bias` `[out]`) and initialised exactly
/// as PyTorch's `reset_parameters` does.
pub fn linear(
    path: &nn::Path<'_>,
    in_features: i64,
    out_features: i64,
    bias: bool,
) -> Result<nn::Linear> {
    if in_features < 0 || out_features < 0 {
        return Err(Error::InvalidArgument(format!(
            "Linear needs non-negative sizes, got in_features={in_features}, out_features={out_features}"
        )));
    }
    let mut ws = path.f_var("weight", &[out_features, in_features], Init::Const(0.0))?;
    uniform_(&mut ws, linear_weight_bound(in_features))?;
    let bs = if bias {
        let mut bs = path.f_var("bias", &[out_features], Init::Const(0.0))?;
        uniform_(&mut bs, linear_bias_bound(in_features))?;
        Some(bs)
    } else {
        None
    };
    Ok(nn::Linear { ws, bs })
}

/// `nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias)`
/// (dilation 1, groups 1, zero padding): its parameters and settings.
#[derive(Debug)]
pub struct Conv2d {
    /// `[out_channels, in_channels, kh, kw]`.
    pub weight: tch::Tensor,
    /// `[out_channels]`, when the layer has one.
    pub bias: Option<tch::Tensor>,
    /// Stride along height and width.
    pub stride: [i64; 2],
    /// Zero padding along height and width.
    pub padding: [i64; 2],
}

impl Conv2d {
    /// `F.conv2d(x, weight, bias, stride, padding)`: `at::conv2d`, as
    /// `nn.Conv2d.forward` calls it.
    pub fn forward(&self, x: &tch::Tensor) -> Result<tch::Tensor> {
        Ok(x.f_conv2d(
            &self.weight,
            self.bias.as_ref(),
            self.stride,
            self.padding,
            [1, 1],
            1,
        )?)
    }
}

/// `nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias)`
/// created under `path` (`weight` `[out, in, kh, kw]`, then `bias` `[out]`)
/// and initialised as PyTorch's `reset_parameters` does: `kaiming_uniform_`
/// with `a = sqrt(5)` on the weight, then `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
/// on the bias, `fan_in = in * kh * kw`.
pub fn conv2d(
    path: &nn::Path<'_>,
    in_channels: i64,
    out_channels: i64,
    kernel: [i64; 2],
    stride: [i64; 2],
    padding: [i64; 2],
    bias: bool,
) -> Result<Conv2d> {
    let sizes = [
        in_channels,
        out_channels,
        kernel[0],
        kernel[1],
        stride[0],
        stride[1],
    ];
    if sizes.iter().any(|&v| v < 1) || padding.iter().any(|&p| p < 0) {
        return Err(Error::InvalidArgument(format!(
            "Conv2d needs positive channels, kernel and stride and non-negative padding, got in_channels={in_channels}, out_channels={out_channels}, kernel_size={kernel:?}, stride={stride:?}, padding={padding:?}"
        )));
    }
    let fan_in = in_channels * kernel[0] * kernel[1];
    let shape = [out_channels, in_channels, kernel[0], kernel[1]];
    let mut weight = path.f_var("weight", &shape, Init::Const(0.0))?;
    uniform_(&mut weight, linear_weight_bound(fan_in))?;
    let bias = if bias {
        let mut b = path.f_var("bias", &[out_channels], Init::Const(0.0))?;
        uniform_(&mut b, linear_bias_bound(fan_in))?;
        Some(b)
    } else {
        None
    };
    Ok(Conv2d {
        weight,
        bias,
        stride,
        padding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_pytorch_formulas() {
        // PyTorch: gain = sqrt(2 / (1 + 5.000000000000001)), bound = sqrt(3) * gain / sqrt(784)
        let expected = 3f64.sqrt() * (2.0f64 / 6.000000000000001).sqrt() / 28.0;
        assert_eq!(linear_weight_bound(784), expected);
        assert_eq!(linear_bias_bound(784), 1.0 / 28.0);
        assert_eq!(linear_bias_bound(0), 0.0);
    }

    #[test]
    fn linear_has_pytorch_shapes_names_and_ranges() {
        let _guard = crate::TEST_RNG.lock();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let layer = linear(&(vs.root() / "fc"), 20, 7, true);
        assert!(layer.is_ok());
        let vars = vs.variables();
        let w = &vars["fc.weight"];
        let b = &vars["fc.bias"];
        assert_eq!(w.size(), vec![7, 20]);
        assert_eq!(b.size(), vec![7]);
        let wmax = w.abs().max().double_value(&[]);
        assert!(wmax > 0.0 && wmax <= linear_weight_bound(20));
        assert!(b.abs().max().double_value(&[]) <= linear_bias_bound(20));
        assert!(linear(&vs.root(), -1, 3, false).is_err());
    }

    #[test]
    fn conv2d_draws_weight_then_bias_within_pytorch_bounds() {
        let _guard = crate::TEST_RNG.lock();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let conv = conv2d(&(vs.root() / "conv1"), 2, 4, [3, 3], [1, 1], [0, 0], true);
        assert!(conv.is_ok());
        let names: Vec<String> = crate::params::named_parameters(&vs)
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["conv1.weight", "conv1.bias"]);
        let vars = vs.variables();
        assert_eq!(vars["conv1.weight"].size(), vec![4, 2, 3, 3]);
        let wmax = vars["conv1.weight"].abs().max().double_value(&[]);
        assert!(wmax > 0.0 && wmax <= linear_weight_bound(18));
        assert!(vars["conv1.bias"].abs().max().double_value(&[]) <= linear_bias_bound(18));
        assert!(conv2d(&vs.root(), 0, 4, [3, 3], [1, 1], [0, 0], true).is_err());
    }
}
