//! One optimizer step over 100 float32 tensors / 10 M values: kiln's parity
//! path (`fused=false`, PyTorch's single-tensor numbers) and fast path
//! (`fused=true`, libtorch's one-pass kernels), for SGD-momentum, Adam and
//! AdamW. Prints one JSON line per variant with every step's seconds.
//!
//! `cargo bench -p kiln-optim --bench optim_step` (or `benches/run.sh`, which
//! alternates this with `optim_step.py` and reports medians and ratios).
//! Environment: `KILN_BENCH_THREADS` (default 1), `KILN_BENCH_STEPS` (20),
//! `KILN_BENCH_TENSORS` (100), `KILN_BENCH_NUMEL` (100000 per tensor).
use kiln_optim::{optimizers, NamedParameter, Optimizer};
use kiln_tensor::{tch, Device, Kind, Tensor};
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn model(tensors: usize, numel: usize) -> Res<Vec<NamedParameter>> {
    tch::manual_seed(0);
    let mut params = Vec::with_capacity(tensors);
    let mut loss: Option<Tensor> = None;
    for i in 0..tensors {
        let p =
            Tensor::f_randn([numel as i64], (Kind::Float, Device::Cpu))?.set_requires_grad(true);
        let g = Tensor::f_randn([numel as i64], (Kind::Float, Device::Cpu))?;
        // d(sum(p * g))/dp = g: gives every parameter a fixed gradient.
        let term = p.f_mul(&g)?.f_sum(Kind::Float)?;
        loss = Some(match loss {
            Some(l) => l.f_add(&term)?,
            None => term,
        });
        params.push(NamedParameter {
            name: format!("layers.{i}.weight"),
            tensor: p,
        });
    }
    if let Some(l) = loss {
        l.f_backward()?;
    }
    Ok(params)
}

fn handles(params: &[NamedParameter]) -> Vec<NamedParameter> {
    params
        .iter()
        .map(|p| NamedParameter {
            name: p.name.clone(),
            tensor: p.tensor.shallow_clone(),
        })
        .collect()
}

fn main() -> Res<()> {
    let threads = env("KILN_BENCH_THREADS", 1);
    let steps = env("KILN_BENCH_STEPS", 20);
    let tensors = env("KILN_BENCH_TENSORS", 100);
    let numel = env("KILN_BENCH_NUMEL", 100_000);
    tch::set_num_threads(threads as i32);
    // kiln's CPU allocator, as `kiln train` installs it (KILN_CPU_ALLOCATOR=libtorch: off).
    let allocator = kiln_tensor::memory::install_from_env()?;
    eprintln!("kiln CPU allocator: {allocator:?}");
    let params = model(tensors, numel)?;
    let variants = [
        ("sgd", "default", "sgd:lr=1e-3,momentum=0.9"),
        ("sgd", "fused", "sgd:lr=1e-3,momentum=0.9,fused=true"),
        ("adam", "default", "adam:lr=1e-3"),
        ("adam", "fused", "adam:lr=1e-3,fused=true"),
        ("adamw", "default", "adamw:lr=1e-3,weight_decay=0.01"),
        (
            "adamw",
            "fused",
            "adamw:lr=1e-3,weight_decay=0.01,fused=true",
        ),
    ];
    let registry = optimizers();
    for (opt_name, path, spec) in variants {
        let mut opt: Box<dyn Optimizer> = registry.build(spec, handles(&params))?;
        for _ in 0..3 {
            opt.step()?;
        }
        let mut times = Vec::with_capacity(steps);
        for _ in 0..steps {
            let t0 = Instant::now();
            opt.step()?;
            times.push(t0.elapsed().as_secs_f64());
        }
        let list: Vec<String> = times.iter().map(|t| format!("{t:.6}")).collect();
        println!(
            "{{\"impl\":\"kiln\",\"optimizer\":\"{opt_name}\",\"path\":\"{path}\",\"threads\":{threads},\"tensors\":{tensors},\"numel\":{numel},\"seconds\":[{}]}}",
            list.join(",")
        );
    }
    Ok(())
}
