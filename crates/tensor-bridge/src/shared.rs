//! [`SharedTensor`]: a tensor that threads read at the same time.
//!
//! tch's `Tensor` is `Send` but not `Sync` (it holds a raw pointer). A data
//! set held in memory is read by several loader workers at once; what they
//! do with it — `narrow`, `index_select`, `get`, a dtype conversion — makes
//! new tensors and only reads the shared one, which libtorch allows from any
//! number of threads (a tensor's reference count is atomic, its data is not
//! written). `SharedTensor` hands out only `&Tensor`, and tch's in-place
//! operations take `&mut Tensor`, so the shared tensor cannot be changed
//! through it.
use tch::Tensor;

/// A tensor that several threads may read at once (see the module docs).
#[derive(Debug)]
pub struct SharedTensor(Tensor);

// SAFETY: only `&Tensor` is handed out, through which tch offers reads
// (in-place operations need `&mut Tensor`); libtorch supports concurrent
// reads of one tensor, and its reference counting is atomic.
unsafe impl Sync for SharedTensor {}

impl SharedTensor {
    /// Shares `tensor`.
    pub fn new(tensor: Tensor) -> Self {
        Self(tensor)
    }

    /// The tensor, to read.
    pub fn get(&self) -> &Tensor {
        &self.0
    }
}

impl std::ops::Deref for SharedTensor {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn threads_read_one_tensor_at_once() -> crate::Result<()> {
        let shared = std::sync::Arc::new(SharedTensor::new(Tensor::f_arange(
            1000,
            (Kind::Int64, Device::Cpu),
        )?));
        let sums = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let shared = shared.clone();
                    s.spawn(move || -> crate::Result<i64> {
                        let mut total = 0;
                        for i in 0..250 {
                            total += shared.f_get(t * 250 + i)?.f_int64_value(&[])?;
                        }
                        Ok(total)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Ok(-1)))
                .collect::<crate::Result<Vec<i64>>>()
        })?;
        assert_eq!(sums.iter().sum::<i64>(), 999 * 1000 / 2);
        Ok(())
    }
}
