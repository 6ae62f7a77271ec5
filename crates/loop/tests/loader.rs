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
