//! Golden tests: every loss × option set × reduction × dtype against values
//! and gradients computed by PyTorch 2.11 (tests/golden/make_golden.py).
use crate::common;

use anyhow::{bail, Context, Result};
use kiln_losses::*;
use kiln_tensor::spec::Spec;
use kiln_tensor::{Kind, Tensor};
use serde_json::Value;
use std::sync::OnceLock;

fn cases() -> Result<&'static Vec<Value>> {
    static CASES: OnceLock<Vec<Value>> = OnceLock::new();
    if let Some(c) = CASES.get() {
        return Ok(c);
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/losses.json");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let v: Value = serde_json::from_str(&text)?;
    let cases = v
        .get("cases")
        .and_then(Value::as_array)
        .context("no cases")?
        .clone();
    Ok(CASES.get_or_init(|| cases))
}

fn num(v: &Value) -> Result<f64> {
    match v {
        Value::Number(n) => n.as_f64().context("bad number"),
        Value::String(s) => match s.as_str() {
            "nan" => Ok(f64::NAN),
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            _ => bail!("bad number {s}"),
        },
        _ => bail!("bad number {v}"),
    }
}

fn shape_of(v: &Value) -> Result<Vec<i64>> {
    v.get("shape")
        .and_then(Value::as_array)
        .context("no shape")?
        .iter()
        .map(|x| x.as_i64().context("bad dim"))
        .collect()
}

fn dtype_of(v: &Value) -> Result<&str> {
    v.get("dtype").and_then(Value::as_str).context("no dtype")
}

fn data_of(v: &Value) -> Result<&Vec<Value>> {
    v.get("data").and_then(Value::as_array).context("no data")
}

fn tensor(v: &Value) -> Result<Tensor> {
    let shape = shape_of(v)?;
    let data = data_of(v)?;
    match dtype_of(v)? {
        "int64" => {
            let d: Vec<i64> = data
                .iter()
                .map(|x| x.as_i64().context("bad int"))
                .collect::<Result<_>>()?;
            Ok(Tensor::f_from_slice(&d)?.f_reshape(shape.as_slice())?)
        }
        dt => {
            let d: Vec<f64> = data.iter().map(num).collect::<Result<_>>()?;
            let t = Tensor::f_from_slice(&d)?.f_reshape(shape.as_slice())?;
            let kind = match dt {
                "float64" => Kind::Double,
                "float32" => Kind::Float,
                other => bail!("unknown dtype {other}"),
            };
            Ok(t.f_to_kind(kind)?)
        }
    }
}

/// Compares `got` with the fixture `exp`: same shape, every value within
/// `atol + rtol·|expected|` (f64: 1e-10 relative, f32: 1e-5 relative and 1e-6
/// absolute); NaN matches NaN and infinities match by sign.
fn compare(id: &str, what: &str, got: &Tensor, exp: &Value) -> Result<()> {
    let (rtol, atol) = match dtype_of(exp)? {
        "float64" => (1e-10, 1e-12),
        _ => (1e-5, 1e-6),
    };
    let shape = shape_of(exp)?;
    if got.size() != shape {
        bail!(
            "{id}: {what} has shape {:?}, PyTorch {:?}",
            got.size(),
            shape
        );
    }
    let got_kind = got.f_kind()?;
    let want_kind = match dtype_of(exp)? {
        "float64" => Kind::Double,
        _ => Kind::Float,
    };
    if got_kind != want_kind {
        bail!("{id}: {what} has dtype {got_kind:?}, PyTorch {want_kind:?}");
    }
    let g = common::values(got)?;
    let e: Vec<f64> = data_of(exp)?.iter().map(num).collect::<Result<_>>()?;
    for (i, (a, b)) in g.iter().zip(&e).enumerate() {
        let ok = (a.is_nan() && b.is_nan())
            || (a.is_infinite() && a == b)
            || (a - b).abs() <= atol + rtol * b.abs();
        if !ok {
            bail!("{id}: {what}[{i}] = {a:e}, PyTorch {b:e} (rtol {rtol:e}, atol {atol:e})");
        }
    }
    Ok(())
}

/// Inputs of a case, fresh (gradients of earlier runs do not leak).
struct Inputs {
    t: std::collections::HashMap<String, Tensor>,
}

impl Inputs {
    fn new(case: &Value) -> Result<Self> {
        let mut t = std::collections::HashMap::new();
        for (k, v) in case
            .get("tensors")
            .and_then(Value::as_object)
            .context("no tensors")?
        {
            t.insert(k.clone(), tensor(v)?);
        }
        for g in case
            .get("grad")
            .and_then(Value::as_array)
            .context("no grad")?
        {
            let g = g.as_str().context("bad grad name")?;
            let x = t.get(g).context("grad of unknown tensor")?;
            let leaf = x.f_detach()?.set_requires_grad(true);
            t.insert(g.to_string(), leaf);
        }
        Ok(Self { t })
    }
    fn get(&self, k: &str) -> Result<&Tensor> {
        self.t.get(k).with_context(|| format!("no tensor {k}"))
    }
}

fn lengths(t: &Tensor) -> Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(t)?)
}

/// The ways kiln can compute a case; each must match PyTorch.
/// A way to compute a case from its inputs.
type Run = Box<dyn Fn(&Inputs) -> Result<Tensor>>;
/// A typed three-input method.
type Three = Box<dyn Fn(&Tensor, &Tensor, &Tensor) -> kiln_losses::Result<Tensor>>;

fn variants(case: &Value) -> Result<Vec<(&'static str, Run)>> {
    let spec_text = case
        .get("spec")
        .and_then(Value::as_str)
        .context("no spec")?
        .to_string();
    let call = case
        .get("call")
        .and_then(Value::as_str)
        .context("no call")?;
    let args: Vec<String> = case
        .get("args")
        .and_then(Value::as_array)
        .context("no args")?
        .iter()
        .map(|a| a.as_str().map(str::to_string).context("bad arg"))
        .collect::<Result<_>>()?;
    let mut spec: Spec = spec_text.parse()?;
    let name = spec.name.clone();
    let reg = registry();
    let dyn_loss: std::sync::Arc<dyn Loss> = std::sync::Arc::from(reg.build(&spec_text)?);
    let a = args.clone();
    let mut out: Vec<(&'static str, Run)> = Vec::new();
    match call {
        "forward" => {
            out.push((
                "Loss::forward",
                Box::new(move |i: &Inputs| Ok(dyn_loss.forward(i.get(&a[0])?, i.get(&a[1])?)?)),
            ));
        }
        "forward3" => {
            let stack = |i: &Inputs, x: &str, y: &str| -> Result<Tensor> {
                Ok(Tensor::f_stack(&[i.get(x)?, i.get(y)?], 0)?)
            };
            match name.as_str() {
                "margin-ranking" | "cosine-embedding" => {
                    let typed: Three = if name == "margin-ranking" {
                        let l = MarginRankingLoss::from_spec(&mut spec)?;
                        Box::new(move |x, y, z| l.forward3(x, y, z))
                    } else {
                        let l = CosineEmbeddingLoss::from_spec(&mut spec)?;
                        Box::new(move |x, y, z| l.forward3(x, y, z))
                    };
                    let b = a.clone();
                    out.push((
                        "forward3",
                        Box::new(move |i: &Inputs| {
                            Ok(typed(i.get(&b[0])?, i.get(&b[1])?, i.get(&b[2])?)?)
                        }),
                    ));
                    out.push((
                        "Loss::forward(stack([x1, x2]), y)",
                        Box::new(move |i: &Inputs| {
                            Ok(dyn_loss.forward(&stack(i, &a[0], &a[1])?, i.get(&a[2])?)?)
                        }),
                    ));
                }
                "triplet-margin" | "triplet-margin-with-distance" => {
                    let typed: Three = if name == "triplet-margin" {
                        let l = TripletMarginLoss::from_spec(&mut spec)?;
                        Box::new(move |x, y, z| l.forward3(x, y, z))
                    } else {
                        let l = TripletMarginWithDistanceLoss::from_spec(&mut spec)?;
                        Box::new(move |x, y, z| l.forward3(x, y, z))
                    };
                    let b = a.clone();
                    out.push((
                        "forward3",
                        Box::new(move |i: &Inputs| {
                            Ok(typed(i.get(&b[0])?, i.get(&b[1])?, i.get(&b[2])?)?)
                        }),
                    ));
                    out.push((
                        "Loss::forward(anchor, stack([positive, negative]))",
                        Box::new(move |i: &Inputs| {
                            Ok(dyn_loss.forward(i.get(&a[0])?, &stack(i, &a[1], &a[2])?)?)
                        }),
                    ));
                }
                other => bail!("no forward3 for {other}"),
            }
        }
        "gaussian" => {
            let l = GaussianNllLoss::from_spec(&mut spec)?;
            let b = a.clone();
            out.push((
                "forward_var",
                Box::new(move |i: &Inputs| {
                    Ok(l.forward_var(i.get(&b[0])?, i.get(&b[1])?, i.get(&b[2])?)?)
                }),
            ));
            let same = {
                let i = Inputs::new(case)?;
                i.get(&a[0])?.size() == i.get(&a[2])?.size()
            };
            if same {
                out.push((
                    "Loss::forward(stack([input, var]), target)",
                    Box::new(move |i: &Inputs| {
                        let s = Tensor::f_stack(&[i.get(&a[0])?, i.get(&a[2])?], 0)?;
                        Ok(dyn_loss.forward(&s, i.get(&a[1])?)?)
                    }),
                ));
            }
        }
        "ctc" => {
            let l = std::sync::Arc::new(CtcLoss::from_spec(&mut spec)?);
            let (b, l2) = (a.clone(), l.clone());
            out.push((
                "forward_ctc_tensors",
                Box::new(move |i: &Inputs| {
                    Ok(l.forward_ctc_tensors(
                        i.get(&b[0])?,
                        i.get(&b[1])?,
                        i.get(&b[2])?,
                        i.get(&b[3])?,
                    )?)
                }),
            ));
            let c = a.clone();
            out.push((
                "forward_ctc",
                Box::new(move |i: &Inputs| {
                    let il = lengths(i.get(&c[2])?)?;
                    let tl = lengths(i.get(&c[3])?)?;
                    Ok(l2.forward_ctc(i.get(&c[0])?, i.get(&c[1])?, &il, &tl)?)
                }),
            ));
            // Loss::forward infers full input lengths and blank-padded target lengths.
            let full = {
                let i = Inputs::new(case)?;
                let t = i.get(&a[0])?.size().first().copied().unwrap_or(0);
                lengths(i.get(&a[2])?)?.iter().all(|&x| x == t)
            };
            if full {
                out.push((
                    "Loss::forward",
                    Box::new(move |i: &Inputs| Ok(dyn_loss.forward(i.get(&a[0])?, i.get(&a[1])?)?)),
                ));
            }
        }
        other => bail!("unknown call {other}"),
    }
    spec.finish(&[]).ok();
    Ok(out)
}

fn run_case(case: &Value) -> Result<usize> {
    let id = case.get("id").and_then(Value::as_str).context("no id")?;
    let mut checked = 0;
    for (label, f) in variants(case)? {
        let inputs = Inputs::new(case)?;
        let id = format!("{id} [{label}]");
        let out = f(&inputs).with_context(|| format!("{id}: kiln failed"))?;
        compare(
            &id,
            "loss",
            &out,
            case.get("expected").context("no expected")?,
        )?;
        let total = if out.dim() == 0 {
            out
        } else {
            out.f_sum(None::<Kind>)?
        };
        total.f_backward()?;
        let grads = case
            .get("grads")
            .and_then(Value::as_object)
            .context("no grads")?;
        for (g, exp) in grads {
            let grad = inputs.get(g)?.f_grad()?;
            let grad = if grad.defined() {
                grad
            } else {
                inputs.get(g)?.f_zeros_like()?
            };
            compare(&id, &format!("grad of {g}"), &grad, exp)?;
        }
        checked += 1;
    }
    Ok(checked)
}

fn run_loss(name: &str) -> Result<()> {
    let mut n = 0;
    for case in cases()? {
        let spec = case
            .get("spec")
            .and_then(Value::as_str)
            .context("no spec")?;
        let case_name = spec.split(':').next().unwrap_or("");
        if case_name == name {
            n += run_case(case)?;
        }
    }
    if n < 6 {
        bail!("only {n} golden checks for {name}");
    }
    Ok(())
}

macro_rules! golden {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() -> Result<()> {
                run_loss($name)
            }
        )*

        #[test]
        fn every_registered_loss_has_golden_cases() -> Result<()> {
            let tested = [$($name),*];
            for name in registry().names() {
                if !tested.contains(&name) {
                    bail!("{name} has no golden test");
                }
            }
            if tested.len() != 21 {
                bail!("{} losses tested, expected 21", tested.len());
            }
            Ok(())
        }
    };
}

golden! {
    cross_entropy => "cross-entropy",
    nll => "nll",
    mse => "mse",
    l1 => "l1",
    ctc => "ctc",
    poisson_nll => "poisson-nll",
    gaussian_nll => "gaussian-nll",
    kl_div => "kl-div",
    bce => "bce",
    bce_with_logits => "bce-with-logits",
    margin_ranking => "margin-ranking",
    hinge_embedding => "hinge-embedding",
    multilabel_margin => "multilabel-margin",
    huber => "huber",
    smooth_l1 => "smooth-l1",
    soft_margin => "soft-margin",
    multilabel_soft_margin => "multilabel-soft-margin",
    cosine_embedding => "cosine-embedding",
    multi_margin => "multi-margin",
    triplet_margin => "triplet-margin",
    triplet_margin_with_distance => "triplet-margin-with-distance",
}
