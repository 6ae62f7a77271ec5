//! Batch-norm buffers under data parallelism, as DDP: a small network with
//! batch norm (`fc1` 20→16, `BatchNorm1d(16)`, ReLU, `fc2` 16→4) trained by
//! kiln's DDP path — the model check and broadcast, the gradient `Reducer`
//! (hooks, buckets, gloo's order) and the buffer broadcasts before forwards
//! (`broadcast_buffers=True`) — under `mpirun` ends with every rank's
//! parameters *and running statistics* equal, bit for bit, to those of
//! `scripts/reference/ddp_batchnorm.py` under `torchrun` (DDP, gloo), on 2
//! and 3 ranks. Without the broadcasts, ranks other than 0 keep their own
//! running statistics and differ.
//!
//! A test without the libtest harness: run plainly, it is the driver (it
//! starts torchrun and `mpirun -n N` of itself with `--worker`, compares and
//! fails with a message); with `--worker` it is one rank. The data: after the
//! model is built from `--seed`, `randn(N, 20)` inputs and `randint(4, (N,))`
//! targets; step `s` on rank `r` takes rows `(s·world + r)·B .. +B`;
//! SGD(lr=0.1, momentum=0.9), cross-entropy.
use anyhow::{Context, Result};
use kiln_loop::distributed::mpi::Mpi;
use kiln_loop::distributed::{Collective, DataParallel};
use kiln_loop::models::VarStoreModel;
use kiln_loop::Model;
use kiln_optim::{Optimizer, SgdConfig};
use kiln_tensor::nn::{self, ModuleT};
use kiln_tensor::{Device, Kind, Tensor};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug)]
struct Net {
    fc1: nn::Linear,
    bn: nn::BatchNorm,
    fc2: nn::Linear,
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        // F.linear (addmm), as nn.Linear computes it.
        let x = xs.linear(&self.fc1.ws, self.fc1.bs.as_ref());
        let x = self.bn.forward_t(&x, train).relu();
        x.linear(&self.fc2.ws, self.fc2.bs.as_ref())
    }
}

/// One rank of the job (`--worker --seed S --steps K --batch B --out DIR`).
fn worker(mut args: impl Iterator<Item = String>) -> Result<()> {
    let (mut seed, mut steps, mut batch, mut out) = (0u64, 5usize, 8i64, PathBuf::from("."));
    while let Some(flag) = args.next() {
        let mut value = || args.next().context("a flag needs a value");
        match flag.as_str() {
            "--seed" => seed = value()?.parse()?,
            "--steps" => steps = value()?.parse()?,
            "--batch" => batch = value()?.parse()?,
            "--out" => out = PathBuf::from(value()?),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    kiln_tensor::device::set_threads(1)?;
    let comm = Mpi::init(Duration::from_secs(60))?;
    let (rank, world) = (comm.rank() as i64, comm.world_size() as i64);
    kiln_tensor::rng::manual_seed(seed);
    let model = VarStoreModel::new(Device::Cpu, |p| {
        let fc1 = kiln_tensor::init::linear(&(p / "fc1"), 20, 16, true)?;
        let bn = nn::batch_norm1d(
            p / "bn",
            16,
            nn::BatchNormConfig {
                ws_init: nn::Init::Const(1.0),
                ..Default::default()
            },
        );
        let fc2 = kiln_tensor::init::linear(&(p / "fc2"), 16, 4, true)?;
        Ok(Net { fc1, bn, fc2 })
    })?;
    let n = steps as i64 * world * batch;
    let x = Tensor::f_randn([n, 20], (Kind::Float, Device::Cpu))?;
    let y = Tensor::f_randint(4, [n], (Kind::Int64, Device::Cpu))?;
    let loss_fn = kiln_losses::registry().build("cross-entropy")?;
    let mut opt = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    }
    .build(model.parameters()?)?;
    let dp = DataParallel::new(&comm);
    dp.broadcast_model(&model)?;
    let mut reducer = dp.reducer(&model.parameters()?)?;
    for s in 0..steps as i64 {
        let start = (s * world + rank) * batch;
        let (xb, yb) = (x.f_narrow(0, start, batch)?, y.f_narrow(0, start, batch)?);
        reducer.pre_forward(&model)?;
        let pred = model.forward(&xb)?;
        reducer.post_forward(true);
        let loss = loss_fn.as_ref().forward(&pred, &yb)?;
        reducer.prepare_for_backward()?;
        loss.f_backward()?;
        reducer.finish_backward()?;
        opt.step()?;
        opt.zero_grad()?;
    }
    drop(reducer);
    kiln_tensor::io::write_safetensors(
        &out.join(format!("rank{rank}.safetensors")),
        &model.state_dict()?,
    )?;
    Ok(())
}

mod common;

use common::{temp_dir, text, torchrun};
use std::process::Command;

/// Each tensor's float32 bits, by name.
fn bits(path: &std::path::Path) -> Result<Vec<(String, Vec<u32>)>> {
    let mut out: Vec<(String, Vec<u32>)> = kiln_tensor::io::read_safetensors(path)?
        .into_iter()
        .map(|(name, t)| {
            let flat = Vec::<f32>::try_from(&t.reshape([-1])).unwrap_or_default();
            (name, flat.iter().map(|x| x.to_bits()).collect())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn compare(ranks: usize) -> Result<()> {
    let dir = temp_dir(&format!("ddp_batchnorm{ranks}"));
    let (ours, theirs) = (dir.join("kiln"), dir.join("torch"));
    std::fs::create_dir_all(&ours)?;
    std::fs::create_dir_all(&theirs)?;
    let common_args = ["--seed", "1", "--steps", "6", "--batch", "8"];
    let theirs_s = theirs.display().to_string();
    let mut argv = common_args.to_vec();
    argv.extend(["--out", theirs_s.as_str()]);
    let out = torchrun("scripts/reference/ddp_batchnorm.py", ranks, &argv);
    let (stdout, stderr) = text(&out);
    anyhow::ensure!(out.status.success(), "torchrun failed:\n{stdout}\n{stderr}");
    let out = Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args([
            "--oversubscribe",
            "--bind-to",
            "none",
            "-n",
            &ranks.to_string(),
        ])
        .arg(std::env::current_exe()?)
        .arg("--worker")
        .args(common_args)
        .arg("--out")
        .arg(&ours)
        .output()?;
    let (stdout, stderr) = text(&out);
    anyhow::ensure!(out.status.success(), "mpirun failed:\n{stdout}\n{stderr}");
    for rank in 0..ranks {
        let file = format!("rank{rank}.safetensors");
        let (a, b) = (bits(&ours.join(&file))?, bits(&theirs.join(&file))?);
        let names = |v: &[(String, Vec<u32>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        anyhow::ensure!(
            names(&a) == names(&b),
            "rank {rank}: {:?} vs {:?}",
            names(&a),
            names(&b)
        );
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            let differing = x.iter().zip(y).filter(|(p, q)| p != q).count();
            anyhow::ensure!(
                differing == 0,
                "{ranks} ranks, rank {rank}: {differing} of {} elements of {name} differ from torchrun's",
                x.len()
            );
        }
    }
    println!("{ranks} ranks: every rank's parameters and running statistics equal torchrun's, bit for bit");
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--worker") {
        args.next();
        return worker(args);
    }
    // Driver (libtest's flags, if any, are ignored).
    for ranks in [2, 3] {
        compare(ranks)?;
    }
    Ok(())
}
