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

/// Every variable of `vs` (trainable or not) by name, in creation order for
/// trainable ones and then by name: PyTorch's `model.state_dict()` content.
pub fn state_dict(vs: &VarStore) -> Result<Vec<(String, Tensor)>> {
    let mut out: Vec<(String, Tensor)> = named_parameters(vs)?
        .into_iter()
        .map(|p| (p.name, p.tensor))
        .collect();
    out.extend(buffers(vs)?);
    Ok(out)
}

/// `model.load_state_dict(tensors, strict=True)` into `vs`: see [`copy_state`].
pub fn load_state_dict(vs: &VarStore, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut targets: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    targets.sort_by(|a, b| a.0.cmp(&b.0));
    copy_state(&targets, tensors)
}

/// `load_state_dict(strict=True)` over any named tensors: copies each tensor
/// of `source` into the target of the same name (in place, outside autograd,
/// converting dtype and device). Every missing or unexpected key and every
/// shape mismatch is reported at once, in PyTorch's words, before anything
/// is copied.
pub fn copy_state(targets: &[(String, Tensor)], source: &[(String, Tensor)]) -> Result<()> {
    let find = |name: &str| targets.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    let mut missing: Vec<&str> = targets
        .iter()
        .filter(|(name, _)| !source.iter().any(|(n, _)| n == name))
        .map(|(n, _)| n.as_str())
        .collect();
    missing.sort_unstable();
    let unexpected: Vec<&str> = source
        .iter()
        .filter(|(n, _)| find(n).is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    let mut problems = Vec::new();
    let quote = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !missing.is_empty() {
        problems.push(format!(
            "Missing key(s) in state_dict: {}.",
            quote(&missing)
        ));
    }
    if !unexpected.is_empty() {
        problems.push(format!(
            "Unexpected key(s) in state_dict: {}.",
            quote(&unexpected)
        ));
    }
    for (name, src) in source {
        if let Some(dst) = find(name) {
            if dst.size() != src.size() {
                problems.push(format!(
                    "size mismatch for {name}: copying a param with shape {:?} from checkpoint, the shape in current model is {:?}.",
                    src.size(),
                    dst.size()
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "Error(s) in loading state_dict: {}",
            problems.join(" ")
        )));
    }
    tch::no_grad(|| -> Result<()> {
        for (name, src) in source {
            if let Some(dst) = find(name) {
                let mut dst = dst.shallow_clone();
                dst.f_copy_(&src.f_to_kind(dst.kind())?.f_to(dst.device())?)?;
            }
        }
        Ok(())
    })
}

/// The variables of `vs` that are not trained (buffers: running statistics,
/// normalisation constants), sorted by name.
pub fn buffers(vs: &VarStore) -> Result<Vec<(String, Tensor)>> {
    let trained: Vec<String> = named_parameters(vs)?.into_iter().map(|p| p.name).collect();
    let mut out: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| !trained.contains(name))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
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

    #[test]
    fn round_trip_and_pytorch_style_errors() {
        let vs = VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        assert!(root.f_var("w", &[2, 3], Init::Const(1.5)).is_ok());
        assert!(root.f_var("b", &[3], Init::Const(-1.0)).is_ok());
        let saved = state_dict(&vs).unwrap_or_default();
        let names: Vec<&str> = saved.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["w", "b"]);
        let other = VarStore::new(tch::Device::Cpu);
        assert!(other.root().f_var("w", &[2, 3], Init::Const(0.0)).is_ok());
        assert!(other.root().f_var("b", &[3], Init::Const(0.0)).is_ok());
        assert!(load_state_dict(&other, &saved).is_ok());
        assert_eq!(other.variables()["w"].double_value(&[1, 2]), 1.5);
        let bad = vec![
            (
                "w".to_string(),
                Tensor::zeros([3, 3], (tch::Kind::Float, tch::Device::Cpu)),
            ),
            (
                "extra".to_string(),
                Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu)),
            ),
        ];
        let msg = load_state_dict(&other, &bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("Missing key(s) in state_dict: \"b\"."),
            "{msg}"
        );
        assert!(
            msg.contains("Unexpected key(s) in state_dict: \"extra\"."),
            "{msg}"
        );
        assert!(
            msg.contains("size mismatch for w: copying a param with shape [3, 3]"),
            "{msg}"
        );
    }
}
