//! The examples' toy data set, shared so that both examples train on the
//! same points.
use kiln_loop::data::TensorDataset;
use kiln_tensor::{Device, Kind, Tensor};
use std::sync::Arc;

/// Points on two noisy rings: class 0 inside, class 1 outside.
pub fn rings(n: i64) -> anyhow::Result<Arc<TensorDataset>> {
    let angle = Tensor::f_rand([n], (Kind::Float, Device::Cpu))? * (2.0 * std::f64::consts::PI);
    let class = Tensor::f_randint(2, [n], (Kind::Int64, Device::Cpu))?;
    let radius = class.f_to_kind(Kind::Float)? * 2.0
        + 1.0
        + Tensor::f_randn([n], (Kind::Float, Device::Cpu))? * 0.2;
    let xy = Tensor::f_stack(&[angle.cos() * &radius, angle.sin() * &radius], 1)?;
    Ok(Arc::new(TensorDataset::new(xy, class, "rings")?))
}
