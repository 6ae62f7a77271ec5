//! `kiln train --distributed mpi`: starts the communicator, runs the
//! training on every rank, and turns an error on any rank into the end of
//! all ranks (MPI_Abort) instead of a hang.
use crate::run::TrainArgs;
use crate::UsageError;
use anyhow::Result;
use kiln_loop::distributed::{Collective, DataParallel, DistributedSampler};
use kiln_loop::DataLoader;
use kiln_tensor::Device;

/// `--dist-timeout`'s default, in seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 300.0;

/// serde's default for `dist_timeout` (configs written before the flag existed).
pub fn default_timeout() -> f64 {
    DEFAULT_TIMEOUT_SECS
}

fn usage(message: String) -> anyhow::Error {
    UsageError(message).into()
}

/// For `--distributed nccl`: this rank's GPU, `cuda:<local rank mod GPUs>`.
#[cfg(feature = "nccl")]
fn nccl_device(args: &TrainArgs) -> Result<usize> {
    if !matches!(args.device.as_str(), "auto" | "cuda") {
        return Err(usage(format!(
            "--distributed nccl puts each rank on its own GPU; pass --device cuda or auto, not '{}'",
            args.device
        )));
    }
    let gpus = usize::try_from(kiln_tensor::tch::Cuda::device_count()).unwrap_or(0);
    if gpus == 0 {
        return Err(usage("--distributed nccl needs a CUDA device; none is available (use --distributed mpi on CPUs)".into()));
    }
    Ok(kiln_loop::distributed::nccl::local_rank() % gpus)
}

/// The communicator `args` ask for (`None` without `--distributed`).
fn init(args: &TrainArgs) -> Result<Option<Box<dyn Collective>>> {
    let Some(kind) = args.distributed.as_deref() else {
        return Ok(None);
    };
    if !(args.dist_timeout.is_finite() && args.dist_timeout > 0.0) {
        return Err(usage(format!(
            "--dist-timeout must be a positive number of seconds, got {}",
            args.dist_timeout
        )));
    }
    match kind {
        #[cfg(feature = "mpi")]
        "mpi" => {
            let timeout = std::time::Duration::from_secs_f64(args.dist_timeout);
            Ok(Some(Box::new(kiln_loop::distributed::mpi::Mpi::init(timeout)?)))
        }
        #[cfg(not(feature = "mpi"))]
        "mpi" => Err(usage("--distributed mpi: this kiln was built without the `mpi` feature (cargo build --features kiln-cli/mpi)".into())),
        #[cfg(feature = "nccl")]
        "nccl" => {
            let timeout = std::time::Duration::from_secs_f64(args.dist_timeout);
            let device = nccl_device(args)?;
            Ok(Some(Box::new(kiln_loop::distributed::nccl::Nccl::init(timeout, device)?)))
        }
        #[cfg(not(feature = "nccl"))]
        "nccl" => Err(usage("--distributed nccl: this kiln was built without the `nccl` feature (cargo build --features kiln-cli/nccl)".into())),
        other => Err(usage(format!("unknown --distributed '{other}'; accepted: mpi, nccl"))),
    }
}

/// Makes the loaders read this rank's shards: the training set through
/// `DistributedSampler(shuffle=not --no-shuffle, seed=--seed or 0)`, the test
/// set split without padding (each test sample is evaluated exactly once);
/// and checks that every rank loaded data of the same sizes and runs the
/// same schedule.
pub fn shard<'d>(
    dp: DataParallel<'_>,
    args: &TrainArgs,
    device: Device,
    train: DataLoader<'d>,
    test: DataLoader<'d>,
) -> Result<(DataLoader<'d>, DataLoader<'d>)> {
    match (args.distributed.as_deref(), device) {
        (Some("nccl"), Device::Cuda(_)) | (Some("mpi"), Device::Cpu) => {}
        (Some("nccl"), _) => return Err(usage("--distributed nccl trains on CUDA devices".into())),
        _ => return Err(usage("--distributed mpi trains on the CPU; pass --device cpu (or use --distributed nccl on GPUs)".into())),
    }
    // Ranks that would take different numbers of steps would wait on each
    // other forever: refuse them up front.
    let opt = |v: Option<usize>| v.map_or(-1.0, |v| v as f64);
    let settings = [
        train.dataset().len() as f64,
        test.dataset().len() as f64,
        args.batch_size as f64,
        args.epochs as f64,
        opt(args.max_steps),
        opt(args.limit_train_batches),
        args.accumulate_grad_batches as f64,
        args.seed.map_or(-1.0, |s| s as f64),
    ];
    let what = "dataset sizes and settings (train samples, test samples, batch size, epochs, \
                max steps, train batches limit, accumulation, seed)";
    dp.check_same(what, &settings)?;
    let sampler = DistributedSampler::new(dp.world_size(), dp.rank())?;
    let train_sampler = sampler
        .clone()
        .shuffle(!args.no_shuffle)
        .seed(args.seed.unwrap_or(0));
    Ok((
        train.distributed(train_sampler),
        test.distributed(sampler.shuffle(false).pad(false)),
    ))
}

/// Runs `train` once on this process: alone, or as one rank of the job
/// `args.distributed` names. On a distributed error the message is printed
/// with the rank and every rank is aborted with the error's exit code.
pub fn run(
    args: &TrainArgs,
    train: impl FnOnce(&TrainArgs, Option<DataParallel<'_>>) -> Result<()>,
) -> Result<()> {
    let Some(comm) = init(args)? else {
        return train(args, None);
    };
    #[allow(unused_mut)]
    let mut args = args.clone();
    #[cfg(feature = "nccl")]
    if args.distributed.as_deref() == Some("nccl") {
        args.device = format!("cuda:{}", nccl_device(&args)?);
    }
    let result = train(&args, Some(DataParallel::new(comm.as_ref())));
    if let Err(err) = &result {
        let code = if err.downcast_ref::<UsageError>().is_some() {
            2
        } else {
            1
        };
        let message = format!("{err:#}");
        // One write, so that MPI's forwarding does not split the line.
        let line = format!(
            "error: rank {} of {}: {}\n",
            comm.rank(),
            comm.world_size(),
            message.lines().next().unwrap_or("unknown error")
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        comm.abort(code);
    }
    result
}
