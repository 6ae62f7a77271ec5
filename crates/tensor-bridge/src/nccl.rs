//! NCCL collectives on CUDA tensors, in place on a CUDA stream: what
//! data-parallel training on GPUs calls (kiln-loop's `distributed::nccl`).
//! NCCL is the torch wheel's `libnccl.so.2`, loaded by [`crate::cuda`].
use crate::cuda::{api, raw_stream, RawUniqueId, Stream};
use crate::{Error, Result};
use std::ffi::{c_int, c_void};
use std::sync::{Mutex, PoisonError};
use tch::{Device, Kind, Tensor};

/// `ncclUniqueId`: what every rank passes to [`Communicator::init_rank`];
/// rank 0 makes it ([`UniqueId::new`]) and sends it to the others (as
/// [`UniqueId::to_words`]).
#[derive(Clone, Copy)]
pub struct UniqueId(RawUniqueId);

impl std::fmt::Debug for UniqueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UniqueId(..)")
    }
}

/// The words of a [`UniqueId`] (128 bytes as 16 native-endian `i64`s).
pub const UNIQUE_ID_WORDS: usize = 16;

impl UniqueId {
    /// `ncclGetUniqueId`.
    pub fn new() -> Result<Self> {
        let api = api()?;
        let mut id = RawUniqueId { internal: [0; 128] };
        // SAFETY: `id` is a valid out-pointer.
        api.nccl(unsafe { (api.get_unique_id)(&mut id) }, "ncclGetUniqueId")?;
        Ok(Self(id))
    }

    /// The id as 16 `i64` words, to send over a collective of `i64` tensors.
    pub fn to_words(&self) -> Vec<i64> {
        self.0
            .internal
            .chunks_exact(8)
            .map(|c| i64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    }

    /// The id [`UniqueId::to_words`] gave (exactly [`UNIQUE_ID_WORDS`] words).
    pub fn from_words(words: &[i64]) -> Result<Self> {
        if words.len() != UNIQUE_ID_WORDS {
            return Err(Error::InvalidArgument(format!(
                "an NCCL unique id is {UNIQUE_ID_WORDS} words, got {}",
                words.len()
            )));
        }
        let mut id = RawUniqueId { internal: [0; 128] };
        for (dst, word) in id.internal.chunks_exact_mut(8).zip(words) {
            dst.copy_from_slice(&word.to_ne_bytes());
        }
        Ok(Self(id))
    }
}

/// The reductions kiln's collectives use (`ncclRedOp_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// `ncclSum`.
    Sum,
    /// `ncclMax`.
    Max,
    /// `ncclMin`.
    Min,
}

impl ReduceOp {
    fn code(self) -> c_int {
        match self {
            Self::Sum => 0,
            Self::Max => 2,
            Self::Min => 3,
        }
    }
}

/// `ncclDataType_t` of the dtypes kiln reduces.
fn nccl_type(kind: Kind) -> Result<c_int> {
    match kind {
        Kind::Int => Ok(2),
        Kind::Int64 => Ok(4),
        Kind::Float => Ok(7),
        Kind::Double => Ok(8),
        other => Err(Error::InvalidArgument(format!(
            "NCCL collectives here do not take {other:?} tensors"
        ))),
    }
}

/// An NCCL communicator of one rank on one CUDA device, destroyed when
/// dropped. Collectives may be started from any thread; they are queued on
/// the communicator one at a time.
pub struct Communicator {
    comm: *mut c_void,
    device: usize,
    /// NCCL needs calls on one communicator serialized.
    enqueue: Mutex<()>,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls
// on it are serialized, which `enqueue` does.
unsafe impl Send for Communicator {}
// SAFETY: as above.
unsafe impl Sync for Communicator {}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Communicator(cuda:{})", self.device)
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        if let Ok(api) = api() {
            // SAFETY: created by ncclCommInitRank, destroyed once.
            let _ = unsafe { (api.comm_destroy)(self.comm) };
        }
    }
}

impl Communicator {
    /// `ncclCommInitRank`: this process's rank `rank` of `world_size` in the
    /// communicator every rank creates with the same `id`, on CUDA device
    /// `device`, which must be the current device ([`crate::cuda::set_device`]).
    /// Blocks until every rank has joined.
    pub fn init_rank(device: usize, world_size: usize, id: &UniqueId, rank: usize) -> Result<Self> {
        let api = api()?;
        let size = c_int::try_from(world_size)
            .map_err(|_| Error::InvalidArgument(format!("bad world size {world_size}")))?;
        let rank_code = c_int::try_from(rank)
            .map_err(|_| Error::InvalidArgument(format!("bad rank {rank}")))?;
        let mut comm = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out-pointer; the id is passed by value.
        api.nccl(
            unsafe { (api.comm_init_rank)(&mut comm, size, id.0, rank_code) },
            "ncclCommInitRank",
        )?;
        Ok(Self {
            comm,
            device,
            enqueue: Mutex::new(()),
        })
    }

    /// The CUDA device of this rank.
    pub fn device(&self) -> usize {
        self.device
    }

    /// A contiguous CUDA tensor on this communicator's device: its NCCL
    /// type, element count and data pointer.
    fn buffer(&self, t: &Tensor) -> Result<(c_int, usize, *mut c_void)> {
        match t.device() {
            Device::Cuda(i) if i == self.device => {}
            Device::Cuda(i) => {
                return Err(Error::InvalidArgument(format!(
                    "this rank's NCCL communicator is on cuda:{}, the tensor on cuda:{i}",
                    self.device
                )))
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "NCCL collectives take CUDA tensors, not {other:?} ones"
                )))
            }
        }
        if !t.is_contiguous() {
            return Err(Error::InvalidArgument(
                "NCCL collectives need a contiguous tensor".into(),
            ));
        }
        Ok((nccl_type(t.kind())?, t.numel(), t.data_ptr()))
    }

    /// `ncclAllReduce` of `t` in place on `stream` (`None`: the legacy
    /// default stream). Returns once the collective is queued; wait on the
    /// stream (or an event recorded after it) for the result.
    pub fn all_reduce_(&self, t: &Tensor, op: ReduceOp, stream: Option<&Stream>) -> Result<()> {
        let (dtype, count, ptr) = self.buffer(t)?;
        let api = api()?;
        let _queue = self.enqueue.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: in place (NCCL allows send == recv) on a live contiguous
        // CUDA buffer of `count` elements on this communicator's device.
        let code = unsafe {
            (api.all_reduce)(
                ptr,
                ptr,
                count,
                dtype,
                op.code(),
                self.comm,
                raw_stream(stream),
            )
        };
        api.nccl(code, "ncclAllReduce")
    }

    /// `ncclBroadcast` of rank `root`'s `t` into every rank's `t`, in place
    /// on `stream` (`None`: the legacy default stream); queued as
    /// [`Communicator::all_reduce_`].
    pub fn broadcast_(&self, t: &Tensor, root: usize, stream: Option<&Stream>) -> Result<()> {
        let (dtype, count, ptr) = self.buffer(t)?;
        let root = c_int::try_from(root)
            .map_err(|_| Error::InvalidArgument(format!("bad root {root}")))?;
        let api = api()?;
        let _queue = self.enqueue.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: as in `all_reduce_`.
        let code =
            unsafe { (api.broadcast)(ptr, ptr, count, dtype, root, self.comm, raw_stream(stream)) };
        api.nccl(code, "ncclBroadcast")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_travel_as_words_and_dtypes_map_to_nccls() -> Result<()> {
        let mut raw = RawUniqueId { internal: [0; 128] };
        for (i, b) in raw.internal.iter_mut().enumerate() {
            *b = (i * 7 % 256) as u8;
        }
        let words = UniqueId(raw).to_words();
        assert_eq!(words.len(), UNIQUE_ID_WORDS);
        let back = UniqueId::from_words(&words)?;
        assert_eq!(back.0.internal, raw.internal);
        assert!(UniqueId::from_words(&words[1..]).is_err());
        assert_eq!(nccl_type(Kind::Float)?, 7);
        assert_eq!(nccl_type(Kind::Int64)?, 4);
        assert!(nccl_type(Kind::Half).is_err());
        assert_eq!(ReduceOp::Max.code(), 2);
        Ok(())
    }
}
