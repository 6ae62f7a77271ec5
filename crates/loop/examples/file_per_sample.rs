//! Training on a dataset of one's own that reads one file per sample, with
//! loader worker threads: `shared/files.rs` implements `Dataset` for a
//! directory of class directories and registers it as `files:DIR`.
//!
//!     cargo run -p kiln-loop --example file_per_sample -- workers=2 epochs=3
//!     cargo run -p kiln-loop --example file_per_sample -- dir=path/to/classes
//!
//! Without `dir=`, a demo directory of 3 classes × 400 files is written
//! into the system's temporary directory first. Other arguments are
//! `flag=value` pairs with `kiln train`'s flag names.
use kiln_loop::run::{train, Display, TrainRequest};
use kiln_loop::{Notice, Notices};

#[path = "shared/files.rs"]
mod files;

fn main() -> anyhow::Result<()> {
    let mut request = TrainRequest {
        display: Display::Tutorial(Box::new(std::io::stdout())),
        notices: Notices::new(|n: &Notice| eprintln!("file_per_sample: {n}")),
        ..TrainRequest::default()
    };
    let mut dir = None;
    for arg in std::env::args().skip(1) {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("arguments are flag=value pairs, got {arg}"))?;
        match key {
            "dir" => dir = Some(std::path::PathBuf::from(value)),
            "run_dir" => request.run_dir = Some(value.into()),
            _ => {
                let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
                request.flags.insert(key.into(), value);
            }
        }
    }
    let dir = match dir {
        Some(dir) => dir,
        None => {
            let dir = std::env::temp_dir().join("kiln-file-per-sample");
            if !dir.exists() {
                files::write_demo(&dir, 3, 400, 16)?;
            }
            dir
        }
    };
    let defaults: [(&str, serde_json::Value); 5] = [
        ("data", format!("files:{}", dir.display()).into()),
        ("model", "mlp:hidden=32".into()),
        ("optimizer", "adam:lr=0.01".into()),
        ("epochs", 2.into()),
        ("batch_size", 32.into()),
    ];
    for (key, value) in defaults {
        request.flags.entry(key).or_insert(value);
    }
    let summary = train(request, &files::registries())?;
    println!("stopped: {} after {} steps", summary.stop, summary.steps);
    Ok(())
}
