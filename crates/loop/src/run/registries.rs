//! The registries a run builds its components from: kiln's own by
//! default, or a downstream crate's with its own entries added.
use crate::data::images::{transforms, TransformRegistry};
use crate::data::source::{data_sources, DataRegistry};
use crate::models::{models, ModelRegistry};
use kiln_losses::LossRegistry;
use kiln_optim::scheduler::SchedulerRegistry;
use kiln_optim::OptimizerRegistry;

/// Everything a run can name by spec: models, losses, optimizers, lr
/// schedulers, data sources and image transforms. A crate registers its own components in
/// these and passes them to [`crate::run::train`], and its binary gets
/// everything `kiln train` does (run directories, resume, loggers, config
/// files, data parallelism) for them.
#[derive(Debug, Clone)]
pub struct Registries {
    /// `--model` specs.
    pub models: ModelRegistry,
    /// `--loss` specs.
    pub losses: LossRegistry,
    /// `--optimizer` specs.
    pub optimizers: OptimizerRegistry,
    /// `--scheduler` specs.
    pub schedulers: SchedulerRegistry,
    /// `--data` specs.
    pub data: DataRegistry,
    /// `--transform` and `--test-transform` specs.
    pub transforms: TransformRegistry,
}

impl Default for Registries {
    /// kiln's own components.
    fn default() -> Self {
        Self {
            models: models(),
            losses: kiln_losses::registry(),
            optimizers: kiln_optim::optimizers(),
            schedulers: kiln_optim::scheduler::schedulers(),
            data: data_sources(),
            transforms: transforms(),
        }
    }
}
