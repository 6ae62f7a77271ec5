//! L-BFGS (`torch.optim.LBFGS`).
use crate::registry::OptimizerRegistry;

/// LBFGS hyperparameters (stub).
#[derive(Debug, Clone, Default)]
pub struct LbfgsConfig;
/// LBFGS (stub).
#[derive(Debug)]
pub struct Lbfgs;
pub(crate) fn register(_r: &mut OptimizerRegistry) {}
