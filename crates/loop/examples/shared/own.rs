//! A data source (`rings:n=…`) and a model (`wide:width=…`) of one's own,
//! registered next to kiln's: what the `own_run` example trains and
//! kiln-loop's run test resumes.
use kiln_loop::data::source::{data_entry, DataContext, Sampling, Splits, Task};
use kiln_loop::data::TensorDataset;
use kiln_loop::models::registry::model_entry;
use kiln_loop::models::{ModelData, Network, VarStoreModel};
use kiln_loop::run::Registries;
use kiln_tensor::init::linear;
use kiln_tensor::nn;
use kiln_tensor::rng::Generator;
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::{Kind, Tensor};
use std::sync::Arc;

/// `rings:n=…`: points on two noisy rings, drawn from a generator seeded
/// with the run's seed (so the data is part of what the seed fixes).
#[derive(Debug, Clone)]
struct RingsConfig {
    n: i64,
}

impl Default for RingsConfig {
    fn default() -> Self {
        Self { n: 2048 }
    }
}

impl Options for RingsConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("n", "training points (a quarter as many test points)"),
            &mut self.n,
        )
    }
}

fn rings(n: i64, rng: &mut Generator) -> kiln_loop::Result<TensorDataset> {
    let angle = rng
        .rand(&[n], Kind::Float)?
        .f_mul_scalar(2.0 * std::f64::consts::PI)?;
    let class = rng.randint(0, 2, &[n])?;
    let noise = rng.randn(&[n], Kind::Float)?.f_mul_scalar(0.2)?;
    let radius = class
        .f_to_kind(Kind::Float)?
        .f_mul_scalar(2.0)?
        .f_add_scalar(1.0)?
        .f_add(&noise)?;
    let xy = Tensor::f_stack(
        &[
            angle.f_cos()?.f_mul(&radius)?,
            angle.f_sin()?.f_mul(&radius)?,
        ],
        1,
    )?;
    TensorDataset::new(xy, class, "rings")
}

/// `wide:width=…`: Linear, tanh, Linear.
#[derive(Debug, Clone)]
struct WideConfig {
    width: i64,
}

impl Default for WideConfig {
    fn default() -> Self {
        Self { width: 32 }
    }
}

impl Options for WideConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(OptionInfo::new("width", "hidden units"), &mut self.width)
    }
}

#[derive(Debug)]
struct Wide {
    hidden: nn::Linear,
    out: nn::Linear,
}

impl Network for Wide {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> kiln_loop::Result<Tensor> {
        let h = xs
            .f_linear(&self.hidden.ws, self.hidden.bs.as_ref())?
            .f_tanh()?;
        Ok(h.f_linear(&self.out.ws, self.out.bs.as_ref())?)
    }
}

/// kiln's registries plus `rings` and `wide`.
pub fn registries() -> Registries {
    let mut r = Registries::default();
    r.data.register(data_entry::<RingsConfig>(
        "rings",
        "points on two noisy rings (an example of your own)",
        |cfg, context: &DataContext| {
            let mut rng = Generator::new(context.seed)?;
            Ok(Splits {
                train: Arc::new(rings(cfg.n, &mut rng)?),
                test: Arc::new(rings(cfg.n / 4, &mut rng)?),
                task: Task::Classify { classes: 2 },
                sampling: Sampling::Passes,
            })
        },
    ));
    r.models.register(model_entry::<WideConfig>(
        "wide",
        "Linear, tanh, Linear (an example of your own)",
        |cfg, data: &ModelData<'_>| {
            let model = VarStoreModel::new(data.device, |root| {
                Ok(Wide {
                    hidden: linear(&(root / "hidden"), data.features()?, cfg.width, true)?,
                    out: linear(&(root / "out"), cfg.width, data.outputs(), true)?,
                })
            })?;
            Ok(Box::new(model))
        },
    ));
    r
}
