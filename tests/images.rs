//! `kiln train --data images:` prints what torchvision's `ImageFolder` +
//! `transforms.v2` + PyTorch's `DataLoader(num_workers=N)` + the quickstart
//! loop print (`scripts/reference/image_folder.py`), for N = 0 and 2, over a
//! folder of PNG and JPEG images written at test time from FashionMNIST
//! (`scripts/reference/make_image_folder.py`); and bad images, transforms and
//! folders are refused in one line naming the file or the flag.
use crate::common;

use common::{checkpoints, data_dir, kiln, pytorch, temp_dir, text};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The image folder of these tests (`train/` and `test/`, 10 classes of
/// 24 and 8 images, PNG and JPEG, RGB and grayscale), written once per test
/// process.
fn folder() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = temp_dir("image-folder");
        let data = data_dir();
        pytorch(
            "scripts/reference/make_image_folder.py",
            &[
                dir.to_str().unwrap_or_default(),
                "--data-dir",
                data.to_str().unwrap_or_default(),
            ],
        );
        dir
    })
}

/// A copy of [`folder`] to spoil.
fn copy_of_folder(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(folder().join("train"))
        .arg(folder().join("test"))
        .arg(&dir)
        .status();
    assert!(status.is_ok_and(|s| s.success()), "cannot copy the folder");
    dir
}

/// The first file of `dir` whose name ends with `ext`.
fn first_file(dir: &Path, ext: &str) -> PathBuf {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{}: no *{ext}", dir.display()))
}

fn s(path: &Path) -> String {
    path.display().to_string()
}

/// `args` split, with `{train}` and `{test}` the folder's directories.
fn argv(args: &str) -> Vec<String> {
    let (train, test) = (s(&folder().join("train")), s(&folder().join("test")));
    args.split_whitespace()
        .map(|a| a.replace("{train}", &train).replace("{test}", &test))
        .collect()
}

/// `kiln train ARGS` in a new run directory `name`: the run directory and
/// what kiln printed (failing the test if kiln fails).
fn train(name: &str, args: &[String]) -> (String, String) {
    let run = s(&temp_dir(&format!("images-{name}")).join("run"));
    let mut kiln_argv = vec!["train", "--run-dir", &run];
    kiln_argv.extend(args.iter().map(String::as_str));
    let out = kiln(&kiln_argv);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{name}: kiln failed: {stderr}");
    (run, stdout)
}

fn same_log(name: &str, kiln: &str, pytorch: &str) {
    if kiln != pytorch {
        let first = kiln.lines().zip(pytorch.lines()).position(|(a, b)| a != b);
        panic!("{name}: kiln's log differs from PyTorch's at line {first:?}\n--- kiln\n{kiln}\n--- pytorch\n{pytorch}");
    }
}

/// kiln's log against the reference's for the same flags: the run
/// directory and the reference's log.
fn check(name: &str, args: &str) -> (String, String) {
    let argv = argv(args);
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let expected = pytorch("scripts/reference/image_folder.py", &refs);
    let (run, stdout) = train(name, &argv);
    same_log(name, &stdout, &expected);
    (run, expected)
}

const NORMALIZE: &str = "normalize:mean=0.5;0.4;0.3,std=0.2;0.25;0.3";

#[test]
fn image_folder_without_workers_prints_torchvisions_numbers() {
    let args = format!(
        "--seed 0 --epochs 2 --batch-size 32 --threads 2 --workers 0 \
         --data images:{{train}},test={{test}} \
         --transform random-resized-crop:size=24,scale=0.5;1.0 --transform random-horizontal-flip \
         --transform {NORMALIZE} --test-transform center-crop:size=24 --test-transform {NORMALIZE}"
    );
    let (run, _) = check("workers0", &args);
    // config.json records the resolved transforms, for --resume and kiln eval.
    let config = std::fs::read_to_string(Path::new(&run).join("config.json")).unwrap_or_default();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
    assert_eq!(
        config["transform"][0],
        "random-resized-crop:size=24,scale=0.5;1.0,ratio=0.75;1.3333333333333333,interpolation=bilinear,antialias=true"
    );
    assert_eq!(config["test_transform"][0], "center-crop:size=24");
}

#[test]
fn image_folder_with_two_workers_prints_torchvisions_numbers_and_resumes() {
    let args = format!(
        "--seed 3 --batch-size 16 --threads 2 --lr 0.01 --workers 2 \
         --data images:{{train}},test_fraction=0.25 \
         --transform random-crop:size=24,padding=2,padding_mode=reflect \
         --transform color-jitter:brightness=0.3,contrast=0.3,saturation=0.3,hue=0.05 \
         --transform random-vertical-flip --transform {NORMALIZE} \
         --transform random-erasing:p=0.5,value=random \
         --test-transform resize:size=26 --test-transform center-crop:size=24 --test-transform {NORMALIZE}"
    );
    let (_, expected) = check("workers2", &format!("{args} --epochs 2"));
    // One epoch, then resumed for a second from the saved config alone: the
    // transforms and workers come back, and so do the numbers.
    let (first, _) = train("workers2-first", &argv(&format!("{args} --epochs 1")));
    let out = kiln(&["train", "--resume", &first, "--epochs", "2"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "resume failed: {stderr}");
    let second = expected.find("Epoch 2").map_or("", |at| &expected[at..]);
    same_log("workers2-resumed", &stdout, second);
}

/// Runs kiln, expects `code` and one stderr line holding every `needle`.
fn expect_error(args: &[&str], code: i32, needles: &[&str]) {
    let out = kiln(args);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: stderr {stderr:?} stdout {stdout:?}"
    );
    let errors = common::stderr_diagnostics(&stderr);
    assert_eq!(errors.len(), 1, "{args:?}: not one line: {stderr:?}");
    assert!(errors[0].starts_with("error: "), "{args:?}: {stderr:?}");
    for needle in needles {
        assert!(
            errors[0].contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
    }
}

#[test]
fn bad_images_are_named_and_earlier_checkpoints_stay_intact() {
    let dir = copy_of_folder("images-bad");
    let (train, test) = (dir.join("train"), dir.join("test"));
    // Unshuffled, the last class's first image (sample 216 of 240) is in
    // batch 7 of 8 (32 per batch): steps 1 to 6 train and checkpoint first.
    let class = train.join("Trouser");
    let png = first_file(&class, ".png");
    let good = std::fs::read(&png).unwrap_or_default();
    std::fs::write(&png, &good[..good.len() / 2]).unwrap_or_default();
    let data = format!("images:{},test={}", s(&train), s(&test));
    let run = dir.join("run");
    let args = [
        "train",
        "--seed",
        "0",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--no-shuffle",
        "--checkpoint-every",
        "1",
        "--data",
        &data,
    ];
    let mut first = args.to_vec();
    let run_text = s(&run);
    first.extend(["--run-dir", &run_text]);
    expect_error(&first, 1, &[&s(&png), "truncated"]);
    let kept: Vec<String> = checkpoints(&run)
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_str()?.to_string()))
        .collect();
    assert_eq!(
        kept,
        ["step-000000004", "step-000000005", "step-000000006"],
        "checkpoints left: {kept:?}"
    );
    // The checkpoint is intact: with the image repaired, the run resumes from it.
    std::fs::write(&png, &good).unwrap_or_default();
    let out = kiln(&["train", "--resume", &run_text]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "resume failed: {stderr}");
    assert!(stderr.contains("step-000000006"), "{stderr}");

    // Text with an image's extension, read by a worker, in a shuffled run.
    let jpg = first_file(&class, ".jpg");
    std::fs::write(&jpg, "this is not an image\n").unwrap_or_default();
    let second = s(&dir.join("run2"));
    expect_error(
        &[
            "train",
            "--seed",
            "0",
            "--epochs",
            "1",
            "--workers",
            "2",
            "--data",
            &data,
            "--run-dir",
            &second,
        ],
        1,
        &[&s(&jpg), "not an image"],
    );
    // A JPEG cut short.
    let good = std::fs::read(
        folder()
            .join("train/Trouser")
            .join(jpg.file_name().unwrap_or_default()),
    )
    .unwrap_or_default();
    std::fs::write(&jpg, &good[..good.len() - 100]).unwrap_or_default();
    let third = s(&dir.join("run3"));
    expect_error(
        &[
            "train",
            "--seed",
            "0",
            "--epochs",
            "1",
            "--workers",
            "2",
            "--data",
            &data,
            "--run-dir",
            &third,
        ],
        1,
        &[&s(&jpg)],
    );
}

#[test]
fn bad_transforms_and_folders_are_refused_in_one_line() {
    let (train, test) = (s(&folder().join("train")), s(&folder().join("test")));
    let data = format!("images:{train},test={test}");
    let dir = temp_dir("images-refused");
    let run = s(&dir.join("run"));
    let train_with = |extra: &[&'static str]| -> Vec<String> {
        let mut argv: Vec<String> = ["train", "--epochs", "1", "--run-dir", &run, "--data", &data]
            .iter()
            .map(|a| a.to_string())
            .collect();
        argv.extend(extra.iter().map(|a| a.to_string()));
        argv
    };
    let expect = |extra: &[&'static str], code: i32, needles: &[&str]| {
        let argv = train_with(extra);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        expect_error(&argv, code, needles);
    };
    expect(
        &["--transform", "random-crp:size=20"],
        2,
        &[
            "--transform",
            "unknown transform 'random-crp'",
            "did you mean 'random-crop'",
        ],
    );
    expect(
        &["--test-transform", "center-crop:sise=20"],
        2,
        &[
            "--test-transform",
            "center-crop",
            "sise (did you mean size?)",
        ],
    );
    expect(
        &["--transform", "random-horizontal-flip:p=2"],
        2,
        &[
            "--transform",
            "random-horizontal-flip",
            "interval [0.0, 1.0]",
        ],
    );
    // A crop larger than the images, without padding: torchvision's words.
    expect(
        &["--transform", "random-crop:size=40"],
        1,
        &[
            &train,
            "--transform random-crop",
            "Required crop size (40, 40) is larger than input image size (28, 28)",
        ],
    );
    // Transforms without images.
    expect_error(
        &[
            "train",
            "--epochs",
            "1",
            "--run-dir",
            &run,
            "--transform",
            "random-horizontal-flip",
        ],
        2,
        &["--transform", "--data idx has none", "--data images:DIR"],
    );
    // A class without images, a folder without classes.
    let empty = dir.join("empty");
    for class in ["a", "b"] {
        std::fs::create_dir_all(empty.join(class)).unwrap_or_default();
    }
    std::fs::copy(
        first_file(&folder().join("train/Bag"), ".png"),
        empty.join("a/1.png"),
    )
    .unwrap_or_default();
    std::fs::write(empty.join("b/notes.txt"), "no image here").unwrap_or_default();
    let spec = format!("images:{}", s(&empty));
    expect_error(
        &["train", "--epochs", "1", "--run-dir", &run, "--data", &spec],
        1,
        &[&s(&empty), "Found no valid file for the classes b"],
    );
    let spec = format!("images:{}", s(&empty.join("a")));
    expect_error(
        &["train", "--epochs", "1", "--run-dir", &run, "--data", &spec],
        1,
        &[&s(&empty.join("a")), "Couldn't find any class folder"],
    );
    assert!(
        !dir.join("run").exists(),
        "a refused run wrote its directory"
    );
}

#[test]
fn kiln_transforms_lists_every_transform() {
    let out = kiln(&["transforms"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for name in [
        "resize (Resize)",
        "center-crop (CenterCrop)",
        "pad (Pad)",
        "random-crop (RandomCrop)",
        "random-resized-crop (RandomResizedCrop)",
        "random-horizontal-flip (RandomHorizontalFlip)",
        "random-vertical-flip (RandomVerticalFlip)",
        "color-jitter (ColorJitter)",
        "random-erasing (RandomErasing)",
        "normalize (Normalize)",
        "to-dtype (ToDtype)",
    ] {
        assert!(
            stdout.contains(name),
            "kiln transforms lacks {name}:\n{stdout}"
        );
    }
}
