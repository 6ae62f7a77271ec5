//! Checkpoints that survive a crash at any moment.
//!
//! A checkpoint is a directory `RUN/checkpoints/step-000000123/` holding
//! `model.safetensors` (parameters and buffers, named as PyTorch's
//! `state_dict()` names them, so `torch` loads it with
//! `safetensors.torch.load_file` + `load_state_dict`), the optimizer's state
//! as [`OptimizerState::save`] writes it (`optimizer.safetensors` +
//! `optimizer.json`), `rng.safetensors` (libtorch's CPU and CUDA generator
//! states), `state.json` (loop counters, the data order cursor, scheduler
//! and trainer state, the run config) and, written last, `manifest.json`
//! with every file's size and FNV-1a checksum. Everything is first written
//! into a hidden temporary directory and then renamed into place, so a
//! checkpoint either exists whole or not at all; a write that fails (a full
//! disk) removes its temporary directory and says which checkpoint a resume
//! would continue from. A directory whose manifest is missing or does not
//! match is skipped on resume with a warning.
use crate::{Error, Result};
use kiln_optim::OptimizerState;
use kiln_tensor::{io, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the training loop stood when the checkpoint was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The epoch to continue (1-based).
    pub epoch: usize,
    /// The next batch of that epoch to train on (0 = the epoch has not started).
    pub batch: usize,
    /// Optimizer steps taken so far.
    pub step: usize,
    /// The `RandomSampler` seed of the epoch in progress, when it is shuffled
    /// and has started: resuming rebuilds the same order without drawing.
    pub sampler_seed: Option<u64>,
    /// The base seed the epoch in progress drew (its data workers are
    /// seeded `base_seed + worker_id`).
    #[serde(default)]
    pub base_seed: Option<u64>,
    /// The number of data workers the epoch in progress ran with (their
    /// generator states are [`Checkpoint::rng_workers`]).
    #[serde(default)]
    pub workers: usize,
    /// The sample indices of the training batch drawn ahead and not yet
    /// trained on (a loader of random batches, nanoGPT's `get_batch`:
    /// [`crate::DataLoader::pending`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_batch: Option<Vec<i64>>,
}

impl Progress {
    /// The start of a fit: epoch 1, nothing done.
    pub fn start() -> Self {
        Self {
            epoch: 1,
            batch: 0,
            step: 0,
            sampler_seed: None,
            base_seed: None,
            workers: 0,
            pending_batch: None,
        }
    }

    /// The start of `epoch` after `step` optimizer steps.
    pub fn epoch_start(epoch: usize, step: usize) -> Self {
        Self {
            epoch,
            step,
            ..Self::start()
        }
    }
}

/// Everything needed to continue a run exactly.
#[derive(Debug)]
pub struct Checkpoint {
    /// The model's state dict, by name.
    pub model: Vec<(String, Tensor)>,
    /// The optimizer's state.
    pub optimizer: OptimizerState,
    /// libtorch's CPU generator state.
    pub rng_cpu: Tensor,
    /// Each CUDA device's generator state, by device index.
    pub rng_cuda: Vec<Tensor>,
    /// Each data worker's generator state after the last batch the loop
    /// took from it (`None`: none yet), for the epoch in progress.
    pub rng_workers: Vec<Option<Tensor>>,
    /// Loop counters and the data cursor.
    pub progress: Progress,
    /// Trainer state (early stopping, best metric, scheduler…), as JSON.
    pub trainer: serde_json::Value,
    /// The configuration the run was started with.
    pub config: serde_json::Value,
    /// The averaged weights of `--ema`/`--swa` (`module.{name}`, as
    /// `AveragedModel.state_dict()` names them); empty without averaging.
    /// Written as `averaged.safetensors` when there are any.
    pub averaged: Vec<(String, Tensor)>,
}

/// The averaged weights' file, in a checkpoint and in the run directory.
pub const AVERAGED_FILE: &str = "averaged.safetensors";

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    progress: Progress,
    trainer: serde_json::Value,
    config: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct ManifestEntry {
    file: String,
    bytes: u64,
    fnv1a64: String,
}

const FORMAT: u32 = 2;
const MANIFEST: &str = "manifest.json";

/// FNV-1a, 64 bit: detects torn and corrupted files (not an adversary).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn io_error(path: &Path, err: impl std::fmt::Display) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        message: err.to_string(),
    }
}

fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    Ok(io::write_safetensors(path, tensors)?)
}

fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    io::read_safetensors(path).map_err(|e| Error::safetensors_read(path, e))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| io_error(path, e))?;
    Ok(io::write_atomic(path, text.as_bytes())?)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    serde_json::from_str(&text).map_err(|e| io_error(path, e))
}

/// The file and operating-system error behind a failed write, if that is
/// what `err` is.
fn failed_write(err: &Error) -> Option<(&Path, &std::io::Error)> {
    let tensor = match err {
        Error::Tensor(e) | Error::Optim(kiln_optim::Error::Tensor(e)) => e,
        _ => return None,
    };
    match tensor {
        kiln_tensor::Error::Io { path, source } => Some((path, source)),
        _ => None,
    }
}

/// The checkpoints directory of a run.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes `ckpt` as `RUN/checkpoints/step-{step:09}` atomically and returns
/// its path. On failure nothing is left behind and the error names the file
/// that could not be written, why (e.g. "no space left on device") and the
/// newest complete checkpoint, which a resume continues from.
pub fn save(run_dir: &Path, ckpt: &Checkpoint) -> Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    let name = format!("step-{:09}", ckpt.progress.step);
    let target = dir.join(&name);
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    let written = std::fs::create_dir_all(&dir)
        .map_err(|e| io_error(&dir, e))
        .and_then(|()| write_into(&tmp, ckpt))
        .and_then(|()| commit(&dir, &tmp, &target));
    match written {
        Ok(()) => Ok(target),
        Err(err) => {
            let _ = std::fs::remove_dir_all(&tmp);
            let last = list(run_dir).ok().and_then(|mut all| all.pop());
            let resume = match &last {
                Some(last) => format!(
                    "; the last complete checkpoint is {} (`kiln train --resume {}` continues from it)",
                    last.display(),
                    run_dir.display()
                ),
                None => "; the run has no complete checkpoint yet".into(),
            };
            let (path, message) = match failed_write(&err) {
                // Name the file as it would have been, not the temporary one.
                Some((path, source)) => (
                    path.strip_prefix(&tmp)
                        .map_or_else(|_| path.to_path_buf(), |rel| target.join(rel)),
                    lowercase_first(&source.to_string()),
                ),
                None => (target.clone(), err.to_string()),
            };
            Err(Error::Write {
                path,
                message: format!("{message}{resume}"),
            })
        }
    }
}

/// "No space left on device (os error 28)" → "no space left on device (os error 28)".
fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Every file of the checkpoint into `tmp`, the manifest last.
fn write_into(tmp: &Path, ckpt: &Checkpoint) -> Result<()> {
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir_all(tmp).map_err(|e| io_error(tmp, e))?;
    write_tensors(&tmp.join("model.safetensors"), &ckpt.model)?;
    ckpt.optimizer.save(tmp)?;
    let mut rng = vec![("cpu".to_string(), ckpt.rng_cpu.shallow_clone())];
    rng.extend(
        ckpt.rng_cuda
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("cuda:{i}"), t.shallow_clone())),
    );
    rng.extend(ckpt.rng_workers.iter().enumerate().filter_map(|(i, t)| {
        t.as_ref()
            .map(|t| (format!("worker:{i}"), t.shallow_clone()))
    }));
    write_tensors(&tmp.join("rng.safetensors"), &rng)?;
    let state = StateFile {
        format: FORMAT,
        progress: ckpt.progress.clone(),
        trainer: ckpt.trainer.clone(),
        config: ckpt.config.clone(),
    };
    write_json(&tmp.join("state.json"), &state)?;
    let averaged = !ckpt.averaged.is_empty();
    if averaged {
        write_tensors(&tmp.join(AVERAGED_FILE), &ckpt.averaged)?;
    }
    let mut manifest = Vec::new();
    for file in FILES.into_iter().chain(averaged.then_some(AVERAGED_FILE)) {
        let path = tmp.join(file);
        let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
        manifest.push(ManifestEntry {
            file: file.into(),
            bytes: bytes.len() as u64,
            fnv1a64: format!("{:016x}", fnv1a64(&bytes)),
        });
    }
    write_json(&tmp.join(MANIFEST), &manifest)
}

/// The files of a checkpoint besides the manifest.
const FILES: [&str; 5] = [
    "model.safetensors",
    kiln_optim::STATE_TENSORS_FILE,
    kiln_optim::STATE_SCALARS_FILE,
    "rng.safetensors",
    "state.json",
];

/// Renames the finished `tmp` into `target` (replacing a checkpoint of the
/// same step, e.g. written again after a resume).
fn commit(dir: &Path, tmp: &Path, target: &Path) -> Result<()> {
    if target.exists() {
        let old = dir.join(format!(
            ".old-{}-{}",
            target
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        std::fs::rename(target, &old).map_err(|e| io_error(target, e))?;
        std::fs::rename(tmp, target).map_err(|e| io_error(target, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(tmp, target).map_err(|e| io_error(target, e))?;
    }
    sync(dir)
}

fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(path, e))
}

/// Checks a checkpoint directory against its manifest.
pub fn verify(dir: &Path) -> Result<()> {
    let manifest: Vec<ManifestEntry> = read_json(&dir.join(MANIFEST))?;
    for entry in manifest {
        let path = dir.join(&entry.file);
        let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
        let sum = format!("{:016x}", fnv1a64(&bytes));
        if bytes.len() as u64 != entry.bytes || sum != entry.fnv1a64 {
            return Err(io_error(
                &path,
                format!(
                    "checksum mismatch ({} bytes, fnv1a64 {sum}; manifest says {} bytes, {})",
                    bytes.len(),
                    entry.bytes,
                    entry.fnv1a64
                ),
            ));
        }
    }
    Ok(())
}

/// Loads and verifies the checkpoint in `dir`.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    verify(dir)?;
    let state: StateFile = read_json(&dir.join("state.json"))?;
    if state.format != FORMAT {
        return Err(io_error(
            dir,
            format!(
                "checkpoint format {} is not supported (this kiln reads {FORMAT})",
                state.format
            ),
        ));
    }
    let mut rng = read_tensors(&dir.join("rng.safetensors"))?;
    let cpu_at = rng
        .iter()
        .position(|(n, _)| n == "cpu")
        .ok_or_else(|| io_error(&dir.join("rng.safetensors"), "no CPU generator state"))?;
    let rng_cpu = rng.remove(cpu_at).1;
    let indexed = |prefix: &str| -> Vec<(usize, Tensor)> {
        let mut found: Vec<(usize, Tensor)> = rng
            .iter()
            .filter_map(|(n, t)| {
                let i = n.strip_prefix(prefix)?.parse::<usize>().ok()?;
                Some((i, t.shallow_clone()))
            })
            .collect();
        found.sort_by_key(|(i, _)| *i);
        found
    };
    let rng_cuda = indexed("cuda:").into_iter().map(|(_, t)| t).collect();
    let mut rng_workers: Vec<Option<Tensor>> = (0..state.progress.workers).map(|_| None).collect();
    for (i, t) in indexed("worker:") {
        if let Some(slot) = rng_workers.get_mut(i) {
            *slot = Some(t);
        }
    }
    Ok(Checkpoint {
        model: read_tensors(&dir.join("model.safetensors"))?,
        optimizer: OptimizerState::load(dir).map_err(|e| io_error(dir, e))?,
        rng_cpu,
        rng_cuda,
        rng_workers,
        progress: state.progress,
        trainer: state.trainer,
        config: state.config,
        averaged: match dir.join(AVERAGED_FILE) {
            path if path.exists() => read_tensors(&path)?,
            _ => Vec::new(),
        },
    })
}

/// The step a checkpoint directory was written at (`step-000000123` → 123).
pub fn step_of(dir: &Path) -> Option<usize> {
    dir.file_name()?
        .to_str()?
        .strip_prefix("step-")?
        .parse()
        .ok()
}

/// The checkpoint directories of a run, oldest first (by step).
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = checkpoints_dir(run_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(&dir, e)),
    };
    let mut found: Vec<(usize, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((step_of(&e.path())?, e.path())))
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The newest checkpoint of a run that verifies, skipping (and reporting
/// through `warn`) every newer one that does not.
pub fn latest_valid(
    run_dir: &Path,
    warn: &mut dyn FnMut(String),
) -> Result<Option<(PathBuf, Checkpoint)>> {
    for dir in list(run_dir)?.into_iter().rev() {
        match load(&dir) {
            Ok(ckpt) => return Ok(Some((dir, ckpt))),
            Err(err) => warn(format!("skipping checkpoint {}: {err}", dir.display())),
        }
    }
    Ok(None)
}

/// Removes old checkpoints, keeping the newest `keep_last` and `keep` (the best one).
pub fn prune(run_dir: &Path, keep_last: usize, keep: Option<&Path>) -> Result<()> {
    let all = list(run_dir)?;
    let cut = all.len().saturating_sub(keep_last);
    for dir in all.iter().take(cut) {
        if Some(dir.as_path()) != keep {
            remove(dir)?;
        }
    }
    Ok(())
}

/// Removes a checkpoint directory.
pub fn remove(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).map_err(|e| io_error(dir, e))
}

/// Removes what interrupted writes left in a run directory (temporary
/// checkpoint directories, temporary files), so a run resumed after a crash
/// or a full disk starts with the space they held. Returns what it removed.
pub fn clean_stale(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for dir in [run_dir.to_path_buf(), checkpoints_dir(run_dir)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if !io::is_temporary(&name.to_string_lossy()) {
                continue;
            }
            let path = e.path();
            let gone = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            gone.map_err(|err| io_error(&path, err))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// The marker of the best checkpoint: `RUN/best.json` with the checkpoint's
/// path relative to the run, the metric and its value.
pub const BEST_FILE: &str = "best.json";

/// Records `checkpoint` (relative to `run_dir`) as the run's best by `metric`.
pub fn write_best(run_dir: &Path, checkpoint: &Path, metric: &str, value: f64) -> Result<()> {
    let text = serde_json::json!({ "checkpoint": checkpoint, "metric": metric, "value": value })
        .to_string();
    Ok(io::write_atomic(&run_dir.join(BEST_FILE), text.as_bytes())?)
}

/// The run's best checkpoint, as [`write_best`] recorded it.
pub fn best(run_dir: &Path) -> Result<Option<PathBuf>> {
    let path = run_dir.join(BEST_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let value: serde_json::Value = read_json(&path)?;
    let rel = value
        .get("checkpoint")
        .and_then(|c| c.as_str())
        .ok_or_else(|| io_error(&path, "no \"checkpoint\" entry"))?;
    Ok(Some(run_dir.join(rel)))
}

/// libtorch's generator states now (CPU, then each CUDA device).
pub fn capture_rng() -> Result<(Tensor, Vec<Tensor>)> {
    let cpu = kiln_tensor::rng::cpu_rng_state()?;
    let cuda = (0..kiln_tensor::device::cuda_device_count())
        .map(kiln_tensor::rng::cuda_rng_state)
        .collect::<kiln_tensor::Result<Vec<_>>>()?;
    Ok((cpu, cuda))
}

/// Restores generator states captured by [`capture_rng`].
pub fn restore_rng(cpu: &Tensor, cuda: &[Tensor]) -> Result<()> {
    kiln_tensor::rng::set_cpu_rng_state(cpu)?;
    let devices = kiln_tensor::device::cuda_device_count();
    for (i, state) in cuda.iter().enumerate().take(devices) {
        kiln_tensor::rng::set_cuda_rng_state(i, state)?;
    }
    Ok(())
}

/// Reads a safetensors file of named tensors (e.g. written by PyTorch with
/// `safetensors.torch.save_file(model.state_dict(), path)`).
pub fn read_weights(path: &Path) -> Result<Vec<(String, Tensor)>> {
    read_tensors(path)
}

/// Loads a safetensors state dict (e.g. PyTorch's) into `model`
/// (`load_state_dict`); errors name the file. `strict`: every tensor of the
/// model and nothing else, as `strict=True`. Otherwise the tensors that
/// match a model tensor by name and shape are loaded, the others keep
/// their values, and what was skipped comes back, one entry per kind
/// (`missing: head.weight`, `unexpected: fc.weight`, `mis-shaped:
/// out.weight [10, 64] in the file, [2, 64] in the model`); empty when
/// everything matched.
pub fn load_weights(model: &dyn crate::Model, path: &Path, strict: bool) -> Result<Vec<String>> {
    let tensors = read_tensors(path)?;
    if strict {
        model
            .load_state_dict(&tensors)
            .map_err(|e| io_error(path, e))?;
        return Ok(Vec::new());
    }
    let own = model.state_dict()?;
    let find = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    let (mut missing, mut misshaped, mut merged) = (Vec::new(), Vec::new(), Vec::new());
    for (name, mine) in &own {
        match find(name) {
            Some(theirs) if theirs.size() == mine.size() => {
                merged.push((name.clone(), theirs.shallow_clone()))
            }
            Some(theirs) => {
                misshaped.push(format!(
                    "{name} {:?} in the file, {:?} in the model",
                    theirs.size(),
                    mine.size()
                ));
                merged.push((name.clone(), mine.shallow_clone()));
            }
            None => {
                missing.push(name.clone());
                merged.push((name.clone(), mine.shallow_clone()));
            }
        }
    }
    let unexpected: Vec<String> = tensors
        .iter()
        .filter(|(n, _)| !own.iter().any(|(o, _)| o == n))
        .map(|(n, _)| n.clone())
        .collect();
    model
        .load_state_dict(&merged)
        .map_err(|e| io_error(path, e))?;
    Ok([
        ("missing", missing),
        ("unexpected", unexpected),
        ("mis-shaped", misshaped),
    ]
    .into_iter()
    .filter(|(_, names)| !names.is_empty())
    .map(|(kind, names)| format!("{kind}: {}", names.join(", ")))
    .collect())
}
