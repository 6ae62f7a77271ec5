//! `kiln_tensor::rng::Generator` against PyTorch (the setup's torch, run
//! here at test time by `tests/generator/draws.py`): every draw from
//! `torch.Generator().manual_seed(seed)` and the generator's state after them
//! bit for bit, draws through `Generator::global()` interleaved with other
//! draws from the global generator as `torch.rand()` makes them, and
//! generators on several threads at once giving each its own sequence.
use anyhow::{ensure, Context, Result};
use kiln_tensor::rng::{self, Generator};
use kiln_tensor::{Device, Kind, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One draw: its shape and raw bytes.
type Draw = (Vec<i64>, Vec<u8>);

const GLOBAL_SEED: u64 = 2024;
const SEEDS: [u64; 4] = [0, 7, 123_456_789, u64::MAX];

fn raw(t: &Tensor) -> Result<Draw> {
    let flat = t.f_contiguous()?.f_reshape([-1])?;
    let bytes = if flat.numel() == 0 {
        Vec::new()
    } else {
        Vec::<u8>::try_from(&flat.f_view_dtype(Kind::Uint8)?)?
    };
    Ok((t.size(), bytes))
}

fn word(v: u64) -> Draw {
    (Vec::new(), v.to_le_bytes().to_vec())
}

fn zeros(size: &[i64], kind: Kind) -> Result<Tensor> {
    Ok(Tensor::f_zeros(size, (kind, Device::Cpu))?)
}

/// The draws of `draws.py`'s `program`, in its order.
fn program(g: &mut Generator) -> Result<Vec<Draw>> {
    let mut out = vec![
        raw(&g.rand(&[3, 4], Kind::Float)?)?,
        raw(&g.rand(&[17], Kind::Double)?)?,
        raw(&g.rand(&[6], Kind::BFloat16)?)?,
        raw(&g.randn(&[5], Kind::Float)?)?,
        raw(&g.randn(&[33], Kind::Double)?)?,
        raw(&g.randn(&[2, 3], Kind::Float)?)?,
        raw(&g.randint(-5, 10, &[7])?)?,
        raw(&g.randint(0, 1 << 40, &[3])?)?,
        raw(&g.randperm(10)?)?,
        raw(&g.randperm(3000)?)?,
    ];
    let t = zeros(&[9], Kind::Float)?;
    g.uniform_(&t, -2.0, 3.0)?;
    out.push(raw(&t)?);
    let t = zeros(&[4, 4], Kind::Double)?;
    g.normal_(&t, 1.5, 0.25)?;
    out.push(raw(&t)?);
    for (kind, n) in [(Kind::Int64, 5), (Kind::Float, 5), (Kind::Uint8, 4)] {
        let t = zeros(&[n], kind)?;
        g.random_(&t)?;
        out.push(raw(&t)?);
    }
    let t = zeros(&[20], Kind::Float)?;
    g.bernoulli_(&t, 0.3)?;
    out.push(raw(&t)?);
    let probs = Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4]);
    out.push(raw(&g.multinomial(&probs, 3, false)?)?);
    let probs =
        Tensor::f_arange_start(1.0, 11.0, (Kind::Double, Device::Cpu))?.f_reshape([2, 5])?;
    out.push(raw(&g.multinomial(&probs, 6, true)?)?);
    out.push(word(g.draw_seed()?));
    out.push(raw(&g.state()?)?);
    out.push(word(g.initial_seed()?));
    Ok(out)
}

/// `draws.py`'s `global_program`: draws through a `Generator::global()`
/// handle, tch's own global draws and the free functions, in one stream.
fn global_program(seed: u64) -> Result<Vec<Draw>> {
    rng::manual_seed(seed);
    let mut global = Generator::global()?;
    Ok(vec![
        raw(&global.rand(&[4], Kind::Float)?)?,
        raw(&Tensor::f_randn([3], (Kind::Float, Device::Cpu))?)?,
        raw(&global.randperm(6)?)?,
        word(rng::draw_seed()?),
        raw(&global.rand(&[2], Kind::Double)?)?,
        raw(&rng::cpu_rng_state()?)?,
    ])
}

/// PyTorch's draws: "global" and one entry per seed.
fn pytorch() -> Result<BTreeMap<String, Vec<Draw>>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = vec![
        dir.join("tests/generator/draws.py").display().to_string(),
        GLOBAL_SEED.to_string(),
    ];
    args.extend(SEEDS.iter().map(u64::to_string));
    let out = Command::new("python3")
        .arg("-W")
        .arg("ignore")
        .args(&args)
        .env("PYTHONPATH", dir.join("../../.libtorch"))
        .output()
        .context("running python3")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: BTreeMap<String, Vec<(Vec<i64>, String)>> = serde_json::from_slice(&out.stdout)?;
    value
        .into_iter()
        .map(|(key, draws)| {
            let draws = draws
                .into_iter()
                .map(|(shape, hex)| Ok((shape, decode(&hex)?)))
                .collect::<Result<Vec<Draw>>>()?;
            Ok((key, draws))
        })
        .collect()
}

fn decode(hex: &str) -> Result<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            Ok(u8::from_str_radix(
                hex.get(i..i + 2).context("odd hex")?,
                16,
            )?)
        })
        .collect()
}

fn same(what: &str, ours: &[Draw], theirs: &[Draw]) -> Result<()> {
    ensure!(
        ours.len() == theirs.len(),
        "{what}: {} draws, PyTorch {}",
        ours.len(),
        theirs.len()
    );
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        ensure!(
            a.0 == b.0,
            "{what}, draw {i}: shape {:?}, PyTorch {:?}",
            a.0,
            b.0
        );
        ensure!(a.1 == b.1, "{what}, draw {i}: bytes differ from PyTorch's");
    }
    Ok(())
}

/// Everything below compares with one PyTorch run.
#[test]
fn generators_draw_pytorchs_bits() -> Result<()> {
    let _global = crate::common::global_state();
    let want = pytorch()?;
    let get = |key: &str| {
        want.get(key)
            .with_context(|| format!("no {key} in PyTorch's output"))
    };

    for seed in SEEDS {
        let ours = program(&mut Generator::new(seed)?)?;
        same(&format!("seed {seed}"), &ours, get(&seed.to_string())?)?;
    }

    // A reseeded generator starts over; a restored state continues where it was.
    let mut g = Generator::new(1)?;
    g.manual_seed(SEEDS[1])?;
    let state = g.state()?;
    let first = program(&mut g)?;
    g.set_state(&state)?;
    same("restored state", &program(&mut g)?, &first)?;

    same("global", &global_program(GLOBAL_SEED)?, get("global")?)?;

    // One thread per seed, all at once, while another draws from the global
    // generator: each sequence is PyTorch's for its seed alone.
    let results = std::thread::scope(|s| {
        let noise = s.spawn(|| -> Result<()> {
            let mut global = Generator::global()?;
            for _ in 0..200 {
                let _ = global.randn(&[64], Kind::Float)?;
            }
            Ok(())
        });
        let workers: Vec<_> = SEEDS
            .iter()
            .map(|&seed| {
                s.spawn(move || -> Result<Vec<Vec<Draw>>> {
                    let mut g = Generator::new(seed)?;
                    (0..3)
                        .map(|_| {
                            g.manual_seed(seed)?;
                            program(&mut g)
                        })
                        .collect()
                })
            })
            .collect();
        let runs: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        (noise.join(), runs)
    });
    let (noise, runs) = results;
    noise.map_err(|_| anyhow::anyhow!("the global drawing thread panicked"))??;
    for (seed, run) in SEEDS.iter().zip(runs) {
        let run = run.map_err(|_| anyhow::anyhow!("worker {seed} panicked"))??;
        for (k, draws) in run.iter().enumerate() {
            same(
                &format!("thread of seed {seed}, pass {k}"),
                draws,
                get(&seed.to_string())?,
            )?;
        }
    }
    Ok(())
}
