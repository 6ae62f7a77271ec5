//! `kiln predict`: a trained run's outputs for the test set equal PyTorch's
//! for the same weights (tests/golden/predict/reference.py), in both file
//! formats; bad requests get one line.
use crate::common;

use common::{data_dir, kiln, pytorch, read_safetensors, text, train_args, StoredTensor};
use std::path::Path;

const TEST_SAMPLES: &str = "100";

fn tensor<'t>(tensors: &'t [StoredTensor], name: &str) -> &'t StoredTensor {
    tensors.iter().find(|t| t.name == name).unwrap_or_else(|| {
        panic!(
            "no '{name}' among {:?}",
            tensors.iter().map(|t| &t.name).collect::<Vec<_>>()
        )
    })
}

fn i64s(t: &StoredTensor) -> Vec<i64> {
    assert_eq!(t.dtype, "I64", "{}: not int64", t.name);
    t.bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
        .collect()
}

/// A short run of the quickstart model with checkpoints.
fn trained_run(name: &str) -> std::path::PathBuf {
    let run = common::temp_dir(name);
    let args = train_args(
        &run,
        &[
            "--seed",
            "3",
            "--epochs",
            "1",
            "--train-samples",
            "640",
            "--test-samples",
            TEST_SAMPLES,
            "--lr",
            "0.01",
        ],
    );
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kiln(&argv);
    assert!(out.status.success(), "{}", text(&out).1);
    run
}

fn predict(run: &Path, output: &Path) {
    let out = kiln(&[
        "predict",
        "--checkpoint",
        run.to_str().unwrap_or(""),
        "--output",
        output.to_str().unwrap_or(""),
    ]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("wrote {}", output.display())),
        "{stderr}"
    );
}

#[test]
fn predictions_equal_pytorchs_for_the_same_weights() {
    let run = trained_run("predict");
    let ours = run.join("predictions.safetensors");
    let csv = run.join("predictions.csv");
    predict(&run, &ours);
    predict(&run, &csv);
    let weights = common::newest(&run).join("model.safetensors");
    let reference = run.join("reference.safetensors");
    pytorch(
        "tests/golden/predict/reference.py",
        &[
            weights.to_str().unwrap_or(""),
            data_dir().to_str().unwrap_or(""),
            TEST_SAMPLES,
            reference.to_str().unwrap_or(""),
        ],
    );
    let (ours, theirs) = (read_safetensors(&ours), read_safetensors(&reference));
    let names: Vec<&str> = ours.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let (out, ref_out) = (tensor(&ours, "outputs"), tensor(&theirs, "outputs"));
    assert_eq!(out.shape, vec![100, 10]);
    assert_eq!(out.shape, ref_out.shape);
    // Same kernels on the same weights and inputs: equal up to 1e-6.
    for (i, (a, b)) in out.f32s().iter().zip(ref_out.f32s()).enumerate() {
        assert!((a - b).abs() <= 1e-6, "output {i}: kiln {a}, PyTorch {b}");
    }
    assert_eq!(
        i64s(tensor(&ours, "targets")),
        i64s(tensor(&theirs, "targets"))
    );

    let classes = i64s(tensor(&theirs, "class"));
    let probabilities = tensor(&theirs, "probability").f32s();
    let csv = std::fs::read_to_string(&csv).unwrap_or_default();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("index,class,probability"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 100);
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), 3, "row {i}: {row}");
        assert_eq!(cells[0], i.to_string(), "row {i}: {row}");
        assert_eq!(cells[1], classes[i].to_string(), "row {i}: {row}");
        let p: f32 = cells[2].parse().unwrap_or(f32::NAN);
        assert!(
            (p - probabilities[i]).abs() <= 1e-6,
            "row {i}: kiln {p}, PyTorch {}",
            probabilities[i]
        );
    }
}

#[test]
fn bad_predict_requests_get_one_line() {
    let run = trained_run("predict-errors");
    let run_arg = run.to_str().unwrap_or("");
    let bad = |args: &[&str], code: i32, wanted: &str| {
        let out = kiln(args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("kiln:")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].contains(wanted), "{args:?}: {stderr}");
    };
    let txt = run.join("p.txt");
    bad(
        &[
            "predict",
            "--checkpoint",
            run_arg,
            "--output",
            txt.to_str().unwrap_or(""),
        ],
        2,
        "unknown extension '.txt'; use FILE.safetensors",
    );
    let out = run.join("p.csv");
    bad(
        &[
            "predict",
            "--checkpoint",
            run_arg,
            "--which",
            "best",
            "--output",
            out.to_str().unwrap_or(""),
        ],
        2,
        "has no best checkpoint",
    );
    let empty = common::temp_dir("predict-empty");
    bad(
        &[
            "predict",
            "--checkpoint",
            empty.to_str().unwrap_or(""),
            "--output",
            out.to_str().unwrap_or(""),
        ],
        1,
        "no valid checkpoint here",
    );
    assert!(!out.exists(), "a failed predict wrote {}", out.display());
}

#[test]
fn regression_predictions_give_one_value_per_row() {
    let dir = common::temp_dir("predict-regression");
    let mut rows = String::from("size,rooms,price\n");
    for i in 0..120 {
        let (size, rooms) = (30 + (i * 7) % 90, 1 + i % 4);
        rows.push_str(&format!("{size},{rooms},{}\n", 2 * size + 15 * rooms + 5));
    }
    let csv = dir.join("prices.csv");
    std::fs::write(&csv, rows).unwrap_or_default();
    let spec = format!("csv:{},target=price", csv.display());
    let run = dir.join("run");
    let out = kiln(&[
        "train",
        "--data",
        &spec,
        "--epochs",
        "1",
        "--optimizer",
        "adam:lr=0.01",
        "--seed",
        "1",
        "--run-dir",
        run.to_str().unwrap_or(""),
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    let (tensors, rows) = (dir.join("p.safetensors"), dir.join("p.csv"));
    predict(&run, &tensors);
    predict(&run, &rows);
    let tensors = read_safetensors(&tensors);
    let outputs = tensor(&tensors, "outputs");
    let targets = tensor(&tensors, "targets");
    assert_eq!(outputs.shape.len(), 2, "{:?}", outputs.shape);
    assert_eq!(outputs.shape[1], 1);
    assert_eq!(targets.shape, outputs.shape);
    let values = outputs.f32s();
    let text = std::fs::read_to_string(&rows).unwrap_or_default();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("index,value"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), values.len());
    for (i, (row, value)) in rows.iter().zip(&values).enumerate() {
        // The CSV's numbers read back as the very float32 values.
        assert_eq!(*row, format!("{i},{value}"));
    }
}
