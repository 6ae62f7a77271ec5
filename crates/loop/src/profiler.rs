//! Profiling a run (`--profile`). [`Profile::Simple`] is Lightning's
//! `SimpleProfiler`: at the end of a fit, [`simple_report`] turns the fit's
//! own timings ([`FitTimings`]: data, forward, backward, optimizer,
//! evaluation, checkpoint, logging) into Lightning's table.
//! [`Profile::Trace`] is `torch.profiler`: [`TraceProfiler`], a callback,
//! records `steps` training batches after `skip` with libtorch's own
//! profiler (ATen operators and their input shapes, each batch a
//! `ProfilerStep#N` range) and writes a Chrome trace where
//! `torch.profiler.tensorboard_trace_handler` would: `RUN/profile/
//! {host}_{pid}.{ns}.pt.trace.json`, the name TensorBoard's profile plugin
//! looks for (`tensorboard --logdir runs/`), which `chrome://tracing` and
//! Perfetto open too.
use crate::checkpoint::Progress;
use crate::notice::{Notice, Notices};
use crate::{Callback, Error, FitSummary, FitTimings, Result, StepInfo};
use kiln_tensor::profiler::{Profiler, ProfilerOptions, Span};
use std::path::PathBuf;

/// Training batches a trace records by default: the `active=3` of
/// Lightning's `PyTorchProfiler` schedule (`wait=1, warmup=1, active=3`).
pub const TRACE_STEPS: usize = 3;
/// Training batches a trace skips by default: that schedule's `wait` and
/// `warmup` (the first batches pay for allocations and lazy set-up).
pub const TRACE_SKIP: usize = 2;
/// The directory of a run that traces go into (TensorBoard shows it as the
/// run `NAME/profile`).
pub const TRACE_DIR: &str = "profile";

/// What `--profile` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Lightning's simple profiler table at the end of the fit.
    Simple,
    /// A Chrome trace of `steps` training batches after `skip`.
    Trace {
        /// Training batches recorded.
        steps: usize,
        /// Training batches run before the recording starts.
        skip: usize,
    },
}

impl std::str::FromStr for Profile {
    type Err = Error;

    /// `simple` or `trace[:steps=N,skip=M]`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = |e: kiln_tensor::Error| Error::Usage(e.to_string());
        let mut spec: kiln_tensor::spec::Spec = text.parse().map_err(bad)?;
        match spec.name.as_str() {
            "simple" => {
                spec.finish(&[]).map_err(bad)?;
                Ok(Profile::Simple)
            }
            "trace" => {
                let count = |spec: &mut kiln_tensor::spec::Spec, key: &str, default: usize| {
                    let value = spec.i64(key).map_err(bad)?;
                    match value {
                        None => Ok(default),
                        Some(n) => usize::try_from(n).map_err(|_| {
                            Error::Usage(format!(
                                "trace: {key} must be a number of batches, 0 or more, got {n}"
                            ))
                        }),
                    }
                };
                let steps = count(&mut spec, "steps", TRACE_STEPS)?;
                let skip = count(&mut spec, "skip", TRACE_SKIP)?;
                spec.finish(&["steps", "skip"]).map_err(bad)?;
                if steps == 0 {
                    return Err(Error::Usage(
                        "trace: steps must be at least 1 (the batches recorded)".into(),
                    ));
                }
                Ok(Profile::Trace { steps, skip })
            }
            other => Err(Error::Usage(format!(
                "unknown profiler '{other}'; accepted: simple, trace[:steps={TRACE_STEPS},skip={TRACE_SKIP}]"
            ))),
        }
    }
}

impl std::fmt::Display for Profile {
    /// The spec that parses back to the same value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Profile::Simple => f.write_str("simple"),
            Profile::Trace { steps, skip } => write!(f, "trace:steps={steps},skip={skip}"),
        }
    }
}

/// Lightning's `SimpleProfiler(extended=True).summary()` of a fit's
/// timings: `FIT Profiler Report`, then per phase that ran its mean
/// duration, calls, total and share of the fit's wall-clock time, sorted by
/// share, under a `Total` row (every call, the wall-clock time); numbers as
/// Python's `f"{x:.5}"`, columns as Lightning pads them (tabs included).
pub fn simple_report(timings: &FitTimings) -> String {
    let wall = timings.wall;
    let mut rows: Vec<(&str, crate::PhaseTime, f64)> = timings
        .phases()
        .into_iter()
        .filter(|(_, phase)| phase.calls > 0)
        .map(|(name, phase)| (name, phase, 100.0 * phase.total / wall))
        .collect();
    // Python's sort is stable, as Rust's.
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    let max_key = rows.iter().map(|(name, ..)| name.len()).max().unwrap_or(0);
    let row = |action: &str, mean: &str, calls: &str, total: &str, share: &str| {
        format!(
            "\n|  {action:<max_key$}\t|  {mean:<15}\t|  {calls:<15}\t|  {total:<15}\t|  {share:<15}\t|"
        )
    };
    let mut out = String::from("FIT Profiler Report\n");
    if rows.is_empty() {
        out.push('\n');
        return out;
    }
    let header = row(
        "Action",
        "Mean duration (s)",
        "Num calls",
        "Total time (s)",
        "Percentage %",
    );
    let line = format!("\n{}", "-".repeat(expanded_len(&header)));
    let calls: usize = rows.iter().map(|(_, phase, _)| phase.calls).sum();
    out.push_str(&line);
    out.push_str(&header);
    out.push_str(&line);
    out.push_str(&row(
        "Total",
        "-",
        &calls.to_string(),
        &py_g5(wall),
        "100 %",
    ));
    out.push_str(&line);
    for (name, phase, share) in &rows {
        out.push_str(&row(
            name,
            &py_g5(phase.mean()),
            &phase.calls.to_string(),
            &py_g5(phase.total),
            &py_g5(*share),
        ));
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// `len(text.expandtabs())` (tab stops every 8 columns, counted from the
/// last newline; every character counts, newlines too).
fn expanded_len(text: &str) -> usize {
    let (mut len, mut column) = (0, 0);
    for c in text.chars() {
        match c {
            '\t' => {
                let pad = 8 - column % 8;
                len += pad;
                column += pad;
            }
            '\n' => {
                len += 1;
                column = 0;
            }
            _ => {
                len += 1;
                column += 1;
            }
        }
    }
    len
}

/// Python's `format(x, ".5")`: five significant digits, fixed notation
/// (with at least one decimal) for exponents from -4 to 3, scientific
/// otherwise, trailing zeros dropped.
fn py_g5(x: f64) -> String {
    const DIGITS: usize = 5;
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rounded once, to five digits: its exponent decides the notation.
    let sci = format!("{:.*e}", DIGITS - 1, x);
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if exponent < -4 || exponent >= DIGITS as i32 - 1 {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{}e{sign}{:02}",
            trim(mantissa.to_string()),
            exponent.unsigned_abs()
        )
    } else {
        let decimals = (DIGITS as i32 - 1 - exponent) as usize;
        let fixed = trim(format!("{x:.decimals$}"));
        if fixed.contains('.') {
            fixed
        } else {
            format!("{fixed}.0")
        }
    }
}

/// `--profile trace`: records training batches `skip + 1 ..= skip + steps`
/// (counted from the start of the fit, a resumed one too) with libtorch's
/// profiler on the training thread, each batch a `ProfilerStep#N` range as
/// `torch.profiler.profile.step()` makes them, and writes the trace into
/// `RUN/profile/` when the last one ends (or the fit does, with what was
/// recorded). Data-loader worker threads are not recorded.
pub struct TraceProfiler {
    dir: PathBuf,
    steps: usize,
    skip: usize,
    options: ProfilerOptions,
    notices: Notices,
    batches: usize,
    recording: Option<(Profiler, Option<Span>)>,
}

impl TraceProfiler {
    /// A trace of `steps` batches after `skip` into `run_dir/profile`,
    /// with CUDA activity when `cuda` (the model is on a GPU).
    pub fn new(
        run_dir: impl Into<PathBuf>,
        steps: usize,
        skip: usize,
        cuda: bool,
        notices: Notices,
    ) -> Self {
        Self {
            dir: run_dir.into().join(TRACE_DIR),
            steps,
            skip,
            options: ProfilerOptions {
                record_shapes: true,
                cuda,
            },
            notices,
            batches: 0,
            recording: None,
        }
    }

    /// Starts recording, with the range of the next batch.
    fn start(&mut self) -> Result<()> {
        let profiler = Profiler::start(self.options)?;
        let span = Span::enter(&format!("ProfilerStep#{}", self.batches))?;
        self.recording = Some((profiler, Some(span)));
        Ok(())
    }

    /// Stops recording and writes the trace.
    fn save(&mut self) -> Result<()> {
        let Some((profiler, span)) = self.recording.take() else {
            return Ok(());
        };
        if let Some(span) = span {
            span.exit()?;
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::Data {
            path: self.dir.clone(),
            message: e.to_string(),
        })?;
        let path = self
            .dir
            .join(kiln_tensor::profiler::tensorboard_trace_name());
        profiler.save(&path)?;
        self.notices.send(Notice::Wrote(path));
        Ok(())
    }
}

impl Callback for TraceProfiler {
    fn on_run_start(&mut self, _start: &Progress) -> Result<()> {
        if self.skip == 0 {
            self.start()?;
        }
        Ok(())
    }

    fn on_batch_end(&mut self, _info: &StepInfo) -> Result<()> {
        self.batches += 1;
        if let Some((_, span)) = &mut self.recording {
            if let Some(span) = span.take() {
                span.exit()?;
            }
            if self.batches >= self.skip + self.steps {
                return self.save();
            }
            *span = Some(Span::enter(&format!("ProfilerStep#{}", self.batches))?);
        } else if self.batches == self.skip {
            self.start()?;
        }
        Ok(())
    }

    fn on_run_end(&mut self, _summary: &FitSummary) -> Result<()> {
        if self.recording.is_some() {
            return self.save();
        }
        if self.batches < self.skip {
            self.notices.warn(format!(
                "--profile trace: the fit ended after {} training batches, before the {} it skips; no trace written (lower skip=)",
                self.batches, self.skip
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_python_formats_them() {
        // format(x, ".5") in Python 3.
        let cases = [
            (12345.0, "1.2345e+04"),
            (1234.5, "1234.5"),
            (100.0, "100.0"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (2.0, "2.0"),
            (123456.0, "1.2346e+05"),
            (99999.9, "1e+05"),
            (0.123456789, "0.12346"),
            (0.0, "0.0"),
            (1e-7, "1e-07"),
            (0.00012345678, "0.00012346"),
        ];
        for (x, python) in cases {
            assert_eq!(py_g5(x), python, "{x}");
        }
    }

    #[test]
    fn profile_specs_parse_with_defaults_and_refuse_bad_ones() -> Result<()> {
        assert_eq!("simple".parse::<Profile>()?, Profile::Simple);
        assert_eq!(
            "trace".parse::<Profile>()?,
            Profile::Trace {
                steps: TRACE_STEPS,
                skip: TRACE_SKIP
            }
        );
        let custom: Profile = "trace:steps=5,skip=0".parse()?;
        assert_eq!(custom, Profile::Trace { steps: 5, skip: 0 });
        assert_eq!(custom.to_string().parse::<Profile>()?, custom);
        for bad in [
            "advanced",
            "trace:steps=0",
            "trace:skip=-1",
            "trace:step=2",
            "simple:x=1",
        ] {
            assert!(
                matches!(bad.parse::<Profile>(), Err(Error::Usage(_))),
                "{bad}"
            );
        }
        Ok(())
    }
}
