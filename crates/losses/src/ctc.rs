//! Connectionist temporal classification loss.
use crate::error::{invalid, Result};
use crate::reduction::Reduction;
use crate::util::{self, fmt, kernel};
use crate::{Loss, TargetKind, Targets};
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::{Device, Kind, Tensor};

/// Options of [`CtcLoss`]; `Default` is `nn.CTCLoss()`'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CtcConfig {
    /// Index of the blank label; default 0.
    pub blank: i64,
    /// Reduction; default mean (each sequence's loss divided by its target
    /// length, then the mean over the batch).
    pub reduction: Reduction,
    /// Replace infinite losses (impossible alignments) and their gradients by
    /// zero; default false.
    pub zero_infinity: bool,
}

/// `nn.CTCLoss`: `l_n = -log Σ_{π ∈ B⁻¹(y_n)} Π_t p_t(π_t)`, the negative
/// log-likelihood of target `y_n` summed over every alignment of the
/// `log_probs` `[T, N, C]` (or `[T, C]` unbatched) that collapses to it.
/// Calls libtorch's `ctc_loss`.
///
/// Four inputs: use [`CtcLoss::forward_ctc`] (lengths as slices) or
/// [`CtcLoss::forward_ctc_tensors`] (lengths as tensors). [`Loss::forward`]
/// takes `input` = `log_probs` `[T, N, C]` and `target` = targets padded with
/// the blank label `[N, S]` (`[S]` unbatched): every input length is `T` and
/// each target length is the number of non-blank labels of its row (so labels
/// must precede the padding).
///
/// Deviation: kiln requires every value of `targets`, padding included, to be
/// a class in `[0, C)`; PyTorch does not check the padding.
#[derive(Debug, Clone, Default)]
pub struct CtcLoss {
    cfg: CtcConfig,
}

impl CtcLoss {
    /// Spec name.
    pub const NAME: &'static str = "ctc";
    /// Validates `blank >= 0` (its upper bound is checked against C in forward).
    pub fn new(cfg: CtcConfig) -> Result<Self> {
        if cfg.blank < 0 {
            return Err(invalid(
                Self::NAME,
                format!("blank must be >= 0, got {}", cfg.blank),
            ));
        }
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &CtcConfig {
        &self.cfg
    }

    fn check(&self, log_probs: &Tensor, targets: &Tensor, il: &[i64], tl: &[i64]) -> Result<()> {
        let n = Self::NAME;
        let s = util::float(n, "log_probs", log_probs)?;
        let ts = util::shape(n, "targets", targets)?;
        let tk = util::kind(n, "targets", targets)?;
        if !matches!(tk, Kind::Int64 | Kind::Int) {
            return Err(invalid(
                n,
                format!("targets {} must be int64 or int32, got {tk:?}", fmt(&ts)),
            ));
        }
        let (t_max, batch, c, batched) = match s.as_slice() {
            [t, b, c] => (*t, *b, *c, true),
            [t, c] => (*t, 1, *c, false),
            _ => {
                return Err(invalid(
                    n,
                    format!(
                        "log_probs {} must be [T, N, C] or [T, C] (unbatched)",
                        fmt(&s)
                    ),
                ))
            }
        };
        if self.cfg.blank >= c {
            return Err(invalid(
                n,
                format!(
                    "blank {} is out of range for log_probs {} with {c} classes",
                    self.cfg.blank,
                    fmt(&s)
                ),
            ));
        }
        if il.len() as i64 != batch || tl.len() as i64 != batch {
            return Err(invalid(
                n,
                format!(
                    "log_probs {} has batch size {batch}, but got {} input lengths and {} target lengths",
                    fmt(&s),
                    il.len(),
                    tl.len()
                ),
            ));
        }
        if let Some(v) = il.iter().find(|&&v| v < 0 || v > t_max) {
            return Err(invalid(
                n,
                format!(
                    "input length {v} is out of range for log_probs {} with T = {t_max}",
                    fmt(&s)
                ),
            ));
        }
        if let Some(v) = tl.iter().find(|&&v| v < 0) {
            return Err(invalid(n, format!("target length {v} is negative")));
        }
        match (batched, ts.as_slice()) {
            (true, [tb, len]) if *tb == batch => check_padded(&ts, tl, *len)?,
            (false, [len]) => check_padded(&ts, tl, *len)?,
            (true, [total]) => {
                let sum: i64 = tl.iter().sum();
                if sum > *total {
                    return Err(invalid(
                        n,
                        format!("target lengths sum to {sum}, more than the concatenated targets {}", fmt(&ts)),
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    n,
                    format!(
                        "targets {} must be padded [N, S] (N = {batch}) or concatenated [sum(target_lengths)] for log_probs {}",
                        fmt(&ts),
                        fmt(&s)
                    ),
                ))
            }
        }
        util::check_range(n, targets, 0, c, None, |v| {
            format!("target {v} is out of range for {c} classes")
        })
    }

    /// `CTCLoss()(log_probs, targets, input_lengths, target_lengths)` with
    /// the lengths as slices (one per batch element).
    pub fn forward_ctc(
        &self,
        log_probs: &Tensor,
        targets: &Tensor,
        input_lengths: &[i64],
        target_lengths: &[i64],
    ) -> Result<Tensor> {
        self.check(log_probs, targets, input_lengths, target_lengths)?;
        kernel(
            Self::NAME,
            Tensor::f_ctc_loss(
                log_probs,
                targets,
                input_lengths,
                target_lengths,
                self.cfg.blank,
                self.cfg.reduction.into(),
                self.cfg.zero_infinity,
            ),
        )
    }

    /// As [`CtcLoss::forward_ctc`] with the lengths as integer tensors
    /// (`[N]`, or `[]` unbatched), like `F.ctc_loss` with tensor lengths.
    pub fn forward_ctc_tensors(
        &self,
        log_probs: &Tensor,
        targets: &Tensor,
        input_lengths: &Tensor,
        target_lengths: &Tensor,
    ) -> Result<Tensor> {
        let il = lengths(input_lengths, "input_lengths")?;
        let tl = lengths(target_lengths, "target_lengths")?;
        self.check(log_probs, targets, &il, &tl)?;
        kernel(
            Self::NAME,
            Tensor::f_ctc_loss_tensor(
                log_probs,
                targets,
                input_lengths,
                target_lengths,
                self.cfg.blank,
                self.cfg.reduction.into(),
                self.cfg.zero_infinity,
            ),
        )
    }
}

fn check_padded(ts: &[i64], tl: &[i64], len: i64) -> Result<()> {
    if let Some(v) = tl.iter().find(|&&v| v > len) {
        return Err(invalid(
            CtcLoss::NAME,
            format!(
                "target length {v} is longer than the padded targets {}",
                fmt(ts)
            ),
        ));
    }
    Ok(())
}

fn lengths(t: &Tensor, what: &str) -> Result<Vec<i64>> {
    let n = CtcLoss::NAME;
    let s = util::shape(n, what, t)?;
    let k = util::kind(n, what, t)?;
    if util::is_float(k) || s.len() > 1 {
        return Err(invalid(
            n,
            format!("{what} {} must be an integer tensor [N] or []", fmt(&s)),
        ));
    }
    let flat = kernel(
        n,
        kernel(n, t.f_to_kind(Kind::Int64))?.f_to_device(Device::Cpu),
    )?;
    let flat = kernel(n, flat.f_reshape([-1i64].as_slice()))?;
    kernel(n, Vec::<i64>::try_from(&flat))
}

impl Loss for CtcLoss {
    /// `input` = `log_probs` `[T, N, C]`, `target` = blank-padded targets `[N, S]`.
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "log_probs", input)?;
        let ts = util::shape(n, "targets", target)?;
        let (t_max, batch) = match s.as_slice() {
            [t, b, _] => (*t, *b),
            [t, _] => (*t, 1),
            _ => {
                return Err(invalid(
                    n,
                    format!(
                        "log_probs {} must be [T, N, C] or [T, C] (unbatched)",
                        fmt(&s)
                    ),
                ))
            }
        };
        if ts.len() != s.len() - 1 {
            return Err(invalid(
                n,
                format!(
                    "targets {} must be blank-padded [N, S] ([S] unbatched) for log_probs {}",
                    fmt(&ts),
                    fmt(&s)
                ),
            ));
        }
        let counts = kernel(n, target.f_ne(self.cfg.blank))?;
        let counts = kernel(
            n,
            counts.f_sum_dim_intlist([-1i64].as_slice(), false, Kind::Int64),
        )?;
        let tl = lengths(&counts, "target_lengths")?;
        let il = vec![t_max; batch.max(0) as usize];
        self.forward_ctc(input, target, &il, &tl)
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::LabelSequences)
    }
}

// ---------------------------------------------------------------------------
// Spec options: each config visits its fields once (see `kiln_tensor::spec::Options`).

util::from_spec!(CtcLoss(CtcConfig));

impl Options for CtcConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("blank", "index of the blank label"),
            &mut self.blank,
        )?;
        v.option(util::REDUCTION, &mut self.reduction)?;
        v.option(
            OptionInfo::new("zero_infinity", "zero infinite losses and their gradients"),
            &mut self.zero_infinity,
        )
    }
}
