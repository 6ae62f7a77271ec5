//! The cost of TensorBoard logging: one `add_scalar`, the logger's work per
//! training batch, a flush, and the histograms of the quickstart MLP's
//! parameters and gradients (669,706 values each). Prints one JSON line per
//! measurement.
//!
//! `cargo bench -p kiln-loop --bench tensorboard`. Environment:
//! `KILN_BENCH_SCALARS` (default 1,000,000 `add_scalar` calls),
//! `KILN_BENCH_REPEATS` (5 histogram passes).
use kiln_loop::loggers::tensorboard::{SummaryWriter, TensorBoardConfig, TensorBoardLogger};
use kiln_loop::{Callback, StepInfo};
use kiln_tensor::{tch, Device, Kind, Tensor};
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Res<()> {
    let dir = std::env::temp_dir().join(format!("kiln-tb-bench-{}", std::process::id()));
    let result = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(dir: &std::path::Path) -> Res<()> {
    kiln_tensor::tch::set_num_threads(1);
    let n = env("KILN_BENCH_SCALARS", 1_000_000);
    let mut w = SummaryWriter::create(&dir.join("scalars"))?;
    let t = Instant::now();
    for i in 0..n {
        w.add_scalar("train/loss", 1.0 / (i + 1) as f64, i as u64)?;
    }
    let add = t.elapsed().as_secs_f64();
    let t = Instant::now();
    w.flush()?;
    let flush = t.elapsed().as_secs_f64();
    w.close()?;
    println!(
        "{{\"what\":\"add_scalar\",\"calls\":{n},\"ns_per_call\":{:.1},\"final_flush_ms\":{:.3}}}",
        add / n as f64 * 1e9,
        flush * 1e3
    );

    // The tutorial's epoch: 938 batches of 64, scalars every 50 steps.
    let mut logger = TensorBoardLogger::create(
        &dir.join("logger"),
        TensorBoardConfig::default(),
        kiln_loop::Notices::ignore(),
    )?;
    let batches = 938 * 20;
    let t = Instant::now();
    for b in 1..=batches {
        logger.on_batch_end(&StepInfo {
            epoch: 1 + b / 938,
            batch: b % 938,
            batch_len: 64,
            dataset_len: 60000,
            step: b,
            stepped: true,
            skipped: false,
            loss: 1.0 / b as f64,
            metrics: Vec::new(),
            lr: Some(1e-3),
            grad_norm: None,
            samples_per_sec: 50_000.0,
            log: false,
            timings: Default::default(),
        })?;
    }
    let per_batch = t.elapsed().as_secs_f64() / batches as f64;
    let t = Instant::now();
    logger.flush()?;
    let epoch_flush = t.elapsed().as_secs_f64();
    println!(
        "{{\"what\":\"logger_per_batch\",\"batches\":{batches},\"ns_per_batch\":{:.1},\"epoch_end_flush_ms\":{:.3}}}",
        per_batch * 1e9,
        epoch_flush * 1e3
    );

    // log_histograms over the quickstart MLP (values and gradients).
    tch::manual_seed(0);
    let shapes: [&[i64]; 6] = [&[512, 784], &[512], &[512, 512], &[512], &[10, 512], &[10]];
    let names = [
        "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias",
    ];
    let mut params = Vec::new();
    let mut loss: Option<Tensor> = None;
    for (name, shape) in names.iter().zip(shapes) {
        let p = Tensor::f_randn(shape, (Kind::Float, Device::Cpu))?.set_requires_grad(true);
        let term = p.f_mul(&p)?.f_sum(Kind::Float)?;
        loss = Some(match loss {
            Some(l) => l.f_add(&term)?,
            None => term,
        });
        params.push((format!("linear_relu_stack.{name}"), p));
    }
    if let Some(l) = loss {
        l.f_backward()?;
    }
    let repeats = env("KILN_BENCH_REPEATS", 5);
    let mut secs = Vec::new();
    for r in 0..repeats {
        let t = Instant::now();
        logger.log_histograms(&params, r as u64)?;
        logger.flush()?;
        secs.push(t.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    let numel: i64 = params.iter().map(|(_, p)| p.numel() as i64).sum();
    println!(
        "{{\"what\":\"log_histograms\",\"tensors\":{},\"values_per_tensor_kind\":{numel},\"median_ms\":{:.2},\"min_ms\":{:.2}}}",
        params.len() * 2,
        secs[secs.len() / 2] * 1e3,
        secs[0] * 1e3
    );
    logger.close()?;
    Ok(())
}
