//! Where libtorch's CPU tensors live: kiln's arena allocator.
//!
//! A training step frees and re-allocates the same large buffers every step
//! (gradients, activations, optimizer temporaries). Through libtorch's
//! default CPU allocator each is fresh memory from `malloc`, page-faulted
//! again and mapped with 4 KiB pages. [`install_arena_allocator`] makes
//! libtorch allocate every CPU block of 256 KiB or more from arenas the kernel
//! may back with 2 MiB transparent huge pages (`MADV_HUGEPAGE`), and keeps a
//! freed block for the next request of its size class (classes waste at most
//! 12.5 %); smaller blocks still come from libtorch's allocator. Cached blocks
//! beyond 512 MiB give their pages back to the kernel and keep only their
//! addresses, and the arenas never reserve more address space than the
//! machine has memory (past that, libtorch's allocator serves).
//!
//! Placement never changes a value: the same kernels run on the same bytes.
//! Tensors allocated before the install keep their own deleter and are
//! freed by libtorch's allocator as before.
use crate::{Error, Result};
use std::str::FromStr;

/// The environment variable [`install_from_env`] reads: `arena` (the
/// default) or `libtorch`.
pub const CPU_ALLOCATOR_ENV: &str = "KILN_CPU_ALLOCATOR";

/// Which allocator serves libtorch's CPU tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuAllocator {
    /// kiln's arenas with huge pages and per-size reuse (the default).
    Arena,
    /// libtorch's own allocator (`posix_memalign`), untouched.
    Libtorch,
}

impl FromStr for CpuAllocator {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "arena" => Ok(Self::Arena),
            "libtorch" => Ok(Self::Libtorch),
            other => Err(Error::InvalidArgument(format!(
                "{CPU_ALLOCATOR_ENV}={other:?} is not an allocator; use arena (the default) or libtorch"
            ))),
        }
    }
}

/// Bytes held by the arena allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaStats {
    /// Address space reserved by the arenas.
    pub reserved: u64,
    /// Bytes in blocks that tensors hold now (class sizes, headers included).
    pub live: u64,
    /// Bytes in freed blocks kept for reuse.
    pub cached: u64,
    /// The part of `cached` whose pages are still resident.
    pub resident_cached: u64,
}

/// Makes kiln's arena allocator libtorch's CPU allocator for the rest of
/// the process. Returns `true` if this call installed it, `false` if it
/// already was; it cannot be uninstalled.
pub fn install_arena_allocator() -> bool {
    // SAFETY: no arguments; the shim installs at most once (std::call_once).
    unsafe { crate::shim::kiln_install_cpu_allocator() != 0 }
}

/// Installs the allocator [`CPU_ALLOCATOR_ENV`] names (unset: the arena
/// allocator) and returns the choice; an unknown name is an error.
pub fn install_from_env() -> Result<CpuAllocator> {
    let choice = match std::env::var(CPU_ALLOCATOR_ENV) {
        Ok(value) => value.parse()?,
        Err(std::env::VarError::NotPresent) => CpuAllocator::Arena,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Error::InvalidArgument(format!(
                "{CPU_ALLOCATOR_ENV} is not valid UTF-8; use arena (the default) or libtorch"
            )))
        }
    };
    if choice == CpuAllocator::Arena {
        install_arena_allocator();
    }
    Ok(choice)
}

/// The arena allocator's byte counts, or `None` before it is installed.
pub fn arena_stats() -> Option<ArenaStats> {
    let mut out = [0u64; 4];
    // SAFETY: `out` has the four slots the shim writes.
    let installed = unsafe { crate::shim::kiln_cpu_allocator_stats(out.as_mut_ptr()) } != 0;
    installed.then_some(ArenaStats {
        reserved: out[0],
        live: out[1],
        cached: out[2],
        resident_cached: out[3],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_say_what_to_use() {
        assert_eq!(
            "arena".parse::<CpuAllocator>().ok(),
            Some(CpuAllocator::Arena)
        );
        assert_eq!(
            "libtorch".parse::<CpuAllocator>().ok(),
            Some(CpuAllocator::Libtorch)
        );
        let err = "jemalloc"
            .parse::<CpuAllocator>()
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains("\"jemalloc\"") && err.contains("arena"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
}
