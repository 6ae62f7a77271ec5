//! Device selection: `auto`, `cpu`, `cuda`, `cuda:N`, checked against what
//! libtorch can actually use.
use crate::{Error, Result};
use tch::Device;

/// A device as a user names it, before it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA device 0 when CUDA is usable, otherwise the CPU (PyTorch's
    /// `"cuda" if torch.cuda.is_available() else "cpu"`).
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "unknown device '{text}': use auto, cpu, cuda or cuda:N"
                    ))
                }),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Number of CUDA devices libtorch can use (0 without a GPU, a driver or
/// libtorch_cuda). The first call loads libtorch_cuda where a CUDA driver
/// is installed (a CPU-only run never maps the CUDA libraries, about 350 MB
/// of memory); ask this before anything else asks libtorch about CUDA.
pub fn cuda_device_count() -> usize {
    // SAFETY: takes no arguments; loads a library once, thread-safely.
    let loaded = unsafe { crate::shim::kiln_cuda_load() } != 0;
    if !loaded {
        return 0;
    }
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

impl DeviceSpec {
    /// Resolves the spec to a device libtorch can use, or says why not.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => Ok(if cuda_device_count() > 0 {
                Device::Cuda(0)
            } else {
                Device::Cpu
            }),
            Self::Cuda(n) => {
                let count = cuda_device_count();
                if count == 0 {
                    Err(Error::InvalidArgument(format!(
                        "device cuda:{n} requested but libtorch sees no CUDA device; use --device cpu"
                    )))
                } else if n >= count {
                    Err(Error::InvalidArgument(format!(
                        "device cuda:{n} requested but only {count} CUDA device(s) exist (cuda:0..cuda:{})",
                        count - 1
                    )))
                } else {
                    Ok(Device::Cuda(n))
                }
            }
        }
    }
}

/// Sets libtorch's intra-op thread count (`torch.set_num_threads`); 0 is an error.
pub fn set_threads(threads: usize) -> Result<()> {
    let n = i32::try_from(threads)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "thread count must be between 1 and {}, got {threads}",
                i32::MAX
            ))
        })?;
    tch::set_num_threads(n);
    Ok(())
}

/// `torch.use_deterministic_algorithms(on)` with cuDNN's deterministic flag
/// (and benchmarking off): libtorch then picks deterministic kernels (or
/// errors where an op has none), so two runs on one GPU give the same bits.
/// On CUDA, cuBLAS also needs `CUBLAS_WORKSPACE_CONFIG=:4096:8` in the
/// environment, as in PyTorch.
pub fn set_deterministic(on: bool) -> Result<()> {
    // SAFETY: takes a flag and sets libtorch's global context; errors come back as text.
    crate::shim::check(unsafe { crate::shim::kiln_set_deterministic(i32::from(on)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_rejects_others() {
        assert_eq!("auto".parse::<DeviceSpec>().ok(), Some(DeviceSpec::Auto));
        assert_eq!("cpu".parse::<DeviceSpec>().ok(), Some(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>().ok(), Some(DeviceSpec::Cuda(0)));
        assert_eq!(
            "cuda:3".parse::<DeviceSpec>().ok(),
            Some(DeviceSpec::Cuda(3))
        );
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            let err = bad.parse::<DeviceSpec>().err().map(|e| e.to_string());
            assert!(
                err.is_some_and(|e| e.contains("use auto, cpu, cuda or cuda:N")),
                "{bad}"
            );
        }
    }

    #[test]
    fn cpu_always_resolves_and_missing_cuda_is_an_error() {
        assert_eq!(DeviceSpec::Cpu.resolve().ok(), Some(Device::Cpu));
        if cuda_device_count() == 0 {
            let err = DeviceSpec::Cuda(0).resolve().err().map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.contains("no CUDA device")));
            assert_eq!(DeviceSpec::Auto.resolve().ok(), Some(Device::Cpu));
        }
    }
}
