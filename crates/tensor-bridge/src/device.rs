//! Device selection: `auto`, `cpu`, `cuda`, `cuda:N`, checked against what
//! libtorch can actually use.
use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
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
    if !crate::cuda::load_libtorch_cuda() {
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
    THREADS_PINNED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether [`set_threads`] has run: only then has MKL a thread count of its
/// own (`mkl_set_num_threads_local`); before, its GEMMs follow the calling
/// thread's OpenMP count, which [`SerialAtenKernels`] lowers.
static THREADS_PINNED: AtomicBool = AtomicBool::new(false);

/// While alive, ATen's own OpenMP-parallel kernels (elementwise ops,
/// reductions, softmax, losses) run on the calling thread alone, while MKL's
/// matrix products keep the thread count [`set_threads`] gave them: MKL reads
/// its own thread-local count, which `torch.set_num_threads` sets besides
/// OpenMP's. Dropping the guard restores the OpenMP count it found. Without
/// an earlier [`set_threads`] MKL has no count of its own and would follow
/// OpenMP's down to one thread, changing the GEMMs' bits, so
/// [`SerialAtenKernels::enter`] then changes nothing.
///
/// On tensors as small as a training batch's activations, a parallel
/// region costs more in fork/join (and, on a busy machine, in waiting for a
/// descheduled worker) than it saves. Whether the bits stay the same is the
/// caller's to know: they do for kernels that compute each output element
/// independently of how ATen splits the work (elementwise ops, reductions
/// split over their outputs, row-wise softmax), not for oneDNN kernels
/// (convolutions, bf16/fp16 matrix products), which read OpenMP's count.
#[derive(Debug)]
#[must_use = "the OpenMP thread count is restored when the guard drops"]
pub struct SerialAtenKernels {
    previous: i32,
}

impl SerialAtenKernels {
    /// Sets the calling thread's OpenMP thread count to one, once
    /// [`set_threads`] has pinned MKL's; `None` (nothing changed) before.
    pub fn enter() -> Result<Option<Self>> {
        if !THREADS_PINNED.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let mut previous = -1;
        // SAFETY: `previous` is a valid out-pointer; errors come back as text.
        crate::shim::check(unsafe { crate::shim::kiln_set_omp_threads(1, &mut previous) })?;
        Ok(Some(Self { previous }))
    }

    /// One thread for every ATen kernel the calling thread runs, whatever
    /// [`set_threads`] said: what `torch.set_num_threads(1)` does in a
    /// `DataLoader` worker process (MKL has no count of its own on a new
    /// thread and follows OpenMP's). For threads that build data.
    pub fn for_worker_thread() -> Result<Self> {
        let mut previous = -1;
        // SAFETY: `previous` is a valid out-pointer; errors come back as text.
        crate::shim::check(unsafe { crate::shim::kiln_set_omp_threads(1, &mut previous) })?;
        Ok(Self { previous })
    }
}

impl Drop for SerialAtenKernels {
    fn drop(&mut self) {
        if self.previous > 0 {
            let mut ignored = -1;
            // Restoring a count read a moment ago cannot fail; nothing to report from a drop.
            let _ = crate::shim::check(unsafe {
                crate::shim::kiln_set_omp_threads(self.previous, &mut ignored)
            });
        }
    }
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
    use tch::{Kind, Reduction, Tensor};

    /// The tutorial's layers at its batch (64 x 784 -> 512 -> 512 -> 10, ReLU,
    /// cross-entropy): output, loss and every gradient are the same bits with
    /// ATen's own kernels on one thread as on two, the GEMMs on MKL's two.
    #[test]
    fn serial_aten_kernels_keep_the_bits_of_a_relu_mlp_step() -> Result<()> {
        set_threads(2)?;
        assert_eq!(tch::get_num_threads(), 2);
        // Deterministic inputs without the global generator (other tests
        // of this binary draw from it concurrently): a golden-ratio sequence.
        let values = |shape: &[i64], offset: i64, scale: f64| -> Result<Tensor> {
            let n: i64 = shape.iter().product();
            Ok(
                Tensor::f_arange_start(offset, offset + n, (Kind::Double, Device::Cpu))?
                    .f_mul_scalar(0.618_033_988_749_895)?
                    .f_frac()?
                    .f_sub_scalar(0.5)?
                    .f_mul_scalar(scale)?
                    .f_to_kind(Kind::Float)?
                    .f_reshape(shape)?,
            )
        };
        let x = values(&[64, 784], 0, 2.0)?;
        let target = Tensor::f_arange(64, (Kind::Int64, Device::Cpu))?
            .f_mul_scalar(7)?
            .f_remainder(10)?;
        let mut layers = Vec::new();
        for (k, (i, o)) in [(784i64, 512i64), (512, 512), (512, 10)]
            .into_iter()
            .enumerate()
        {
            let offset = 1_000_000 * (k as i64 + 1);
            layers.push((
                values(&[o, i], offset, 0.1)?,
                values(&[o], offset + i * o, 0.1)?,
            ));
        }
        let run = |serial: bool| -> Result<Vec<Tensor>> {
            let mut params = Vec::new();
            for (w, b) in &layers {
                params.push((
                    crate::ops::detached_clone(w)?.set_requires_grad(true),
                    crate::ops::detached_clone(b)?.set_requires_grad(true),
                ));
            }
            let x = x.shallow_clone();
            let guard = if serial {
                SerialAtenKernels::enter()?
            } else {
                None
            };
            assert_eq!(tch::get_num_threads(), if serial { 1 } else { 2 });
            let mut h = x;
            for (k, (w, b)) in params.iter().enumerate() {
                h = h.f_linear(w, Some(b))?;
                if k < 2 {
                    h = h.f_relu()?;
                }
            }
            let loss =
                h.f_cross_entropy_loss(&target, None::<Tensor>, Reduction::Mean, -100, 0.0)?;
            loss.f_backward()?;
            drop(guard);
            let mut out = vec![h.f_detach()?, loss.f_detach()?];
            for (w, b) in &params {
                out.push(w.grad());
                out.push(b.grad());
            }
            Ok(out)
        };
        let (parallel, serial) = (run(false)?, run(true)?);
        assert_eq!(tch::get_num_threads(), 2, "the guard restores the count");
        assert_eq!(parallel.len(), serial.len());
        for (i, (a, b)) in parallel.iter().zip(&serial).enumerate() {
            assert!(a.defined() && a.equal(b), "tensor {i} differs");
        }
        Ok(())
    }

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
