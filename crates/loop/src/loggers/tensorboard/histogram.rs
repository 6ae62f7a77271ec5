//! Histograms as `SummaryWriter.add_histogram(tag, values, step)` makes them
//! with its default `bins='tensorflow'`.
//!
//! PyTorch (`torch/utils/tensorboard/{writer,summary}.py`):
//! 1. the bin edges are `-v[::-1] + [0] + v` with `v = 1e-12, 1.1e-12, …`
//!    (each the previous times 1.1, in double precision) up to the last below
//!    `1e20` ([`tensorflow_bins`]);
//! 2. the values are converted to float64 and counted with
//!    `np.histogram(values, bins=edges)`: bin `i` holds `edges[i] <= x <
//!    edges[i+1]`, the last bin also its right edge; values outside the edges
//!    (beyond ±1e20, infinities, NaN) are in no bin;
//! 3. the bins are cut to the support, from the bin *before* the first
//!    non-empty one (an empty bin of zero count prepended when the first
//!    non-empty bin is the very first) to the last non-empty one, and each
//!    bin is reported by its right edge (`bucket_limit`);
//! 4. `min`, `max`, `num`, `sum` cover all values (NaN propagates), `sum`
//!    with numpy's pairwise summation, `sum_squares` as `values.dot(values)`.
//!
//! kiln repeats 1–3 and `min`, `max`, `num`, `sum` bit for bit. numpy's
//! `dot` is BLAS's `ddot`, whose summation order depends on the BLAS build
//! and the processor; kiln sums the squares pairwise as numpy sums, which
//! agrees with PyTorch's value to rounding (a relative 1e-15 or so), not
//! necessarily to the last bit. TensorBoard draws the buckets only.
use super::proto::HistogramProto;
use crate::{Error, Result};
use kiln_tensor::{Device, Kind, Tensor};
use std::sync::OnceLock;

/// The bin edges of `bins='tensorflow'`: 1549 increasing values from about
/// `-1e20` to `1e20`, symmetric around an edge at 0.
pub fn tensorflow_bins() -> &'static [f64] {
    static BINS: OnceLock<Vec<f64>> = OnceLock::new();
    BINS.get_or_init(|| {
        let mut positive = Vec::new();
        let mut v = 1e-12_f64;
        while v < 1e20 {
            positive.push(v);
            v *= 1.1;
        }
        let mut edges: Vec<f64> = positive.iter().rev().map(|v| -v).collect();
        edges.push(0.0);
        edges.extend_from_slice(&positive);
        edges
    })
}

/// The histogram PyTorch writes for a tensor (any shape, dtype and device).
///
/// An empty tensor, or one without a single value inside the bins (all NaN,
/// say), is an error, as in PyTorch.
pub fn histogram_of(values: &Tensor) -> Result<HistogramProto> {
    let flat = values
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Double)?
        .f_reshape([-1])?
        .f_contiguous()?;
    let data = Vec::<f64>::try_from(&flat)?;
    histogram(&data)
}

/// The histogram PyTorch writes for `values` (see the module docs).
pub fn histogram(values: &[f64]) -> Result<HistogramProto> {
    let Some((&first, rest)) = values.split_first() else {
        return Err(Error::InvalidArgument(
            "cannot make a histogram of no values".into(),
        ));
    };
    let edges = tensorflow_bins();
    let bins = edges.len() - 1;
    let (lowest, highest) = (edges[0], edges[bins]);
    let mut counts = vec![0u64; bins];
    for &x in values {
        // `!(a && b)` also drops NaN.
        if !(x >= lowest && x <= highest) {
            continue;
        }
        // Edges <= x, at least 1; x == the last edge goes to the last bin.
        let at_or_below = edges.partition_point(|&e| e <= x);
        counts[(at_or_below - 1).min(bins - 1)] += 1;
    }
    let (Some(start), Some(last)) = (
        counts.iter().position(|&c| c > 0),
        counts.iter().rposition(|&c| c > 0),
    ) else {
        return Err(Error::InvalidArgument(format!(
            "cannot make a histogram: none of the {} values lies within ±1e20 (NaN or infinite?)",
            values.len()
        )));
    };
    let end = last + 1;
    let (bucket, bucket_limit) = if start > 0 {
        (
            counts[start - 1..end].iter().map(|&c| c as f64).collect(),
            edges[start..=end].to_vec(),
        )
    } else {
        (
            std::iter::once(0.0)
                .chain(counts[..end].iter().map(|&c| c as f64))
                .collect(),
            edges[..=end].to_vec(),
        )
    };

    let (mut min, mut max) = (first, first);
    for &x in rest {
        if x.is_nan() || min.is_nan() {
            min = f64::NAN;
        } else if x < min {
            min = x;
        }
        if x.is_nan() || max.is_nan() {
            max = f64::NAN;
        } else if x > max {
            max = x;
        }
    }
    let squares: Vec<f64> = values.iter().map(|x| x * x).collect();
    Ok(HistogramProto {
        min,
        max,
        num: values.len() as f64,
        sum: numpy_sum(values),
        sum_squares: numpy_sum(&squares),
        bucket_limit,
        bucket,
    })
}

/// `np.add.reduce` of a contiguous float64 array: `0.0 +` numpy's pairwise
/// sum (`DOUBLE_pairwise_sum`: blocks of at most 128 summed with 8
/// accumulators, halves split at a multiple of 8).
pub fn numpy_sum(values: &[f64]) -> f64 {
    0.0 + pairwise_sum(values)
}

fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = -0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for (k, acc) in r.iter_mut().enumerate() {
                *acc += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[whole..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_symmetric_and_increasing() {
        let e = tensorflow_bins();
        assert_eq!(e.len(), 1549);
        let mid = e.len() / 2;
        assert_eq!(e[mid], 0.0);
        assert_eq!(e[mid + 1], 1e-12);
        assert!(e.windows(2).all(|w| w[0] < w[1]));
        assert!(e.iter().zip(e.iter().rev()).all(|(a, b)| *a == -*b));
        assert!(*e.last().unwrap_or(&0.0) < 1e20 && *e.last().unwrap_or(&0.0) * 1.1 >= 1e20);
    }

    #[test]
    fn counts_half_open_bins_and_trims_to_the_support() -> Result<()> {
        let e = tensorflow_bins();
        let mid = e.len() / 2;
        // 0.0 is in [0, 1e-12); 1e-12 in [1e-12, 1.1e-12).
        let h = histogram(&[0.0, 1e-12, 1e-12])?;
        assert_eq!(h.bucket_limit, vec![e[mid], e[mid + 1], e[mid + 2]]);
        assert_eq!(h.bucket, vec![0.0, 1.0, 2.0]);
        assert_eq!((h.min, h.max, h.num), (0.0, 1e-12, 3.0));
        // The very first bin: a zero bin is prepended, edges from the first.
        let h = histogram(&[e[0]])?;
        assert_eq!(h.bucket_limit, vec![e[0], e[1]]);
        assert_eq!(h.bucket, vec![0.0, 1.0]);
        // The last edge belongs to the last bin; beyond it, to none.
        let top = e[e.len() - 1];
        let h = histogram(&[top, 2e20, f64::NAN])?;
        assert_eq!(h.bucket, vec![0.0, 1.0]);
        assert_eq!(h.bucket_limit, vec![e[e.len() - 2], top]);
        assert!(h.min.is_nan() && h.max.is_nan() && h.sum.is_nan());
        assert!(histogram(&[]).is_err());
        assert!(histogram(&[f64::NAN, f64::INFINITY]).is_err());
        Ok(())
    }
}
