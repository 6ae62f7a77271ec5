//! `kiln_tensor::autograd::checkpoint` against `torch.utils.checkpoint`
//! (`use_reentrant=False`, the setup's torch run here at test time by
//! `tests/checkpoint/reference.py`): one training step of a stack of
//! residual blocks with dropout gives PyTorch's outputs, gradients and global
//! generator state bit for bit, checkpointed or not; and checkpointing a deep
//! stack keeps less memory alive between forward and backward (measured with
//! kiln's arena allocator, which counts the bytes tensors hold).
use crate::common;
use anyhow::{ensure, Context, Result};
use kiln_tensor::autograd::checkpoint;
use kiln_tensor::rng::{self, Generator};
use kiln_tensor::{Device, Kind, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One result: its shape and raw bytes.
type Raw = (Vec<i64>, Vec<u8>);

const BLOCKS: usize = 4;
const WIDTH: i64 = 16;
const BATCH: i64 = 8;
const SEED: u64 = 3;

fn raw(t: &Tensor) -> Result<Raw> {
    let flat = t.f_detach()?.f_contiguous()?.f_reshape([-1])?;
    Ok((
        t.size(),
        Vec::<u8>::try_from(&flat.f_view_dtype(Kind::Uint8)?)?,
    ))
}

/// `reference.py`'s parameters and input.
fn params() -> Result<(Tensor, Vec<Tensor>, Vec<Tensor>)> {
    let (mut ws, mut bs) = (Vec::new(), Vec::new());
    for i in 0..BLOCKS {
        let mut g = Generator::new(100 + i as u64)?;
        ws.push(
            g.randn(&[WIDTH, WIDTH], Kind::Float)?
                .f_mul_scalar(0.3)?
                .set_requires_grad(true),
        );
        bs.push(
            g.randn(&[WIDTH], Kind::Float)?
                .f_mul_scalar(0.1)?
                .set_requires_grad(true),
        );
    }
    let x = Generator::new(7)?
        .randn(&[BATCH, WIDTH], Kind::Float)?
        .set_requires_grad(true);
    Ok((x, ws, bs))
}

/// `h + dropout(gelu(linear(h, w, b)), 0.25)`.
fn block(h: &Tensor, w: &Tensor, b: &Tensor) -> kiln_tensor::Result<Tensor> {
    let y = h
        .f_linear(w, Some(b))?
        .f_gelu("none")?
        .f_dropout(0.25, true)?;
    Ok(h.f_add(&y)?)
}

/// `reference.py`'s `step`.
fn step(seed: u64, checkpointed: bool) -> Result<Vec<Raw>> {
    let (x, ws, bs) = params()?;
    rng::manual_seed(seed);
    let mut h = x.shallow_clone();
    for i in 0..BLOCKS {
        h = if checkpointed {
            let (w, b) = (ws[i].shallow_clone(), bs[i].shallow_clone());
            let out = checkpoint(move |xs| Ok(vec![block(&xs[0], &w, &b)?]), &[&h])?;
            out.into_iter().next().context("one output")?
        } else {
            block(&h, &ws[i], &bs[i])?
        };
        if i == 1 {
            h = h.f_dropout(0.1, true)?;
        }
    }
    let loss = h.f_mul(&h)?.f_sum(Kind::Float)?;
    loss.f_backward()?;
    let mut out = vec![raw(&h)?, raw(&loss)?, raw(&x.grad())?];
    for t in ws.iter().chain(&bs) {
        out.push(raw(&t.grad())?);
    }
    out.push(raw(&rng::cpu_rng_state()?)?);
    out.push(raw(&Tensor::f_rand([3], (Kind::Float, Device::Cpu))?)?);
    Ok(out)
}

fn pytorch(seed: u64) -> Result<BTreeMap<String, Vec<Raw>>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .args(["-W", "ignore"])
        .arg(dir.join("tests/checkpoint/reference.py"))
        .arg(seed.to_string())
        .env("PYTHONPATH", dir.join("../../.libtorch"))
        .output()
        .context("running python3")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: BTreeMap<String, Vec<(Vec<i64>, String)>> = serde_json::from_slice(&out.stdout)?;
    value
        .into_iter()
        .map(|(key, results)| {
            let results = results
                .into_iter()
                .map(|(shape, hex)| Ok((shape, decode(&hex)?)))
                .collect::<Result<Vec<Raw>>>()?;
            Ok((key, results))
        })
        .collect()
}

fn decode(hex: &str) -> Result<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            Ok(u8::from_str_radix(
                hex.get(i..i + 2).context("odd hex")?,
                16,
            )?)
        })
        .collect()
}

const NAMES: [&str; 4] = ["output", "loss", "input grad", "parameter grad"];

fn same(what: &str, ours: &[Raw], theirs: &[Raw]) -> Result<()> {
    ensure!(
        ours.len() == theirs.len(),
        "{what}: {} results, reference {}",
        ours.len(),
        theirs.len()
    );
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let name = match i {
            _ if i + 2 == ours.len() => "generator state after the step",
            _ if i + 1 == ours.len() => "draw after the step",
            _ => NAMES[i.min(3)],
        };
        ensure!(
            a.0 == b.0,
            "{what}, {name} ({i}): shape {:?}, reference {:?}",
            a.0,
            b.0
        );
        ensure!(a.1 == b.1, "{what}, {name} ({i}): bytes differ");
    }
    Ok(())
}

#[test]
fn a_checkpointed_step_is_pytorchs_bit_for_bit() -> Result<()> {
    // They draw from the global generator and measure the allocator: one at a
    // time among the tests that do either.
    let _serial = common::global_state();
    kiln_tensor::tch::set_num_threads(1);
    let want = pytorch(SEED)?;
    let get = |k: &str| {
        want.get(k)
            .with_context(|| format!("no {k} in PyTorch's output"))
    };
    let checkpointed = step(SEED, true)?;
    same(
        "kiln checkpointed vs torch.utils.checkpoint",
        &checkpointed,
        get("checkpointed")?,
    )?;
    same(
        "kiln vs PyTorch without checkpoints",
        &step(SEED, false)?,
        get("plain")?,
    )?;
    same(
        "kiln checkpointed vs kiln without",
        &checkpointed,
        &step(SEED, false)?,
    )?;
    Ok(())
}

/// Bytes tensors hold in the arena allocator after the forward pass of
/// `depth` blocks of width 256 over 256 rows (each activation 256 KiB, the
/// arena's smallest block), and the input's gradient after backward.
fn forward_memory(depth: usize, checkpointed: bool) -> Result<(u64, Tensor)> {
    const W: i64 = 256;
    let mut g = Generator::new(11)?;
    let x = g.randn(&[W, W], Kind::Float)?.set_requires_grad(true);
    let mut params = Vec::new();
    for _ in 0..depth {
        params.push((
            g.randn(&[W, W], Kind::Float)?
                .f_mul_scalar(0.05)?
                .set_requires_grad(true),
            g.randn(&[W], Kind::Float)?.set_requires_grad(true),
        ));
    }
    let live = || -> Result<u64> {
        Ok(kiln_tensor::memory::arena_stats()
            .context("the arena allocator is installed")?
            .live)
    };
    rng::manual_seed(5);
    let before = live()?;
    let mut h = x.shallow_clone();
    for (w, b) in &params {
        h = if checkpointed {
            let (w, b) = (w.shallow_clone(), b.shallow_clone());
            checkpoint(move |xs| Ok(vec![block(&xs[0], &w, &b)?]), &[&h])?
                .into_iter()
                .next()
                .context("one output")?
        } else {
            block(&h, w, b)?
        };
    }
    let held = live()?.saturating_sub(before);
    h.f_sum(Kind::Float)?.f_backward()?;
    Ok((held, x.grad()))
}

#[test]
fn checkpoints_keep_less_memory_between_forward_and_backward() -> Result<()> {
    // They draw from the global generator and measure the allocator: one at a
    // time among the tests that do either.
    let _serial = common::global_state();
    kiln_tensor::memory::install_arena_allocator();
    const DEPTH: usize = 12;
    let (plain, plain_grad) = forward_memory(DEPTH, false)?;
    let (checkpointed, grad) = forward_memory(DEPTH, true)?;
    ensure!(
        grad.equal(&plain_grad),
        "checkpointing changed the input's gradient"
    );
    // Without checkpoints each block keeps its input (the previous block's
    // output, saved by the linear layer), its linear output (saved by GELU)
    // and its dropout mask: 36 activations here. With them only the block
    // outputs stay (each the next block's saved input): 12. Each takes a
    // 288 KiB arena block (size class and header).
    const ACTIVATION: u64 = 256 * 256 * 4;
    ensure!(
        plain >= 3 * DEPTH as u64 * ACTIVATION,
        "without checkpoints the forward held only {plain} bytes"
    );
    ensure!(
        checkpointed <= (DEPTH as u64 + 2) * ACTIVATION * 9 / 8,
        "with checkpoints the forward held {checkpointed} bytes (without: {plain})"
    );
    Ok(())
}
