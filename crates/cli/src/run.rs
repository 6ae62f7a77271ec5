//! `kiln train`: flags to a run of the tutorial's job.
use crate::models::QuickstartMlp;
use crate::UsageError;
use anyhow::{Context, Result};
use kiln_loop::{test, train as train_epoch, DataLoader, Dataset};
use kiln_losses::Loss;
use kiln_optim::{Optimizer, SgdConfig};
use kiln_tensor::device::{set_threads, DeviceSpec};
use kiln_tensor::nn::VarStore;
use kiln_tensor::params::named_parameters;
use kiln_tensor::spec::Spec;
use kiln_tensor::Tensor;
use std::io::Write;
use std::path::PathBuf;

/// Flags of `kiln train`; the defaults are the PyTorch quickstart's.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Passes over the training set.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Samples per batch (the last short batch is kept).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Learning rate (overridden by an `lr=` in --optimizer).
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    lr: f64,
    /// Momentum for optimizers that have one (overridden by `momentum=` in --optimizer).
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    momentum: f64,
    /// Loss spec: NAME[:key=value,...], e.g. cross-entropy:label_smoothing=0.1 (see `kiln losses`).
    #[arg(long, default_value = "cross-entropy")]
    loss: String,
    /// Optimizer spec: NAME[:key=value,...], e.g. sgd:nesterov=true (see `kiln optimizers`).
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// Seed libtorch's generator (torch.manual_seed); without it, libtorch's default seed is used, as in PyTorch.
    #[arg(long)]
    seed: Option<u64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// libtorch intra-op threads (torch.set_num_threads); default: libtorch's choice.
    #[arg(long)]
    threads: Option<usize>,
    /// Directory with the four (Fashion)MNIST IDX files, gzipped or not.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the training set in file order instead of reshuffling every epoch.
    #[arg(long)]
    no_shuffle: bool,
    /// Train on the first N training samples only.
    #[arg(long)]
    train_samples: Option<usize>,
    /// Evaluate on the first N test samples only.
    #[arg(long)]
    test_samples: Option<usize>,
}

const CLASSES: i64 = 10;

/// Where the data is when --data-dir is not given.
fn default_data_dir() -> Result<PathBuf> {
    let candidates = std::env::var_os("KILN_DATA_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(option_env!("KILN_DEFAULT_DATA_DIR").map(PathBuf::from))
        .chain([PathBuf::from("/usr/share/datasets/fashion-mnist")]);
    let candidates: Vec<PathBuf> = candidates.collect();
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            anyhow::anyhow!(
                "no FashionMNIST found (tried {}); run `make setup` or pass --data-dir DIR",
                tried.join(", ")
            )
        })
}

fn usage(err: impl std::fmt::Display) -> anyhow::Error {
    UsageError(err.to_string()).into()
}

/// One-hot float targets for regression losses (MSE) on class labels.
struct OneHot(Box<dyn Loss>);

impl Loss for OneHot {
    fn forward(&self, input: &Tensor, target: &Tensor) -> kiln_losses::Result<Tensor> {
        let one_hot = target.f_one_hot(CLASSES)?.f_to_kind(input.kind())?;
        self.0.forward(input, &one_hot)
    }

    fn name(&self) -> &str {
        self.0.name()
    }
}

fn build_loss(spec: &str) -> Result<Box<dyn Loss>> {
    let loss = kiln_losses::registry().build(spec).map_err(usage)?;
    // Class-label data: regression losses compare against one-hot vectors.
    Ok(match loss.name() {
        "mse" | "l1" | "huber" | "smooth-l1" => Box::new(OneHot(loss)),
        _ => loss,
    })
}

/// `kiln optimizers`.
pub fn describe_optimizers() -> String {
    let d = SgdConfig::default();
    format!(
        "sgd  stochastic gradient descent (torch.optim.SGD)\n    lr={} momentum={} dampening={} weight_decay={} nesterov={} maximize={}\n",
        d.lr, d.momentum, d.dampening, d.weight_decay, d.nesterov, d.maximize
    )
}

fn build_optimizer(args: &TrainArgs, vs: &VarStore) -> Result<Box<dyn Optimizer>> {
    let mut spec: Spec = args.optimizer.parse().map_err(usage)?;
    if spec.name != "sgd" {
        return Err(usage(format!(
            "unknown optimizer '{}'; accepted: sgd",
            spec.name
        )));
    }
    let cfg = SgdConfig {
        lr: spec.f64("lr").map_err(usage)?.unwrap_or(args.lr),
        momentum: spec
            .f64("momentum")
            .map_err(usage)?
            .unwrap_or(args.momentum),
        dampening: spec.f64("dampening").map_err(usage)?.unwrap_or(0.0),
        weight_decay: spec.f64("weight_decay").map_err(usage)?.unwrap_or(0.0),
        nesterov: spec.bool("nesterov").map_err(usage)?.unwrap_or(false),
        maximize: spec.bool("maximize").map_err(usage)?.unwrap_or(false),
    };
    spec.finish(&[
        "lr",
        "momentum",
        "dampening",
        "weight_decay",
        "nesterov",
        "maximize",
    ])
    .map_err(usage)?;
    let params = named_parameters(vs)?;
    Ok(Box::new(cfg.build(params).map_err(usage)?))
}

/// `kiln train`.
pub fn train(args: &TrainArgs) -> Result<()> {
    if args.batch_size == 0 {
        return Err(usage("--batch-size must be at least 1, got 0"));
    }
    let device = args
        .device
        .parse::<DeviceSpec>()
        .map_err(usage)?
        .resolve()?;
    if let Some(threads) = args.threads {
        set_threads(threads).map_err(usage)?;
    }
    let loss_fn = build_loss(&args.loss)?;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir()?,
    };
    let (train_set, test_set) = Dataset::load_mnist_dir(&data_dir)?;
    let train_set = match args.train_samples {
        Some(n) => train_set.take(n)?,
        None => train_set,
    };
    let test_set = match args.test_samples {
        Some(n) => test_set.take(n)?,
        None => test_set,
    };
    if train_set.is_empty() {
        return Err(usage("the training set is empty (--train-samples 0?)"));
    }
    train_set.check_labels(CLASSES)?;
    test_set.check_labels(CLASSES)?;
    let (train_set, test_set) = (train_set.to_device(device)?, test_set.to_device(device)?);

    if let Some(seed) = args.seed {
        kiln_tensor::rng::manual_seed(seed);
    }
    let vs = VarStore::new(device);
    let model = QuickstartMlp::new(&vs.root(), train_set.features(), CLASSES)?;
    let mut optimizer = build_optimizer(args, &vs)?;
    // Shuffling the training set and not the test set is the tutorial's setup.
    let train_loader = DataLoader::new(&train_set, args.batch_size, !args.no_shuffle)?;
    let test_loader = DataLoader::new(&test_set, args.batch_size, false)?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for epoch in 1..=args.epochs {
        writeln!(out, "Epoch {epoch}\n-------------------------------")?;
        train_epoch(
            &train_loader,
            &model,
            loss_fn.as_ref(),
            optimizer.as_mut(),
            &mut out,
        )
        .with_context(|| format!("epoch {epoch}"))?;
        test(&test_loader, &model, loss_fn.as_ref(), &mut out)
            .with_context(|| format!("testing after epoch {epoch}"))?;
    }
    writeln!(out, "Training completed")?;
    Ok(())
}
