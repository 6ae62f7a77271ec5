//! Data-parallel scaling, run under `mpirun -n P` (feature `mpi`); driven by
//! `scripts/bench/scaling.py`. Rank 0 prints one JSON object:
//! - `allreduce`: seconds per float32 all-reduce (sum, over all ranks) for
//!   buffer sizes from 4 B to 16 MiB, the median of repeated calls;
//! - `train`: the quickstart MLP trained data-parallel on random inputs
//!   (per-rank batch `--batch`, `--steps` steps), with the time per step
//!   split into compute (forward, backward, optimizer step) and the gradient
//!   all-reduce (flatten, all-reduce, average, copy back).
use anyhow::{Context, Result};
use kiln_loop::distributed::mpi::Mpi;
use kiln_loop::distributed::{Collective, DataParallel, ReduceOp};
use kiln_loop::models::mlp::{self, MlpConfig};
use kiln_loop::Model;
use kiln_optim::{Optimizer, SgdConfig};
use kiln_tensor::{Device, Kind, Tensor};
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn allreduce_sweep(comm: &Mpi) -> Result<Vec<(usize, f64)>> {
    let mut out = Vec::new();
    for log2 in (0..=22).step_by(2) {
        let n = 1usize << log2;
        let buf = Tensor::f_ones([n as i64], (Kind::Float, Device::Cpu))?;
        let reps = if n >= 1 << 20 { 10 } else { 40 };
        let mut times = Vec::with_capacity(reps);
        for rep in 0..reps + 3 {
            comm.all_reduce(
                &Tensor::f_zeros([1], (Kind::Float, Device::Cpu))?,
                ReduceOp::Sum,
            )?;
            let start = Instant::now();
            comm.all_reduce(&buf, ReduceOp::Sum)?;
            if rep >= 3 {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        out.push((n * 4, median(times)));
    }
    Ok(out)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut threads, mut batch, mut steps) = (1usize, 64i64, 60usize);
    while let Some(flag) = args.next() {
        let mut value = || args.next().context("a flag needs a value");
        match flag.as_str() {
            "--threads" => threads = value()?.parse()?,
            "--batch" => batch = value()?.parse()?,
            "--steps" => steps = value()?.parse()?,
            "--bench" => {} // passed by `cargo bench`
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    kiln_tensor::device::set_threads(threads)?;
    let comm = Mpi::init(Duration::from_secs(120))?;
    let sweep = allreduce_sweep(&comm)?;

    kiln_tensor::rng::manual_seed(comm.rank() as u64);
    let model = mlp::build(&MlpConfig::default(), 28 * 28, 10, None, Device::Cpu)?;
    let params = model.parameters()?;
    let loss = kiln_losses::registry().build("cross-entropy")?;
    let mut opt = SgdConfig {
        lr: 1e-3,
        momentum: 0.9,
        ..Default::default()
    }
    .build(model.parameters()?)?;
    let dp = DataParallel::new(&comm);
    dp.broadcast_model(&model)?;
    let grad_bytes: i64 = params.iter().map(|p| p.tensor.numel() as i64 * 4).sum();
    let x = Tensor::f_rand([batch, 1, 28, 28], (Kind::Float, Device::Cpu))?;
    let y = Tensor::f_randint(10, [batch], (Kind::Int64, Device::Cpu))?;
    let (mut compute, mut reduce) = (Vec::new(), Vec::new());
    for step in 0..steps + 5 {
        let t0 = Instant::now();
        let pred = model.forward(&x)?;
        loss.as_ref().forward(&pred, &y)?.f_backward()?;
        let t1 = Instant::now();
        dp.average_gradients(&params)?;
        let t2 = Instant::now();
        opt.step()?;
        opt.zero_grad()?;
        let t3 = Instant::now();
        if step >= 5 {
            compute.push((t1 - t0 + (t3 - t2)).as_secs_f64());
            reduce.push((t2 - t1).as_secs_f64());
        }
    }
    dp.verify_replicas(&model)?;
    let (compute, reduce) = (median(compute), median(reduce));
    if comm.rank() == 0 {
        let sweep: Vec<String> = sweep
            .iter()
            .map(|(b, s)| format!("{{\"bytes\": {b}, \"seconds\": {s:e}}}"))
            .collect();
        println!(
            "{{\"ranks\": {}, \"threads\": {threads}, \"allreduce\": [{}], \"train\": {{\"batch_per_rank\": {batch}, \"steps\": {steps}, \"grad_bytes\": {grad_bytes}, \"compute_s_per_step\": {compute:e}, \"allreduce_s_per_step\": {reduce:e}, \"samples_per_s_per_rank\": {}}}}}",
            comm.world_size(),
            sweep.join(", "),
            batch as f64 / (compute + reduce)
        );
    }
    Ok(())
}
