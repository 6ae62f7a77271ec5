//! `kiln train` end to end on small generated data: any directory with the
//! four IDX files works, gzipped or not, and the model learns.
use crate::common;

use common::{kiln, temp_dir, text, write_dataset};

fn accuracies(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.strip_prefix(" Accuracy: "))
        .filter_map(|l| l.split('%').next())
        .filter_map(|v| v.parse().ok())
        .collect()
}

#[test]
fn learns_a_separable_generated_dataset() {
    let dir = temp_dir("small");
    write_dataset(&dir, 640, 28, |i| (i % 10) as u8);
    let out = kiln(&[
        "train",
        "--data-dir",
        dir.to_str().unwrap_or(""),
        "--epochs",
        "3",
        "--lr",
        "0.1",
        "--seed",
        "1",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("Epoch 1\n-------------------------------\nloss: "),
        "{stdout}"
    );
    assert!(stdout.contains("[    0/  640]"), "{stdout}");
    assert!(stdout.ends_with("Training completed\n"), "{stdout}");
    let acc = accuracies(&stdout);
    assert_eq!(acc.len(), 3, "{stdout}");
    assert!(acc[2] > 90.0, "accuracy {acc:?}");
}

#[test]
fn gzipped_files_and_other_image_sizes_work() {
    let dir = temp_dir("gz");
    write_dataset(&dir, 100, 12, |i| (i % 3) as u8);
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let raw = std::fs::read(&path).unwrap_or_default();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap_or_default();
        std::fs::write(path.with_extension("gz"), gz.finish().unwrap_or_default())
            .unwrap_or_default();
        std::fs::remove_file(&path).unwrap_or_default();
    }
    let out = kiln(&[
        "train",
        "--data-dir",
        dir.to_str().unwrap_or(""),
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--loss",
        "mse",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    // 100 test samples in batches of 32: all counted, accuracy in 1% steps.
    let acc = accuracies(&stdout);
    assert_eq!(acc.len(), 1, "{stdout}");
    assert_eq!(acc[0] * 10.0 % 10.0, 0.0, "{stdout}");
}
