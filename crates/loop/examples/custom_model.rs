//! A network of your own, through the Rust API: a tch module over a
//! `VarStore`, adapted by `VarStoreModel`, registered under a spec name in
//! kiln's model registry next to `mlp`, `cnn` and `torchscript`, built from
//! a spec string for the data, and trained with kiln's loop.
//!
//!     cargo run -p kiln-loop --example custom_model
use kiln_loop::data::source::Task;
use kiln_loop::models::registry::model_entry;
use kiln_loop::models::{models, ModelData, Network, VarStoreModel};
use kiln_loop::{test, train, DataLoader};
use kiln_losses::CrossEntropyLoss;
use kiln_optim::SgdConfig;
use kiln_tensor::init::linear;
use kiln_tensor::nn;
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::{Device, Tensor};

#[path = "shared/rings.rs"]
mod rings;
use rings::rings;

/// The options of the spec `wide:width=64,scale=2.0` and their defaults.
#[derive(Debug, Clone)]
struct WideConfig {
    width: i64,
    scale: f64,
}

impl Default for WideConfig {
    fn default() -> Self {
        Self {
            width: 32,
            scale: 1.0,
        }
    }
}

impl Options for WideConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(OptionInfo::new("width", "hidden units"), &mut self.width)?;
        v.option(
            OptionInfo::new("scale", "inputs are multiplied by this"),
            &mut self.scale,
        )
    }
}

/// `Linear, tanh, Linear`, with tch's fallible calls (or implement tch's
/// `ModuleT` instead: every `ModuleT` is a `Network`).
#[derive(Debug)]
struct Wide {
    hidden: nn::Linear,
    out: nn::Linear,
    scale: f64,
}

impl Network for Wide {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> kiln_loop::Result<Tensor> {
        let h = xs
            .f_mul_scalar(self.scale)?
            .f_linear(&self.hidden.ws, self.hidden.bs.as_ref())?
            .f_tanh()?;
        Ok(h.f_linear(&self.out.ws, self.out.bs.as_ref())?)
    }
}

fn main() -> anyhow::Result<()> {
    // kiln's registry plus one entry: names, options and defaults come from
    // WideConfig, so `describe()` (what `kiln models` prints) lists it too.
    let mut registry = models();
    registry.register(model_entry::<WideConfig>(
        "wide",
        "Linear, tanh, Linear (an example of your own)",
        |cfg, data: &ModelData<'_>| {
            let model = VarStoreModel::new(data.device, |root| {
                Ok(Wide {
                    hidden: linear(&(root / "hidden"), data.features()?, cfg.width, true)?,
                    out: linear(&(root / "out"), cfg.width, data.outputs(), true)?,
                    scale: cfg.scale,
                })
            })?;
            Ok(Box::new(model))
        },
    ));
    println!("{}", registry.describe());

    kiln_tensor::rng::manual_seed(0);
    let (train_set, test_set) = (rings(2048)?, rings(512)?);
    let data = ModelData {
        train: train_set.as_ref(),
        task: Task::Classify { classes: 2 },
        device: Device::Cpu,
    };
    let mut model = registry.build("wide:width=64,scale=0.5", &data)?;
    let mut opt = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    }
    .build(model.parameters()?)?;
    let loss = CrossEntropyLoss::default();
    let train_loader = DataLoader::new(train_set, 64, true)?;
    let test_loader = DataLoader::new(test_set, 64, false)?;
    for _ in 0..5 {
        train(
            &train_loader,
            model.as_mut(),
            &loss,
            &mut opt,
            &mut std::io::sink(),
        )?;
    }
    let report = test(&test_loader, model.as_mut(), &loss, &mut std::io::stdout())?;
    anyhow::ensure!(report.accuracy > 0.9, "did not learn the rings: {report:?}");
    Ok(())
}
