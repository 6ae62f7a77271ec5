//! Run charts: which files are written, and that they are real PNG/SVG images.
use crate::common;

use anyhow::{bail, ensure, Context, Result};
use common::TempDir;
use kiln_loop::loggers::metrics_log::MetricsWriter;
use kiln_loop::plot::{plot_run, CHART_SIZE};
use std::fs;
use std::io::Read;
use std::path::Path;

/// A decoded 8-bit RGB PNG.
struct Rgb {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

/// Decodes an 8-bit RGB, non-interlaced PNG (what plotters writes): checks
/// the signature and the IHDR chunk, inflates the IDAT chunks and undoes the
/// per-row filters.
fn decode_png(bytes: &[u8]) -> Result<Rgb> {
    ensure!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "no PNG signature");
    let mut pos = 8;
    let mut header = None;
    let mut idat = Vec::new();
    loop {
        let len_bytes: [u8; 4] = bytes
            .get(pos..pos + 4)
            .context("truncated chunk")?
            .try_into()?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let kind = bytes.get(pos + 4..pos + 8).context("truncated chunk")?;
        let data = bytes
            .get(pos + 8..pos + 8 + len)
            .context("truncated chunk data")?;
        match kind {
            b"IHDR" => {
                ensure!(pos == 8, "IHDR must come first");
                let width = u32::from_be_bytes(data[0..4].try_into()?) as usize;
                let height = u32::from_be_bytes(data[4..8].try_into()?) as usize;
                ensure!(data[8] == 8 && data[9] == 2, "8-bit RGB expected");
                ensure!(data[12] == 0, "non-interlaced expected");
                header = Some((width, height));
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len;
    }
    let (width, height) = header.context("no IHDR chunk")?;
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(idat.as_slice()).read_to_end(&mut raw)?;
    let stride = width * 3;
    ensure!(
        raw.len() == height * (stride + 1),
        "image data has the wrong size"
    );
    let mut pixels = vec![0u8; height * stride];
    for y in 0..height {
        let filter = raw[y * (stride + 1)];
        for x in 0..stride {
            let v = raw[y * (stride + 1) + 1 + x];
            let a = if x >= 3 {
                pixels[y * stride + x - 3]
            } else {
                0
            };
            let b = if y > 0 {
                pixels[(y - 1) * stride + x]
            } else {
                0
            };
            let c = if x >= 3 && y > 0 {
                pixels[(y - 1) * stride + x - 3]
            } else {
                0
            };
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = (
                        (p - i16::from(a)).abs(),
                        (p - i16::from(b)).abs(),
                        (p - i16::from(c)).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                other => bail!("unknown PNG filter {other}"),
            };
            pixels[y * stride + x] = v.wrapping_add(predicted);
        }
    }
    Ok(Rgb {
        width,
        height,
        pixels,
    })
}

impl Rgb {
    /// Pixels within `tolerance` of `color` on every channel.
    fn count_near(&self, color: [u8; 3], tolerance: u8) -> usize {
        self.pixels
            .chunks_exact(3)
            .filter(|p| {
                p.iter()
                    .zip(color)
                    .all(|(&v, c)| v.abs_diff(c) <= tolerance)
            })
            .count()
    }
}

/// Logs a plausible 3-epoch run: falling train loss, per-epoch test loss
/// and accuracy, a decaying learning rate.
fn write_run(dir: &Path) -> Result<()> {
    let mut writer = MetricsWriter::create(dir)?;
    let steps_per_epoch = 50u64;
    for epoch in 1..=3u64 {
        for i in 1..=steps_per_epoch {
            let step = (epoch - 1) * steps_per_epoch + i;
            let loss =
                2.3 * (-(step as f64) / 60.0).exp() + 0.3 + 0.05 * ((step as f64) * 1.7).sin();
            let lr = 0.1 * 0.5f64.powi(epoch as i32 - 1);
            writer.log_step(step, epoch, [("train_loss", loss), ("lr", lr)])?;
        }
        let step = epoch * steps_per_epoch;
        writer.log_epoch(
            step,
            epoch,
            [
                ("test_loss", 0.9 / epoch as f64),
                ("test_accuracy", 0.5 + 0.1 * epoch as f64),
            ],
        )?;
    }
    Ok(())
}

#[test]
fn plots_loss_accuracy_and_lr_as_png_and_svg() -> Result<()> {
    let tmp = TempDir::new("full")?;
    let run = tmp.path().join("exp1");
    write_run(&run)?;
    let out = tmp.path().join("plots");
    let files = plot_run(&run, &out, &mut |_| {})?;
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    ensure!(
        names
            == [
                "loss.png",
                "loss.svg",
                "accuracy.png",
                "accuracy.svg",
                "lr.png",
                "lr.svg"
            ],
        "{names:?}"
    );
    for (stem, title, legend, color) in [
        (
            "loss",
            "Loss — exp1",
            "train loss (per step)",
            [31, 119, 180],
        ),
        (
            "accuracy",
            "Accuracy — exp1",
            "test accuracy",
            [255, 127, 14],
        ),
        (
            "lr",
            "Learning rate — exp1",
            "learning rate (per step)",
            [148, 103, 189],
        ),
    ] {
        let png = decode_png(&fs::read(out.join(format!("{stem}.png")))?)
            .with_context(|| format!("{stem}.png"))?;
        ensure!(
            (png.width as u32, png.height as u32) == CHART_SIZE,
            "{stem}.png is {}x{}",
            png.width,
            png.height
        );
        let white = png.count_near([255, 255, 255], 0);
        let total = png.width * png.height;
        ensure!(
            white > total / 2 && white < total,
            "{stem}.png: {white} of {total} white"
        );
        let line = png.count_near(color, 10);
        ensure!(
            line > 300,
            "{stem}.png: only {line} pixels in the series colour"
        );
        ensure!(
            png.count_near([0, 0, 0], 40) > 500,
            "{stem}.png: no dark text or axes"
        );

        let svg = fs::read_to_string(out.join(format!("{stem}.svg")))?;
        ensure!(svg.trim_start().starts_with("<svg"), "{stem}.svg start");
        ensure!(svg.trim_end().ends_with("</svg>"), "{stem}.svg end");
        ensure!(svg.contains(title), "{stem}.svg lacks its title {title:?}");
        ensure!(
            svg.contains(legend),
            "{stem}.svg lacks its legend {legend:?}"
        );
    }
    let svg = fs::read_to_string(out.join("loss.svg"))?;
    ensure!(
        svg.contains("test loss") && svg.contains(">\nstep\n</text>"),
        "loss.svg texts"
    );
    ensure!(
        fs::read_dir(&out)?.count() == 6,
        "exactly the six charts, no temporary files"
    );

    // Plotting again replaces the files.
    ensure!(plot_run(&run, &out, &mut |_| {})?.len() == 6);
    Ok(())
}

/// Evaluations every N steps (`step` records, as `--eval-every-steps`
/// logs them) are drawn: the test loss by step, the accuracy by step, and
/// the test set in the same colour in both charts.
#[test]
fn evaluations_every_n_steps_are_drawn_in_one_colour_per_set() -> Result<()> {
    let tmp = TempDir::new("evs")?;
    let run = tmp.path().join("evs");
    let mut writer = MetricsWriter::create(&run)?;
    for step in 1..=30u64 {
        writer.log_step(step, 1, [("train_loss", 2.0 / step as f64)])?;
        if step % 10 == 0 {
            let k = (step / 10) as f64;
            writer.log_step(
                step,
                1,
                [
                    ("test_loss", 1.5 - 0.2 * k),
                    ("test_accuracy", 0.4 + 0.1 * k),
                ],
            )?;
        }
    }
    drop(writer);
    let out = tmp.path().join("plots");
    let files = plot_run(&run, &out, &mut |_| {})?;
    ensure!(files.len() == 4, "loss and accuracy: {files:?}");
    let orange = [255, 127, 14];
    for stem in ["loss", "accuracy"] {
        let png = decode_png(&fs::read(out.join(format!("{stem}.png")))?)?;
        // Three markers (and the accuracy line) in the test colour.
        let n = png.count_near(orange, 10);
        ensure!(n > 100, "{stem}.png: only {n} pixels in the test colour");
        ensure!(
            png.count_near([44, 160, 44], 10) == 0,
            "{stem}.png: the validation colour without a validation set"
        );
    }
    let svg = fs::read_to_string(out.join("accuracy.svg"))?;
    ensure!(
        svg.contains("test accuracy") && svg.contains(">\nstep\n</text>"),
        "accuracy.svg is drawn against the step"
    );
    let svg = fs::read_to_string(out.join("loss.svg"))?;
    ensure!(svg.contains("test loss"), "loss.svg has the test curve");
    Ok(())
}

#[test]
fn a_chart_whose_metric_is_absent_is_skipped() -> Result<()> {
    let tmp = TempDir::new("partial")?;
    let run = tmp.path().join("run");
    let mut writer = MetricsWriter::create(&run)?;
    writer.log_step(1, 1, [("train_loss", 1.0)])?; // a single point still plots
    writer.log_step(2, 1, [("train_loss", f64::NAN)])?; // non-finite points are left out
    drop(writer);
    let files = plot_run(&run, &tmp.path().join("out"), &mut |_| {})?;
    ensure!(files.len() == 2, "{files:?}");
    ensure!(files
        .iter()
        .all(|p| p.file_stem().is_some_and(|s| s == "loss")));
    let png = decode_png(&fs::read(&files[0])?)?;
    ensure!((png.width as u32, png.height as u32) == CHART_SIZE);
    Ok(())
}

#[test]
fn nothing_to_plot_is_an_error() -> Result<()> {
    let tmp = TempDir::new("empty")?;
    let run = tmp.path().join("run");
    let mut writer = MetricsWriter::create(&run)?;
    writer.log_step(1, 1, [("grad_norm", 1.0)])?;
    drop(writer);
    let err = plot_run(&run, &tmp.path().join("out"), &mut |_| {})
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(err.contains("nothing to plot"), "{err}");

    let err = plot_run(
        &tmp.path().join("absent"),
        &tmp.path().join("out"),
        &mut |_| {},
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    ensure!(err.contains("metrics.jsonl"), "{err}");
    Ok(())
}

#[test]
fn a_long_run_is_thinned_to_the_chart_width() -> Result<()> {
    let tmp = TempDir::new("long")?;
    let run = tmp.path().join("run");
    let mut writer = MetricsWriter::create(&run)?;
    for step in 1..=20_000u64 {
        let loss = 1.0 / (step as f64).sqrt() + if step % 1000 == 500 { 3.0 } else { 0.0 };
        writer.log_step(step, 1, [("train_loss", loss)])?;
    }
    drop(writer);
    let out = tmp.path().join("out");
    plot_run(&run, &out, &mut |_| {})?;
    let svg = fs::metadata(out.join("loss.svg"))?.len();
    ensure!(svg < 100_000, "loss.svg is {svg} bytes");
    let png = decode_png(&fs::read(out.join("loss.png"))?)?;
    ensure!(
        png.count_near([31, 119, 180], 10) > 1000,
        "the curve is drawn"
    );
    Ok(())
}
