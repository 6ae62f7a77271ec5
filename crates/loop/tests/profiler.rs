//! `--profile`: the simple profiler's table is Lightning's
//! (`profiler/simple_profiler.py` reproduces `SimpleProfiler.summary()`,
//! run here at test time) and counts a run's phases; the trace is a Chrome
//! trace of libtorch's profiler with ATen operators and their shapes, in
//! the run directory where TensorBoard's profile plugin looks.
use crate::common;

use anyhow::{ensure, Context, Result};
use common::TempDir;
use kiln_loop::profiler::simple_report;
use kiln_loop::run::{train, Display, TrainRequest};
use kiln_loop::{FitTimings, Notice, Notices, PhaseTime};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::run::own;

/// Lightning's summary of `timings` (the same calls and totals).
fn lightning_summary(timings: &FitTimings) -> Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/profiler/simple_profiler.py");
    let actions: Vec<Value> = timings
        .phases()
        .iter()
        .map(|(name, phase)| json!([name, phase.calls, phase.total]))
        .collect();
    let input = json!({"stage": "fit", "actions": actions, "wall": timings.wall});
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running python3")?;
    child
        .stdin
        .take()
        .context("python's stdin")?
        .write_all(input.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn phase(calls: usize, total: f64) -> PhaseTime {
    PhaseTime { calls, total }
}

#[test]
fn simple_report_is_lightnings_table() -> Result<()> {
    // Numbers that exercise each of Python's notations (fixed, scientific,
    // rounding to 1e+05), a phase that never ran (left out) and ties.
    let timings = FitTimings {
        data: phase(938, 0.000_012_345_678),
        forward: phase(938, 1.234_567_89),
        backward: phase(938, 2.5),
        optimizer: phase(469, 0.75),
        evaluation: phase(5, 12_345.678_9),
        checkpoint: phase(0, 0.0),
        logging: phase(1887, 0.75),
        wall: 99_999.9,
    };
    let ours = simple_report(&timings);
    let lightning = lightning_summary(&timings)?;
    ensure!(ours == lightning, "kiln:\n{ours}\nLightning:\n{lightning}");
    ensure!(!ours.contains("checkpoint"), "{ours}");
    Ok(())
}

fn request(flags: Value, run_dir: PathBuf, notices: &Arc<Mutex<Vec<Notice>>>) -> TrainRequest {
    let seen = notices.clone();
    TrainRequest {
        flags: flags.as_object().cloned().unwrap_or_default(),
        display: Display::Quiet,
        run_dir: Some(run_dir),
        notices: Notices::new(move |n: &Notice| {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(n.clone())
        }),
        ..TrainRequest::default()
    }
}

#[test]
fn profile_simple_reports_every_phase_of_the_run() -> Result<()> {
    let _global = common::global_state();
    let tmp = TempDir::new("profile-simple")?;
    let notices = Arc::new(Mutex::new(Vec::new()));
    // 256 samples in batches of 32 (8 per epoch), accumulated in pairs.
    let flags = json!({"data": "rings:n=256", "model": "wide:width=16", "epochs": 2, "seed": 3,
        "batch_size": 32, "accumulate_grad_batches": 2, "profile": "simple"});
    let summary = train(
        request(flags, tmp.path().join("run"), &notices),
        &own::registries(),
    )?;
    let t = summary.timings;
    let calls: Vec<(&str, usize)> = t.phases().iter().map(|(n, p)| (*n, p.calls)).collect();
    let batches = t.data.calls;
    ensure!(batches == 16, "{calls:?}");
    ensure!(
        t.forward.calls == batches
            && t.backward.calls == batches
            && t.optimizer.calls == summary.steps
            && summary.steps * 2 == batches
            && t.evaluation.calls == 2
            && t.checkpoint.calls == 2
            && t.logging.calls > batches,
        "{calls:?}, {} steps",
        summary.steps
    );
    let measured: f64 = t.phases().iter().map(|(_, p)| p.total).sum();
    ensure!(measured > 0.0 && measured <= t.wall, "{t:?}");
    let seen = notices.lock().unwrap_or_else(|e| e.into_inner());
    let reports: Vec<&String> = seen
        .iter()
        .filter_map(|n| match n {
            Notice::Profile(text) => Some(text),
            _ => None,
        })
        .collect();
    ensure!(reports == [&simple_report(&t)], "{reports:?}");
    Ok(())
}

#[test]
fn profile_trace_writes_a_chrome_trace_of_the_steps_asked_for() -> Result<()> {
    let _global = common::global_state();
    let tmp = TempDir::new("profile-trace")?;
    let run = tmp.path().join("run");
    let notices = Arc::new(Mutex::new(Vec::new()));
    let flags = json!({"data": "rings:n=256", "model": "wide:width=16", "epochs": 1, "seed": 3,
        "batch_size": 32, "profile": "trace:steps=2,skip=1"});
    train(request(flags, run.clone(), &notices), &own::registries())?;
    let traces: Vec<PathBuf> = std::fs::read_dir(run.join("profile"))?
        .map(|e| Ok(e?.path()))
        .collect::<Result<_>>()?;
    ensure!(traces.len() == 1, "{traces:?}");
    let name = traces[0]
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // torch.profiler.tensorboard_trace_handler's name: {host}_{pid}.{ns}.pt.trace.json.
    let pid = format!("_{}.", std::process::id());
    ensure!(
        name.ends_with(".pt.trace.json") && name.contains(&pid),
        "{name}"
    );
    let trace: Value = serde_json::from_slice(&std::fs::read(&traces[0])?)?;
    let events = trace["traceEvents"]
        .as_array()
        .context("no traceEvents array")?;
    let named = |n: &'static str| events.iter().filter(move |e| e["name"] == n);
    // Both recorded batches, and only them.
    let steps: Vec<&str> = events
        .iter()
        .filter_map(|e| e["name"].as_str())
        .filter(|n| n.starts_with("ProfilerStep#"))
        .collect();
    ensure!(steps == ["ProfilerStep#1", "ProfilerStep#2"], "{steps:?}");
    // The forward's linear layers, with the batch's shape.
    let linear = named("aten::linear")
        .next()
        .context("no aten::linear event")?;
    ensure!(linear["args"]["Input Dims"][0][0] == json!(32), "{linear}");
    ensure!(named("aten::addmm").next().is_some(), "no aten::addmm");
    ensure!(
        events
            .iter()
            .filter_map(|e| e["name"].as_str())
            .any(|n| n.contains("Backward")),
        "no backward node"
    );
    let seen = notices.lock().unwrap_or_else(|e| e.into_inner());
    ensure!(seen.contains(&Notice::Wrote(traces[0].clone())), "{seen:?}");
    Ok(())
}
