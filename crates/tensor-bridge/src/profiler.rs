//! libtorch's own profiler, the one `torch.profiler` drives (Kineto):
//! [`Profiler::start`] records every ATen operator the calling thread runs
//! (with its input shapes when asked, `record_shapes=True`), and
//! [`Profiler::save`] writes what it recorded as a Chrome trace
//! (`chrome://tracing`, Perfetto, TensorBoard's profile plugin), as
//! `prof.export_chrome_trace(path)` does. [`Span`] is
//! `torch.profiler.record_function`: a named range in the trace
//! (`ProfilerStep#N` for a training step, as `prof.step()` opens).
use crate::shim;
use crate::{Error, Result};
use std::ffi::{c_void, CString};
use std::marker::PhantomData;
use std::path::Path;

/// What a [`Profiler`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfilerOptions {
    /// Each operator's input shapes and dtypes (`record_shapes`).
    pub record_shapes: bool,
    /// CUDA kernels and runtime calls too (`ProfilerActivity.CUDA`), besides
    /// the CPU side.
    pub cuda: bool,
}

impl Default for ProfilerOptions {
    /// Shapes recorded, CPU activity only.
    fn default() -> Self {
        Self {
            record_shapes: true,
            cuda: false,
        }
    }
}

/// A recording in progress on this thread (libtorch's profiler state is the
/// starting thread's, hence not `Send`). Dropping it stops the recording
/// and discards it.
#[derive(Debug)]
pub struct Profiler {
    active: bool,
    _thread_bound: PhantomData<*const ()>,
}

impl Profiler {
    /// Starts recording (`torch.profiler.profile(...).start()`); an error
    /// when a profiler already records on this thread.
    pub fn start(options: ProfilerOptions) -> Result<Self> {
        // SAFETY: plain ints; the shim returns NULL or an owned message.
        shim::check(unsafe {
            shim::kiln_profiler_start(options.record_shapes.into(), options.cuda.into())
        })?;
        Ok(Self {
            active: true,
            _thread_bound: PhantomData,
        })
    }

    /// Stops recording and writes the Chrome trace JSON to `path` through
    /// the atomic writer ([`crate::io::write_atomic_with`]).
    pub fn save(mut self, path: &Path) -> Result<()> {
        self.active = false;
        crate::io::write_atomic_with(path, |tmp| {
            let c_path = CString::new(tmp.as_os_str().as_encoded_bytes()).map_err(|_| {
                Error::InvalidArgument(format!("{}: a path with a NUL byte", path.display()))
            })?;
            // SAFETY: a NUL-terminated path that outlives the call.
            shim::check(unsafe { shim::kiln_profiler_stop(c_path.as_ptr()) })
        })
    }

    /// Stops recording and discards what was recorded.
    pub fn discard(mut self) -> Result<()> {
        self.active = false;
        // SAFETY: NULL asks the shim to drop the result.
        shim::check(unsafe { shim::kiln_profiler_stop(std::ptr::null()) })
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if self.active {
            // SAFETY: as in `discard`; an error has nowhere to go.
            let _ = shim::check(unsafe { shim::kiln_profiler_stop(std::ptr::null()) });
        }
    }
}

/// A named range in a recording (`torch.profiler.record_function(name)`),
/// from [`Span::enter`] to [`Span::exit`] (or drop); nothing is recorded
/// when no profiler runs on this thread.
#[derive(Debug)]
pub struct Span {
    handle: *mut c_void,
}

impl Span {
    /// Opens the range `name` on this thread.
    pub fn enter(name: &str) -> Result<Self> {
        let name = CString::new(name)
            .map_err(|_| Error::InvalidArgument(format!("span name {name:?} has a NUL byte")))?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: a NUL-terminated name for the call, an out pointer the shim fills.
        shim::check(unsafe { shim::kiln_record_function_enter(name.as_ptr(), &mut handle) })?;
        Ok(Self { handle })
    }

    /// Closes the range.
    pub fn exit(mut self) -> Result<()> {
        self.close()
    }

    fn close(&mut self) -> Result<()> {
        let handle = std::mem::replace(&mut self.handle, std::ptr::null_mut());
        if handle.is_null() {
            return Ok(());
        }
        // SAFETY: a handle of `kiln_record_function_enter`, freed once.
        shim::check(unsafe { shim::kiln_record_function_exit(handle) })
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The file name `torch.profiler.tensorboard_trace_handler` gives a trace,
/// `{host}_{pid}.{time_ns}.pt.trace.json`: what TensorBoard's profile
/// plugin looks for in a run's directory.
pub fn tensorboard_trace_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{host}_{}.{nanos}.pt.trace.json", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_names_what_the_operators_ran_on() -> std::result::Result<(), Box<dyn std::error::Error>>
    {
        let dir = std::env::temp_dir().join(format!("kiln-profiler-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(tensorboard_trace_name());
        let x = tch::Tensor::ones([4, 3], (tch::Kind::Float, tch::Device::Cpu));
        let w = tch::Tensor::ones([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        let b = tch::Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu));
        let profiler = Profiler::start(ProfilerOptions::default())?;
        // A second recording on the same thread is libtorch's error.
        assert!(Profiler::start(ProfilerOptions::default()).is_err());
        let span = Span::enter("ProfilerStep#0")?;
        let y = x.f_linear(&w, Some(&b))?;
        span.exit()?;
        profiler.save(&path)?;
        assert_eq!(y.size(), [4, 2]);
        let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let events = trace["traceEvents"].as_array().ok_or("no traceEvents")?;
        let named = |n: &str| events.iter().find(|e| e["name"] == n);
        let addmm = named("aten::addmm").ok_or("no aten::addmm event")?;
        assert_eq!(addmm["args"]["Input Dims"][1], serde_json::json!([4, 3]));
        assert!(named("aten::linear").is_some());
        assert!(named("ProfilerStep#0").is_some());
        // Nothing is left beside the trace (the temporary file was renamed).
        assert_eq!(std::fs::read_dir(&dir)?.count(), 1);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
