//! One training epoch of the quickstart job on preloaded FashionMNIST,
//! timed without data loading. Prints `{"seconds": S}`. Driven by
//! `scripts/bench/train_epoch.py` (`make bench`), which alternates it with
//! the PyTorch equivalent.
use anyhow::{Context, Result};
use kiln_cli::models::QuickstartMlp;
use kiln_loop::{train, DataLoader, Dataset};
use kiln_losses::Loss;
use kiln_optim::SgdConfig;
use kiln_tensor::nn::VarStore;
use kiln_tensor::{params::named_parameters, Device};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut threads, mut data_dir) = (None, PathBuf::from(".data/fashion-mnist"));
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--threads" => threads = Some(args.next().context("--threads N")?.parse::<usize>()?),
            "--data-dir" => data_dir = args.next().context("--data-dir DIR")?.into(),
            "--bench" => {} // passed by `cargo bench`
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    if let Some(n) = threads {
        kiln_tensor::device::set_threads(n)?;
    }
    let (train_set, _) = Dataset::load_mnist_dir(&data_dir)?;
    kiln_tensor::rng::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let model = QuickstartMlp::new(&vs.root(), train_set.features(), 10)?;
    let loss = kiln_losses::registry().build("cross-entropy")?;
    let mut opt = SgdConfig {
        lr: 1e-3,
        momentum: 0.9,
        ..Default::default()
    }
    .build(named_parameters(&vs)?)?;
    let loader = DataLoader::new(&train_set, 64, true)?;
    let start = Instant::now();
    train(
        &loader,
        &model,
        loss.as_ref() as &dyn Loss,
        &mut opt,
        &mut std::io::sink(),
    )?;
    println!("{{\"seconds\": {}}}", start.elapsed().as_secs_f64());
    Ok(())
}
