//! Shared checks and helpers (crate-private).
use crate::error::{invalid, Error, Result};
use crate::reduction::Reduction;
use kiln_tensor::spec::OptionInfo;
use kiln_tensor::tch::TchError;
use kiln_tensor::{Kind, Tensor};

/// Wraps a libtorch result of loss `loss` into [`Error::Kernel`].
pub(crate) fn kernel<T>(loss: &str, r: std::result::Result<T, TchError>) -> Result<T> {
    r.map_err(|e| Error::Kernel {
        loss: loss.to_string(),
        source: kiln_tensor::Error::from(e),
    })
}

/// The shape of `t`, or an error if `t` is undefined.
pub(crate) fn shape(loss: &str, what: &str, t: &Tensor) -> Result<Vec<i64>> {
    if !t.defined() {
        return Err(invalid(loss, format!("{what} is an undefined tensor")));
    }
    Ok(t.size())
}

/// The dtype of `t` (error for dtypes tch does not know).
pub(crate) fn kind(loss: &str, what: &str, t: &Tensor) -> Result<Kind> {
    shape(loss, what, t)?;
    t.f_kind()
        .map_err(|_| invalid(loss, format!("{what} has a dtype kiln does not support")))
}

/// Whether `k` is a floating-point dtype.
pub(crate) fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

/// Errors unless `t` is defined and floating point; returns its shape.
pub(crate) fn float(loss: &str, what: &str, t: &Tensor) -> Result<Vec<i64>> {
    let s = shape(loss, what, t)?;
    let k = kind(loss, what, t)?;
    if !is_float(k) {
        return Err(invalid(
            loss,
            format!("{what} {} must be floating point, got {k:?}", fmt(&s)),
        ));
    }
    Ok(s)
}

/// Errors unless `t` is defined and holds class indices (int64, or uint8 as
/// PyTorch also accepts); returns its shape.
pub(crate) fn class_indices(loss: &str, what: &str, t: &Tensor) -> Result<Vec<i64>> {
    indices_of(loss, what, t, &[Kind::Int64, Kind::Uint8])
}

/// As [`class_indices`] for kernels that take int64 only (multi-margin losses).
pub(crate) fn int64_indices(loss: &str, what: &str, t: &Tensor) -> Result<Vec<i64>> {
    indices_of(loss, what, t, &[Kind::Int64])
}

fn indices_of(loss: &str, what: &str, t: &Tensor, allowed: &[Kind]) -> Result<Vec<i64>> {
    let s = shape(loss, what, t)?;
    let k = kind(loss, what, t)?;
    if !allowed.contains(&k) {
        return Err(invalid(
            loss,
            format!(
                "{what} {} must hold int64 class indices, got {k:?}",
                fmt(&s)
            ),
        ));
    }
    Ok(s)
}

/// Errors unless the input and target shapes are equal.
pub(crate) fn same_size(loss: &str, input: &[i64], target: &[i64]) -> Result<()> {
    if input == target {
        return Ok(());
    }
    Err(invalid(
        loss,
        format!(
            "input {} and target {} must have the same size",
            fmt(input),
            fmt(target)
        ),
    ))
}

/// Errors unless `margin > 0` (the triplet losses' rule).
pub(crate) fn positive_margin(loss: &str, margin: f64) -> Result<()> {
    if margin.is_nan() || margin <= 0.0 {
        return Err(invalid(
            loss,
            format!("margin must be greater than 0, got {margin}"),
        ));
    }
    Ok(())
}

/// A shape as PyTorch prints it in kiln messages: `[64, 10]`.
pub(crate) fn fmt(s: &[i64]) -> String {
    format!("{s:?}")
}

/// The broadcast of two shapes, or `None` if they do not broadcast.
pub(crate) fn broadcast(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= n {
            a.get(i + a.len() - n).copied()
        } else {
            None
        };
        let db = if i + b.len() >= n {
            b.get(i + b.len() - n).copied()
        } else {
            None
        };
        *o = match (da, db) {
            (Some(x), Some(y)) if x == y => x,
            (Some(1), Some(y)) => y,
            (Some(x), Some(1)) => x,
            (Some(x), None) => x,
            (None, Some(y)) => y,
            _ => return None,
        };
    }
    Some(out)
}

/// Errors unless shapes `a` (of `wa`) and `b` (of `wb`) broadcast together.
pub(crate) fn check_broadcast(
    loss: &str,
    wa: &str,
    a: &[i64],
    wb: &str,
    b: &[i64],
) -> Result<Vec<i64>> {
    broadcast(a, b).ok_or_else(|| {
        invalid(
            loss,
            format!(
                "{wa} {} and {wb} {} cannot be broadcast together",
                fmt(a),
                fmt(b)
            ),
        )
    })
}

/// A 1-D tensor holding `values`, in `like`'s dtype and on its device.
pub(crate) fn tensor_like(loss: &str, values: &[f64], like: &Tensor) -> Result<Tensor> {
    let k = kind(loss, "input", like)?;
    let t = kernel(loss, Tensor::f_from_slice(values))?;
    let t = kernel(loss, t.f_to_kind(k))?;
    kernel(loss, t.f_to_device(like.device()))
}

/// Checks that every integer of `target` lies in `[lo, hi)`, except values
/// equal to `ignore`. One min/max pass in the common case; a second (masked)
/// pass only when `ignore` is one of the extremes. `what(v)` words the error
/// for an offending value `v`.
pub(crate) fn check_range(
    loss: &str,
    target: &Tensor,
    lo: i64,
    hi: i64,
    ignore: Option<i64>,
    what: impl Fn(i64) -> String,
) -> Result<()> {
    if target.numel() == 0 {
        return Ok(());
    }
    let (min, max) = min_max(loss, target)?;
    if min >= lo && max < hi {
        return Ok(());
    }
    let ignored = |v: i64| ignore == Some(v);
    if max >= hi && !ignored(max) {
        return Err(invalid(loss, what(max)));
    }
    if min < lo && !ignored(min) {
        return Err(invalid(loss, what(min)));
    }
    // The ignored value is an extreme: look again without it.
    let Some(ig) = ignore else { return Ok(()) };
    let mask = kernel(loss, target.f_ne(ig))?;
    let kept = kernel(loss, target.f_masked_select(&mask))?;
    if kept.numel() == 0 {
        return Ok(());
    }
    let (min, max) = min_max(loss, &kept)?;
    if max >= hi {
        return Err(invalid(loss, what(max)));
    }
    if min < lo {
        return Err(invalid(loss, what(min)));
    }
    Ok(())
}

fn min_max(loss: &str, t: &Tensor) -> Result<(i64, i64)> {
    let (min, max) = kernel(loss, t.f_aminmax(None::<i64>, false))?;
    Ok((
        kernel(loss, min.f_int64_value(&[]))?,
        kernel(loss, max.f_int64_value(&[]))?,
    ))
}

/// Reduces composed per-element losses as PyTorch's Python does
/// (`loss.mean()` / `loss.sum()`).
pub(crate) fn reduce(loss: &str, t: Tensor, r: Reduction) -> Result<Tensor> {
    match r {
        Reduction::None => Ok(t),
        Reduction::Mean => kernel(loss, t.f_mean(None::<Kind>)),
        Reduction::Sum => kernel(loss, t.f_sum(None::<Kind>)),
    }
}

/// `Loss::from_spec`: the loss' options read from a spec into its config's
/// `Default` (as the registry does), then `new`.
macro_rules! from_spec {
    ($($loss:ident($cfg:ident)),+ $(,)?) => {$(
        impl $loss {
            /// Builds the loss from a spec's options, read into the config's
            /// `Default` ([`Spec::apply`](kiln_tensor::spec::Spec::apply));
            /// the registry does the same from a resolved spec.
            pub fn from_spec(spec: &mut kiln_tensor::spec::Spec) -> Result<Self> {
                let mut cfg = $cfg::default();
                spec.apply(&mut cfg)?;
                Self::new(cfg)
            }
        }
    )+};
}
pub(crate) use from_spec;

/// The `reduction` option of the losses (`Reduction`).
pub(crate) const REDUCTION: OptionInfo = OptionInfo::new("reduction", "none | mean | sum");

/// KL divergence's `reduction` option (`KlDivReduction`).
pub(crate) const KL_REDUCTION: OptionInfo = OptionInfo::new(
    "reduction",
    "none | mean | sum | batchmean (the KL divergence)",
);

/// Splits `t` along dim 0 into exactly `n` tensors (inputs stacked for
/// [`Loss::forward`](crate::Loss::forward) of multi-input losses).
pub(crate) fn unstack(
    loss: &str,
    what: &str,
    t: &Tensor,
    n: i64,
    layout: &str,
) -> Result<Vec<Tensor>> {
    let s = shape(loss, what, t)?;
    if s.first() != Some(&n) {
        return Err(invalid(
            loss,
            format!(
                "{what} {} must stack {layout} along a new leading dimension of size {n}",
                fmt(&s)
            ),
        ));
    }
    kernel(loss, t.f_unbind(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy_rules() -> anyhow::Result<()> {
        anyhow::ensure!(broadcast(&[4, 5], &[5]) == Some(vec![4, 5]));
        anyhow::ensure!(broadcast(&[3, 1], &[3, 4]) == Some(vec![3, 4]));
        anyhow::ensure!(broadcast(&[], &[2, 3]) == Some(vec![2, 3]));
        anyhow::ensure!(broadcast(&[0, 3], &[1, 3]) == Some(vec![0, 3]));
        anyhow::ensure!(broadcast(&[2, 3], &[4]).is_none());
        anyhow::ensure!(broadcast(&[2, 3], &[3, 3]).is_none());
        Ok(())
    }

    #[test]
    fn range_check_skips_only_the_ignored_value() -> anyhow::Result<()> {
        let t = Tensor::f_from_slice(&[-100i64, 3, 0, -100])?;
        anyhow::ensure!(check_range("x", &t, 0, 4, Some(-100), |v| v.to_string()).is_ok());
        let err = check_range("x", &t, 0, 3, Some(-100), |v| format!("bad {v}"));
        anyhow::ensure!(err.map_err(|e| e.to_string()).err().as_deref() == Some("x: bad 3"));
        let err = check_range("x", &t, 0, 4, None, |v| format!("bad {v}"));
        anyhow::ensure!(err.map_err(|e| e.to_string()).err().as_deref() == Some("x: bad -100"));
        let empty = Tensor::f_from_slice::<i64>(&[])?;
        anyhow::ensure!(check_range("x", &empty, 0, 1, None, |v| v.to_string()).is_ok());
        Ok(())
    }
}
