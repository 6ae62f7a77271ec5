//! Data-parallel scaling, run under `mpirun -n P` (feature `mpi`); driven by
//! `scripts/bench/scaling.py`. Rank 0 prints one JSON object:
//! - `allreduce`: seconds per float32 `MPI_Allreduce` (sum) and per kiln
//!   gradient-bucket sum (gloo's order: `MPI_Ialltoallv`, the fold,
//!   `MPI_Iallgatherv`, on the bucket thread) for buffers of 4 B to 16 MiB,
//!   the median and the minimum of repeated calls;
//! - `train`: per model (the quickstart MLP; the PyTorch MNIST example's
//!   CNN, `--model cnn`) and per way of
//!   averaging gradients, the median time per step split into compute
//!   (forward + backward, hooks included), exposed communication (from the
//!   end of backward until the averaged gradients are in place) and the
//!   optimizer step; the transport's own time for all buckets, the window
//!   between the first bucket's start and the end of backward, and the
//!   bucket sizes. Ways: `single` (one rank), `flat` (the pre-bucket path:
//!   one flat buffer all-reduced after backward, then divided), `buckets`
//!   (DDP's buckets started after backward) and `overlap` (started from the
//!   autograd hooks during backward: what `kiln train` does).
//!
//! The ways are interleaved in blocks so that machine load hits them alike.
use anyhow::{Context, Result};
use kiln_loop::distributed::mpi::Mpi;
use kiln_loop::distributed::{BucketConfig, Collective, DataParallel, ReduceOp};
use kiln_loop::models::cnn::{self, CnnConfig};
use kiln_loop::models::mlp::{self, MlpConfig};
use kiln_loop::Model;
use kiln_optim::{Optimizer, SgdConfig};
use kiln_tensor::params::NamedParameter;
use kiln_tensor::{Device, Kind, Tensor};
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Per size: bytes, then (median, minimum) seconds of MPI_Allreduce and of
/// kiln's bucket sum.
type Sweep = Vec<(usize, (f64, f64), (f64, f64))>;

fn allreduce_sweep(comm: &Mpi) -> Result<Sweep> {
    let transport = comm.gradient_transport()?;
    let mut out = Vec::new();
    for log2 in (0..=22).step_by(2) {
        let n = 1usize << log2;
        let buf = Tensor::f_ones([n as i64], (Kind::Float, Device::Cpu))?;
        let reps = if n >= 1 << 20 { 10 } else { 40 };
        let (mut mpi, mut kiln) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
        for rep in 0..reps + 3 {
            let sync = Tensor::f_zeros([1], (Kind::Float, Device::Cpu))?;
            comm.all_reduce(&sync, ReduceOp::Sum)?;
            let start = Instant::now();
            comm.all_reduce(&buf, ReduceOp::Sum)?;
            let t_mpi = start.elapsed().as_secs_f64();
            comm.all_reduce(&sync, ReduceOp::Sum)?;
            let start = Instant::now();
            transport.start_sum(&buf)?.wait()?;
            let t_kiln = start.elapsed().as_secs_f64();
            if rep >= 3 {
                mpi.push(t_mpi);
                kiln.push(t_kiln);
            }
        }
        out.push((
            n * 4,
            (median(mpi.clone()), min(&mpi)),
            (median(kiln.clone()), min(&kiln)),
        ));
    }
    Ok(out)
}

/// `--model cnn`: the network of pytorch/examples `mnist/main.py`.
fn cnn() -> Result<Box<dyn Model>> {
    Ok(Box::new(cnn::build(
        &CnnConfig::default(),
        &[1, 28, 28],
        10,
        Device::Cpu,
    )?))
}

/// Builds a fresh replica.
type Build = fn() -> Result<Box<dyn Model>>;

fn mlp() -> Result<Box<dyn Model>> {
    Ok(Box::new(mlp::build(
        &MlpConfig::default(),
        28 * 28,
        10,
        None,
        Device::Cpu,
    )?))
}

/// The pre-bucket averaging: one flat buffer, all-reduced, then divided.
fn flat_all_reduce(comm: &dyn Collective, params: &[NamedParameter]) -> Result<()> {
    let grads: Vec<Tensor> = params.iter().map(|p| p.tensor.grad()).collect();
    kiln_tensor::tch::no_grad(|| -> Result<()> {
        let views: Vec<Tensor> = grads.iter().map(|g| g.reshape([-1])).collect();
        let flat = Tensor::f_cat(&views, 0)?;
        comm.all_reduce(&flat, ReduceOp::Sum)?;
        let flat = flat.f_div_scalar(comm.world_size() as f64)?;
        let mut offset = 0;
        for g in &grads {
            let n = g.numel() as i64;
            let mut dst = g.shallow_clone();
            dst.f_copy_(&flat.f_narrow(0, offset, n)?.f_view_as(g)?)?;
            offset += n;
        }
        Ok(())
    })
}

#[derive(Default)]
struct Samples {
    compute: Vec<f64>,
    exposed: Vec<f64>,
    optimizer: Vec<f64>,
    comm: Vec<f64>,
    window: Vec<f64>,
    buckets: Vec<usize>,
}

/// `steps` measured steps (after 2 warm-up steps) of `way` on a fresh
/// replica (same seed on every rank).
fn run_block(
    comm: &Mpi,
    build: Build,
    way: &str,
    batch: i64,
    steps: usize,
    samples: &mut Samples,
) -> Result<()> {
    kiln_tensor::rng::manual_seed(0);
    let model = build()?;
    let params = model.parameters()?;
    let loss = kiln_losses::registry().build("cross-entropy")?;
    let mut opt = SgdConfig {
        lr: 1e-3,
        momentum: 0.9,
        ..Default::default()
    }
    .build(model.parameters()?)?;
    let overlap = way == "overlap";
    let dp = DataParallel::new(comm).buckets(BucketConfig {
        overlap,
        ..BucketConfig::default()
    });
    let mut reducer = match way {
        "buckets" | "overlap" => Some(dp.reducer(&params)?),
        _ => None,
    };
    let x = Tensor::f_rand([batch, 1, 28, 28], (Kind::Float, Device::Cpu))?;
    let y = Tensor::f_randint(10, [batch], (Kind::Int64, Device::Cpu))?;
    for step in 0..steps + 2 {
        let t0 = Instant::now();
        if let Some(r) = &mut reducer {
            r.prepare_for_backward()?;
        }
        let pred = model.forward(&x)?;
        loss.as_ref().forward(&pred, &y)?.f_backward()?;
        let t1 = Instant::now();
        let mut timing = None;
        match (&mut reducer, way) {
            (Some(r), _) => timing = Some(r.finish_backward()?),
            (None, "flat") => flat_all_reduce(comm, &params)?,
            _ => {}
        }
        let t2 = Instant::now();
        opt.step()?;
        opt.zero_grad()?;
        let t3 = Instant::now();
        if step >= 2 {
            samples.compute.push((t1 - t0).as_secs_f64());
            samples.exposed.push((t2 - t1).as_secs_f64());
            samples.optimizer.push((t3 - t2).as_secs_f64());
            if let Some(t) = timing {
                samples.comm.push(t.comm_seconds);
                samples.window.push(t.window_seconds);
            }
        }
    }
    if let Some(r) = &reducer {
        samples.buckets = r.bucket_bytes()?;
    }
    dp.verify_replicas(model.as_ref())?;
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut threads, mut steps, mut blocks) = (1usize, 40usize, 4usize);
    let (mut batch, mut cnn_batch, mut cnn_steps) = (64i64, 32i64, 8usize);
    while let Some(flag) = args.next() {
        let mut value = || args.next().context("a flag needs a value");
        match flag.as_str() {
            "--threads" => threads = value()?.parse()?,
            "--batch" => batch = value()?.parse()?,
            "--steps" => steps = value()?.parse()?,
            "--blocks" => blocks = value()?.parse()?,
            "--cnn-batch" => cnn_batch = value()?.parse()?,
            "--cnn-steps" => cnn_steps = value()?.parse()?,
            "--bench" => {} // passed by `cargo bench`
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    kiln_tensor::device::set_threads(threads)?;
    let comm = Mpi::init(Duration::from_secs(300))?;
    let sweep = allreduce_sweep(&comm)?;
    let ways: &[&str] = if comm.world_size() == 1 {
        &["single"]
    } else {
        &["flat", "buckets", "overlap"]
    };
    let models: [(&str, Build, i64, usize); 2] = [
        ("mlp", mlp, batch, steps),
        ("cnn", cnn, cnn_batch, cnn_steps),
    ];
    let mut train = Vec::new();
    for (name, build, batch, steps) in models {
        let grad_bytes: usize = build()?
            .parameters()?
            .iter()
            .map(|p| p.tensor.numel() * 4)
            .sum();
        let mut per_way: Vec<Samples> = ways.iter().map(|_| Samples::default()).collect();
        for _ in 0..blocks {
            for (way, samples) in ways.iter().zip(per_way.iter_mut()) {
                run_block(&comm, build, way, batch, steps.div_ceil(blocks), samples)?;
            }
        }
        let entries: Vec<String> = ways
            .iter()
            .zip(per_way)
            .map(|(way, s)| {
                let buckets: Vec<String> = s.buckets.iter().map(|b| b.to_string()).collect();
                format!(
                    "\"{way}\": {{\"compute_s\": {:e}, \"exposed_s\": {:e}, \"optimizer_s\": {:e}, \"comm_s\": {:e}, \"window_s\": {:e}, \"bucket_bytes\": [{}]}}",
                    median(s.compute),
                    median(s.exposed),
                    median(s.optimizer),
                    if s.comm.is_empty() { 0.0 } else { median(s.comm) },
                    if s.window.is_empty() { 0.0 } else { median(s.window) },
                    buckets.join(", ")
                )
            })
            .collect();
        train.push(format!(
            "\"{name}\": {{\"batch_per_rank\": {batch}, \"steps\": {steps}, \"grad_bytes\": {grad_bytes}, {}}}",
            entries.join(", ")
        ));
    }
    if comm.rank() == 0 {
        let sweep: Vec<String> = sweep
            .iter()
            .map(|(b, m, k)| {
                format!(
                    "{{\"bytes\": {b}, \"mpi_allreduce_s\": {:e}, \"mpi_allreduce_min_s\": {:e}, \"kiln_bucket_s\": {:e}, \"kiln_bucket_min_s\": {:e}}}",
                    m.0, m.1, k.0, k.1
                )
            })
            .collect();
        println!(
            "{{\"ranks\": {}, \"threads\": {threads}, \"allreduce\": [{}], \"train\": {{{}}}}}",
            comm.world_size(),
            sweep.join(", "),
            train.join(", ")
        );
    }
    Ok(())
}
