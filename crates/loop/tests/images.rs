//! Image folders against PIL and torchvision themselves: one run of
//! tests/images/reference.py (on the torchvision and Pillow that
//! scripts/setup.sh installs next to torch) writes the inputs and what PIL
//! and torchvision make of them; kiln must give the same pixels, the same
//! folder listing, the same transform outputs bit for bit with the same
//! seeds (and the same number of draws), and one-line errors where they
//! refuse.
use crate::common;

use anyhow::{ensure, Context, Result};
use common::TempDir;
use kiln_loop::data::images::{decode_file, transforms, ImageFolder};
use kiln_tensor::rng::Generator;
use kiln_tensor::{Kind, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python packages: `KILN_PYTHONPATH`, else the setup's `.libtorch`.
fn python_path() -> Result<PathBuf> {
    let path = match std::env::var_os("KILN_PYTHONPATH") {
        Some(p) => PathBuf::from(p),
        None => root().join(".libtorch"),
    };
    ensure!(
        path.join("torchvision").is_dir() && path.join("PIL").is_dir(),
        "{} has no torchvision and PIL packages: run scripts/setup.sh (or set KILN_PYTHONPATH \
         to a directory holding torch, torchvision, Pillow, numpy and safetensors)",
        path.display()
    );
    Ok(path)
}

/// JPEG samplings PIL cannot write (4:4:0, 4:1:1), written with libjpeg-turbo
/// for PIL to decode.
fn write_rust_jpegs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let (w, h) = (35usize, 27usize);
    let pixels: Vec<u8> = (0..w * h * 3)
        .map(|i| {
            let (p, c) = (i / 3, i % 3);
            let (x, y) = ((p % w) as f64, (p / w) as f64);
            (128.0 + 100.0 * ((x * (c as f64 + 1.0) + y * 2.0) / 9.0).sin()) as u8
        })
        .collect();
    for (name, subsamp) in [
        ("tj_440.jpg", turbojpeg::Subsamp::Sub1x2),
        ("tj_411.jpg", turbojpeg::Subsamp::Sub4x1),
    ] {
        let mut c = turbojpeg::Compressor::new()?;
        c.set_quality(85);
        c.set_subsamp(subsamp);
        let jpeg = c.compress_to_vec(turbojpeg::Image {
            pixels: &pixels[..],
            width: w,
            pitch: w * 3,
            height: h,
            format: turbojpeg::PixelFormat::RGB,
        })?;
        std::fs::write(dir.join(name), jpeg)?;
    }
    Ok(())
}

struct Reference {
    dir: TempDir,
    json: Value,
    tensors: HashMap<String, Tensor>,
}

impl Reference {
    fn run() -> Result<Self> {
        let python = python_path()?;
        let dir = TempDir::new("images")?;
        write_rust_jpegs(&dir.path().join("jpeg"))?;
        let script = root().join("crates/loop/tests/images/reference.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(dir.path())
            .env("PYTHONPATH", python)
            .output()
            .context("running python3")?;
        ensure!(
            out.status.success(),
            "reference.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json"))?)?;
        let tensors = Tensor::read_safetensors(dir.path().join("expected.safetensors"))?
            .into_iter()
            .collect();
        Ok(Self { dir, json, tensors })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn expected(&self, key: &str) -> Result<&Tensor> {
        self.tensors
            .get(key)
            .with_context(|| format!("no reference tensor {key}"))
    }

    fn strings(&self, key: &str) -> Vec<String> {
        self.json[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn same(a: &Tensor, b: &Tensor) -> Result<bool> {
    Ok(a.f_kind()? == b.f_kind()? && a.size() == b.size() && a.f_equal(b)?)
}

fn describe(t: &Tensor) -> String {
    format!("{:?} {:?}", t.f_kind(), t.size())
}

/// Decoded pixels equal PIL's `Image.open(f).convert("RGB")` for every PNG
/// colour type and bit depth (plain and interlaced, with tRNS) and JPEG
/// sampling; bad files are refused in one line naming the file.
fn check_decoding(r: &Reference, failures: &mut Vec<String>) -> Result<()> {
    let names = r.strings("decode");
    ensure!(names.len() > 100, "only {} decoded references", names.len());
    for name in &names {
        let expected = r.expected(&format!("decode/{name}"))?;
        match decode_file(&r.path(name)) {
            Ok(image) => {
                let hwc = image.f_permute([1, 2, 0])?;
                if !same(&hwc, expected)? {
                    let diff = hwc
                        .f_to_kind(Kind::Int)?
                        .f_sub(&expected.f_to_kind(Kind::Int)?)
                        .map(|d| d.abs().max().int64_value(&[]))
                        .unwrap_or(-1);
                    failures.push(format!(
                        "{name}: kiln {} differs from PIL {} (max |diff| {diff})",
                        describe(&hwc),
                        describe(expected)
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: kiln refuses what PIL decodes: {e}")),
        }
    }
    for name in [
        "jpeg/tj_440.jpg",
        "jpeg/tj_411.jpg",
        "png/rgb_named.jpg",
        "jpeg/cmyk.jpg",
    ] {
        ensure!(
            names.iter().any(|n| n == name),
            "{name} was not decoded by PIL"
        );
    }
    let bad = r.strings("bad");
    ensure!(bad.len() >= 8, "only {} bad files", bad.len());
    for name in &bad {
        let path = r.path(name);
        match decode_file(&path) {
            Ok(_) => failures.push(format!("{name}: kiln decodes what PIL refuses")),
            Err(e) => {
                let msg = e.to_string();
                if msg.contains('\n') || !msg.contains(&path.display().to_string()) {
                    failures.push(format!("{name}: not one line naming the file: {msg:?}"));
                }
            }
        }
    }
    Ok(())
}

/// `ImageFolder(root).classes` and `.samples`, and its refusals.
fn check_folder(r: &Reference, failures: &mut Vec<String>) -> Result<()> {
    let expected = &r.json["folder"];
    let base = r.path("folder");
    let folder = ImageFolder::scan(&base)?;
    let classes: Vec<String> = expected["classes"]
        .as_array()
        .context("classes")?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    if folder.classes() != classes.as_slice() {
        failures.push(format!(
            "classes: kiln {:?}, torchvision {classes:?}",
            folder.classes()
        ));
    }
    let samples: Vec<(String, i64)> = folder
        .samples()
        .iter()
        .map(|(p, c)| {
            let rel = p.strip_prefix(&base).unwrap_or(p);
            (rel.to_string_lossy().into_owned(), *c)
        })
        .collect();
    let want: Vec<(String, i64)> = expected["samples"]
        .as_array()
        .context("samples")?
        .iter()
        .filter_map(|s| Some((s[0].as_str()?.to_string(), s[1].as_i64()?)))
        .collect();
    ensure!(want.len() > 20, "only {} reference samples", want.len());
    if samples != want {
        failures.push(format!("samples: kiln {samples:?}\n  torchvision {want:?}"));
    }
    if folder.targets() != want.iter().map(|(_, c)| *c).collect::<Vec<_>>() {
        failures.push("targets differ from the samples' classes".into());
    }
    let (image, class) = folder.load(0)?;
    if image.size() != [3, 2, 3] || class != 0 {
        failures.push(format!("load(0): {:?} class {class}", image.size()));
    }

    let errors = &expected["errors"];
    for (tree, phrase) in [
        ("empty", None),
        ("noclass", Some("Couldn't find any class folder")),
    ] {
        let path = r.path(tree);
        let python = errors[tree].as_str().context("folder error")?;
        match ImageFolder::scan(&path) {
            Ok(_) => failures.push(format!("{tree}/: kiln accepts what torchvision refuses")),
            Err(e) => {
                let msg = e.to_string();
                let matches = match phrase {
                    None => msg.ends_with(python),
                    Some(p) => msg.contains(p),
                };
                if !matches || msg.contains('\n') || !msg.starts_with(&path.display().to_string()) {
                    failures.push(format!(
                        "{tree}/: kiln says {msg:?}, torchvision {python:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every transform case on every input and seed: the same bits as
/// torchvision's, then the same next draw.
fn check_transforms(r: &Reference, failures: &mut Vec<String>) -> Result<()> {
    let registry = transforms();
    let cases = r.json["transforms"].as_array().context("transforms")?;
    ensure!(cases.len() > 100, "only {} transform cases", cases.len());
    for case in cases {
        let specs: Vec<&str> = case["specs"]
            .as_array()
            .context("specs")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let input = case["input"].as_str().context("input")?;
        let pipeline = registry.pipeline(&specs)?;
        let image = decode_file(&r.path(input))?;
        let seeds = case["seeds"].as_array().context("seeds")?;
        let nexts = case["next"].as_array().context("next")?;
        for (seed, next) in seeds.iter().zip(nexts) {
            let seed = seed.as_u64().context("seed")?;
            let key = format!("transform/{}/{}/{seed}", case["case"], case["input_index"]);
            let expected = r.expected(&key)?;
            let mut rng = Generator::new(seed)?;
            let what = format!("{specs:?} on {input}, seed {seed}");
            match pipeline.apply(image.shallow_clone(), &mut rng) {
                Ok(out) => {
                    if !same(&out, expected)? {
                        let diff = out
                            .f_to_kind(Kind::Double)
                            .and_then(|o| o.f_sub(&expected.f_to_kind(Kind::Double)?))
                            .map(|d| d.abs().max().double_value(&[]))
                            .unwrap_or(f64::NAN);
                        failures.push(format!(
                            "{what}: kiln {} differs from torchvision {} (max |diff| {diff})",
                            describe(&out),
                            describe(expected)
                        ));
                        continue;
                    }
                }
                Err(e) => {
                    failures.push(format!("{what}: {e}"));
                    continue;
                }
            }
            let drawn = rng.rand(&[1], Kind::Float)?.f_double_value(&[0])?;
            let want = next.as_f64().context("next")?;
            if drawn != want {
                failures.push(format!(
                    "{what}: the next draw is {drawn}, torchvision's {want}: a different number of draws"
                ));
            }
        }
    }
    for case in r.json["transform_errors"].as_array().context("errors")? {
        let specs: Vec<&str> = case["specs"]
            .as_array()
            .context("specs")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let python = case["message"].as_str().context("message")?;
        let name = specs
            .first()
            .and_then(|s| s.split(':').next())
            .unwrap_or_default();
        let image = decode_file(&r.path(case["input"].as_str().context("input")?))?;
        let mut rng = Generator::new(0)?;
        match registry.pipeline(&specs)?.apply(image, &mut rng) {
            Ok(_) => failures.push(format!("{specs:?}: kiln accepts what torchvision refuses")),
            Err(e) => {
                let msg = e.to_string();
                if msg != format!("{name}: {python}") {
                    failures.push(format!(
                        "{specs:?}: kiln says {msg:?}, torchvision {python:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn images_match_pil_and_torchvision() -> Result<()> {
    let r = Reference::run()?;
    let mut failures = Vec::new();
    check_decoding(&r, &mut failures)?;
    check_folder(&r, &mut failures)?;
    check_transforms(&r, &mut failures)?;
    ensure!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

#[test]
fn the_pipeline_is_torchvisions_canonical_one() -> Result<()> {
    let r = transforms();
    let specs = |list: &[&str]| -> Result<Vec<String>> { Ok(r.pipeline(list)?.specs()) };
    assert_eq!(
        specs(&["RandomResizedCrop:size=24", "random-horizontal-flip", "normalize:mean=0.5,std=0.5", "random-erasing"])?,
        [
            "random-resized-crop:size=24,scale=0.08;1.0,ratio=0.75;1.3333333333333333,interpolation=bilinear,antialias=true",
            "random-horizontal-flip:p=0.5",
            "to-dtype:dtype=float32,scale=true",
            "normalize:mean=0.5,std=0.5,inplace=false",
            "random-erasing:p=0.5,scale=0.02;0.33,ratio=0.3;3.3,value=0.0,inplace=false",
        ]
    );
    assert_eq!(
        specs(&["center-crop:size=20"])?,
        ["center-crop:size=20", "to-dtype:dtype=float32,scale=true"]
    );
    assert_eq!(
        specs(&["to-dtype:dtype=float64", "normalize:mean=0;1;2,std=1"])?,
        [
            "to-dtype:dtype=float64,scale=false",
            "normalize:mean=0.0;1.0;2.0,std=1.0,inplace=false"
        ]
    );
    // The resolved specs build the same pipeline again.
    let again = specs(&[
        "pad:padding=1;2,fill=3,padding_mode=edge",
        "color-jitter:hue=0.1",
    ])?;
    let strs: Vec<&str> = again.iter().map(String::as_str).collect();
    assert_eq!(specs(&strs)?, again);
    Ok(())
}

#[test]
fn bad_specs_are_refused_in_one_line() -> Result<()> {
    let r = transforms();
    for (spec, phrase) in [
        ("random-crops:size=3", "unknown transform 'random-crops' (did you mean 'random-crop'?)"),
        ("resize:size=3,antialias=maybe", "resize: option antialias=maybe is not true or false"),
        ("resize:siz=3", "resize: unknown option"),
        ("resize", "resize: option size is required"),
        ("resize:size=none", "resize: max_size must be an integer when size is None"),
        ("resize:size=20;30,max_size=40", "max_size should only be passed if size is None"),
        ("center-crop:size=1;2;3", "center-crop: Please provide only two dimensions (h, w) for size."),
        ("pad:padding=1;2;3", "pad: Padding must be an int or a 1, 2, or 4 element of tuple or list, got 3"),
        ("pad:padding=1,padding_mode=wrap", "pad: option padding_mode=wrap is not one of constant, edge, reflect, symmetric"),
        ("random-horizontal-flip:p=1.5", "random-horizontal-flip: `p` should be a floating point value in the interval [0.0, 1.0]."),
        ("color-jitter:hue=0.7", "color-jitter: hue values should be between (-0.5, 0.5) and increasing, but got [-0.7, 0.7]."),
        ("color-jitter:brightness=-1", "color-jitter: If brightness is a single number, it must be non negative."),
        ("color-jitter:contrast=1;2;3", "color-jitter: option contrast=1;2;3 is not none, a number or two numbers written min;max"),
        ("random-erasing:scale=0.5;1.5", "random-erasing: Scale should be between 0 and 1"),
        ("random-erasing:value=noise", "random-erasing: option value=noise is not random, a number or a ;-separated list of numbers"),
        ("to-dtype:dtype=int7", "to-dtype: option dtype=int7 is not one of float32, float64, float16, bfloat16, uint8"),
    ] {
        match r.pipeline(&[spec]) {
            Ok(_) => panic!("{spec} is accepted"),
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "{spec}: {msg:?} is not one line");
                assert!(msg.contains(phrase), "{spec}: {msg:?} does not say {phrase:?}");
            }
        }
    }
    // A float-only transform on a uint8 image, as torchvision says it.
    let image = Tensor::f_zeros([3, 4, 4], (Kind::Uint8, kiln_tensor::Device::Cpu))?;
    let mut rng = Generator::new(0)?;
    let err = r
        .pipeline(&["to-dtype:dtype=uint8", "normalize:mean=0.5,std=0.5"])?
        .apply(image, &mut rng)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("normalize: Input tensor should be a float tensor. Got torch.uint8.")
    );
    Ok(())
}

#[test]
fn kiln_transforms_lists_every_transform_with_its_class_name() {
    let text = transforms().describe();
    for (name, class) in [
        ("resize", "Resize"),
        ("center-crop", "CenterCrop"),
        ("pad", "Pad"),
        ("random-crop", "RandomCrop"),
        ("random-resized-crop", "RandomResizedCrop"),
        ("random-horizontal-flip", "RandomHorizontalFlip"),
        ("random-vertical-flip", "RandomVerticalFlip"),
        ("color-jitter", "ColorJitter"),
        ("random-erasing", "RandomErasing"),
        ("normalize", "Normalize"),
        ("to-dtype", "ToDtype"),
    ] {
        assert!(
            text.contains(&format!("\n{name} ({class})\n")),
            "{name} ({class}) missing from:\n{text}"
        );
    }
    assert!(text.starts_with("Transforms (spec: NAME[:key=value,...]"));
    assert!(text.contains("size (required)"));
}
