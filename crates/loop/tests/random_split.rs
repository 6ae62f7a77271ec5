//! `Dataset::random_split` is `torch.utils.data.random_split(ds, [1 - f, f],
//! generator=torch.Generator().manual_seed(seed))`: the same samples in the
//! same order, for the setup's torch (run here, at test time).
use anyhow::{ensure, Context, Result};
use kiln_loop::data::{random_split, Subset, TensorDataset};
use kiln_loop::Dataset;
use kiln_tensor::{Kind, Tensor};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

type Split = (Vec<i64>, Vec<i64>);

/// PyTorch's splits for every `(n, fraction, seed)` (one Python process).
fn pytorch_splits(cases: &[(usize, f64, u64)]) -> Result<Vec<Split>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cases: Vec<String> = cases
        .iter()
        .map(|(n, f, s)| format!("({n}, {f:?}, {s})"))
        .collect();
    let script = format!(
        "import torch, json\n\
         out = []\n\
         for n, f, s in [{}]:\n\
         \x20   a, b = torch.utils.data.random_split(range(n), [1 - f, f], \
         generator=torch.Generator().manual_seed(s))\n\
         \x20   out.append([list(a), list(b)])\n\
         print(json.dumps(out))",
        cases.join(", ")
    );
    let out = Command::new("python3")
        .args(["-W", "ignore", "-c", &script])
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

/// The samples of `set`: their inputs are their indices in the range.
fn ids(set: &Subset) -> Result<Vec<i64>> {
    let all: Vec<i64> = (0..set.len() as i64).collect();
    let mut rng = kiln_tensor::rng::Generator::new(0)?;
    let batch = set
        .get_batch(&all, &mut rng)?
        .ok_or_else(|| anyhow::anyhow!("a tensor dataset reads batches"))?;
    Ok(Vec::<i64>::try_from(
        &batch.get("inputs")?.f_reshape([-1])?,
    )?)
}

#[test]
fn random_split_takes_pytorchs_samples_in_pytorchs_order() -> Result<()> {
    let cases = [
        (100, 0.2, 0),
        (1001, 0.1, 42),
        (7, 0.5, 3),
        (60000, 0.0833, 9),
    ];
    let want = pytorch_splits(&cases)?;
    for ((n, fraction, seed), (want_train, want_val)) in cases.into_iter().zip(want) {
        let data = TensorDataset::new(
            Tensor::f_arange(n as i64, (Kind::Int64, kiln_tensor::Device::Cpu))?
                .f_reshape([-1, 1])?,
            Tensor::f_zeros([n as i64], (Kind::Int64, kiln_tensor::Device::Cpu))?,
            "range",
        )?;
        let (train, val) = random_split(Arc::new(data), fraction, seed, "--val-fraction")?;
        ensure!(
            ids(&train)? == want_train,
            "train part of {n}, {fraction}, {seed}"
        );
        ensure!(
            ids(&val)? == want_val,
            "val part of {n}, {fraction}, {seed}"
        );
    }
    Ok(())
}
