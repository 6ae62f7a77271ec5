//! Helpers shared by the end-to-end tests of the `kiln` binary.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// FashionMNIST as `make setup` provides it (or `$KILN_DATA_DIR`).
pub fn data_dir() -> PathBuf {
    std::env::var_os("KILN_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".data/fashion-mnist"))
}

/// This test process's scratch root, `$TMP/kiln-e2e/<pid>`. The first call
/// removes the roots of earlier test processes that are gone, so runs,
/// checkpoints and data the tests write never pile up on the disk.
fn scratch_root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let all = std::env::temp_dir().join("kiln-e2e");
        for entry in std::fs::read_dir(&all).into_iter().flatten().flatten() {
            let alive = entry
                .file_name()
                .to_str()
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        all.join(std::process::id().to_string())
    })
    .clone()
}

/// Runs `kiln` with `args`, from a scratch directory (so default run
/// directories land there, not in the repository).
pub fn kiln(args: &[&str]) -> Output {
    let cwd = scratch_root().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap_or_else(|e| panic!("{}: {e}", cwd.display()));
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kiln: {e}"))
}

/// A fresh empty directory for one test (under [`scratch_root`]).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = scratch_root().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// IDX bytes of unsigned-byte data with `dims`.
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Writes a small (Fashion)MNIST-shaped dataset: `n` images of `side`×`side`
/// whose class is readable from the pixels, with labels `label(i)`.
pub fn write_dataset(dir: &Path, n: u32, side: u32, label: impl Fn(u32) -> u8) {
    let labels: Vec<u8> = (0..n).map(&label).collect();
    let mut pixels = Vec::with_capacity((n * side * side) as usize);
    for (i, &l) in labels.iter().enumerate() {
        for p in 0..side * side {
            let on = p % 10 == u32::from(l % 10);
            pixels.push(if on {
                200
            } else {
                ((i as u32 * 7 + p) % 50) as u8
            });
        }
    }
    for prefix in ["train", "t10k"] {
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            idx_bytes(&[n, side, side], &pixels),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx_bytes(&[n], &labels),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a committed Python script (path relative to the repository root) on
/// the torch the setup installed (`.libtorch`), returning its stdout.
pub fn pytorch(script: &str, args: &[&str]) -> String {
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .env("PYTHONPATH", root().join(".libtorch"))
        .arg("-W")
        .arg("ignore")
        .arg(root().join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {script}: {e}"));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "python3 {script} failed: {stderr}");
    stdout
}

/// The checkpoints of run directory `run`, oldest first: the directories
/// `RUN/checkpoints/step-N` by step (read here rather than through
/// kiln-loop, so that this test binary does not link libtorch).
pub fn checkpoints(run: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(run.join("checkpoints")) else {
        return Vec::new();
    };
    let mut found: Vec<(usize, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let step = e
                .file_name()
                .to_str()?
                .strip_prefix("step-")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// One tensor of a safetensors file, as stored.
#[derive(Debug, PartialEq)]
pub struct StoredTensor {
    /// Its name.
    pub name: String,
    /// Its dtype as safetensors spells it (`F32`, `I64`, ...).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its little-endian bytes.
    pub bytes: Vec<u8>,
}

impl StoredTensor {
    /// The values of an `F32` tensor (panics, failing the test, otherwise).
    pub fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.dtype, "F32", "{}: not float32", self.name);
        self.bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// The tensors of a safetensors file in storage order, read by the format's
/// definition (an 8-byte header length, a JSON header, the data): what the
/// end-to-end tests compare bit for bit without linking libtorch.
pub fn read_safetensors(path: &Path) -> Vec<StoredTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bad = |what: &str| -> ! { panic!("{}: not a safetensors file ({what})", path.display()) };
    let len: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .unwrap_or_else(|| bad("short"));
    let len = u64::from_le_bytes(len) as usize;
    let header = bytes.get(8..8 + len).unwrap_or_else(|| bad("header"));
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).unwrap_or_else(|_| bad("header JSON"));
    let data = &bytes[8 + len..];
    let mut tensors: Vec<(usize, StoredTensor)> = header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, info)| {
            let offsets: Vec<usize> = serde_json::from_value(info["data_offsets"].clone())
                .unwrap_or_else(|_| bad("data_offsets"));
            let shape =
                serde_json::from_value(info["shape"].clone()).unwrap_or_else(|_| bad("shape"));
            let dtype = info["dtype"]
                .as_str()
                .unwrap_or_else(|| bad("dtype"))
                .to_string();
            let bytes = data
                .get(offsets[0]..offsets[1])
                .unwrap_or_else(|| bad("offsets"))
                .to_vec();
            (
                offsets[0],
                StoredTensor {
                    name,
                    dtype,
                    shape,
                    bytes,
                },
            )
        })
        .collect();
    tensors.sort_by_key(|(start, t)| (*start, t.name.clone()));
    tensors.into_iter().map(|(_, t)| t).collect()
}

/// The newest checkpoint of `run` (panics, failing the test, if there is none).
pub fn newest(run: &Path) -> PathBuf {
    checkpoints(run)
        .pop()
        .unwrap_or_else(|| panic!("{}: no checkpoint", run.display()))
}

/// Runs a committed reference script under `torchrun --standalone
/// --nproc-per-node ranks` (gloo over loopback, one OpenMP thread per rank)
/// on the torch the setup installed. Returns the output, whatever the status.
pub fn torchrun(script: &str, ranks: usize, args: &[&str]) -> Output {
    Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .env("PYTHONPATH", root().join(".libtorch"))
        .env("OMP_NUM_THREADS", "1")
        .args([
            "-W",
            "ignore",
            "-m",
            "torch.distributed.run",
            "--standalone",
        ])
        .args(["--nproc-per-node", &ranks.to_string()])
        .arg(root().join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run torchrun: {e}"))
}

/// Starts `kiln ARGS` and SIGKILLs it once `run` holds a checkpoint at or
/// past `step` (panics, failing the test, if the run ends first or none
/// appears within 120 s).
pub fn kill_after_checkpoint(args: &[String], run: &Path, step: usize) {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn kiln: {e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let target = format!("step-{step:09}");
    loop {
        let reached = checkpoints(run).iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().as_ref() >= target.as_str())
        });
        if reached {
            break;
        }
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "the run ended before step {step}"
        );
        assert!(
            Instant::now() < deadline,
            "no checkpoint past step {step} within 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let finished = child.try_wait().ok().flatten().is_some();
    child.kill().unwrap_or_default(); // SIGKILL
    let _ = child.wait();
    assert!(!finished, "the run finished before it could be killed");
}

/// `kiln train` on FashionMNIST into `run`: `--data-dir`, one thread,
/// the job's own `flags`, then `--run-dir`.
pub fn train_args(run: &Path, flags: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = ["train", "--data-dir"].map(String::from).to_vec();
    argv.push(data_dir().display().to_string());
    argv.extend(["--threads", "1"].map(String::from));
    argv.extend(flags.iter().map(|f| f.to_string()));
    argv.push("--run-dir".into());
    argv.push(run.display().to_string());
    argv
}

/// Asserts that two files hold the same bytes, and that `a` is not empty.
pub fn same_file(a: &Path, b: &Path) {
    let (x, y) = (
        std::fs::read(a).unwrap_or_default(),
        std::fs::read(b).unwrap_or_default(),
    );
    assert!(!x.is_empty(), "{} is empty", a.display());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

/// Asserts that a resumed run ended where the uninterrupted one did: its
/// newest checkpoint (`resumed`) has the name and the bytes of `reference`'s
/// (model, optimizer, RNG), and it printed exactly the rest of `log`.
pub fn assert_resumed_exactly(reference: &Path, resumed: &Path, log: &str, stdout: &str) {
    assert_eq!(resumed.file_name(), reference.file_name());
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
        "rng.safetensors",
    ] {
        same_file(&reference.join(file), &resumed.join(file));
    }
    assert!(
        stdout.ends_with("Training completed\n") && log.ends_with(stdout),
        "resumed log:\n{stdout}\nfull log:\n{log}"
    );
}

/// The lines of a run's stderr that are not progress news: without the
/// `kiln: …` lines and the model summary table printed at the start.
pub fn stderr_diagnostics(stderr: &str) -> Vec<&str> {
    let mut in_summary = false;
    stderr
        .lines()
        .filter(|line| {
            if line.starts_with("  | Name ") {
                in_summary = true;
            }
            let keep = !in_summary && !line.starts_with("kiln: ");
            if line.ends_with("Total estimated model params size (MB)") {
                in_summary = false;
            }
            keep
        })
        .collect()
}
