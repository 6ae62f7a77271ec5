//! The metrics log: file formats, CSV widening, torn lines, resume truncation.
use crate::common;

use anyhow::{ensure, Result};
use common::TempDir;
use kiln_loop::loggers::metrics_log::{
    has_metrics, read_metrics, Formats, MetricRecord, MetricsWriter, Scope, EPOCH_CSV,
    METRICS_FILE, STEP_CSV,
};
use std::fs;
use std::io::Write;
use std::path::Path;

fn read(dir: &Path, name: &str) -> Result<String> {
    Ok(fs::read_to_string(dir.join(name))?)
}

/// Files in `dir` whose name starts with a dot (temporary files).
fn hidden_files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            names.push(name);
        }
    }
    Ok(names)
}

#[test]
fn writes_jsonl_and_csvs_with_sorted_keys() -> Result<()> {
    let tmp = TempDir::new("formats")?;
    let dir = tmp.path().join("run"); // created by `create`
    let mut writer = MetricsWriter::create(&dir)?;
    ensure!(!has_metrics(&dir), "a fresh log is empty");
    writer.log_step(1, 1, [("lr", 0.001), ("loss", 2.5)])?;
    writer.log_step(2, 1, [("loss", 0.1), ("lr", 0.001)])?;
    writer.log_epoch(2, 1, [("loss", 1.25), ("accuracy", 0.5)])?;
    ensure!(has_metrics(&dir));

    let jsonl = read(&dir, METRICS_FILE)?;
    let expected = concat!(
        r#"{"scope":"step","step":1,"epoch":1,"values":{"loss":2.5,"lr":0.001}}"#,
        "\n",
        r#"{"scope":"step","step":2,"epoch":1,"values":{"loss":0.1,"lr":0.001}}"#,
        "\n",
        r#"{"scope":"epoch","step":2,"epoch":1,"values":{"accuracy":0.5,"loss":1.25}}"#,
        "\n",
    );
    ensure!(jsonl == expected, "metrics.jsonl:\n{jsonl}");
    let step_csv = read(&dir, STEP_CSV)?;
    ensure!(
        step_csv == "step,epoch,loss,lr\n1,1,2.5,0.001\n2,1,0.1,0.001\n",
        "{step_csv}"
    );
    let epoch_csv = read(&dir, EPOCH_CSV)?;
    ensure!(
        epoch_csv == "step,epoch,accuracy,loss\n2,1,0.5,1.25\n",
        "{epoch_csv}"
    );

    let records = read_metrics(&dir, &mut |_| {})?;
    ensure!(records.len() == 3);
    ensure!(records[0] == MetricRecord::new(Scope::Step, 1, 1, [("loss", 2.5), ("lr", 0.001)]));
    ensure!(records[2].scope == Scope::Epoch && records[2].get("accuracy") == Some(0.5));
    ensure!(
        hidden_files(&dir)?.is_empty(),
        "temporary files left behind"
    );
    Ok(())
}

#[test]
fn a_new_metric_widens_the_csv_and_values_round_trip() -> Result<()> {
    let tmp = TempDir::new("widen")?;
    let dir = tmp.path();
    let mut writer = MetricsWriter::create(dir)?;
    writer.log_step(1, 1, [("loss", 1.0)])?;
    writer.log_step(2, 1, [("loss", 0.30000001192092896)])?;
    writer.log_step(3, 1, [("loss", f64::NAN), ("grad norm, max", 7.0)])?;
    writer.log_step(4, 1, [("loss", f64::INFINITY), ("lr", 1e-5)])?;
    writer.log_step(5, 1, [("loss", f64::NEG_INFINITY)])?;
    let csv = read(dir, STEP_CSV)?;
    ensure!(
        csv == "step,epoch,\"grad norm, max\",loss,lr\n\
                1,1,,1,\n\
                2,1,,0.30000001192092896,\n\
                3,1,7,NaN,\n\
                4,1,,inf,0.00001\n\
                5,1,,-inf,\n",
        "{csv}"
    );
    ensure!(read(dir, EPOCH_CSV)? == "step,epoch\n");
    let records = read_metrics(dir, &mut |_| {})?;
    let loss: Vec<f64> = records.iter().filter_map(|r| r.get("loss")).collect();
    ensure!(loss.len() == 5);
    ensure!(loss[1] == 0.30000001192092896, "shortest round trip");
    ensure!(loss[2].is_nan() && loss[3] == f64::INFINITY && loss[4] == f64::NEG_INFINITY);
    ensure!(read(dir, METRICS_FILE)?.contains(r#""loss":"NaN""#));
    ensure!(hidden_files(dir)?.is_empty(), "temporary files left behind");
    Ok(())
}

#[test]
fn reserved_or_empty_metric_names_are_refused() -> Result<()> {
    let tmp = TempDir::new("names")?;
    let mut writer = MetricsWriter::create(tmp.path())?;
    for bad in ["step", "epoch", "", "a\nb"] {
        let err = match writer.log_step(1, 1, [(bad, 1.0)]) {
            Ok(()) => anyhow::bail!("metric name {bad:?} was accepted"),
            Err(e) => e.to_string(),
        };
        ensure!(err.contains("metric name"), "{err}");
    }
    ensure!(
        read_metrics(tmp.path(), &mut |_| {})?.is_empty(),
        "nothing was written"
    );
    Ok(())
}

#[test]
fn a_torn_last_line_is_ignored_and_a_bad_middle_line_is_an_error() -> Result<()> {
    let tmp = TempDir::new("torn")?;
    let dir = tmp.path();
    let mut writer = MetricsWriter::create(dir)?;
    writer.log_step(1, 1, [("loss", 1.0)])?;
    writer.log_step(2, 1, [("loss", 0.5)])?;
    drop(writer);
    // A SIGKILL in the middle of a write leaves part of a line.
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(dir.join(METRICS_FILE))?;
    file.write_all(br#"{"scope":"step","step":3,"epoch":1,"values":{"loss":0.2"#)?;
    drop(file);
    let mut warnings = Vec::new();
    let records = read_metrics(dir, &mut |w| warnings.push(w))?;
    ensure!(records.len() == 2, "{records:?}");
    ensure!(records[1].step == 2);
    // Said, not silently dropped.
    ensure!(
        warnings.len() == 1 && warnings[0].contains("line 3: ignoring an incomplete last line"),
        "{warnings:?}"
    );

    // The same damage on a line that is not the last one is an error naming
    // the file and the line.
    let path = dir.join(METRICS_FILE);
    let mut text = fs::read_to_string(&path)?;
    text.push_str("\n{\"scope\":\"step\",\"step\":4,\"epoch\":1,\"values\":{}}\n");
    fs::write(&path, text)?;
    let err = match read_metrics(dir, &mut |_| {}) {
        Ok(r) => anyhow::bail!("read a damaged file: {r:?}"),
        Err(e) => e.to_string(),
    };
    ensure!(
        err.contains("metrics.jsonl") && err.contains("line 3:"),
        "{err}"
    );

    fs::write(
        &path,
        "{\"scope\":\"month\",\"step\":1,\"epoch\":1,\"values\":{}}\n",
    )?;
    let err = read_metrics(dir, &mut |_| {})
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(err.contains("line 1:") && err.contains("month"), "{err}");

    fs::write(&path, "")?;
    ensure!(
        read_metrics(dir, &mut |_| {})?.is_empty(),
        "an empty log has no records"
    );
    Ok(())
}

#[test]
fn reading_a_directory_without_a_log_names_the_file() -> Result<()> {
    let tmp = TempDir::new("missing")?;
    let err = read_metrics(tmp.path(), &mut |_| {})
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err.contains("metrics.jsonl") && err.contains("run directory"),
        "{err}"
    );
    let gone = tmp.path().join("nope");
    let err = MetricsWriter::open_append(&gone, 0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(err.contains("does not exist"), "{err}");
    Ok(())
}

/// The records a deterministic 3-epoch run of 4 steps per epoch logs, in
/// order; `accuracy` first appears in epoch 2 and `momentum` at step 10, so
/// the CSVs widen both before and after the resume point.
fn run_records() -> Vec<MetricRecord> {
    let mut records = Vec::new();
    for epoch in 1..=3u64 {
        for i in 1..=4u64 {
            let step = (epoch - 1) * 4 + i;
            let mut values = vec![("loss", 1.0 / step as f64), ("lr", 0.1 / epoch as f64)];
            if step >= 10 {
                values.push(("momentum", 0.9));
            }
            records.push(MetricRecord::new(Scope::Step, step, epoch, values));
        }
        let mut values = vec![("loss", 0.5 / epoch as f64)];
        if epoch >= 2 {
            values.push(("accuracy", 0.25 * epoch as f64));
        }
        records.push(MetricRecord::new(Scope::Epoch, epoch * 4, epoch, values));
    }
    records
}

#[test]
fn a_resumed_run_writes_the_same_files_as_an_uninterrupted_one() -> Result<()> {
    let records = run_records();
    let tmp = TempDir::new("resume")?;
    let whole = tmp.path().join("whole");
    let mut writer = MetricsWriter::create(&whole)?;
    for r in &records {
        writer.log(r)?;
    }
    drop(writer);

    // Checkpoint after epoch 1 (step 4); the run goes on to step 9, then is
    // killed in the middle of writing step 10.
    let resumed = tmp.path().join("resumed");
    let mut writer = MetricsWriter::create(&resumed)?;
    for r in records.iter().filter(|r| r.step <= 9) {
        writer.log(r)?;
    }
    drop(writer);
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(resumed.join(METRICS_FILE))?;
    file.write_all(br#"{"scope":"step","step":10,"ep"#)?;
    drop(file);
    ensure!(read_metrics(&resumed, &mut |_| {})?
        .iter()
        .any(|r| r.step > 4));

    let checkpoint_step = 4;
    let mut writer = MetricsWriter::open_append(&resumed, checkpoint_step)?;
    let kept = read_metrics(&resumed, &mut |_| {})?;
    ensure!(
        kept.len() == 5 && kept.iter().all(|r| r.step <= 4),
        "{kept:?}"
    );
    ensure!(
        read(&resumed, EPOCH_CSV)? == "step,epoch,loss\n4,1,0.5\n",
        "the CSVs are truncated too"
    );
    for r in records.iter().filter(|r| r.step > checkpoint_step) {
        writer.log(r)?;
    }
    drop(writer);

    for name in [METRICS_FILE, STEP_CSV, EPOCH_CSV] {
        let a = read(&whole, name)?;
        let b = read(&resumed, name)?;
        ensure!(
            a == b,
            "{name} differs:\n--- uninterrupted\n{a}\n--- resumed\n{b}"
        );
    }
    ensure!(read(&whole, EPOCH_CSV)?.starts_with("step,epoch,accuracy,loss\n4,1,,0.5\n"));
    ensure!(
        hidden_files(&resumed)?.is_empty(),
        "temporary files left behind"
    );

    // Resuming a directory that has no metrics yet starts them.
    let fresh = tmp.path().join("fresh");
    fs::create_dir_all(&fresh)?;
    let mut writer = MetricsWriter::open_append(&fresh, 0)?;
    writer.log_step(1, 1, [("loss", 1.0)])?;
    ensure!(read_metrics(&fresh, &mut |_| {})?.len() == 1);
    Ok(())
}

#[test]
fn open_append_refuses_a_damaged_log_instead_of_dropping_it() -> Result<()> {
    let tmp = TempDir::new("damaged")?;
    let dir = tmp.path();
    fs::write(dir.join(METRICS_FILE), "not json\n{}\n")?;
    let err = MetricsWriter::open_append(dir, 10)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(err.contains("line 1:"), "{err}");
    ensure!(
        read(dir, METRICS_FILE)? == "not json\n{}\n",
        "the file is untouched"
    );
    Ok(())
}

#[test]
fn csv_only_runs_resume_and_read_back_from_their_csvs() -> Result<()> {
    let tmp = TempDir::new("csv-only")?;
    let dir = tmp.path();
    let csv_only = Formats {
        jsonl: false,
        csv: true,
    };
    let mut writer = MetricsWriter::create_with(dir, csv_only)?;
    for step in 1..=4u64 {
        writer.log_step(step, 1, [("train_loss", 1.0 / step as f64), ("lr", 0.1)])?;
    }
    writer.log_epoch(4, 1, [("test_loss", 0.5), ("test_accuracy", f64::NAN)])?;
    writer.log_step(5, 2, [("train_loss", 0.2), ("note, quoted", 7.0)])?;
    drop(writer);
    ensure!(!dir.join(METRICS_FILE).exists(), "no JSONL was asked for");
    let records = read_metrics(dir, &mut |_| {})?;
    ensure!(records.len() == 6, "{records:?}");
    ensure!(
        records[4].scope == Scope::Epoch
            && records[4].get("test_accuracy").is_some_and(f64::is_nan)
    );
    ensure!(records[5].get("note, quoted") == Some(7.0));
    // A resume from step 4 drops step 5 from the CSVs.
    let mut writer = MetricsWriter::open_append_with(dir, 4, csv_only, &mut |_| {})?;
    writer.log_step(5, 2, [("train_loss", 0.25)])?;
    drop(writer);
    let records = read_metrics(dir, &mut |_| {})?;
    ensure!(
        records.len() == 6 && records[5].get("train_loss") == Some(0.25),
        "{records:?}"
    );
    ensure!(records[5].get("note, quoted").is_none());
    Ok(())
}
