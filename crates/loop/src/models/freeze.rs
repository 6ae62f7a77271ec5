//! Freezing (`--freeze GLOB`): `p.requires_grad_(False)` for the
//! parameters a selector takes — the selectors of `--param-group`
//! ([`kiln_optim::Selector`]: a name glob such as `conv*` or
//! `transformer.h.0.*`, or `ndim<2`). A frozen parameter gets no gradient;
//! the optimizer is built over the others only (PyTorch's
//! `filter(lambda p: p.requires_grad, model.parameters())`), so it keeps no
//! state for it and never changes it; [`ModelSummary`](super::ModelSummary)
//! counts it as non-trainable.
use super::Model;
use crate::{Error, Result};
use kiln_optim::Selector;

/// Freezes the parameters of `model` that any of `selectors` takes and
/// returns their names. A selector that takes no parameter is refused
/// (almost always a misspelt name), naming the parameters there are.
pub fn freeze(model: &dyn Model, selectors: &[String]) -> Result<Vec<String>> {
    let parsed = selectors
        .iter()
        .map(|s| {
            s.parse::<Selector>()
                .map_err(|e| Error::Usage(format!("--freeze: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let params = model.parameters()?;
    if let Some(unused) = parsed
        .iter()
        .find(|sel| !params.iter().any(|p| sel.matches(p)))
    {
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "--freeze {unused}: no parameter of the model matches it; its parameters are {}",
            names.join(", ")
        )));
    }
    let mut frozen = Vec::new();
    for p in params
        .iter()
        .filter(|p| parsed.iter().any(|s| s.matches(p)))
    {
        // The same tensor, returned for chaining (`requires_grad_`).
        let _ = p.tensor.f_set_requires_grad(false)?;
        frozen.push(p.name.clone());
    }
    Ok(frozen)
}
