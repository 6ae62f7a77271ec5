//! The order in which PyTorch's gloo backend sums a buffer over ranks, so
//! that kiln's sums are bit for bit the ones `torchrun` + DDP computes.
//!
//! `ProcessGroupGloo::allreduce` on CPU tensors runs gloo's ring algorithm
//! (`gloo/allreduce.cc`, `ring`): the buffer is cut into `numSegments`
//! segments (a multiple of the world size, at least twice the world size,
//! each at most 1 MiB), rank `f` ends up owning the `f`-th run of
//! `numSegments / world` consecutive segments (its *chunk*), and a segment
//! travels the ring from rank `f - 1` down to `f`, each rank adding its own
//! values to what it received (`local + received`). Rank `f`'s chunk is
//! therefore the right fold
//!
//! ```text
//! x[f] + (x[f+1] + (… + (x[f-2] + x[f-1])))      (ranks mod world)
//! ```
//!
//! and then every rank receives every chunk (the ring all-gather). With two
//! ranks this is just `x[0] + x[1]` in any order; with three or more the
//! grouping differs from chunk to chunk, which is why kiln reproduces it
//! rather than leaving the order to the MPI library: [`chunks`] says which
//! rank owns which elements, [`fold`] adds them in gloo's order. The
//! transport moves the data (`MPI_Alltoallv` to give every rank its chunk
//! from all ranks, `MPI_Allgatherv` to share the sums): the same bytes as a
//! ring all-reduce, 2 (p − 1) / p of the buffer per rank.
//!
//! Checked against `torch.distributed.all_reduce` with gloo on 2, 3 and 4
//! ranks (random data, 1 to 3·10⁶ elements, one and several segments per
//! rank) and, in the tests below, against a step-by-step simulation of
//! gloo's ring for 2 to 7 ranks.
use std::ops::{Add, Range};

/// The largest segment gloo sends at once (`AllreduceOptionsImpl::kMaxSegmentSize`).
pub const GLOO_MAX_SEGMENT_BYTES: usize = 1 << 20;

fn round_up(x: usize, multiple: usize) -> usize {
    x.div_ceil(multiple) * multiple
}

/// Gloo's segmentation: (number of segments, segments per rank, elements
/// per segment) for `elements` items of `elem_size` bytes over `world` ranks.
fn segments(
    elements: usize,
    elem_size: usize,
    world: usize,
    max_segment_bytes: usize,
) -> (usize, usize, usize) {
    let total = elements * elem_size;
    let max_segment = elem_size * (max_segment_bytes / elem_size).max(1);
    let num_segments = round_up(total.div_ceil(max_segment).max(2 * world), world);
    let per_rank = num_segments / world;
    let segment_bytes = round_up(total.div_ceil(num_segments), elem_size);
    (num_segments, per_rank, segment_bytes / elem_size)
}

/// The elements each rank owns in gloo's ring all-reduce of `elements`
/// items of `elem_size` bytes over `world` ranks (rank `f` sums range `f`;
/// the last ranges may be short or empty). `max_segment_bytes` is
/// [`GLOO_MAX_SEGMENT_BYTES`] outside tests.
pub fn chunks(
    elements: usize,
    elem_size: usize,
    world: usize,
    max_segment_bytes: usize,
) -> Vec<Range<usize>> {
    if world == 0 || elem_size == 0 {
        return Vec::new();
    }
    let (_, per_rank, segment) = segments(elements, elem_size, world, max_segment_bytes);
    let chunk = per_rank * segment;
    (0..world)
        .map(|f| (f * chunk).min(elements)..((f + 1) * chunk).min(elements))
        .collect()
}

/// Rank `me`'s chunk summed in gloo's order: `inputs[r]` is rank `r`'s
/// values of the chunk, `out` receives
/// `x[me] + (x[me+1] + (… + (x[me-2] + x[me-1])))`.
/// Every input must be as long as `out`; nothing is written otherwise.
pub fn fold<T: Copy + Add<Output = T>>(out: &mut [T], inputs: &[&[T]], me: usize) -> bool {
    let world = inputs.len();
    if world == 0 || me >= world || inputs.iter().any(|x| x.len() != out.len()) {
        return false;
    }
    out.copy_from_slice(inputs[(me + world - 1) % world]);
    for k in (0..world - 1).rev() {
        let x = inputs[(me + k) % world];
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v + *o;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gloo's `ring()` reduce-scatter and all-gather, step by step, as
    /// message passing between `xs.len()` simulated ranks.
    fn gloo_ring(xs: &[Vec<f32>], max_segment_bytes: usize) -> Vec<Vec<f32>> {
        let p = xs.len();
        let n = xs[0].len();
        let (num_segments, per_rank, segment) = segments(n, 4, p, max_segment_bytes);
        let mut out: Vec<Vec<f32>> = xs.to_vec();
        let range = |segment_index: usize| {
            let start = (segment_index % num_segments) * segment;
            start.min(n)..(start + segment).min(n)
        };
        // Reduce-scatter: at step i rank r sends segment (r+1)·spr + i to
        // rank r-1, which adds it to its own copy (local + received).
        for i in 0..num_segments - per_rank {
            let sent: Vec<Vec<f32>> = (0..p)
                .map(|r| out[r][range((r + 1) * per_rank + i)].to_vec())
                .collect();
            for (r, mine) in out.iter_mut().enumerate() {
                let from = (r + 1) % p;
                let seg = range((r + 2) * per_rank + i);
                // gloo's sum: local + received.
                for (o, v) in mine[seg].iter_mut().zip(&sent[from]) {
                    *o += *v;
                }
            }
        }
        // All-gather: rank r forwards segment r·spr + i to rank r-1.
        for i in 0..num_segments - per_rank {
            let sent: Vec<Vec<f32>> = (0..p)
                .map(|r| out[r][range(r * per_rank + i)].to_vec())
                .collect();
            for (r, mine) in out.iter_mut().enumerate() {
                let from = (r + 1) % p;
                let seg = range((r + 1) * per_rank + i);
                mine[seg].copy_from_slice(&sent[from]);
            }
        }
        out
    }

    /// Chunks from every rank, folded by their owner, gathered.
    fn by_chunks(xs: &[Vec<f32>], max_segment_bytes: usize) -> Vec<f32> {
        let p = xs.len();
        let n = xs[0].len();
        let mut result = vec![0.0f32; n];
        for (f, r) in chunks(n, 4, p, max_segment_bytes).into_iter().enumerate() {
            let inputs: Vec<&[f32]> = xs.iter().map(|x| &x[r.clone()]).collect();
            assert!(fold(&mut result[r.clone()], &inputs, f));
        }
        result
    }

    /// Deterministic values of very different magnitudes, so that the
    /// grouping of the additions shows in the last bits.
    fn values(rank: usize, n: usize) -> Vec<f32> {
        let mut state =
            0x9e37_79b9_7f4a_7c15u64 ^ (rank as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let mantissa = ((state >> 40) as f32) / (1u64 << 24) as f32 - 0.5;
                let scale = 2f32.powi(((state >> 20) % 40) as i32 - 20);
                mantissa * scale
            })
            .collect()
    }

    #[test]
    fn chunks_follow_gloos_segments() {
        // Measured with torch.distributed (gloo) on 3 ranks.
        let r = |v: &[(usize, usize)]| v.iter().map(|&(a, b)| a..b).collect::<Vec<_>>();
        assert_eq!(
            chunks(16, 4, 3, GLOO_MAX_SEGMENT_BYTES),
            r(&[(0, 6), (6, 12), (12, 16)])
        );
        assert_eq!(
            chunks(3, 4, 3, GLOO_MAX_SEGMENT_BYTES),
            r(&[(0, 2), (2, 3), (3, 3)])
        );
        assert_eq!(
            chunks(7, 4, 3, GLOO_MAX_SEGMENT_BYTES),
            r(&[(0, 4), (4, 7), (7, 7)])
        );
        assert_eq!(
            chunks(1000, 4, 3, GLOO_MAX_SEGMENT_BYTES),
            r(&[(0, 334), (334, 668), (668, 1000)])
        );
        // Past 1 MiB per segment gloo takes more segments per rank.
        assert_eq!(
            chunks(3_000_001, 4, 3, GLOO_MAX_SEGMENT_BYTES)[1],
            1_000_004..2_000_008
        );
        assert_eq!(
            chunks(1 << 20, 4, 3, GLOO_MAX_SEGMENT_BYTES)[1],
            349_526..699_052
        );
        assert!(chunks(5, 4, 0, GLOO_MAX_SEGMENT_BYTES).is_empty());
    }

    #[test]
    fn folding_chunks_is_gloos_ring_bit_for_bit() {
        for p in 2..=7 {
            for n in [1, 2, 5, 13, 64, 1001] {
                for max_segment in [GLOO_MAX_SEGMENT_BYTES, 64, 12, 4] {
                    let xs: Vec<Vec<f32>> = (0..p).map(|r| values(r, n)).collect();
                    let ring = gloo_ring(&xs, max_segment);
                    let mine = by_chunks(&xs, max_segment);
                    for (r, got) in ring.iter().enumerate() {
                        let same = got
                            .iter()
                            .zip(&mine)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "p={p} n={n} max_segment={max_segment} rank {r}");
                    }
                }
            }
        }
        // The grouping matters from 3 ranks on: a left fold differs.
        let xs: Vec<Vec<f32>> = (0..3).map(|r| values(r, 1001)).collect();
        let left: Vec<f32> = (0..1001)
            .map(|i| (xs[0][i] + xs[1][i]) + xs[2][i])
            .collect();
        let mine = by_chunks(&xs, GLOO_MAX_SEGMENT_BYTES);
        assert!(left
            .iter()
            .zip(&mine)
            .any(|(a, b)| a.to_bits() != b.to_bits()));
    }

    #[test]
    fn fold_refuses_mismatched_inputs() {
        let mut out = [0.0f64; 2];
        assert!(!fold(&mut out, &[&[1.0, 2.0], &[1.0]], 0));
        assert!(!fold(&mut out, &[&[1.0, 2.0]], 1));
        assert!(fold(&mut out, &[&[1.0, 2.0], &[0.5, 0.25]], 1));
        assert_eq!(out, [1.5, 2.25]);
    }
}
