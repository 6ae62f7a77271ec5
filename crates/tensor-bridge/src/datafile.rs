//! Data files read in pieces, never loaded whole: [`DataFile`] (positioned
//! reads, `pread`) and [`StoredArray`], one tensor of a safetensors file
//! ([`open_safetensors`]) read row by row.
//!
//! Resident memory stays flat however large the file: each read copies just
//! the bytes asked for out of the page cache. Memory-mapping the file
//! (numpy's `np.memmap`, which nanoGPT uses) does not keep it flat on
//! current kernels: a fault on a file mapping maps the whole page-cache
//! folio around it (up to 2 MiB), so one batch of 512 scattered 4 KiB rows
//! of a 256 MiB file mapped 150-250 MiB into the process (measured on Linux
//! 6.18, ext4). A read also reports a file truncated under it as an error
//! naming the file, where a mapping would kill the process with `SIGBUS`.
use crate::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// A data file opened for reading in pieces (see the module docs). Reads
/// may run on several threads at once.
#[derive(Debug)]
pub struct DataFile {
    path: PathBuf,
    file: File,
    len: usize,
}

impl DataFile {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len() as usize;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes when it was opened.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `start..start + len` lies within the file.
    pub fn contains(&self, start: usize, len: usize) -> bool {
        start.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// Appends the bytes `start..start + len` to `out`; an error names the
    /// file when the range is past its end or the read fails (a file
    /// truncated since it was opened).
    pub fn read_into(&self, start: usize, len: usize, out: &mut Vec<u8>) -> Result<()> {
        let past_end = || Error::Io {
            path: self.path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "bytes {start}..{} are past the end of the file ({} bytes)",
                    start.saturating_add(len),
                    self.len
                ),
            ),
        };
        if !self.contains(start, len) {
            return Err(past_end());
        }
        let at = out.len();
        out.resize(at + len, 0);
        self.file
            .read_exact_at(&mut out[at..], start as u64)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::Io {
                    path: self.path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file is shorter than when it was opened (truncated while in use)",
                    ),
                },
                _ => Error::Io {
                    path: self.path.clone(),
                    source,
                },
            })
    }

    /// The bytes `start..start + len` ([`DataFile::read_into`]).
    pub fn read(&self, start: usize, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        self.read_into(start, len, &mut out)?;
        Ok(out)
    }
}

/// One tensor `[N, ...]` of a safetensors file, read by rows (samples):
/// [`StoredArray::rows`] reads the rows asked for into a new tensor; the
/// file is never loaded whole.
#[derive(Debug, Clone)]
pub struct StoredArray {
    file: Arc<DataFile>,
    name: String,
    /// Where the tensor's bytes start in the file.
    start: usize,
    kind: Kind,
    shape: Vec<i64>,
    /// Bytes per row (the product of `shape[1..]` times the element size).
    row_bytes: usize,
}

impl StoredArray {
    /// The tensor's name in its file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it is read from.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Its dtype.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its shape, `[N, ...]` (a 0-d tensor has the shape `[]` and no rows).
    pub fn shape(&self) -> &[i64] {
        &self.shape
    }

    /// Its number of rows (`shape[0]`, 0 for a 0-d tensor).
    pub fn len(&self) -> usize {
        self.shape.first().map_or(0, |&n| n as usize)
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `indices` stacked, `[indices.len(), ...]`: what
    /// `tensor.index_select(0, indices)` gives on the loaded tensor, bit for
    /// bit (the bytes are copied as stored).
    pub fn rows(&self, indices: &[i64]) -> Result<Tensor> {
        let mut bytes = Vec::with_capacity(indices.len() * self.row_bytes);
        // Runs of consecutive rows (evaluation, unshuffled data) are one read.
        let mut k = 0;
        while k < indices.len() {
            let first = indices[k];
            let mut run = 1;
            while indices.get(k + run) == Some(&(first + run as i64)) {
                run += 1;
            }
            let last = first + run as i64 - 1;
            let row = usize::try_from(first)
                .ok()
                .filter(|_| (last as usize) < self.len())
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "row {} is out of range for tensor '{}' {:?} in {}",
                        if first < 0 { first } else { last },
                        self.name,
                        self.shape,
                        self.path().display()
                    ))
                })?;
            self.file.read_into(
                self.start + row * self.row_bytes,
                run * self.row_bytes,
                &mut bytes,
            )?;
            k += run;
        }
        let mut shape = self.shape.clone();
        if let Some(n) = shape.first_mut() {
            *n = indices.len() as i64;
        }
        Ok(Tensor::f_from_data_size(&bytes, &shape, self.kind)?)
    }

    /// The whole tensor, loaded (for small ones, such as targets).
    pub fn load(&self) -> Result<Tensor> {
        if self.shape.is_empty() {
            let bytes = self.file.read(self.start, self.row_bytes)?;
            return Ok(Tensor::f_from_data_size(&bytes, &[], self.kind)?);
        }
        self.rows(&(0..self.len() as i64).collect::<Vec<_>>())
    }
}

/// The tensors of a safetensors file, sorted by name, without reading
/// their data: only the header is read (and checked, as
/// `safetensors.safe_open` checks it).
pub fn open_safetensors(path: &Path) -> Result<Vec<(String, StoredArray)>> {
    let file = Arc::new(DataFile::open(path)?);
    let invalid = |what: String| {
        Error::InvalidArgument(format!(
            "{} is not a readable safetensors file ({what})",
            path.display()
        ))
    };
    // The header: its length (8 bytes, little-endian), then its JSON;
    // the safetensors crate checks it against the file's length.
    let header_len = if file.len() < 8 {
        return Err(invalid(format!(
            "{} bytes, too short for a header",
            file.len()
        )));
    } else {
        let bytes = file.read(0, 8)?;
        u64::from_le_bytes(bytes.try_into().unwrap_or_default()) as usize
    };
    if header_len > 100 << 20 || !file.contains(8, header_len) {
        return Err(invalid(format!("a header of {header_len} bytes")));
    }
    let header = file.read(8, header_len)?;
    if header.first() != Some(&b'{') {
        return Err(invalid("its header is not a JSON object".into()));
    }
    let metadata: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| invalid(format!("its header: {e}")))?;
    // What `SafeTensors::read_metadata` checks, without the data in memory:
    // each tensor's bytes fit its shape and dtype, within the file, which
    // they fill exactly.
    let data_len = file.len() - 8 - header_len;
    let mut end = 0;
    for (name, info) in metadata.tensors() {
        let (start, stop) = info.data_offsets;
        let elements = info
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.size()));
        if stop < start || Some(stop - start) != elements || stop > data_len {
            return Err(invalid(format!(
                "tensor '{name}': bytes {start}..{stop} do not hold {:?} {:?} within the file's {data_len} bytes of data",
                info.dtype, info.shape
            )));
        }
        end = end.max(stop);
    }
    if end != data_len {
        return Err(invalid(format!(
            "the tensors end at byte {end} of {data_len} bytes of data"
        )));
    }
    let data_start = 8 + header_len;
    let mut tensors = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let kind = crate::io::torch_kind(info.dtype)
                .ok_or_else(|| invalid(format!("tensor '{name}' has dtype {:?}", info.dtype)))?;
            let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
            let element = kind.elt_size_in_bytes();
            let row_bytes = element * info.shape.iter().skip(1).product::<usize>();
            let row_bytes = if info.shape.is_empty() {
                element
            } else {
                row_bytes
            };
            Ok((
                name.clone(),
                StoredArray {
                    file: file.clone(),
                    name,
                    start: data_start + info.data_offsets.0,
                    kind,
                    shape,
                    row_bytes,
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's resident set in bytes (`VmRSS` in /proc/self/status).
    fn resident() -> usize {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    fn scratch(name: &str) -> Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("kiln-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    #[test]
    fn reads_pieces_with_flat_resident_memory_and_names_bad_ranges() -> Result<()> {
        let dir = scratch("datafile")?;
        let path = dir.join("data.bin");
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let size = 256 << 20;
        {
            use std::io::Write;
            let mut f = File::create(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            for _ in 0..size / chunk.len() {
                f.write_all(&chunk).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        let file = DataFile::open(&path)?;
        assert_eq!(file.len(), size);
        assert_eq!(file.read(3, 4)?, chunk[3..7]);
        let err = file
            .read(size - 1, 2)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("past the end") && err.contains("data.bin"),
            "{err}"
        );
        // Every 4 KiB row of the file, scattered: the whole file is read,
        // and resident memory does not grow with it.
        let before = resident();
        let mut sum = 0u64;
        let rows = size / 4096;
        let mut piece = Vec::new();
        for k in 0..rows {
            let row = (k * 7919) % rows;
            piece.clear();
            file.read_into(row * 4096, 4096, &mut piece)?;
            sum += piece.iter().map(|&b| u64::from(b)).sum::<u64>();
        }
        let grown = resident().saturating_sub(before);
        let want: u64 =
            chunk.iter().map(|&b| u64::from(b)).sum::<u64>() * (size / chunk.len()) as u64;
        assert_eq!(sum, want);
        // Loaded or mapped, the file would add 256 MiB; the margin is for
        // the other tests of this binary, which run on other threads.
        assert!(
            grown <= 64 << 20,
            "resident memory grew by {} MiB reading a 256 MiB file",
            grown >> 20
        );
        // Truncated while open: an error naming the file, not a crash.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(1 << 20))
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        let err = file
            .read(2 << 20, 16)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("truncated") && err.contains("data.bin"),
            "{err}"
        );
        assert!(DataFile::open(&dir.join("absent")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn stored_rows_equal_index_select_on_the_loaded_tensors() -> Result<()> {
        let dir = scratch("stored-arrays")?;
        let path = dir.join("data.safetensors");
        let odd = Tensor::f_arange(7, (Kind::Uint8, tch::Device::Cpu))?;
        let x = Tensor::f_randn([5, 2, 3], (Kind::Float, tch::Device::Cpu))?;
        let y = Tensor::f_arange(5, (Kind::Int64, tch::Device::Cpu))?;
        let h = Tensor::f_randn([5, 4], (Kind::BFloat16, tch::Device::Cpu))?;
        crate::io::write_safetensors(
            &path,
            &[
                ("a_odd".into(), odd.shallow_clone()),
                ("h".into(), h.shallow_clone()),
                ("x".into(), x.shallow_clone()),
                ("y".into(), y.shallow_clone()),
            ],
        )?;
        let stored = open_safetensors(&path)?;
        let names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a_odd", "h", "x", "y"]);
        let indices = [4i64, 0, 2, 2];
        let select = Tensor::f_from_slice(&indices)?;
        for ((_, array), loaded) in stored.iter().zip([&odd, &h, &x, &y]) {
            assert_eq!(array.kind(), loaded.kind());
            assert_eq!(array.shape(), loaded.size());
            assert!(array.load()?.equal(loaded));
            assert!(array
                .rows(&indices)?
                .equal(&loaded.f_index_select(0, &select)?));
            assert!(array.rows(&[])?.size() == [&[0i64][..], &loaded.size()[1..]].concat());
            let past = array.len() as i64;
            assert!(array.rows(&[past]).is_err() && array.rows(&[-1]).is_err());
        }
        // A file cut short, a header that lies, and not a safetensors file.
        let bytes = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let cases: [(&[u8], &str); 3] = [
            (&bytes[..bytes.len() - 1], "within the file's"),
            (&bytes[..6], "too short"),
            (b"not a safetensors file", "a header of"),
        ];
        for (content, want) in cases {
            std::fs::write(&path, content).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let err = open_safetensors(&path)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("not a readable safetensors file") && err.contains(want),
                "{err}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
