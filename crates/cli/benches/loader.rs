//! Data-loader throughput, driven by `scripts/bench/loader.py`, which runs
//! PyTorch's `DataLoader` on the same dataset beside it.
//!
//! The dataset is the script's `Augmented`: `n` stored uint8 images
//! `[3, 32, 32]`; reading sample i converts it as `ToTensor` does, adds
//! Gaussian noise (`0.1 * randn`, from the generator the loader hands over:
//! the worker's own with workers) and normalises it per channel — the
//! light per-sample work of a typical augmentation. One shuffled pass of
//! batches of 64 is timed; prints `{"samples_per_s": ...}`.
//!
//! Usage: loader WORKERS SAMPLES
use anyhow::{Context, Result};
use kiln_loop::data::{Dataset, Fields, Sample};
use kiln_loop::DataLoader;
use kiln_tensor::rng::Generator;
use kiln_tensor::shared::SharedTensor;
use kiln_tensor::{Device, Kind, Tensor};
use std::sync::Arc;
use std::time::Instant;

struct Augmented {
    images: SharedTensor,
    labels: SharedTensor,
    mean: SharedTensor,
    std: SharedTensor,
}

impl Dataset for Augmented {
    fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    fn get(&self, index: usize, rng: &mut Generator) -> kiln_loop::Result<Sample> {
        let i = index as i64;
        let x = self
            .images
            .f_get(i)?
            .f_to_kind(Kind::Float)?
            .f_div_scalar(255)?;
        let noise = rng.randn(&[3, 32, 32], Kind::Float)?.f_mul_scalar(0.1)?;
        let x = x.f_add(&noise)?.f_sub(&self.mean)?.f_div(&self.std)?;
        Ok(Sample::new()
            .with("inputs", x)
            .with("targets", self.labels.f_get(i)?))
    }

    fn fields(&self) -> Fields {
        Fields::default()
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let workers: usize = args
        .get(1)
        .context("usage: loader WORKERS SAMPLES")?
        .parse()?;
    let n: i64 = args
        .get(2)
        .context("usage: loader WORKERS SAMPLES")?
        .parse()?;
    kiln_tensor::rng::manual_seed(0);
    let images = Tensor::f_randint(256, [n, 3, 32, 32], (Kind::Uint8, Device::Cpu))?;
    let labels = Tensor::f_randint(10, [n], (Kind::Int64, Device::Cpu))?;
    let channel = |v: [f32; 3]| Tensor::f_from_slice(&v)?.f_view([3, 1, 1]);
    let dataset = Augmented {
        images: SharedTensor::new(images),
        labels: SharedTensor::new(labels),
        mean: SharedTensor::new(channel([0.5, 0.5, 0.5])?),
        std: SharedTensor::new(channel([0.25, 0.25, 0.25])?),
    };
    let loader = DataLoader::new(Arc::new(dataset), 64, true)?.workers(workers, 2)?;
    let start = Instant::now();
    let mut samples = 0;
    for batch in loader.iter()? {
        samples += batch?.targets()?.size()[0];
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"workers": workers, "samples": samples, "seconds": seconds,
                           "samples_per_s": samples as f64 / seconds})
    );
    Ok(())
}
