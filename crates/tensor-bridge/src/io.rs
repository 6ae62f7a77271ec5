//! Crash-safe file output and safetensors I/O.
//!
//! Every writer writes a temporary file in the destination's directory and
//! renames it over the destination, so a reader sees the old file or the new
//! one, never a torn one.
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tch::Tensor;

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `dir/.name.tmp-PID`: hidden, in the destination's directory (so the
/// rename is atomic), unique per process.
fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} names no file", path.display())))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Whether `name` is a temporary file or directory left by an interrupted
/// atomic write (of this module or of a checkpoint).
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && (name.contains(".tmp-") || name.starts_with(".old-"))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory is written, flushed to disk and renamed over `path`, so a
/// reader (or a crash) sees the old file or the new one, never a torn one.
/// On failure (a full disk…) the temporary file is removed and the error
/// names `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| io_err(path, e))
    })
}

/// [`write_atomic`] for a writer that creates the file itself (libtorch's
/// profiler writes its trace by name): `write` writes the temporary path it
/// is given, which is then flushed to disk and renamed over `path`.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path)?;
    let written = write(&tmp).and_then(|()| {
        (|| {
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, path)
        })()
        .map_err(|e| io_err(path, e))
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Best effort: make the rename itself durable.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Reads a whole file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io_err(path, e))
}

/// A CPU tensor's bytes as the safetensors format stores them.
struct TensorBytes {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &TensorBytes {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The dtypes a safetensors file and libtorch share: one table read both
/// ways, so writing and reading by rows agree.
const DTYPES: [(tch::Kind, safetensors::Dtype); 10] = {
    use safetensors::Dtype;
    use tch::Kind;
    [
        (Kind::Float, Dtype::F32),
        (Kind::Double, Dtype::F64),
        (Kind::Half, Dtype::F16),
        (Kind::BFloat16, Dtype::BF16),
        (Kind::Int64, Dtype::I64),
        (Kind::Int, Dtype::I32),
        (Kind::Int16, Dtype::I16),
        (Kind::Int8, Dtype::I8),
        (Kind::Uint8, Dtype::U8),
        (Kind::Bool, Dtype::BOOL),
    ]
};

/// The safetensors dtype of a libtorch kind, if a file can hold it.
pub(crate) fn safetensors_dtype(kind: tch::Kind) -> Option<safetensors::Dtype> {
    DTYPES.iter().find(|(k, _)| *k == kind).map(|(_, d)| *d)
}

/// The libtorch kind of a safetensors dtype, if libtorch has one.
pub(crate) fn torch_kind(dtype: safetensors::Dtype) -> Option<tch::Kind> {
    DTYPES.iter().find(|(_, d)| *d == dtype).map(|(k, _)| *k)
}

fn tensor_bytes(name: &str, tensor: &Tensor) -> Result<TensorBytes> {
    use tch::Kind;
    let dtype = safetensors_dtype(tensor.kind()).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "tensor '{name}' has dtype {:?}, which safetensors files cannot hold",
            tensor.kind()
        ))
    })?;
    let shape = tensor.size().iter().map(|&d| d as usize).collect();
    let flat = tensor
        .f_to_device(tch::Device::Cpu)?
        .f_contiguous()?
        .f_reshape([-1])?;
    let data = if flat.kind() == Kind::Uint8 {
        Vec::<u8>::try_from(&flat)?
    } else {
        Vec::<u8>::try_from(&flat.f_view_dtype(Kind::Uint8)?)?
    };
    Ok(TensorBytes { dtype, shape, data })
}

/// Writes named tensors (any device) to a safetensors file atomically
/// ([`write_atomic`]); PyTorch reads it with `safetensors.torch.load_file`.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let encoded: Vec<(String, TensorBytes)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), tensor_bytes(k, t)?)))
        .collect::<Result<_>>()?;
    let views = encoded.iter().map(|(k, t)| (k.as_str(), t));
    let bytes = safetensors::tensor::serialize(views, &None)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e:?}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Reads the named tensors of a safetensors file, sorted by name.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.exists() {
        return Err(io_err(
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let mut tensors = Tensor::read_safetensors(path)?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_is_bitwise() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("kiln-io-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("t.safetensors");
        let a = Tensor::from_slice(&[1.0f32, -0.1, 3.5]).f_reshape([3, 1])?;
        let b = Tensor::from_slice(&[0.1f64]);
        write_safetensors(
            &path,
            &[
                ("b".into(), b.shallow_clone()),
                ("a".into(), a.shallow_clone()),
            ],
        )?;
        let back = read_safetensors(&path)?;
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].0, "a");
        assert!(back[0].1.equal(&a) && back[1].1.equal(&b));
        assert_eq!(back[0].1.kind(), tch::Kind::Float);
        write_atomic(&dir.join("x.json"), b"{}")?;
        assert_eq!(read(&dir.join("x.json"))?, b"{}");
        assert!(read_safetensors(&dir.join("missing.safetensors")).is_err());
        // Every dtype a state dict holds, 0-dim tensors included, reads back bitwise.
        let kinds = [
            tch::Kind::BFloat16,
            tch::Kind::Half,
            tch::Kind::Int64,
            tch::Kind::Bool,
            tch::Kind::Uint8,
        ];
        let mixed: Vec<(String, Tensor)> = kinds
            .iter()
            .enumerate()
            .map(|(i, &k)| (format!("t{i}"), a.f_to_kind(k).unwrap_or_else(|_| a.copy())))
            .chain([("scalar".to_string(), Tensor::from(2.5f64))])
            .collect();
        write_safetensors(&dir.join("m.safetensors"), &mixed)?;
        let back = read_safetensors(&dir.join("m.safetensors"))?;
        for ((n1, t1), (n2, t2)) in back.iter().zip(
            mixed
                .iter()
                .filter(|(n, _)| n == "scalar")
                .chain(mixed.iter().filter(|(n, _)| n != "scalar")),
        ) {
            assert_eq!(n1, n2);
            assert_eq!(t1.kind(), t2.kind(), "{n1}");
            assert_eq!(t1.size(), t2.size(), "{n1}");
            assert!(t1.equal(t2), "{n1}");
        }
        assert!(is_temporary(".x.json.tmp-12") && is_temporary(".tmp-step-000000001-3"));
        assert!(!is_temporary("config.json") && !is_temporary("step-000000001"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
