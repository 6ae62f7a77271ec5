//! Your own training step through the `Trainer`: a network with a main and
//! an auxiliary head, a dataset with three fields (`xy`, `class`, `radius`),
//! and a `Step` that adds the two losses and reports the auxiliary one as a
//! metric. kiln keeps everything around the step: evaluation (the same step
//! in eval mode), the metrics (`test_aux_loss` next to `test_loss` and
//! `test_accuracy`), checkpoints and resume, the metric files.
//!
//!     cargo run -p kiln-loop --example aux_loss
use kiln_loop::loggers::metrics_log::Formats;
use kiln_loop::loggers::MetricsLogger;
use kiln_loop::{DataLoader, Loaders, Notices, Trainer, TrainerConfig};
use kiln_optim::SgdConfig;
use std::sync::Arc;

#[path = "shared/aux.rs"]
mod aux;
use aux::{two_heads, AuxStep, RingsWithRadius};

fn main() -> anyhow::Result<()> {
    kiln_tensor::rng::manual_seed(0);
    let train_set = Arc::new(RingsWithRadius::new(2048)?);
    let test_set = Arc::new(RingsWithRadius::new(512)?);
    let mut model = two_heads(32)?;
    let mut optimizer = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        ..Default::default()
    }
    .build(kiln_loop::Model::parameters(&model)?)?;
    let train = DataLoader::new(train_set, 64, true)?;
    let test = DataLoader::new(test_set, 256, false)?;
    let run_dir = std::env::temp_dir().join(format!("kiln-aux-loss-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let config = TrainerConfig {
        epochs: 4,
        ..TrainerConfig::default()
    };
    let mut trainer = Trainer::new(config)?
        .step_metrics(&["aux_loss"])
        .checkpoint_dir(&run_dir)
        .callback(MetricsLogger::create(
            &run_dir,
            Formats::default(),
            Notices::ignore(),
        ));
    let summary = trainer.fit(
        &mut model,
        &AuxStep { weight: 0.5 },
        &mut optimizer,
        Loaders {
            train: &train,
            eval: &[("test", &test)],
        },
        None,
    )?;
    let eval = summary
        .last_eval
        .ok_or_else(|| anyhow::anyhow!("no evaluation"))?;
    for (name, value) in &eval.metrics {
        println!("{name}: {value:.4}");
    }
    println!("checkpoints and metrics in {}", run_dir.display());
    let accuracy = eval.get("test_accuracy").unwrap_or(0.0);
    anyhow::ensure!(accuracy > 0.9, "did not learn the rings: {accuracy}");
    std::fs::remove_dir_all(&run_dir)?;
    Ok(())
}
