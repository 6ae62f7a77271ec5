//! A binary of your own that gets everything `kiln train` does — the run
//! directory, `config.json`, checkpoints, `--resume`, the metric files, the
//! tutorial's printed lines — for components of your own: a data source
//! (`rings:n=2048`) and a model (`wide:width=64`) registered next to kiln's
//! (`shared/own.rs`).
//!
//!     cargo run -p kiln-loop --example own_run -- epochs=3 run_dir=runs/rings
//!     cargo run -p kiln-loop --example own_run -- resume=runs/rings epochs=4
//!
//! Arguments are `flag=value` pairs with `kiln train`'s flag names
//! (`model=wide:width=128`, `optimizer=adam`, `seed=1`); `run_dir=` and
//! `resume=` pick the directory.
use kiln_loop::run::{train, Display, TrainRequest};
use kiln_loop::{Notice, Notices};

#[path = "shared/own.rs"]
mod own;

fn main() -> anyhow::Result<()> {
    let mut request = TrainRequest {
        display: Display::Tutorial(Box::new(std::io::stdout())),
        notices: Notices::new(|n: &Notice| eprintln!("own_run: {n}")),
        ..TrainRequest::default()
    };
    for arg in std::env::args().skip(1) {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("arguments are flag=value pairs, got {arg}"))?;
        match key {
            "run_dir" => request.run_dir = Some(value.into()),
            "resume" => request.resume = Some(value.into()),
            // Numbers and booleans as JSON, everything else as text.
            _ => {
                let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
                request.flags.insert(key.into(), value);
            }
        }
    }
    // A new run's defaults; a resumed run keeps its saved config (only
    // the flags given again change it).
    if request.resume.is_none() {
        for (key, value) in [
            ("data", "rings".into()),
            ("model", "wide".into()),
            ("epochs", 2.into()),
        ] {
            request.flags.entry(key).or_insert(value);
        }
    }
    let summary = train(request, &own::registries())?;
    println!("stopped: {} after {} steps", summary.stop, summary.steps);
    Ok(())
}
