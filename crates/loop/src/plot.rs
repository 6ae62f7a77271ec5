//! Charts of a run's metrics: loss, accuracy and learning rate, as PNG and SVG.
//!
//! [`plot_run`] reads `RUN_DIR/metrics.jsonl` (see [`crate::loggers::metrics_log`])
//! and draws, into `OUT_DIR`:
//!
//! - `loss.{png,svg}`: the training loss of every step (`step` records'
//!   `train_loss`) and the validation and test loss of every evaluation
//!   (at epoch ends, every `--eval-every-steps`, at an early stop; with
//!   markers), against the optimizer step;
//! - `accuracy.{png,svg}`: the validation and test accuracy of every
//!   evaluation, against the epoch (against the step when some evaluation
//!   was not at an epoch end);
//! - `lr.{png,svg}`: the learning rate of every step (of every epoch if the
//!   run logged no per-step rate), against the optimizer step.
//!
//! A set has one colour in every chart (training blue, validation green,
//! test orange). A chart whose metric the run did not log is skipped. Text is drawn with
//! the DejaVu Sans font embedded in the crate (`assets/DejaVuSans.ttf`), so
//! no system font is needed. Files are written to a temporary name and
//! renamed into place.
use crate::loggers::metrics_log::{read_metrics, MetricRecord, Scope};
use crate::loggers::metrics_log::{
    LR, TEST_ACCURACY, TEST_LOSS, TRAIN_LOSS, VAL_ACCURACY, VAL_LOSS,
};
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fmt::Display;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Width and height in pixels of the PNG charts (and of the SVG canvas).
pub const CHART_SIZE: (u32, u32) = (1000, 600);

/// DejaVu Sans 2.37 (Bitstream Vera license, see `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// The family name the font is registered under; plotters' default text
/// styles (axis labels, legend) use it.
const FAMILY: &str = "sans-serif";

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const RED: RGBColor = RGBColor(214, 39, 40);

/// One line on a chart.
struct Series {
    label: &'static str,
    color: RGBColor,
    /// Draw a marker on each point (for sparse, per-epoch series).
    markers: bool,
    points: Vec<(f64, f64)>,
}

/// One chart: its file stem, texts and series.
struct Chart {
    stem: &'static str,
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    /// Where the legend goes: where the curves usually are not.
    legend: SeriesLabelPosition,
    series: Vec<Series>,
    /// The points' x are log10 of the values, labelled `1e-8`, `1e-7`…
    log_x: bool,
}

/// Draws the charts of the run in `run_dir` into `out_dir` (created if
/// missing) and returns the files written, PNG then SVG for each chart.
///
/// Errors if `metrics.jsonl` is missing or malformed, if it holds no loss,
/// accuracy or lr values, or if a file cannot be written; a torn last line
/// of the metrics is skipped with a warning through `warn`.
pub fn plot_run(
    run_dir: &Path,
    out_dir: &Path,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<PathBuf>> {
    let records = read_metrics(run_dir, warn)?;
    let name = run_dir
        .canonicalize()
        .ok()
        .as_deref()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| run_dir.display().to_string());
    let written = plot_records(&records, &name, out_dir)?;
    if written.is_empty() {
        return Err(Error::Data {
            path: run_dir.join(crate::loggers::metrics_log::METRICS_FILE),
            message: format!(
                "nothing to plot: no finite {TRAIN_LOSS:?}, {TEST_LOSS:?}, {VAL_LOSS:?}, {TEST_ACCURACY:?}, {VAL_ACCURACY:?} or {LR:?} values"
            ),
        });
    }
    Ok(written)
}

/// Draws the charts of `records` into `out_dir` (created if missing), with
/// `run_name` in the titles; returns the files written (none if the records
/// hold no finite loss, accuracy or lr value).
pub fn plot_records(
    records: &[MetricRecord],
    run_name: &str,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    register_font()?;
    fs::create_dir_all(out_dir).map_err(|e| output_error(out_dir, e))?;
    let mut written = Vec::new();
    for chart in charts(records, run_name) {
        if chart.series.is_empty() {
            continue;
        }
        let png = out_dir.join(format!("{}.png", chart.stem));
        write_png(&chart, &png)?;
        written.push(png);
        let svg = out_dir.join(format!("{}.svg", chart.stem));
        write_svg(&chart, &svg)?;
        written.push(svg);
    }
    Ok(written)
}

/// Draws a learning-rate finder's curve ([`crate::lr_find`]) into
/// `out_dir` as `lr_find.png` and `lr_find.svg`: the smoothed loss against
/// the lr (on a log axis for an exponential sweep, as Lightning's
/// `lr_finder.plot`), the suggested lr marked; returns the files.
pub fn plot_lr_find(
    lrs: &[f64],
    losses: &[f64],
    suggestion: Option<usize>,
    log_x: bool,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    register_font()?;
    fs::create_dir_all(out_dir).map_err(|e| output_error(out_dir, e))?;
    let x = |lr: f64| if log_x { lr.log10() } else { lr };
    let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let curve: Vec<(f64, f64)> = lrs
        .iter()
        .zip(losses)
        .map(|(&lr, &loss)| (x(lr), loss))
        .filter(finite)
        .collect();
    let mut series = vec![Series {
        label: "smoothed loss",
        color: BLUE,
        markers: false,
        points: curve,
    }];
    let marked: Vec<(f64, f64)> = suggestion
        .and_then(|i| Some((x(*lrs.get(i)?), *losses.get(i)?)))
        .filter(finite)
        .into_iter()
        .collect();
    if !marked.is_empty() {
        series.push(Series {
            label: "suggestion",
            color: RED,
            markers: true,
            points: marked,
        });
    }
    let chart = Chart {
        stem: "lr_find",
        title: "Learning rate finder".into(),
        x_desc: "Learning rate",
        y_desc: "Loss",
        legend: SeriesLabelPosition::UpperLeft,
        series,
        log_x,
    };
    let png = out_dir.join("lr_find.png");
    write_png(&chart, &png)?;
    let svg = out_dir.join("lr_find.svg");
    write_svg(&chart, &svg)?;
    Ok(vec![png, svg])
}

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "the embedded chart font could not be loaded".into(),
        ))
    }
}

/// `(x, value)` of every record of `scope` that has a finite `metric`.
fn points(
    records: &[MetricRecord],
    scope: Scope,
    metric: &str,
    x: impl Fn(&MetricRecord) -> u64,
) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter(|r| r.scope == scope)
        .filter_map(|r| r.get(metric).map(|v| (x(r) as f64, v)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

/// Thins a long series to what a chart `CHART_SIZE.0` pixels wide can show:
/// the x range is cut into one bucket per pixel column and each bucket keeps
/// its first, lowest, highest and last point, in their order. The drawn
/// curve (its envelope and its ends) looks the same, and a long run's SVG
/// stays small. Short series are returned as they are.
fn decimate(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let buckets = CHART_SIZE.0 as usize;
    if points.len() <= 4 * buckets {
        return points;
    }
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
    let width = hi - lo;
    if width <= 0.0 {
        return points;
    }
    let bucket_of = |x: f64| (((x - lo) / width * buckets as f64) as usize).min(buckets - 1);
    let mut keep = vec![false; points.len()];
    let mut start = 0;
    while start < points.len() {
        let bucket = bucket_of(points.get(start).map_or(lo, |p| p.0));
        let mut end = start;
        let (mut min_i, mut max_i) = (start, start);
        while let Some(p) = points.get(end) {
            if bucket_of(p.0) != bucket {
                break;
            }
            let y = |i: usize| points.get(i).map_or(p.1, |q| q.1);
            if p.1 < y(min_i) {
                min_i = end;
            }
            if p.1 > y(max_i) {
                max_i = end;
            }
            end += 1;
        }
        for i in [start, min_i, max_i, end - 1] {
            if let Some(k) = keep.get_mut(i) {
                *k = true;
            }
        }
        start = end;
    }
    points
        .into_iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(p))
        .collect()
}

/// `(step or epoch, value)` of every evaluation of `metric`: those at
/// epoch ends (`epoch` records) and those every N steps or at an early
/// stop (`step` records holding it), one point per step, in step order.
fn eval_points(records: &[MetricRecord], metric: &str, by_epoch: bool) -> Vec<(f64, f64)> {
    let mut points: Vec<(u64, u64, f64)> = records
        .iter()
        .filter_map(|r| r.get(metric).map(|v| (r.step, r.epoch, v)))
        .filter(|(.., v)| v.is_finite())
        .collect();
    points.sort_by_key(|(step, ..)| *step);
    points.dedup_by_key(|(step, ..)| *step);
    points
        .into_iter()
        .map(|(step, epoch, v)| (if by_epoch { epoch } else { step } as f64, v))
        .collect()
}

/// The colour of a set in every chart: training blue, validation green,
/// test orange.
const TRAIN_COLOR: RGBColor = BLUE;
const VAL_COLOR: RGBColor = GREEN;
const TEST_COLOR: RGBColor = ORANGE;

fn charts(records: &[MetricRecord], run_name: &str) -> Vec<Chart> {
    let by_step = |r: &MetricRecord| r.step;
    let series = |label, color, markers, points: Vec<(f64, f64)>| {
        (!points.is_empty()).then(|| Series {
            label,
            color,
            markers,
            points: decimate(points),
        })
    };
    let title = |what: &str| {
        if run_name.is_empty() {
            what.to_string()
        } else {
            format!("{what} — {run_name}")
        }
    };
    let mut lr_points = points(records, Scope::Step, LR, by_step);
    let mut lr_label = "learning rate (per step)";
    if lr_points.is_empty() {
        lr_points = points(records, Scope::Epoch, LR, by_step);
        lr_label = "learning rate (per epoch)";
    }
    // Accuracy is drawn per epoch when every evaluation was at an epoch
    // end, per step when some were not (`--eval-every-steps`, a run
    // stopped by `--max-steps`).
    let evaluated_mid_epoch = records.iter().any(|r| {
        r.scope == Scope::Step
            && [TEST_LOSS, VAL_LOSS, TEST_ACCURACY, VAL_ACCURACY]
                .iter()
                .any(|m| r.get(m).is_some())
    });
    let by_epoch = !evaluated_mid_epoch;
    vec![
        Chart {
            stem: "loss",
            title: title("Loss"),
            x_desc: "step",
            y_desc: "loss",
            log_x: false,
            legend: SeriesLabelPosition::UpperRight,
            series: [
                series(
                    "train loss (per step)",
                    TRAIN_COLOR,
                    false,
                    points(records, Scope::Step, TRAIN_LOSS, by_step),
                ),
                series(
                    "validation loss",
                    VAL_COLOR,
                    true,
                    eval_points(records, VAL_LOSS, false),
                ),
                series(
                    "test loss",
                    TEST_COLOR,
                    true,
                    eval_points(records, TEST_LOSS, false),
                ),
            ]
            .into_iter()
            .flatten()
            .collect(),
        },
        Chart {
            stem: "accuracy",
            title: title("Accuracy"),
            x_desc: if by_epoch { "epoch" } else { "step" },
            y_desc: "accuracy",
            log_x: false,
            legend: SeriesLabelPosition::LowerRight,
            series: [
                series(
                    "validation accuracy",
                    VAL_COLOR,
                    true,
                    eval_points(records, VAL_ACCURACY, by_epoch),
                ),
                series(
                    "test accuracy",
                    TEST_COLOR,
                    true,
                    eval_points(records, TEST_ACCURACY, by_epoch),
                ),
            ]
            .into_iter()
            .flatten()
            .collect(),
        },
        Chart {
            stem: "lr",
            title: title("Learning rate"),
            x_desc: "step",
            y_desc: "learning rate",
            log_x: false,
            legend: SeriesLabelPosition::UpperRight,
            series: series(lr_label, PURPLE, false, lr_points)
                .into_iter()
                .collect(),
        },
    ]
}

/// `[min, max]` of `values` widened by 5% on each side (or around a
/// single value), so no line lies on the frame. `integer` axes (steps,
/// epochs) get at least a quarter of a unit on each side.
fn padded_range(values: impl Iterator<Item = f64>, integer: bool) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        let pad = 0.05 * span;
        if integer {
            pad.max(0.25)
        } else {
            pad
        }
    } else if integer {
        0.5
    } else if lo != 0.0 {
        0.1 * lo.abs()
    } else {
        1.0
    };
    (lo - pad, hi + pad)
}

fn text_error(path: &Path, err: impl Display) -> Error {
    Error::Output(std::io::Error::other(format!(
        "drawing {}: {err}",
        path.display()
    )))
}

fn output_error(path: &Path, err: std::io::Error) -> Error {
    Error::Output(std::io::Error::new(
        err.kind(),
        format!("writing {}: {err}", path.display()),
    ))
}

/// A y tick label for `v` on an axis spanning `span`, with just enough
/// decimals to tell neighbouring ticks apart (about a tenth of the span);
/// tiny spans and large values use scientific notation.
fn tick_label(v: f64, span: f64) -> String {
    let span = span.abs().max(f64::MIN_POSITIVE);
    if span < 1e-3 || v.abs() >= 1e5 {
        format!("{v:.2e}")
    } else {
        let decimals = (-(span / 10.0).log10().floor()).clamp(0.0, 6.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// Draws `chart` on `root`; errors come back as text.
fn draw<DB: DrawingBackend>(
    chart: &Chart,
    root: &DrawingArea<DB, Shift>,
) -> std::result::Result<(), String> {
    let text = |e: &dyn Display| e.to_string();
    root.fill(&WHITE).map_err(|e| text(&e))?;
    let (x0, x1) = padded_range(
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0)),
        true,
    );
    let (y0, y1) = padded_range(
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1)),
        false,
    );
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, (FAMILY, 28))
        .margin(20)
        .x_label_area_size(56)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| text(&e))?;
    // Steps and epochs are whole numbers: label only whole ticks (powers
    // of ten on a log axis).
    let x_format = |x: &f64| {
        if (x - x.round()).abs() >= 1e-9 {
            String::new()
        } else if chart.log_x {
            format!("1e{}", x.round())
        } else {
            format!("{}", x.round())
        }
    };
    let y_format = |y: &f64| tick_label(*y, y1 - y0);
    ctx.configure_mesh()
        .x_desc(chart.x_desc)
        .y_desc(chart.y_desc)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(|e| text(&e))?;
    for series in &chart.series {
        let style = ShapeStyle::from(series.color).stroke_width(2);
        let color = series.color;
        ctx.draw_series(LineSeries::new(series.points.iter().copied(), style))
            .map_err(|e| text(&e))?
            .label(series.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        if series.markers {
            ctx.draw_series(
                series
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, 4, series.color.filled())),
            )
            .map_err(|e| text(&e))?;
        }
    }
    ctx.configure_series_labels()
        .position(chart.legend.clone())
        .label_font((FAMILY, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| text(&e))?;
    root.present().map_err(|e| text(&e))?;
    Ok(())
}

fn write_png(chart: &Chart, path: &Path) -> Result<()> {
    use image::ImageEncoder;
    let (w, h) = CHART_SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, CHART_SIZE).into_drawing_area();
        draw(chart, &root).map_err(|e| text_error(path, e))?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, w, h, image::ColorType::Rgb8)
        .map_err(|e| text_error(path, e))?;
    Ok(kiln_tensor::io::write_atomic(path, &png)?)
}

fn write_svg(chart: &Chart, path: &Path) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        draw(chart, &root).map_err(|e| text_error(path, e))?;
    }
    Ok(kiln_tensor::io::write_atomic(path, svg.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::decimate;

    #[test]
    fn decimation_keeps_ends_and_extremes_of_each_pixel_column() -> anyhow::Result<()> {
        let short: Vec<(f64, f64)> = (0..100).map(|i| (f64::from(i), 0.0)).collect();
        anyhow::ensure!(decimate(short.clone()) == short, "short series untouched");

        // 100 points per pixel column: a spike up and one down in every column.
        let n = 100_000;
        let points: Vec<(f64, f64)> = (0..n)
            .map(|i| {
                let y = match i % 100 {
                    37 => 10.0,
                    71 => -10.0,
                    _ => f64::from(i % 7) * 0.01,
                };
                (f64::from(i), y)
            })
            .collect();
        let thin = decimate(points.clone());
        anyhow::ensure!(
            thin.len() <= 4 * 1000 && thin.len() >= 2000,
            "{}",
            thin.len()
        );
        anyhow::ensure!(thin.first() == points.first() && thin.last() == points.last());
        anyhow::ensure!(thin.windows(2).all(|w| w[0].0 < w[1].0), "order kept");
        let spikes = |p: &[(f64, f64)], y: f64| p.iter().filter(|q| q.1 == y).count();
        anyhow::ensure!(spikes(&thin, 10.0) == 1000 && spikes(&thin, -10.0) == 1000);
        Ok(())
    }
}
