//! Conformance: the loss entries of PyTorch's own module test database
//! (`module_db`), replayed through kiln's public API and its spec-string
//! registry.
//!
//! `tests/conformance/make_module_db.py` records, for every loss input of
//! `module_db` in float32 and float64, PyTorch's output and the gradient of
//! `output.sum()` with respect to every input that requires grad (or
//! PyTorch's error). This test builds each loss from its spec string
//! (`registry().build`; the losses with more than two inputs through their
//! types' `from_spec` and `forward3` / `forward_var` / `forward_ctc`), and
//! requires the output bit for bit (dtype and shape too), every gradient bit
//! for bit (by an FNV-1a-64 hash of its raw values), and an error wherever
//! PyTorch raises.
//!
//! The loss kernels' last bits depend on the ATen CPU capability and on MKL's
//! code path, so this process pins both exactly as the generator did, before
//! libtorch runs any kernel: `ATEN_CPU_CAPABILITY=avx2`, `MKL_CBWR=COMPATIBLE`,
//! one thread. This test binary holds this one test for that reason.
//! `make conformance` prints the score per loss
//! (`cargo test -p kiln-losses --test conformance -- --nocapture`).
use anyhow::{anyhow, bail, Context, Result};
use kiln_losses::*;
use kiln_tensor::spec::Spec;
use kiln_tensor::{Device, Kind, Tensor};
use serde_json::Value;
use std::collections::BTreeMap;

fn fixture() -> Result<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/module_db.json"
    );
    let text = std::fs::read_to_string(path).with_context(|| path.to_string())?;
    Ok(serde_json::from_str(&text)?)
}

fn kind_of(dtype: &str) -> Result<Kind> {
    Ok(match dtype {
        "float32" => Kind::Float,
        "float64" => Kind::Double,
        "float16" => Kind::Half,
        "int64" => Kind::Int64,
        "int32" => Kind::Int,
        other => bail!("unknown dtype {other}"),
    })
}

fn base64(text: &str) -> Result<Vec<u8>> {
    let value = |c: u8| -> Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("bad base64 byte {c}"),
        })
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.as_bytes().chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|&c| c != b'=').collect();
        let mut acc = 0u32;
        for &c in &data {
            acc = (acc << 6) | value(c)?;
        }
        acc <<= 6 * (4 - data.len() as u32);
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..data.len()]);
    }
    Ok(out)
}

fn shape(enc: &Value) -> Result<Vec<i64>> {
    enc["shape"]
        .as_array()
        .ok_or_else(|| anyhow!("no shape"))?
        .iter()
        .map(|d| d.as_i64().ok_or_else(|| anyhow!("bad dim")))
        .collect()
}

/// A tensor from its raw little-endian values.
fn tensor(enc: &Value) -> Result<Tensor> {
    let kind = kind_of(enc["dtype"].as_str().unwrap_or_default())?;
    let bytes = base64(enc["b64"].as_str().ok_or_else(|| anyhow!("no values"))?)?;
    let size = shape(enc)?;
    let t = match kind {
        Kind::Float => Tensor::from_slice(
            &bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<_>>(),
        ),
        Kind::Double => Tensor::from_slice(
            &bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect::<Vec<_>>(),
        ),
        Kind::Int64 => Tensor::from_slice(
            &bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect::<Vec<_>>(),
        ),
        Kind::Int => Tensor::from_slice(
            &bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<_>>(),
        ),
        other => bail!("no decoder for {other:?}"),
    };
    Ok(t.f_reshape(size.as_slice())?)
}

/// The raw little-endian values of a float or integer tensor.
fn raw(t: &Tensor) -> Result<Vec<u8>> {
    let flat = t
        .f_detach()?
        .f_contiguous()?
        .f_reshape([-1i64].as_slice())?;
    Ok(match flat.f_kind()? {
        Kind::Float => Vec::<f32>::try_from(&flat)?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        Kind::Double => Vec::<f64>::try_from(&flat)?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        other => bail!("no raw values for {other:?}"),
    })
}

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn same_kind_and_shape(what: &str, got: &Tensor, want: &Value) -> Result<Option<String>> {
    let want_kind = kind_of(want["dtype"].as_str().unwrap_or_default())?;
    if got.f_kind()? != want_kind {
        return Ok(Some(format!(
            "{what} has dtype {:?}, PyTorch {want_kind:?}",
            got.f_kind()?
        )));
    }
    if got.size() != shape(want)? {
        return Ok(Some(format!(
            "{what} has shape {:?}, PyTorch {:?}",
            got.size(),
            shape(want)?
        )));
    }
    Ok(None)
}

/// `None` when `got` is PyTorch's output bit for bit.
fn output_differs(got: &Tensor, want: &Value) -> Result<Option<String>> {
    if let Some(d) = same_kind_and_shape("output", got, want)? {
        return Ok(Some(d));
    }
    let (g, w) = (raw(got)?, raw(&tensor(want)?)?);
    if g == w {
        return Ok(None);
    }
    let (gv, wv) = (values(got)?, values(&tensor(want)?)?);
    let bad: Vec<usize> = (0..wv.len())
        .filter(|&i| gv[i].to_bits() != wv[i].to_bits())
        .collect();
    Ok(bad.first().map(|&i| {
        format!(
            "output: {} of {} values differ, first [{i}]: {:e} vs PyTorch {:e}",
            bad.len(),
            wv.len(),
            gv[i],
            wv[i]
        )
    }))
}

/// `None` when `got` is PyTorch's gradient bit for bit (by hash).
fn grad_differs(what: &str, got: &Tensor, want: &Value) -> Result<Option<String>> {
    if let Some(d) = same_kind_and_shape(what, got, want)? {
        return Ok(Some(d));
    }
    let hash = format!("{:016x}", fnv1a64(&raw(got)?));
    if Some(hash.as_str()) == want["fnv1a64"].as_str() {
        return Ok(None);
    }
    let head: Vec<f64> = values(got)?.into_iter().take(4).collect();
    Ok(Some(format!(
        "{what} differs (first values {head:?}, PyTorch {})",
        want["head"]
    )))
}

fn values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(
        &t.f_detach()?
            .f_to_kind(Kind::Double)?
            .f_reshape([-1i64].as_slice())?,
    )?)
}

/// A forward argument: a tensor or a list of integers (CTC's lengths).
enum Arg {
    T(Tensor),
    Ints(Vec<i64>),
}

impl Arg {
    fn t(&self) -> Result<&Tensor> {
        match self {
            Arg::T(t) => Ok(t),
            Arg::Ints(_) => bail!("expected a tensor argument"),
        }
    }
}

fn args(rec: &Value) -> Result<Vec<Arg>> {
    let grads = rec["grads"].as_object();
    rec["args"]
        .as_array()
        .ok_or_else(|| anyhow!("no args"))?
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if let Some(ints) = a["ints"].as_array() {
                return Ok(Arg::Ints(
                    ints.iter()
                        .map(|v| v.as_i64().ok_or_else(|| anyhow!("bad int")))
                        .collect::<Result<_>>()?,
                ));
            }
            let t = tensor(a)?;
            let wants_grad = grads.is_some_and(|g| g.contains_key(&i.to_string()));
            Ok(Arg::T(t.set_requires_grad(wants_grad)))
        })
        .collect()
}

fn arg(a: &[Arg], i: usize) -> Result<&Tensor> {
    a.get(i).ok_or_else(|| anyhow!("missing argument {i}"))?.t()
}

/// Runs kiln's loss the way the fixture says (`call`), from the spec string.
fn call(rec: &Value, a: &[Arg]) -> Result<kiln_losses::Result<Tensor>> {
    let spec_text = rec["spec"].as_str().ok_or_else(|| anyhow!("no spec"))?;
    // The registry accepts every spec (its options and values).
    let dyn_loss = match registry().build(spec_text) {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    let mut spec: Spec = spec_text.parse()?;
    let (x0, x1) = (arg(a, 0)?, arg(a, 1)?);
    Ok(match rec["call"].as_str().unwrap_or_default() {
        "forward" => dyn_loss.forward(x0, x1),
        "forward3" => {
            let x2 = arg(a, 2)?;
            match spec.name.as_str() {
                "cosine-embedding" => {
                    CosineEmbeddingLoss::from_spec(&mut spec).and_then(|l| l.forward3(x0, x1, x2))
                }
                "margin-ranking" => {
                    MarginRankingLoss::from_spec(&mut spec).and_then(|l| l.forward3(x0, x1, x2))
                }
                other => bail!("no forward3 for {other}"),
            }
        }
        "forward_var" => {
            let x2 = arg(a, 2)?;
            GaussianNllLoss::from_spec(&mut spec).and_then(|l| l.forward_var(x0, x1, x2))
        }
        "ctc" => {
            let l = CtcLoss::from_spec(&mut spec);
            match (a.get(2), a.get(3)) {
                (Some(Arg::Ints(il)), Some(Arg::Ints(tl))) => {
                    l.and_then(|l| l.forward_ctc(x0, x1, il, tl))
                }
                (Some(Arg::T(il)), Some(Arg::T(tl))) => {
                    l.and_then(|l| l.forward_ctc_tensors(x0, x1, il, tl))
                }
                _ => bail!("CTC needs both lengths as lists or both as tensors"),
            }
        }
        other => bail!("unknown call {other}"),
    })
}

/// Replays one module input; returns what differs from PyTorch.
fn replay(rec: &Value) -> Result<Vec<String>> {
    let a = args(rec)?;
    let got = call(rec, &a)?;
    let mut out = Vec::new();
    if let Some(want) = rec["error"].as_str() {
        if got.is_ok() {
            out.push(format!("kiln accepts it; PyTorch raises \"{want}\""));
        }
        return Ok(out);
    }
    let loss = match got {
        Ok(l) => l,
        Err(e) => {
            out.push(format!("kiln raises \"{e}\"; PyTorch computes it"));
            return Ok(out);
        }
    };
    if let Some(d) = output_differs(&loss, &rec["output"])? {
        out.push(d);
    }
    if let Some(grads) = rec["grads"].as_object() {
        loss.f_sum(loss.f_kind()?)?.f_backward()?;
        for (i, want) in grads {
            let idx: usize = i.parse()?;
            let g = arg(&a, idx)?.f_grad()?;
            if want.is_null() {
                if g.defined() {
                    out.push(format!("input {i} has a gradient; PyTorch none"));
                }
                continue;
            }
            if !g.defined() {
                out.push(format!("input {i} has no gradient"));
                continue;
            }
            if let Some(d) = grad_differs(&format!("gradient of input {i}"), &g, want)? {
                out.push(d);
            }
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Score {
    passed: usize,
    failed: Vec<String>,
    skipped: BTreeMap<String, usize>,
}

#[test]
fn module_db_losses_conformance() -> Result<()> {
    // Pin ATen's kernels and MKL's code path before libtorch runs anything
    // (both read these once, at their first use), as the generator does.
    let db = fixture()?;
    for (k, v) in db["pinned"].as_object().ok_or_else(|| anyhow!("no pins"))? {
        std::env::set_var(k, v.as_str().unwrap_or_default());
    }
    kiln_tensor::tch::set_num_threads(1);
    let _ = Tensor::f_zeros([1], (Kind::Float, Device::Cpu))?;
    let mut report = format!(
        "module_db loss conformance (torch {}; float32 and float64 inputs, output and input \
         gradients bit for bit, pinned {})\n",
        db["torch"].as_str().unwrap_or("?"),
        db["pinned"]
    );
    let mut failures = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let (mut tp, mut tf, mut ts) = (0, 0, 0);
    for entry in db["losses"]
        .as_array()
        .ok_or_else(|| anyhow!("no losses"))?
    {
        let name = entry["name"].as_str().unwrap_or("?");
        let mut score = Score::default();
        let records = entry["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(entry["errors"].as_array().into_iter().flatten());
        for rec in records {
            let id = format!(
                "{name} '{}' [{}]",
                rec["desc"].as_str().unwrap_or("?"),
                rec["dtype"].as_str().unwrap_or("?")
            );
            if let Some(reason) = rec["skip"].as_str() {
                *score.skipped.entry(reason.to_string()).or_default() += 1;
                *reasons.entry(format!("{name}: {reason}")).or_default() += 1;
                continue;
            }
            let diffs = match replay(rec) {
                Ok(d) => d,
                Err(e) => vec![format!("error: {e:#}")],
            };
            if diffs.is_empty() {
                score.passed += 1;
            } else {
                score.failed.push(format!(
                    "{id} ({}): {}",
                    rec["spec"].as_str().unwrap_or("?"),
                    diffs.join("; ")
                ));
            }
        }
        let skipped: usize = score.skipped.values().sum();
        report.push_str(&format!(
            "  {name:<26} {} passed, {} failed{}\n",
            score.passed,
            score.failed.len(),
            if skipped > 0 {
                format!(", {skipped} skipped")
            } else {
                String::new()
            }
        ));
        tp += score.passed;
        tf += score.failed.len();
        ts += skipped;
        failures.extend(score.failed);
    }
    report.push_str(&format!(
        "  total: {tp} passed, {tf} failed, {ts} skipped\n  skipped, by reason:\n"
    ));
    for (reason, n) in &reasons {
        report.push_str(&format!("    {n} x {reason}\n"));
    }
    println!("{report}");
    if !failures.is_empty() {
        bail!(
            "{} not conformant:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}
