//! TensorBoard logs: kiln writes event files, TensorBoard's own Python reader
//! (tests/tensorboard/read_events.py, on the `tensorboard` package that
//! scripts/setup.sh installs next to torch) reads them back, and PyTorch's
//! `SummaryWriter` writes the same data for comparison.
use crate::common;

use anyhow::{anyhow, bail, ensure, Context, Result};
use common::TempDir;
use kiln_loop::checkpoint::Progress;
use kiln_loop::loggers::tensorboard::events::{
    encode_record, event_files, masked_crc32c, read_events, read_records, FILE_VERSION,
};
use kiln_loop::loggers::tensorboard::histogram::histogram_of;
use kiln_loop::loggers::tensorboard::proto::event::What;
use kiln_loop::loggers::tensorboard::{
    HParamValue, SummaryWriter, TensorBoardConfig, TensorBoardLogger, WriterOptions,
};
use kiln_loop::{Callback, EvalInfo, FitSummary, Notices, StepInfo, StopReason};
use kiln_tensor::{tch, Device, Kind, Tensor};
use serde_json::{json, Value};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python packages: `KILN_PYTHONPATH`, else the setup's `.libtorch`.
fn python_path() -> Result<PathBuf> {
    let path = match std::env::var_os("KILN_PYTHONPATH") {
        Some(p) => PathBuf::from(p),
        None => root().join(".libtorch"),
    };
    ensure!(
        path.join("tensorboard").is_dir() && path.join("torch").is_dir(),
        "{} has no tensorboard and torch packages: run scripts/setup.sh (or set KILN_PYTHONPATH \
         to a directory holding torch, safetensors, numpy, tensorboard, protobuf and absl-py)",
        path.display()
    );
    Ok(path)
}

fn python(args: &[&str]) -> Result<String> {
    let script = root().join("crates/loop/tests/tensorboard/read_events.py");
    let out = Command::new("python3")
        .arg("-W")
        .arg("ignore")
        .arg(&script)
        .args(args)
        .env("PYTHONPATH", python_path()?)
        .output()
        .context("running python3")?;
    ensure!(
        out.status.success(),
        "read_events.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// What TensorBoard's reader finds under `logdir`.
fn dump(logdir: &Path) -> Result<Value> {
    let text = python(&["dump", &logdir.display().to_string()])?;
    serde_json::from_str(&text).with_context(|| format!("parsing the dump: {text}"))
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(*key)
            .ok_or_else(|| anyhow!("no {key:?} in {}", short(cur)))?;
    }
    Ok(cur)
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(400).collect()
}

/// A `[[step, value], ...]` series as pairs.
fn series(v: &Value) -> Result<Vec<(i64, f64)>> {
    v.as_array()
        .ok_or_else(|| anyhow!("not a series: {}", short(v)))?
        .iter()
        .map(|p| {
            let step = p[0].as_i64().ok_or_else(|| anyhow!("bad step in {p}"))?;
            let value = p[1].as_f64().ok_or_else(|| anyhow!("bad value in {p}"))?;
            Ok((step, value))
        })
        .collect()
}

/// What a scalar reads back as: TensorBoard stores `simple_value` as f32.
fn f32v(x: f64) -> f64 {
    x as f32 as f64
}

/// Removes `sum_squares` from every histogram in `v` (at any depth),
/// returning them in order: numpy computes it with BLAS's `ddot`, whose
/// summation order kiln does not repeat.
fn take_sum_squares(v: &mut Value, out: &mut Vec<f64>) {
    match v {
        Value::Object(map) => {
            if let Some(s) = map.remove("sum_squares") {
                out.push(s.as_f64().unwrap_or(f64::NAN));
            }
            for (_, child) in map.iter_mut() {
                take_sum_squares(child, out);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| take_sum_squares(c, out)),
        _ => {}
    }
}

/// Removes every `wall_time_secs` (the HParams tab's times differ per run).
fn strip_wall_times(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("wall_time_secs");
            map.iter_mut().for_each(|(_, c)| strip_wall_times(c));
        }
        Value::Array(items) => items.iter_mut().for_each(strip_wall_times),
        _ => {}
    }
}

/// The records of every run, without each file's `file_version` event
/// (PyTorch's also names its writer in `source_metadata`).
fn data_records(d: &Value) -> Result<Value> {
    let mut runs = serde_json::Map::new();
    for (run, events) in get(d, &["records"])?
        .as_object()
        .ok_or_else(|| anyhow!("records"))?
    {
        let kept: Vec<Value> = events
            .as_array()
            .ok_or_else(|| anyhow!("events"))?
            .iter()
            .filter(|e| e.get("file_version").is_none())
            .cloned()
            .collect();
        runs.insert(run.clone(), Value::Array(kept));
    }
    Ok(Value::Object(runs))
}

/// `kiln == torch`, or an error showing the first place they differ.
fn ensure_same(kiln: &Value, torch: &Value, what: &str) -> Result<()> {
    match (kiln, torch) {
        (Value::Object(a), Value::Object(b)) if a.len() == b.len() => {
            for (key, va) in a {
                let vb = b
                    .get(key)
                    .ok_or_else(|| anyhow!("{what}: PyTorch has no {key:?}"))?;
                ensure_same(va, vb, &format!("{what}.{key}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                ensure_same(va, vb, &format!("{what}[{i}]"))?;
            }
            Ok(())
        }
        _ if kiln == torch => Ok(()),
        _ => bail!(
            "{what} differs:\nkiln:    {}\npytorch: {}",
            short(kiln),
            short(torch)
        ),
    }
}

fn assert_same_sum_squares(kiln: &[f64], torch: &[f64]) -> Result<()> {
    ensure!(kiln.len() == torch.len(), "{kiln:?} vs {torch:?}");
    for (k, t) in kiln.iter().zip(torch) {
        let same = (k.is_nan() && t.is_nan()) || (k - t).abs() <= 1e-12 * t.abs().max(1e-300);
        ensure!(same, "sum_squares {k} vs PyTorch's {t}");
    }
    Ok(())
}

#[test]
fn scalars_text_histograms_and_hparams_read_back_as_pytorch_writes_them() -> Result<()> {
    python_path()?;
    let tmp = TempDir::new("tb-vs-pytorch")?;
    let kiln_dir = tmp.path().join("kiln");
    let torch_dir = tmp.path().join("pytorch");

    let global = common::global_state();
    tch::manual_seed(7);
    let cpu = (Kind::Float, Device::Cpu);
    let tensors: Vec<(String, Tensor)> = vec![
        ("normal".into(), Tensor::f_randn([64, 32], cpu)?),
        (
            "big".into(),
            Tensor::f_randn([200_003], cpu)?.f_mul_scalar(3.0)?,
        ),
        (
            "edges".into(),
            Tensor::from_slice(&[
                0.0f64, -0.0, 1e-12, -1e-12, 5e-13, 1e19, -1e25, 9.9e19, 3.0, -7.5,
            ]),
        ),
        (
            "ints".into(),
            Tensor::f_arange_start(-50, 50, (Kind::Int64, Device::Cpu))?,
        ),
        ("zeros".into(), Tensor::f_zeros([10], cpu)?),
        ("one".into(), Tensor::from_slice(&[0.25f32])),
        ("nan".into(), Tensor::from_slice(&[1.0f32, f32::NAN, 2.0])),
        (
            "half".into(),
            Tensor::f_randn([50], (Kind::Half, Device::Cpu))?,
        ),
    ];
    drop(global);
    let tensor_file = tmp.path().join("tensors.safetensors");
    kiln_tensor::io::write_safetensors(&tensor_file, &tensors)?;

    let scalars: Vec<(&str, f64, u64)> = vec![
        ("train/loss", std::f64::consts::LN_10, 1),
        ("train/loss", 0.1, 2),
        ("train/lr", 1e-3, 1),
        ("test/accuracy", 0.8203125, 938),
        ("test/loss", -12.5, 1_000_000_000_000),
    ];
    let texts: Vec<(&str, &str, u64)> = vec![
        ("config", "```json\n{\n  \"lr\": 0.001\n}\n```", 0),
        ("notes", "ünïcödé — *markdown* | ok", 5),
    ];
    // serde_json keeps object keys sorted: PyTorch sees the same order.
    let hparams: Vec<(String, HParamValue)> = vec![
        ("batch_size".into(), 64i64.into()),
        ("epochs".into(), 5i64.into()),
        ("lr".into(), 0.001.into()),
        ("optimizer".into(), "sgd".into()),
    ];
    let metrics: Vec<(String, f64)> = vec![
        ("hparam/accuracy".into(), 0.82),
        ("hparam/test_loss".into(), 0.5063),
    ];

    let mut w = SummaryWriter::create(&kiln_dir)?;
    let mut ops = Vec::new();
    for (tag, value, step) in &scalars {
        w.add_scalar(tag, *value, *step)?;
        ops.push(json!({"op": "scalar", "tag": tag, "value": value, "step": step}));
    }
    for (name, t) in &tensors {
        let tag = format!("params/{name}");
        w.add_histogram(&tag, t, 3)?;
        ops.push(json!({"op": "histogram", "tag": tag, "tensor": name, "step": 3}));
    }
    for (tag, text, step) in &texts {
        w.add_text(tag, text, *step)?;
        ops.push(json!({"op": "text", "tag": tag, "text": text, "step": step}));
    }
    w.add_hparams(&hparams, &metrics, "hparams", 4690)?;
    let hp_json: serde_json::Map<String, Value> = hparams
        .iter()
        .map(|(k, v)| {
            let v = match v {
                HParamValue::Number(x) => json!(x),
                HParamValue::Text(s) => json!(s),
                HParamValue::Bool(b) => json!(b),
            };
            (k.clone(), v)
        })
        .collect();
    let metrics_json: serde_json::Map<String, Value> =
        metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    ops.push(
        json!({"op": "hparams", "hparams": hp_json, "metrics": metrics_json,
                    "run_name": "hparams", "step": 4690}),
    );
    w.close()?;

    let spec = tmp.path().join("spec.json");
    fs::write(
        &spec,
        json!({"sessions": [{"purge_step": null, "ops": ops}]}).to_string(),
    )?;
    python(&[
        "pytorch",
        &spec.display().to_string(),
        &torch_dir.display().to_string(),
        &tensor_file.display().to_string(),
    ])?;

    let kiln = dump(&kiln_dir)?;
    let torch = dump(&torch_dir)?;

    // Files: one run and its hparams sub-run, each file read to its end.
    let runs: Vec<&String> = get(&kiln, &["files"])?
        .as_object()
        .ok_or_else(|| anyhow!("files"))?
        .keys()
        .collect();
    ensure!(runs == ["." /* the log dir */, "hparams"], "runs {runs:?}");
    ensure!(get(&kiln, &["tails"])? == &json!({".": ["ok"], "hparams": ["ok"]}));
    let first = &get(&kiln, &["records", "."])?[0];
    ensure!(
        first.get("file_version") == Some(&json!(FILE_VERSION)),
        "{first}"
    );

    // Every record as PyTorch writes it (histograms' sum_squares aside).
    let (mut kiln_records, mut torch_records) = (data_records(&kiln)?, data_records(&torch)?);
    let (mut ks, mut ts) = (Vec::new(), Vec::new());
    take_sum_squares(&mut kiln_records, &mut ks);
    take_sum_squares(&mut torch_records, &mut ts);
    // (all-zero values have sum_squares 0, which protobuf leaves out)
    ensure!(ks.len() == tensors.len() - 1, "{} histograms", ks.len());
    assert_same_sum_squares(&ks, &ts)?;
    ensure_same(&kiln_records, &torch_records, "records")?;

    // The readers' views: equal to PyTorch's, and to what was logged.
    for view in ["scalars", "texts", "server_scalars"] {
        ensure_same(get(&kiln, &[view])?, get(&torch, &[view])?, view)?;
    }
    for (view, n) in [("histograms", tensors.len()), ("server_histograms", 0)] {
        let (mut k, mut t) = (get(&kiln, &[view])?.clone(), get(&torch, &[view])?.clone());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        take_sum_squares(&mut k, &mut a);
        take_sum_squares(&mut t, &mut b);
        ensure!(a.len() == n, "{view}: {} sum_squares", a.len());
        assert_same_sum_squares(&a, &b)?;
        ensure_same(&k, &t, view)?;
    }
    let mut expected: Vec<(&str, Vec<(i64, f64)>)> = Vec::new();
    for (tag, value, step) in &scalars {
        match expected.iter_mut().find(|(t, _)| t == tag) {
            Some((_, s)) => s.push((*step as i64, f32v(*value))),
            None => expected.push((tag, vec![(*step as i64, f32v(*value))])),
        }
    }
    for (tag, points) in &expected {
        ensure!(
            series(get(&kiln, &["scalars", ".", tag])?)? == *points,
            "{tag}"
        );
        ensure!(
            series(get(&kiln, &["server_scalars", ".", tag])?)? == *points,
            "{tag}"
        );
    }
    for (tag, text, step) in &texts {
        let got = get(&kiln, &["texts", ".", &format!("{tag}/text_summary")])?;
        ensure!(got == &json!([[step, [text]]]), "{tag}: {got}");
    }
    for (name, t) in &tensors {
        let h = histogram_of(t)?;
        let got = get(&kiln, &["histograms", ".", &format!("params/{name}")])?;
        ensure!(got[0][0] == json!(3), "{name} step");
        let limits: Vec<f64> = serde_json::from_value(got[0][1]["bucket_limit"].clone())?;
        let counts: Vec<f64> = serde_json::from_value(got[0][1]["bucket"].clone())?;
        ensure!(
            limits == h.bucket_limit && counts == h.bucket,
            "{name} buckets"
        );
        ensure!(got[0][1]["num"] == json!(t.numel() as f64), "{name} num");
    }

    // The HParams tab: one session, the hyperparameters and final metrics.
    let (mut kg, mut tg) = (
        get(&kiln, &["session_groups"])?.clone(),
        get(&torch, &["session_groups"])?.clone(),
    );
    strip_wall_times(&mut kg);
    strip_wall_times(&mut tg);
    ensure_same(&kg, &tg, "session_groups")?;
    let group = &kg[0];
    ensure!(group["name"] == json!("hparams"), "{group}");
    ensure!(
        group["hparams"]
            == json!({"batch_size": 64.0, "epochs": 5.0, "lr": 0.001, "optimizer": "sgd"}),
        "{group}"
    );
    let values: Vec<(String, f64, i64)> = group["metric_values"]
        .as_array()
        .ok_or_else(|| anyhow!("metric_values"))?
        .iter()
        .map(|m| {
            (
                m["name"]["tag"].as_str().unwrap_or("").to_string(),
                m["value"].as_f64().unwrap_or(f64::NAN),
                m["training_step"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let want: Vec<(String, f64, i64)> = metrics
        .iter()
        .map(|(k, v)| (k.clone(), f32v(*v), 4690))
        .collect();
    ensure!(values == want, "{values:?}");
    Ok(())
}

#[test]
fn booleans_are_hparams_booleans_and_a_second_session_replaces_the_first() -> Result<()> {
    python_path()?;
    let tmp = TempDir::new("tb-hparams")?;
    let mut w = SummaryWriter::create(tmp.path())?;
    let first = vec![("shuffle".to_string(), HParamValue::Bool(true))];
    w.add_hparams(&first, &[("hparam/loss".into(), 1.0)], "hparams", 10)?;
    let second = vec![
        ("shuffle".to_string(), HParamValue::Bool(false)),
        ("epochs".to_string(), HParamValue::Number(8.0)),
    ];
    w.add_hparams(&second, &[("hparam/loss".into(), 0.5)], "hparams", 20)?;
    w.close()?;
    ensure!(event_files(&tmp.path().join("hparams"))?.len() == 1);
    let d = dump(tmp.path())?;
    let groups = get(&d, &["session_groups"])?;
    ensure!(groups.as_array().map(Vec::len) == Some(1), "{groups}");
    ensure!(
        groups[0]["hparams"] == json!({"shuffle": false, "epochs": 8.0}),
        "{groups}"
    );
    ensure!(
        groups[0]["metric_values"][0]["value"] == json!(0.5),
        "{groups}"
    );
    ensure!(
        groups[0]["metric_values"][0]["training_step"] == json!(20),
        "{groups}"
    );
    Ok(())
}

fn step_info(step: usize, stepped: bool, loss: f64, samples_per_sec: f64) -> StepInfo {
    StepInfo {
        skipped: false,
        epoch: 1 + (step.saturating_sub(1)) / 10,
        batch: step % 10,
        batch_len: 64,
        dataset_len: 640,
        step,
        stepped,
        loss,
        metrics: Vec::new(),
        lr: Some(0.1 / step.max(1) as f64),
        grad_norm: Some(1.0 + step as f64 / 100.0),
        samples_per_sec,
        log: false,
        timings: Default::default(),
    }
}

fn eval_info(step: usize, test_loss: f64) -> EvalInfo {
    EvalInfo {
        epoch: step / 10,
        step,
        metrics: vec![
            ("test_accuracy".into(), 1.0 - test_loss / 10.0),
            ("test_loss".into(), test_loss),
            ("test_top5_accuracy".into(), 0.99),
        ],
        end_of_epoch: true,
    }
}

fn progress(step: usize) -> Progress {
    Progress::epoch_start(1 + step / 10, step)
}

/// A model-like set of parameters with gradients (one without).
fn params_with_grads() -> Result<Vec<(String, Tensor)>> {
    let _global = common::global_state();
    tch::manual_seed(3);
    let w = Tensor::f_randn([8, 4], (Kind::Float, Device::Cpu))?.set_requires_grad(true);
    let b = Tensor::f_zeros([8], (Kind::Float, Device::Cpu))?.set_requires_grad(true);
    let frozen = Tensor::f_ones([3], (Kind::Float, Device::Cpu))?.set_requires_grad(true);
    let x = Tensor::f_randn([5, 4], (Kind::Float, Device::Cpu))?;
    let y = x.f_matmul(&w.f_transpose(0, 1)?)?.f_add(&b)?;
    let loss = y.f_mul(&y)?.f_sum(Kind::Float)?;
    loss.f_backward()?;
    Ok(vec![
        ("layer.weight".into(), w),
        ("layer.bias".into(), b),
        ("frozen".into(), frozen),
    ])
}

#[test]
fn logger_writes_lightning_style_tags_hparams_and_histograms() -> Result<()> {
    python_path()?;
    let tmp = TempDir::new("tb-logger")?;
    let flags = json!({"lr": 0.1, "epochs": 12, "optimizer": "sgd", "no_shuffle": true,
                       "seed": null, "data": {"train_samples": 640}});
    let config = TensorBoardConfig {
        log_every_n_steps: 5,
        flush_interval: Duration::from_secs(3600),
        flags: Some(flags.clone()),
        histograms: false,
    };
    let mut logger = TensorBoardLogger::create(tmp.path(), config, Notices::ignore())?;
    logger.on_run_start(&progress(0))?;
    let loss = |s: usize| 2.0 / (s as f64 + 1.0);
    let sps = |b: usize| 1000.0 + 37.0 * b as f64;
    // Two batches per optimizer step (gradient accumulation), 12 steps.
    let (mut batch, mut samples, mut secs) = (0, 0.0, 0.0);
    let mut expected_rate = Vec::new();
    for step in 1..=12usize {
        for stepped in [false, true] {
            batch += 1;
            samples += 64.0;
            secs += 64.0 / sps(batch);
            logger.on_batch_end(&step_info(step, stepped, loss(step), sps(batch)))?;
        }
        if step % 5 == 0 {
            expected_rate.push((step as i64, f32v(samples / secs)));
            (samples, secs) = (0.0, 0.0);
        }
        if step % 6 == 0 {
            logger.on_eval_end(&eval_info(step, 1.0 / step as f64))?;
            logger.flush()?;
        }
    }
    let params = params_with_grads()?;
    logger.log_histograms(&params, 12)?;
    logger.on_run_end(&FitSummary {
        stop: StopReason::Completed,
        steps: 12,
        last_eval: None,
        last_checkpoint: None,
        timings: Default::default(),
    })?;
    logger.close()?;

    let d = dump(tmp.path())?;
    let at = |steps: &[usize], f: &dyn Fn(usize) -> f64| -> Vec<(i64, f64)> {
        steps.iter().map(|&s| (s as i64, f32v(f(s)))).collect()
    };
    let logged = [5, 10];
    let checks: Vec<(&str, Vec<(i64, f64)>)> = vec![
        ("train/loss", at(&logged, &loss)),
        ("train/lr", at(&logged, &|s| 0.1 / s as f64)),
        ("train/grad_norm", at(&logged, &|s| 1.0 + s as f64 / 100.0)),
        ("epoch", at(&logged, &|s| (1 + (s - 1) / 10) as f64)),
        ("train/samples_per_sec", expected_rate),
        ("test/loss", at(&[6, 12], &|s| 1.0 / s as f64)),
        (
            "test/accuracy",
            at(&[6, 12], &|s| 1.0 - 1.0 / s as f64 / 10.0),
        ),
        ("test/top5_accuracy", at(&[6, 12], &|_| 0.99)),
    ];
    let scalars = get(&d, &["scalars", "."])?;
    let tags: Vec<&String> = scalars
        .as_object()
        .ok_or_else(|| anyhow!("tags"))?
        .keys()
        .collect();
    ensure!(tags.len() == checks.len(), "tags {tags:?}");
    for (tag, want) in &checks {
        ensure!(
            series(&scalars[*tag])? == *want,
            "{tag}: {} vs {want:?}",
            scalars[*tag]
        );
        ensure!(
            series(get(&d, &["server_scalars", ".", tag])?)? == *want,
            "server {tag}"
        );
    }

    let text = get(&d, &["texts", ".", "config/text_summary"])?;
    let pretty = serde_json::to_string_pretty(&flags)?;
    ensure!(
        text == &json!([[0, [format!("```json\n{pretty}\n```")]]]),
        "{text}"
    );

    let hist = get(&d, &["histograms", "."])?;
    let mut names: Vec<&String> = hist
        .as_object()
        .ok_or_else(|| anyhow!("h"))?
        .keys()
        .collect();
    names.sort();
    ensure!(
        names
            == [
                "grads/layer.bias",
                "grads/layer.weight",
                "params/frozen",
                "params/layer.bias",
                "params/layer.weight"
            ],
        "{names:?}"
    );
    for (name, t) in &params {
        let h = histogram_of(t)?;
        let got = &hist[format!("params/{name}")][0];
        ensure!(
            got[0] == json!(12) && got[1]["bucket"] == json!(h.bucket),
            "params/{name}"
        );
        let g = t.f_grad()?;
        if g.defined() {
            let h = histogram_of(&g)?;
            let got = &hist[format!("grads/{name}")][0];
            ensure!(
                got[1]["bucket_limit"] == json!(h.bucket_limit),
                "grads/{name}"
            );
        }
    }

    let groups = get(&d, &["session_groups"])?;
    ensure!(groups.as_array().map(Vec::len) == Some(1), "{groups}");
    ensure!(
        groups[0]["hparams"]
            == json!({"data/train_samples": 640.0, "epochs": 12.0, "lr": 0.1,
                      "no_shuffle": true, "optimizer": "sgd"}),
        "{groups}"
    );
    let mut metrics: Vec<(String, f64)> = groups[0]["metric_values"]
        .as_array()
        .ok_or_else(|| anyhow!("metric_values"))?
        .iter()
        .map(|m| {
            (
                m["name"]["tag"].as_str().unwrap_or("").to_string(),
                m["value"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    metrics.sort_by(|a, b| a.0.cmp(&b.0));
    let want = vec![
        ("hparam/test_accuracy".to_string(), f32v(1.0 - 1.0 / 120.0)),
        ("hparam/test_loss".to_string(), f32v(1.0 / 12.0)),
        ("hparam/test_top5_accuracy".to_string(), f32v(0.99)),
        ("hparam/train_loss".to_string(), f32v(loss(12))),
    ];
    ensure!(metrics == want, "{metrics:?}");
    Ok(())
}

#[test]
fn killed_and_resumed_run_reads_as_one_curve() -> Result<()> {
    python_path()?;
    let tmp = TempDir::new("tb-resume")?;
    let dir = tmp.path().join("run");
    let flags = json!({"epochs": 4});
    let config = TensorBoardConfig {
        log_every_n_steps: 5,
        flush_interval: Duration::from_secs(3600),
        flags: Some(flags),
        histograms: false,
    };
    // Values of the first process and of the resumed one differ, so that
    // the reader's choice shows (a real resumed run repeats the same ones).
    let first = |s: usize| 10.0 + s as f64;
    let second = |s: usize| 100.0 + s as f64;

    // The first process: epochs of 10 steps, checkpoints at 10 and 20,
    // flushed at epoch ends; killed at step 33, after its step-30 flush.
    let mut a = TensorBoardLogger::create(&dir, config.clone(), Notices::ignore())?;
    a.on_run_start(&progress(0))?;
    for step in 1..=33 {
        a.on_batch_end(&step_info(step, true, first(step), 500.0))?;
        if step % 10 == 0 {
            a.on_eval_end(&eval_info(step, first(step)))?;
            a.flush()?;
        }
    }
    let old_file = a.writer()?.path().to_path_buf();
    std::mem::forget(a); // kill -9: the queued steps 31-33 are lost
                         // ... while it was writing a record: half of one is left at the end.
    let mut torn = Vec::new();
    encode_record(b"an event cut short by the kill", &mut torn);
    fs::OpenOptions::new()
        .append(true)
        .open(&old_file)?
        .write_all(&torn[..20])?;

    // Before the resume, a reader sees the first process's steps up to 30.
    let before = dump(&dir)?;
    ensure!(
        series(get(&before, &["scalars", ".", "train/loss"])?)?
            == at_steps(&[5, 10, 15, 20, 25, 30], &first)
    );

    // Resumed from the checkpoint at step 20 (the newest one), to the end.
    let mut b = TensorBoardLogger::resume(&dir, 20, config, Notices::ignore())?;
    b.on_run_start(&progress(20))?;
    for step in 21..=40 {
        b.on_batch_end(&step_info(step, true, second(step), 500.0))?;
        if step % 10 == 0 {
            b.on_eval_end(&eval_info(step, second(step)))?;
            b.flush()?;
        }
    }
    b.on_run_end(&FitSummary {
        stop: StopReason::Completed,
        steps: 40,
        last_eval: None,
        last_checkpoint: None,
        timings: Default::default(),
    })?;
    b.close()?;

    let files = event_files(&dir)?;
    ensure!(files.len() == 2 && files[0] == old_file, "{files:?}");
    let d = dump(&dir)?;
    ensure!(
        get(&d, &["tails", "."])? == &json!(["truncated", "ok"]),
        "{}",
        d["tails"]
    );
    let loss_curve = [
        at_steps(&[5, 10, 15, 20], &first),
        at_steps(&[25, 30, 35, 40], &second),
    ]
    .concat();
    let test_curve = [at_steps(&[10, 20], &first), at_steps(&[30, 40], &second)].concat();
    for view in ["scalars", "server_scalars"] {
        let got = series(get(&d, &[view, ".", "train/loss"])?)?;
        ensure!(got == loss_curve, "{view}: {got:?}");
        ensure!(
            series(get(&d, &[view, ".", "test/loss"])?)? == test_curve,
            "{view}"
        );
        let epochs = series(get(&d, &[view, ".", "epoch"])?)?;
        let steps: Vec<i64> = epochs.iter().map(|p| p.0).collect();
        ensure!(
            steps == [5, 10, 15, 20, 25, 30, 35, 40],
            "{view} epoch steps {steps:?}"
        );
    }
    // The flags of the first start and of the resumed one.
    let texts = get(&d, &["texts", ".", "config/text_summary"])?;
    let steps: Vec<i64> = texts
        .as_array()
        .ok_or_else(|| anyhow!("texts"))?
        .iter()
        .filter_map(|t| t[0].as_i64())
        .collect();
    ensure!(steps == [0, 20], "{texts}");
    // The purge marker itself, first in the new file after its version.
    let records = read_events(&files[1])?;
    let start = records
        .iter()
        .find_map(|e| match &e.what {
            Some(What::SessionLog(log)) => Some((e.step, log.status)),
            _ => None,
        })
        .ok_or_else(|| anyhow!("no SessionLog in the resumed file"))?;
    ensure!(start == (21, 1), "{start:?}");
    let groups = get(&d, &["session_groups"])?;
    ensure!(
        groups[0]["metric_values"].as_array().map(Vec::len) == Some(4),
        "{groups}"
    );
    Ok(())
}

fn at_steps(steps: &[usize], f: &dyn Fn(usize) -> f64) -> Vec<(i64, f64)> {
    steps.iter().map(|&s| (s as i64, f32v(f(s)))).collect()
}

// ---- Without Python -------------------------------------------------------

#[test]
fn records_are_tfrecords_with_masked_crc32c() -> Result<()> {
    // The checksum of a real TensorFlow event file's record (TensorBoard's
    // Rust data server tests its reader with the same record).
    ensure!(masked_crc32c(b"\x1a\x11CRC test, one two") == 0x5794_d08a);
    let mut bytes = Vec::new();
    encode_record(b"hello", &mut bytes);
    encode_record(b"", &mut bytes);
    ensure!(bytes.len() == 16 + 5 + 16);
    ensure!(bytes[..8] == 5u64.to_le_bytes());
    let path = Path::new("x.tfevents");
    let records = read_records(path, &bytes)?;
    ensure!(records.payloads == [b"hello".to_vec(), Vec::new()] && records.torn_tail == 0);
    let cut = read_records(path, &bytes[..bytes.len() - 3])?;
    ensure!(cut.payloads.len() == 1 && cut.torn_tail == 13);
    for flip in [2, 9, 14] {
        let mut bad = bytes.clone();
        bad[flip] ^= 1;
        let err = match read_records(path, &bad) {
            Ok(r) => bail!("byte {flip} flipped, read {r:?}"),
            Err(e) => e.to_string(),
        };
        ensure!(
            err.contains("x.tfevents") && err.contains("checksum"),
            "{err}"
        );
    }
    Ok(())
}

#[test]
fn events_reach_the_file_on_flush_or_within_the_flush_interval() -> Result<()> {
    let tmp = TempDir::new("tb-flush")?;
    let scalar_steps = |path: &Path| -> Result<Vec<i64>> {
        Ok(read_events(path)?
            .iter()
            .filter(|e| matches!(e.what, Some(What::Summary(_))))
            .map(|e| e.step)
            .collect())
    };
    let slow = WriterOptions {
        flush_interval: Duration::from_secs(3600),
        ..WriterOptions::default()
    };
    let mut w = SummaryWriter::with_options(&tmp.path().join("slow"), &slow)?;
    let path = w.path().to_path_buf();
    let first = read_events(&path)?;
    ensure!(first.len() == 1 && first[0].what == Some(What::FileVersion(FILE_VERSION.into())));
    w.add_scalar("a", 1.0, 1)?;
    ensure!(scalar_steps(&path)?.is_empty(), "buffered until a flush");
    w.flush()?;
    ensure!(scalar_steps(&path)? == [1]);
    w.add_scalar("a", 2.0, 2)?;
    drop(w);
    ensure!(
        scalar_steps(&path)? == [1, 2],
        "dropping writes what is queued"
    );

    let fast = WriterOptions {
        flush_interval: Duration::from_millis(100),
        ..WriterOptions::default()
    };
    let mut w = SummaryWriter::with_options(&tmp.path().join("fast"), &fast)?;
    w.add_scalar("a", 1.0, 7)?;
    let path = w.path().to_path_buf();
    let mut seen = Vec::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        seen = scalar_steps(&path)?;
        if !seen.is_empty() {
            break;
        }
    }
    ensure!(seen == [7], "the flush thread wrote {seen:?}");
    w.close()?;
    Ok(())
}

#[test]
fn new_files_sort_after_existing_ones_and_errors_name_the_path() -> Result<()> {
    let tmp = TempDir::new("tb-names")?;
    let mut created = Vec::new();
    for _ in 0..12 {
        let w = SummaryWriter::create(tmp.path())?;
        created.push(w.path().to_path_buf());
        w.close()?;
    }
    ensure!(event_files(tmp.path())? == created, "{created:?}");
    let name = created[0]
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("name"))?;
    let fields: Vec<&str> = name.split('.').collect();
    ensure!(
        name.starts_with("events.out.tfevents.") && fields[3].len() == 10,
        "{name}"
    );
    ensure!(
        fields[fields.len() - 2] == std::process::id().to_string(),
        "{name}"
    );

    let blocker = tmp.file("not-a-dir", "x")?;
    let err = match SummaryWriter::create(&blocker.join("logs")) {
        Ok(_) => bail!("created a log under a file"),
        Err(e) => e.to_string(),
    };
    ensure!(err.contains("not-a-dir"), "{err}");
    let mut w = SummaryWriter::create(&tmp.path().join("ok"))?;
    ensure!(w.add_scalar("", 1.0, 0).is_err());
    ensure!(w.add_hparams(&[], &[], "../escape", 0).is_err());
    ensure!(w
        .add_histogram("h", &Tensor::f_zeros([0], (Kind::Float, Device::Cpu))?, 0)
        .is_err());
    Ok(())
}
