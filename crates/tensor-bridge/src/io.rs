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

fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} names no file", path.display())))?;
    let mut tmp = name.to_os_string();
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

fn commit(tmp: &Path, path: &Path) -> Result<()> {
    if let Ok(f) = std::fs::File::open(tmp) {
        // Best effort: flush the data before the rename makes it visible.
        let _ = f.sync_all();
    }
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        io_err(path, e)
    })
}

/// Writes `bytes` to `path` atomically (temporary file + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path)?;
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    commit(&tmp, path)
}

/// Reads a whole file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io_err(path, e))
}

/// Writes named tensors to a safetensors file atomically.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let tmp = temp_path(path)?;
    let pairs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    if let Err(e) = Tensor::write_safetensors(&pairs, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    commit(&tmp, path)
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
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
