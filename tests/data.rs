//! The data pipeline from the command line: `tensors:` files read per batch
//! from a memory map (resident memory does not grow with the file),
//! `--workers` runs killed and resumed bit for bit (with the same and with
//! another number of workers), and bad loader flags.
use crate::common::{
    assert_resumed_exactly, checkpoints, kill_after_checkpoint, kiln, newest, temp_dir, text,
    train_args,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Writes a safetensors file of `n` samples: uint8 inputs `[n, features]`
/// (pseudo-random bytes) and int64 labels `[n]` in 0..10, streamed (the
/// test never holds the file in memory).
fn write_tensors(path: &Path, n: usize, features: usize) {
    let inputs = n * features;
    let mut header = format!(
        r#"{{"inputs":{{"dtype":"U8","shape":[{n},{features}],"data_offsets":[0,{inputs}]}},"targets":{{"dtype":"I64","shape":[{n}],"data_offsets":[{inputs},{}]}}}}"#,
        inputs + 8 * n
    );
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = std::io::BufWriter::new(file);
    let mut put = |bytes: &[u8]| out.write_all(bytes).unwrap_or_else(|e| panic!("{e}"));
    put(&(header.len() as u64).to_le_bytes());
    put(header.as_bytes());
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut row = vec![0u8; features];
    for _ in 0..n {
        for byte in row.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = (state >> 56) as u8;
        }
        put(&row);
    }
    for i in 0..n {
        put(&((i % 10) as i64).to_le_bytes());
    }
}

/// Runs `kiln ARGS` to the end and returns its peak resident memory in
/// bytes (`VmHWM`, read until the process exits) and its stderr.
fn peak_resident(args: &[String]) -> (usize, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn kiln: {e}"));
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().ok().flatten().is_none() {
        let hwm = std::fs::read_to_string(&status)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            })
            .unwrap_or(0);
        peak = peak.max(hwm * 1024);
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    (peak, stderr)
}

/// One epoch over an 8 MB and over a 256 MB `tensors:` file (the same
/// model, batches and steps per batch): the larger file's run peaks within
/// 100 MB of the smaller one's, where loading it whole would add 256 MB.
#[test]
fn tensors_files_are_read_per_batch_and_memory_does_not_grow_with_them() {
    let dir = temp_dir("mapped-memory");
    let features = 4096;
    let mut peaks = Vec::new();
    for (name, n) in [("small", 2048), ("large", 65536)] {
        let file: PathBuf = dir.join(format!("{name}.safetensors"));
        write_tensors(&file, n, features);
        let args: Vec<String> = [
            "train".to_string(),
            "--data".into(),
            format!("tensors:{},classes=10", file.display()),
            "--model".into(),
            "mlp:hidden=8".into(),
            "--batch-size".into(),
            "512".into(),
            "--epochs".into(),
            "1".into(),
            "--seed".into(),
            "0".into(),
            "--threads".into(),
            "1".into(),
            "--quiet".into(),
            "--run-dir".into(),
            dir.join(format!("run-{name}")).display().to_string(),
        ]
        .to_vec();
        let (peak, _) = peak_resident(&args);
        std::fs::remove_file(&file).unwrap_or_default();
        peaks.push(peak);
    }
    let grown = peaks[1].saturating_sub(peaks[0]);
    assert!(
        peaks[0] > 0 && grown < 100 << 20,
        "peak resident memory: {} MiB over 8 MiB of data, {} MiB over 256 MiB",
        peaks[0] >> 20,
        peaks[1] >> 20
    );
}

/// `--workers 2` prints what `--workers 0` prints (FashionMNIST's samples
/// draw nothing at random); a `--workers 2` run SIGKILLed mid-epoch and
/// resumed ends bit-identical to the uninterrupted one, resumed with 2
/// workers and resumed with 0 (the order and the samples do not depend on
/// the workers; only a dataset's own random draws would, see
/// `DataLoader::resume`).
#[test]
fn runs_with_workers_resume_bit_exactly_with_any_worker_count() {
    let flags = |workers: &'static str| {
        [
            "--train-samples",
            "1200",
            "--test-samples",
            "200",
            "--epochs",
            "2",
            "--seed",
            "4",
            "--checkpoint-every",
            "5",
            "--workers",
            workers,
        ]
    };
    let mut logs = Vec::new();
    for workers in ["0", "2"] {
        let run = temp_dir(&format!("workers-ref-{workers}"));
        let argv = train_args(&run, &flags(workers));
        let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        logs.push((run, stdout));
    }
    assert_eq!(
        logs[0].1, logs[1].1,
        "--workers 2 prints what --workers 0 prints"
    );
    let (reference, log) = &logs[1];
    for resume_workers in ["2", "0"] {
        let run = temp_dir(&format!("workers-kill-{resume_workers}"));
        kill_after_checkpoint(&train_args(&run, &flags("2")), &run, 23);
        assert!(!checkpoints(&run).is_empty());
        let out = kiln(&[
            "train",
            "--resume",
            &run.display().to_string(),
            "--workers",
            resume_workers,
        ]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert_resumed_exactly(&newest(reference), &newest(&run), log, &stdout);
    }
}

/// Bad loader flags are usage errors (exit 2) that create no run directory.
#[test]
fn bad_worker_flags_are_usage_errors() {
    for (flags, want) in [
        (
            vec!["--workers", "two"],
            "invalid value 'two' for '--workers",
        ),
        (vec!["--workers", "-1"], "unexpected argument '-1'"),
        (
            vec!["--workers", "100000"],
            "--workers 100000 is more threads than a loader starts",
        ),
        (
            vec!["--workers", "2", "--prefetch-factor", "0"],
            "--prefetch-factor must be at least 1",
        ),
    ] {
        let run = temp_dir("bad-workers").join("run");
        let argv = train_args(&run, &flags);
        let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(want), "{flags:?}: {stderr}");
        assert!(!run.exists(), "{flags:?} created {}", run.display());
    }
}
