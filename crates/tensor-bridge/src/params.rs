//! Named parameters of a `VarStore`, in creation order (PyTorch's
//! `named_parameters()` order), never in hash-map order.
use crate::{Error, Result};
use tch::{nn::VarStore, Tensor};

/// A trainable tensor and its dotted name (`linear_relu_stack.0.weight`).
#[derive(Debug)]
pub struct NamedParameter {
    /// Dotted name, as PyTorch's `state_dict` would give it.
    pub name: String,
    /// The parameter; a shallow clone sharing storage and grad with the store's.
    pub tensor: Tensor,
}

/// The trainable parameters of `vs` with their names, in creation order.
pub fn named_parameters(vs: &VarStore) -> Result<Vec<NamedParameter>> {
    let vars = vs
        .variables_
        .lock()
        .map_err(|_| Error::InvalidArgument("the VarStore's lock is poisoned".into()))?;
    let mut out = Vec::with_capacity(vars.trainable_variables.len());
    for var in &vars.trainable_variables {
        let ptr = var.tensor.data_ptr();
        let name = vars
            .named_variables
            .iter()
            .find(|(_, t)| t.data_ptr() == ptr && t.size() == var.tensor.size())
            .map(|(name, _)| name.clone())
            .ok_or_else(|| {
                Error::InvalidArgument("a trainable variable has no name in its VarStore".into())
            })?;
        out.push(NamedParameter {
            name,
            tensor: var.tensor.shallow_clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::Init;

    #[test]
    fn creation_order_and_names() {
        let vs = VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        let names = ["z.weight", "a.weight", "m.0.bias", "b"];
        for name in names {
            let mut path = root.clone();
            let parts: Vec<&str> = name.split('.').collect();
            for part in &parts[..parts.len() - 1] {
                path = path / *part;
            }
            assert!(path
                .f_var(parts[parts.len() - 1], &[2], Init::Const(1.0))
                .is_ok());
        }
        let got: Vec<String> = named_parameters(&vs)
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(got, names);
    }
}
