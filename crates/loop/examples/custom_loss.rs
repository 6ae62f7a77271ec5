//! A loss of your own, plugged into kiln's training loop.
//!
//! `FocalLoss` (Lin et al. 2017) is not in torch.nn; here it is a type
//! implementing `kiln_losses::Loss`, and a one-line closure is a second
//! custom loss. Both train the same small classifier (a tch module of your
//! own, adapted by `VarStoreModel`) on generated data with
//! `kiln_loop::train` / `kiln_loop::test`.
//!
//!     cargo run -p kiln-loop --example custom_loss
use kiln_loop::models::VarStoreModel;
use kiln_loop::{test, train, DataLoader, Model};
use kiln_losses::{CrossEntropyLoss, Loss, Result};
use kiln_optim::SgdConfig;
use kiln_tensor::init::linear;
use kiln_tensor::nn::{self, Module, ModuleT};
use kiln_tensor::{Device, Kind, Reduction, Tensor};

#[path = "shared/rings.rs"]
mod rings;
use rings::rings;

/// Focal loss: `mean(-(1 - p_t)^gamma * log p_t)` over class-index targets.
struct FocalLoss {
    gamma: f64,
}

impl Loss for FocalLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let log_p = input.f_log_softmax(1, Kind::Float)?;
        let log_pt = log_p
            .f_gather(1, &target.f_unsqueeze(1)?, false)?
            .f_squeeze_dim(1)?;
        let weight = log_pt
            .f_exp()?
            .f_neg()?
            .f_add_scalar(1.0)?
            .f_pow_tensor_scalar(self.gamma)?;
        Ok(weight.f_mul(&log_pt)?.f_neg()?.f_mean(Kind::Float)?)
    }

    fn name(&self) -> &str {
        "focal"
    }
}

/// Two layers, enough for the generated rings.
#[derive(Debug)]
struct Classifier {
    hidden: nn::Linear,
    out: nn::Linear,
}

impl ModuleT for Classifier {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        self.out.forward(&self.hidden.forward(xs).relu())
    }
}

fn run(name: &str, loss: &dyn Loss) -> anyhow::Result<()> {
    kiln_tensor::rng::manual_seed(0);
    let (train_set, test_set) = (rings(2048)?, rings(512)?);
    let mut model = VarStoreModel::new(Device::Cpu, |root| {
        Ok(Classifier {
            hidden: linear(&(root / "hidden"), 2, 32, true)?,
            out: linear(&(root / "out"), 32, 2, true)?,
        })
    })?;
    let mut opt = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    }
    .build(model.parameters()?)?;
    let train_loader = DataLoader::new(train_set, 64, true)?;
    let test_loader = DataLoader::new(test_set, 64, false)?;
    println!("== {name}");
    let mut out = std::io::stdout();
    for _ in 0..5 {
        train(
            &train_loader,
            &mut model,
            loss,
            &mut opt,
            &mut std::io::sink(),
        )?;
    }
    let report = test(&test_loader, &mut model, loss, &mut out)?;
    anyhow::ensure!(
        report.accuracy > 0.9,
        "{name} did not learn the rings: {report:?}"
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    run(
        "focal loss (a type implementing Loss)",
        &FocalLoss { gamma: 2.0 },
    )?;
    // A closure is a Loss too: cross entropy with label smoothing, by hand.
    let smoothed = |input: &Tensor, target: &Tensor| -> Result<Tensor> {
        Ok(input.f_cross_entropy_loss::<Tensor>(target, None, Reduction::Mean, -100, 0.05)?)
    };
    run("closure", &smoothed)?;
    run("kiln's CrossEntropyLoss", &CrossEntropyLoss::default())?;
    Ok(())
}
