fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run = std::path::Path::new("/tmp/scratch-plot/exp1");
    let _ = std::fs::remove_dir_all("/tmp/scratch-plot");
    let mut w = kiln_loop::metrics_log::MetricsWriter::create(run)?;
    for epoch in 1..=3u64 {
        for i in 1..=300u64 {
            let step = (epoch - 1) * 300 + i;
            let loss = 2.3 * (-(step as f64) / 200.0).exp() + 0.3 + 0.05 * ((step as f64) * 1.7).sin();
            w.log_step(step, epoch, [("loss", loss), ("lr", 1e-3 * 0.5f64.powi(epoch as i32 - 1))])?;
        }
        w.log_epoch(epoch * 300, epoch, [("loss", 0.9 / epoch as f64), ("accuracy", 0.5 + 0.1 * epoch as f64)])?;
    }
    for p in kiln_loop::plot::plot_run(run, std::path::Path::new("/tmp/scratch-plot/out"))? { println!("{}", p.display()); }
    Ok(())
}
