//! A full disk mid-run: the checkpoint write fails cleanly (its temporary
//! directory removed, the error naming the file, "no space left on device"
//! and the checkpoint a resume continues from), and once space is freed the
//! run resumes to the same final weights as a run that never hit the wall.
//!
//! The run directory is a small tmpfs mounted in a private mount namespace
//! (`unshare --mount`, with `--user --map-root-user` when not root). Where
//! no namespace can be made, the same path is driven by a real write
//! failure from the operating system instead: a file-size limit
//! (`ulimit -f`) that the first checkpoint exceeds.
use crate::common;

use common::{kiln, temp_dir, text, train_args};
use std::path::Path;
use std::process::Command;

fn args(run: &Path) -> Vec<String> {
    train_args(
        run,
        &[
            "--train-samples",
            "1280",
            "--test-samples",
            "200",
            "--epochs",
            "1",
            "--seed",
            "13",
            "--checkpoint-every",
            "5",
            "--keep-checkpoints",
            "2",
        ],
    )
}

fn quoted(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `script` in a private mount namespace; `None` if none can be made.
fn in_mount_namespace(script: &str) -> Option<std::process::Output> {
    let root = Command::new("id").arg("-u").output().ok()?;
    let mut cmd = Command::new("unshare");
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(["--mount", "--propagation", "private", "bash", "-c", script]);
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .status()
        .ok()?;
    if !probe.success() {
        return None;
    }
    cmd.output().ok()
}

#[test]
fn a_full_disk_fails_the_checkpoint_cleanly_and_the_run_resumes_exactly() {
    let reference = temp_dir("disk-ref");
    let out = kiln(
        &args(&reference)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let want = std::fs::read(reference.join("checkpoints/step-000000020/model.safetensors"))
        .unwrap_or_default();
    assert!(!want.is_empty());

    let dir = temp_dir("disk-full");
    let mnt = dir.join("mnt");
    let run = mnt.join("run");
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&mnt).unwrap_or_default();
    std::fs::create_dir_all(&out_dir).unwrap_or_default();
    let kiln_bin = env!("CARGO_BIN_EXE_kiln");
    let train = format!("'{kiln_bin}' {}", quoted(&args(&run)));
    let resume = format!("'{kiln_bin}' train --resume '{}'", run.display());
    let (m, o) = (mnt.display(), out_dir.display());
    // One checkpoint is about 5.4 MB (weights + momentum): 14 MB holds two
    // and the metrics, not a third.
    let script = format!(
        "mount -t tmpfs -o size=14M tmpfs '{m}' || exit 97
         {train} > '{o}/first.out' 2> '{o}/first.err'; echo $? > '{o}/first.rc'
         ls -a '{m}/run/checkpoints' > '{o}/after_failure.ls'
         mount -o remount,size=64M '{m}' || exit 98
         {resume} > '{o}/second.out' 2> '{o}/second.err'; echo $? > '{o}/second.rc'
         cp '{m}/run/checkpoints/step-000000020/model.safetensors' '{o}/final.safetensors'"
    );
    let read = |f: &str| std::fs::read_to_string(out_dir.join(f)).unwrap_or_default();
    match in_mount_namespace(&script) {
        Some(out) if out.status.code() != Some(97) => {
            assert!(out.status.success(), "{}", text(&out).1);
            let err = read("first.err");
            assert_eq!(read("first.rc").trim(), "1", "{err}");
            let line = err.lines().last().unwrap_or_default();
            assert!(
                line.starts_with(&format!(
                    "error: writing {}/checkpoints/step-000000015/",
                    run.display()
                )) && line.contains("no space left on device")
                    && line.contains(&format!(
                        "the last complete checkpoint is {}/checkpoints/step-000000010",
                        run.display()
                    ))
                    && line.contains("kiln train --resume"),
                "{err}"
            );
            let listing = read("after_failure.ls");
            assert!(
                !listing.contains(".tmp-"),
                "the temporary checkpoint is removed: {listing}"
            );
            assert_eq!(read("second.rc").trim(), "0", "{}", read("second.err"));
            assert!(
                read("second.err").contains("step-000000010"),
                "{}",
                read("second.err")
            );
            let got = std::fs::read(out_dir.join("final.safetensors")).unwrap_or_default();
            assert!(got == want, "the resumed run ends with other weights");
        }
        _ => {
            // No mount namespace here: an OS write failure instead (EFBIG).
            let script = format!(
                "trap '' XFSZ; ulimit -f 2048; {train} > '{o}/first.out' 2> '{o}/first.err'; echo $? > '{o}/first.rc'"
            );
            let status = Command::new("bash").args(["-c", &script]).status();
            assert!(status.is_ok_and(|s| s.success()));
            let err = read("first.err");
            assert_eq!(read("first.rc").trim(), "1", "{err}");
            assert!(
                err.contains("writing") && err.contains("no complete checkpoint"),
                "{err}"
            );
            let leftovers: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
            let out = kiln(&["train", "--resume", run.to_str().unwrap_or("")]);
            assert!(out.status.success(), "{}", text(&out).1);
            let got = std::fs::read(run.join("checkpoints/step-000000020/model.safetensors"))
                .unwrap_or_default();
            assert!(got == want, "the resumed run ends with other weights");
        }
    }
}
