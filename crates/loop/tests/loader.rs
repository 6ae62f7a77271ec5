//! The `DataLoader` against PyTorch's own (the setup's torch, run here at
//! test time by `tests/loader/dataloader.py`): a dataset whose samples draw
//! from torch's generator, with 0 and 2 workers, shuffled and not, a short
//! last batch, two epochs, and the shards of a 2-rank `DistributedSampler`:
//! the same batches bit for bit, and the global generator left where
//! PyTorch leaves it.

use anyhow::{ensure, Context, Result};
use kiln_loop::data::{Dataset, DistributedSampler, Fields, Sample};
use kiln_loop::DataLoader;
use kiln_tensor::rng::Generator;
use kiln_tensor::shared::SharedTensor;
use kiln_tensor::{Device, Kind, Tensor};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// Sample i: `base[i] + randn(3)` from the generator the loader gives.
struct Noisy {
    base: SharedTensor,
    labels: SharedTensor,
}

impl Noisy {
    fn new(n: i64) -> Result<Self> {
        Ok(Self {
            base: SharedTensor::new(
                Tensor::f_arange(n * 3, (Kind::Float, Device::Cpu))?.f_reshape([n, 3])?,
            ),
            labels: SharedTensor::new(
                Tensor::f_arange(n, (Kind::Int64, Device::Cpu))?.f_remainder(5)?,
            ),
        })
    }
}

impl Dataset for Noisy {
    fn len(&self) -> usize {
        self.base.size()[0] as usize
    }

    fn get(&self, index: usize, rng: &mut Generator) -> kiln_loop::Result<Sample> {
        let i = index as i64;
        let noise = rng.randn(&[3], Kind::Float)?;
        Ok(Sample::new()
            .with("inputs", self.base.f_get(i)?.f_add(&noise)?)
            .with("targets", self.labels.f_get(i)?))
    }

    fn fields(&self) -> Fields {
        Fields::default()
    }
}

fn hex(t: &Tensor) -> Result<String> {
    let bytes = Vec::<u8>::try_from(
        &t.f_contiguous()?
            .f_reshape([-1])?
            .f_view_dtype(Kind::Uint8)?,
    )?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn pytorch(cases: &Value) -> Result<Vec<Value>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("python3")
        .arg("-W")
        .arg("ignore")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/loader/dataloader.py"))
        .arg(cases.to_string())
        .env("PYTHONPATH", root.join(".libtorch"))
        .output()
        .context("running python3")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// kiln's batches for one case, as the script prints them.
fn kiln(case: &Value) -> Result<Value> {
    let n = case["n"].as_i64().unwrap_or(0);
    let seed = case["seed"].as_u64().unwrap_or(0);
    let shuffle = case["shuffle"].as_bool().unwrap_or(false);
    kiln_tensor::rng::manual_seed(seed);
    let mut loader = DataLoader::new(
        Arc::new(Noisy::new(n)?),
        case["batch"].as_u64().unwrap_or(1) as usize,
        shuffle,
    )?
    .workers(case["workers"].as_u64().unwrap_or(0) as usize, 2)?;
    if let Some([replicas, rank]) = case["replicas"].as_array().map(|a| {
        [
            a[0].as_u64().unwrap_or(1) as usize,
            a[1].as_u64().unwrap_or(0) as usize,
        ]
    }) {
        loader = loader.distributed(
            DistributedSampler::new(replicas, rank)?
                .shuffle(shuffle)
                .seed(seed),
        );
    }
    let mut epochs = Vec::new();
    for epoch in 0..2 {
        loader.set_epoch(epoch);
        let mut batches = Vec::new();
        for batch in loader.iter()? {
            let batch = batch?;
            batches.push(json!([
                hex(batch.input()?)?,
                Vec::<i64>::try_from(batch.targets()?)?
            ]));
        }
        epochs.push(Value::Array(batches));
    }
    let after = Tensor::f_rand([1], (Kind::Float, Device::Cpu))?.f_double_value(&[0])?;
    Ok(json!({"epochs": epochs, "after": after}))
}

#[test]
fn batches_equal_pytorchs_dataloader_for_every_worker_count() -> Result<()> {
    let _global = crate::common::global_state();
    let mut cases = Vec::new();
    for workers in [0, 1, 2, 3] {
        for shuffle in [false, true] {
            // 23 samples in batches of 4: a short last batch of 3.
            cases.push(json!({"n": 23, "batch": 4, "shuffle": shuffle, "workers": workers, "seed": 7 + workers, "replicas": null}));
        }
    }
    for workers in [0, 2] {
        for rank in 0..2 {
            cases.push(json!({"n": 21, "batch": 3, "shuffle": true, "workers": workers, "seed": 11, "replicas": [2, rank]}));
        }
    }
    let want = pytorch(&Value::Array(cases.clone()))?;
    for (case, want) in cases.iter().zip(want) {
        let got = kiln(case)?;
        ensure!(got == want, "{case}:\nkiln    {got}\npytorch {want}");
    }
    Ok(())
}

/// One shuffled pass of `Noisy` as hex, continued from batch `from` by a
/// new loader with `workers_after` workers and the state kept after batch
/// `from - 1` (and the global generator restored, as a checkpoint does).
fn pass_resumed(workers: usize, workers_after: usize, from: usize) -> Result<Vec<Value>> {
    kiln_tensor::rng::manual_seed(3);
    let dataset = Arc::new(Noisy::new(29)?);
    let loader = DataLoader::new(dataset.clone(), 4, true)?.workers(workers, 2)?;
    let mut batches = loader.iter()?;
    let mut seen = Vec::new();
    let mut kept = None;
    for b in 0..from {
        let batch = batches.next().context("the pass ended early")??;
        seen.push(json!([
            hex(batch.input()?)?,
            Vec::<i64>::try_from(batch.targets()?)?
        ]));
        if b + 1 == from {
            kept = Some((batches.state()?, kiln_tensor::rng::cpu_rng_state()?));
        }
    }
    drop(batches);
    let (state, global) = kept.context("nothing kept")?;
    // What happened after the checkpoint is lost: draw from the global
    // generator so that a resume that did not restore it would differ.
    let _ = Tensor::f_randn([100], (Kind::Float, Device::Cpu))?;
    kiln_tensor::rng::set_cpu_rng_state(&global)?;
    let loader = DataLoader::new(dataset, 4, true)?.workers(workers_after, 2)?;
    for batch in loader.resume(state, from)? {
        let batch = batch?;
        seen.push(json!([
            hex(batch.input()?)?,
            Vec::<i64>::try_from(batch.targets()?)?
        ]));
    }
    Ok(seen)
}

/// A pass resumed from a kept [`PassState`] (what a checkpoint holds)
/// continues bit for bit with the same number of workers, 0 or 2, from any
/// batch; with another number of workers the samples and their order are
/// the same, while the random draws of the samples come from the new
/// workers' generators (or the global one).
#[test]
fn a_pass_resumed_from_its_state_continues_exactly_with_the_same_workers() -> Result<()> {
    let _global = crate::common::global_state();
    for workers in [0, 2] {
        let whole = pass_resumed(workers, workers, 8)?;
        ensure!(whole.len() == 8, "29 samples in batches of 4: 8 batches");
        for from in [1, 3, 4, 7] {
            let resumed = pass_resumed(workers, workers, from)?;
            ensure!(
                resumed == whole,
                "{workers} workers, resumed at batch {from}: the batches differ"
            );
        }
    }
    for (before, after) in [(2, 0), (0, 2), (2, 3)] {
        let whole = pass_resumed(before, before, 8)?;
        let resumed = pass_resumed(before, after, 3)?;
        ensure!(
            resumed[..3] == whole[..3],
            "{before} -> {after}: the first batches"
        );
        for (b, (x, y)) in whole.iter().zip(&resumed).enumerate().skip(3) {
            ensure!(
                x[1] == y[1],
                "{before} -> {after}: batch {b} holds other samples"
            );
            ensure!(
                x[0] != y[0],
                "{before} -> {after}: batch {b} kept the old draws"
            );
        }
    }
    Ok(())
}

/// A dataset whose sample `bad` fails: an error (`panics == false`) or a
/// panic.
struct Failing {
    inner: Noisy,
    bad: usize,
    panics: bool,
}

impl Dataset for Failing {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn get(&self, index: usize, rng: &mut Generator) -> kiln_loop::Result<Sample> {
        if index == self.bad {
            if self.panics {
                panic!("decoder crashed on {index}");
            }
            return Err(kiln_loop::Error::InvalidArgument(format!(
                "cannot decode {index}"
            )));
        }
        self.inner.get(index, rng)
    }

    fn describe(&self, index: usize) -> String {
        format!("file-{index}.bin")
    }
}

/// A sample that cannot be read ends the pass with one error naming it (as
/// the dataset describes it), with 0, 1 and 3 workers, whether `get`
/// returns an error or panics; the batches before it arrive, and nothing
/// hangs (each pass runs on a thread the test waits on with a deadline).
#[test]
fn a_sample_that_fails_ends_the_pass_naming_it_and_nothing_hangs() -> Result<()> {
    let _global = crate::common::global_state();
    for workers in [0usize, 1, 3] {
        for panics in [false, true] {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let run = || -> Result<(usize, String)> {
                    let dataset = Failing {
                        inner: Noisy::new(40)?,
                        bad: 17,
                        panics,
                    };
                    let loader =
                        DataLoader::new(Arc::new(dataset), 4, false)?.workers(workers, 2)?;
                    let mut good = 0;
                    for batch in loader.iter()? {
                        match batch {
                            Ok(_) => good += 1,
                            Err(e) => return Ok((good, e.to_string())),
                        }
                    }
                    Ok((good, String::new()))
                };
                let _ = tx.send(run().map_err(|e| e.to_string()));
            });
            let (good, message) = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .map_err(|_| anyhow::anyhow!("{workers} workers, panics {panics}: the pass hung"))?
                .map_err(anyhow::Error::msg)?;
            ensure!(
                good == 4,
                "{workers} workers: {good} batches before the failing one (want 4: samples 0..16)"
            );
            ensure!(
                message.contains("file-17.bin"),
                "{workers} workers, panics {panics}: {message}"
            );
            ensure!(!message.contains('\n'), "one line, got: {message}");
            if !panics {
                ensure!(message.contains("cannot decode 17"), "{message}");
            } else {
                ensure!(message.contains("decoder crashed on 17"), "{message}");
            }
        }
    }
    Ok(())
}
