//! The tools around a run (issue 24), end to end: `kiln train --profile`
//! (Lightning's simple-profiler table on stderr; a Chrome trace in the run
//! directory) and `kiln lr-find` (a suggestion on stdout, the chart and
//! nothing else in its directory).
use crate::common;

use common::{kiln, temp_dir, text, write_dataset};

fn small_data(name: &str) -> std::path::PathBuf {
    let dir = temp_dir(name);
    write_dataset(&dir, 320, 28, |i| (i % 10) as u8);
    dir
}

#[test]
fn profile_simple_prints_lightnings_table_at_the_end() {
    let data = small_data("profile-simple-data");
    let run = temp_dir("profile-simple").join("run");
    let out = kiln(&[
        "train",
        "--data-dir",
        data.to_str().unwrap_or(""),
        "--epochs",
        "1",
        "--seed",
        "1",
        "--profile",
        "simple",
        "--run-dir",
        run.to_str().unwrap_or(""),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.ends_with("Training completed\n"), "{stdout}");
    let report = stderr
        .split_once("FIT Profiler Report\n")
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("no report: {stderr}"));
    let rows: Vec<&str> = report.lines().filter(|l| l.starts_with("|  ")).collect();
    let header = "|  Action    \t|  Mean duration (s)\t|  Num calls      \t|  Total time (s) \t|  Percentage %   \t|";
    assert_eq!(rows.first().copied(), Some(header), "{report}");
    assert!(rows[1].starts_with("|  Total     \t|  -  "), "{report}");
    // 320 samples in batches of 64: 5 batches, 5 steps, one evaluation, one checkpoint.
    for (phase, calls) in [
        ("data", 5),
        ("forward", 5),
        ("backward", 5),
        ("optimizer", 5),
        ("evaluation", 1),
        ("checkpoint", 1),
    ] {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("|  {phase:<10}\t|")))
            .unwrap_or_else(|| panic!("no {phase} row: {report}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[3], calls.to_string(), "{row}");
    }
    assert!(
        rows.iter().any(|r| r.starts_with("|  logging ")),
        "{report}"
    );
}

#[test]
fn profile_trace_writes_a_chrome_trace_with_aten_operators() {
    let data = small_data("profile-trace-data");
    let run = temp_dir("profile-trace").join("run");
    let out = kiln(&[
        "train",
        "--data-dir",
        data.to_str().unwrap_or(""),
        "--epochs",
        "1",
        "--seed",
        "1",
        "--profile",
        "trace:steps=2,skip=1",
        "--run-dir",
        run.to_str().unwrap_or(""),
    ]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let traces: Vec<_> = std::fs::read_dir(run.join("profile"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(traces.len(), 1, "{traces:?}");
    assert!(
        stderr.contains(&format!("kiln: wrote {}", traces[0].display())),
        "{stderr}"
    );
    let trace: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&traces[0]).unwrap_or_default())
            .unwrap_or_else(|e| panic!("not JSON: {e}"));
    let events = trace["traceEvents"].as_array().cloned().unwrap_or_default();
    // The quickstart MLP's first layer on a batch of 64 flattened images.
    let first_layer = events.iter().find(|e| {
        e["name"] == "aten::linear" && e["args"]["Input Dims"][0] == serde_json::json!([64, 784])
    });
    assert!(first_layer.is_some(), "no aten::linear on [64, 784]");
    assert!(events.iter().any(|e| e["name"] == "aten::addmm"));
}

#[test]
fn a_bad_profile_is_a_usage_error() {
    let out = kiln(&["train", "--profile", "trace:steps=0", "--epochs", "1"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: --profile: trace: steps must be at least 1"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn lr_find_prints_a_suggestion_and_writes_only_its_chart() {
    let data = small_data("lr-find-data");
    let run = temp_dir("lr-find").join("find");
    let out = kiln(&[
        "lr-find",
        "--data-dir",
        data.to_str().unwrap_or(""),
        "--seed",
        "1",
        "--num-training",
        "30",
        "--run-dir",
        run.to_str().unwrap_or(""),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lr: f64 = stdout
        .strip_prefix("Suggested learning rate: ")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(lr > 1e-8 && lr <= 1.0, "{lr}");
    let mut written: Vec<String> = std::fs::read_dir(&run)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    written.sort();
    assert_eq!(written, ["lr_find.png", "lr_find.svg"]);
    let bad = kiln(&["lr-find", "--max-lr", "1e-9"]);
    let (_, stderr) = text(&bad);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: --max-lr must be larger"),
        "{stderr}"
    );
}
