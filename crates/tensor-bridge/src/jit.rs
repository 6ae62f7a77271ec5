//! TorchScript modules: what `torch.jit.save(torch.jit.script(model))` (or
//! `torch.jit.trace`) writes, loaded for training.
//!
//! A [`ScriptModule`] is a `torch::jit::Module` held through kiln's shim
//! (`cpp/jit.cpp`): its forward pass, `train()`/`eval()`, its parameters
//! and buffers with the dotted names PyTorch's `named_parameters()` and
//! `named_buffers()` give (each a handle sharing storage and gradient with
//! the module, so an optimizer over them trains the module), and saving it
//! back as TorchScript. tch's own `TrainableCModule` renames parameters
//! (`conv1_weight`) and has no buffers, which is why kiln does not use it.
//!
//! The forward pass runs with the graph executor's optimisations off
//! (`torch.jit.optimized_execution(False)`): the module's operations run as
//! written, as PyTorch's eager mode would run them, and the numbers never
//! depend on how many calls came before (the profiling executor rewrites a
//! graph after its first runs). That keeps a resumed run bit-identical to
//! an uninterrupted one.
//!
//! TorchScript is deprecated upstream from PyTorch 2.11, but it is the only
//! format that carries a trainable graph from Python to libtorch;
//! `torch.jit.script` works with torch ≤ 2.11 on Python ≤ 3.13.
use crate::shim::{self, check, owned, raw_list, JitModule};
use crate::{Error, Result};
use std::ffi::{c_char, c_void, CStr};
use std::path::Path;
use std::ptr::NonNull;
use tch::{Device, Tensor};

/// Which part of a module's result is its output (`torchscript:…,output=`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Output {
    /// The result itself, which must be a tensor.
    #[default]
    Whole,
    /// Element `i` of a returned tuple or list (`output=0`).
    Index(usize),
    /// Entry `key` of a returned dict (`output=logits`).
    Key(String),
}

impl std::str::FromStr for Output {
    type Err = std::convert::Infallible;

    /// A number is an element's position, anything else a dict's key;
    /// the empty string is the whole result.
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        Ok(if text.is_empty() {
            Output::Whole
        } else if let Ok(i) = text.parse::<usize>() {
            Output::Index(i)
        } else {
            Output::Key(text.to_string())
        })
    }
}

/// A TorchScript module, trainable.
#[derive(Debug)]
pub struct ScriptModule {
    module: NonNull<JitModule>,
    device: Device,
}

impl Drop for ScriptModule {
    fn drop(&mut self) {
        // SAFETY: the module was allocated by `kiln_jit_load` and is freed once.
        unsafe { shim::kiln_jit_free(self.module.as_ptr()) }
    }
}

/// The message of a TorchScript failure: the interpreter's report is a
/// traceback ending in the Python-style error line; that line is the news.
fn script_error(err: Error) -> Error {
    match err {
        Error::Torch(msg) => {
            let last = msg
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("unknown TorchScript error");
            let last = last
                .split_once("Error: ")
                .filter(|(kind, _)| !kind.contains(' '))
                .map_or(last, |(_, rest)| rest);
            Error::Torch(last.to_string())
        }
        other => other,
    }
}

fn device_code(device: Device) -> Result<(i32, i64)> {
    match device {
        Device::Cpu => Ok((0, 0)),
        Device::Cuda(i) => Ok((1, i as i64)),
        other => Err(Error::InvalidArgument(format!(
            "TorchScript modules load on cpu or cuda, not {other:?}"
        ))),
    }
}

extern "C" fn push_named(data: *mut c_void, name: *const c_char, tensor: *mut torch_sys::C_tensor) {
    // SAFETY: `data` is the `Vec` `named` passed in; `name` is a NUL-terminated
    // string valid for the call; `tensor` is a new handle we own.
    let out = unsafe { &mut *(data as *mut Vec<(String, Tensor)>) };
    let name = unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned();
    if let Ok(t) = owned(tensor) {
        out.push((name, t));
    }
}

impl ScriptModule {
    /// `torch.jit.load(path, map_location=device)`. A missing file is an
    /// [`Error::Io`] naming it; a file that is not a TorchScript archive
    /// gives libtorch's reason.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let bytes = crate::io::read(path)?;
        Self::from_bytes(&bytes, device)
    }

    /// `torch.jit.load(io.BytesIO(bytes), map_location=device)`.
    pub fn from_bytes(bytes: &[u8], device: Device) -> Result<Self> {
        let (kind, index) = device_code(device)?;
        let mut out = std::ptr::null_mut();
        // SAFETY: `bytes` is live for the call (the shim copies it); `out`
        // receives a module we then own.
        check(unsafe {
            shim::kiln_jit_load(bytes.as_ptr().cast(), bytes.len(), kind, index, &mut out)
        })?;
        let module =
            NonNull::new(out).ok_or_else(|| Error::Torch("libtorch returned no module".into()))?;
        Ok(Self { module, device })
    }

    /// The device it was loaded on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// `module(input)`; an error when the module fails or returns something
    /// other than a tensor (a tuple, a dict…), naming what it returned.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        self.forward_all(&[input], &Output::Whole)
    }

    /// `module(*inputs)`, and the part of its result `output` selects: an
    /// error when the module fails, or when the selection finds no tensor
    /// (one line saying what the module returned and how to pick from it).
    pub fn forward_all(&self, inputs: &[&Tensor], output: &Output) -> Result<Tensor> {
        let handles = raw_list(inputs);
        let (index, key) = match output {
            Output::Whole => (-1, None),
            Output::Index(i) => (i64::try_from(*i).unwrap_or(i64::MAX), None),
            Output::Key(k) => (
                -1,
                Some(std::ffi::CString::new(k.as_str()).map_err(|_| {
                    Error::InvalidArgument(format!("output={k:?} holds a NUL byte"))
                })?),
            ),
        };
        let key_ptr = key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr());
        let mut out = std::ptr::null_mut();
        let mut kind: *mut c_char = std::ptr::null_mut();
        // SAFETY: the module and inputs are live for the call (`handles`
        // borrows them); `key_ptr` is NULL or a NUL-terminated string that
        // outlives the call; `out`/`kind` are valid out-pointers.
        check(unsafe {
            shim::kiln_jit_forward(
                self.module.as_ptr(),
                handles.as_ptr(),
                handles.len(),
                index,
                key_ptr,
                &mut out,
                &mut kind,
            )
        })
        .map_err(script_error)?;
        if !kind.is_null() {
            // SAFETY: a NUL-terminated malloc'd string we own, freed once.
            let why = unsafe { CStr::from_ptr(kind) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: as above; `kiln_free_error` is `free`.
            unsafe { shim::kiln_free_error(kind) };
            return Err(Error::InvalidArgument(why));
        }
        owned(out)
    }

    /// `module.train()` (`true`) or `module.eval()` (`false`), recursively.
    pub fn set_training(&mut self, training: bool) -> Result<()> {
        // SAFETY: the module is live.
        check(unsafe { shim::kiln_jit_train(self.module.as_ptr(), i32::from(training)) })
    }

    /// `module.training`.
    pub fn is_training(&self) -> Result<bool> {
        let mut on = 0;
        // SAFETY: the module is live; `on` is a valid out-pointer.
        check(unsafe { shim::kiln_jit_is_training(self.module.as_ptr(), &mut on) })?;
        Ok(on != 0)
    }

    fn named(&self, buffers: bool) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        // SAFETY: the module is live; the callback only pushes onto `out`,
        // which outlives the call.
        check(unsafe {
            shim::kiln_jit_named_tensors(
                self.module.as_ptr(),
                i32::from(buffers),
                (&mut out as *mut Vec<(String, Tensor)>).cast(),
                push_named,
            )
        })?;
        Ok(out)
    }

    /// `module.named_parameters()`: dotted names (`conv1.weight`) in
    /// PyTorch's order; each tensor shares storage and gradient with the
    /// module's parameter.
    pub fn named_parameters(&self) -> Result<Vec<(String, Tensor)>> {
        self.named(false)
    }

    /// `module.named_buffers()` (batch-norm running statistics…), in
    /// PyTorch's order; each tensor shares storage with the module's buffer.
    pub fn named_buffers(&self) -> Result<Vec<(String, Tensor)>> {
        self.named(true)
    }

    /// `torch.jit.save(module, buffer)`: the TorchScript archive's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes: *mut c_char = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: the module is live; `bytes`/`len` are valid out-pointers.
        check(unsafe { shim::kiln_jit_save(self.module.as_ptr(), &mut bytes, &mut len) })?;
        if bytes.is_null() {
            return Err(Error::Torch("libtorch saved no bytes".into()));
        }
        // SAFETY: the shim malloc'd `len` bytes at `bytes` for us; copied, then freed once.
        let out = unsafe { std::slice::from_raw_parts(bytes.cast::<u8>(), len) }.to_vec();
        // SAFETY: `kiln_free_error` is `free`.
        unsafe { shim::kiln_free_error(bytes) };
        Ok(out)
    }

    /// `torch.jit.save(module, path)`, atomically ([`crate::io::write_atomic`]):
    /// PyTorch loads it back with `torch.jit.load`.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, &self.to_bytes()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_archives_are_errors_not_crashes() {
        let err = ScriptModule::from_bytes(b"not a zip archive", Device::Cpu)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("libtorch: "), "{err}");
        let missing = ScriptModule::load(Path::new("/nonexistent/kiln/model.pt"), Device::Cpu);
        assert!(matches!(missing, Err(Error::Io { .. })));
    }

    #[test]
    fn script_errors_keep_the_error_line() {
        let msg = "The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript (most recent call last):\n  File \"code/__torch__.py\", line 9\nRuntimeError: mat1 and mat2 shapes cannot be multiplied (1x784 and 100x10)\n";
        let e = script_error(Error::Torch(msg.into())).to_string();
        assert_eq!(
            e,
            "libtorch: mat1 and mat2 shapes cannot be multiplied (1x784 and 100x10)"
        );
    }
}
