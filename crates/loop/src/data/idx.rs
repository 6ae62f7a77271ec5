//! The IDX format of MNIST and FashionMNIST (gzipped or not).
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type
//! these datasets use), a rank byte, `rank` big-endian u32 dimensions, then
//! exactly `product(dims)` bytes. Every deviation is an error naming the file.
use crate::data::TensorDataset;
use crate::{Error, Result};
use kiln_tensor::{Kind, Tensor};
use std::io::Read;
use std::path::{Path, PathBuf};

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first (`[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// Row-major data, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

fn data_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads the IDX file at `path`, gunzipping it when its name ends in `.gz`.
pub fn read(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| data_error(path, format!("cannot read: {e}")))?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        // gzip's trailer holds the unpacked size (mod 2^32): one allocation, no regrowth.
        let hint = raw
            .len()
            .checked_sub(4)
            .and_then(|at| raw.get(at..))
            .map_or(0, |t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize);
        // (deflate packs at most 1032:1, so a corrupt trailer cannot ask for more.)
        let mut out = Vec::with_capacity(hint.min(raw.len().saturating_mul(1032)));
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| {
                data_error(
                    path,
                    format!("corrupt gzip data ({e}); re-install the dataset"),
                )
            })?;
        out
    } else {
        raw
    };
    // The data keeps the file's buffer (no second copy of a 47 MB image file).
    let (dims, start) = header(&bytes).map_err(|message| data_error(path, message))?;
    let mut data = bytes;
    data.drain(..start);
    Ok(IdxArray { dims, data })
}

/// Parses IDX bytes; the error says what is wrong (without the file name).
pub fn parse(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    let (dims, start) = header(bytes)?;
    Ok(IdxArray {
        dims,
        data: bytes[start..].to_vec(),
    })
}

/// Checks IDX bytes: the dimensions and where the data starts.
fn header(bytes: &[u8]) -> std::result::Result<(Vec<usize>, usize), String> {
    let header = bytes.get(..4).ok_or_else(|| {
        format!(
            "truncated IDX header: {} bytes, need at least 4",
            bytes.len()
        )
    })?;
    if header[0] != 0 || header[1] != 0 {
        return Err(format!(
            "bad IDX magic {:02x} {:02x} {:02x} {:02x}: not an IDX file",
            header[0], header[1], header[2], header[3]
        ));
    }
    if header[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x} is not supported (only 0x08, unsigned byte)",
            header[2]
        ));
    }
    let rank = usize::from(header[3]);
    if rank == 0 {
        return Err("IDX rank 0: expected at least one dimension".into());
    }
    let dims_end = 4 + 4 * rank;
    let dim_bytes = bytes.get(4..dims_end).ok_or_else(|| {
        format!(
            "truncated IDX header: rank {rank} needs {dims_end} header bytes, file has {}",
            bytes.len()
        )
    })?;
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("IDX dimensions {dims:?} overflow"))?;
    let data = &bytes[dims_end..];
    if data.len() < expected {
        return Err(format!(
            "truncated: dimensions {dims:?} need {expected} data bytes, found {}",
            data.len()
        ));
    }
    if data.len() > expected {
        return Err(format!(
            "{} unexpected bytes after the {expected} data bytes of dimensions {dims:?}",
            data.len() - expected
        ));
    }
    Ok((dims, dims_end))
}

/// Finds `stem` (e.g. `train-images-idx3-ubyte`) in `dir`, gzipped or not,
/// also under the `train-images.idx3-ubyte` spelling some mirrors use.
pub fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    let candidates = [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ];
    candidates
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            data_error(dir, format!("no {stem} or {stem}.gz here; the directory needs the four IDX files of (Fashion)MNIST"))
        })
}

/// The file stems of the four (Fashion)MNIST IDX files.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// An images file (rank 3: `[N, H, W]`) and a labels file (rank 1: `[N]`)
/// as a dataset of uint8 images `[N, 1, H, W]` (converted per batch as
/// `ToTensor` does) and int64 labels.
pub fn load_images(images_path: &Path, labels_path: &Path) -> Result<TensorDataset> {
    let images = read(images_path)?;
    let labels = read(labels_path)?;
    let &[n, h, w] = images.dims.as_slice() else {
        return Err(data_error(
            images_path,
            format!(
                "images must have 3 dimensions [N, H, W], found {:?}",
                images.dims
            ),
        ));
    };
    let &[n_labels] = labels.dims.as_slice() else {
        return Err(data_error(
            labels_path,
            format!("labels must have 1 dimension [N], found {:?}", labels.dims),
        ));
    };
    if n_labels != n {
        return Err(data_error(
            labels_path,
            format!(
                "{n_labels} labels for {n} images in {}",
                images_path.display()
            ),
        ));
    }
    let shape = [n as i64, 1, h as i64, w as i64];
    // uint8, as stored; `ToTensor`'s scaling happens when read.
    let inputs = Tensor::f_from_slice(&images.data)?.f_view(shape)?;
    drop(images);
    let targets = Tensor::f_from_slice(&labels.data)?.f_to_kind(Kind::Int64)?;
    TensorDataset::new(inputs, targets, &labels_path.display().to_string())
}

/// The train and test sets of a directory holding the four IDX files
/// (gzipped or not), e.g. `/usr/share/datasets/fashion-mnist`.
pub fn load_dir(dir: &Path) -> Result<(TensorDataset, TensorDataset)> {
    if !dir.is_dir() {
        return Err(data_error(
            dir,
            "data directory does not exist; pass --data-dir DIR holding the four (Fashion)MNIST IDX files",
        ));
    }
    let [train_x, train_y, test_x, test_y] = MNIST_FILES;
    let train = load_images(&find(dir, train_x)?, &find(dir, train_y)?)?;
    let test = load_images(&find(dir, test_x)?, &find(dir, test_y)?)?;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn parses_valid_arrays() {
        let a = parse(&idx(&[2, 3], &[1, 2, 3, 4, 5, 6]));
        assert_eq!(
            a,
            Ok(IdxArray {
                dims: vec![2, 3],
                data: vec![1, 2, 3, 4, 5, 6]
            })
        );
    }

    #[test]
    fn every_malformation_is_named() {
        let err = |b: &[u8]| parse(b).err().unwrap_or_default();
        assert!(err(&[0, 0]).contains("truncated IDX header"));
        assert!(err(&[1, 0, 8, 1, 0, 0, 0, 0]).contains("bad IDX magic"));
        assert!(err(&[0, 0, 0x0d, 1, 0, 0, 0, 0]).contains("element type 0x0d"));
        assert!(err(&[0, 0, 8, 0]).contains("rank 0"));
        assert!(err(&[0, 0, 8, 3, 0, 0, 0, 1]).contains("rank 3 needs 16 header bytes"));
        assert!(err(&idx(&[2, 3], &[1, 2])).contains("need 6 data bytes, found 2"));
        assert!(err(&idx(&[1], &[1, 2])).contains("1 unexpected bytes"));
    }

    #[test]
    fn gzip_and_file_errors_name_the_file() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("kiln-idx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("x-idx1-ubyte.gz");
        std::fs::write(&path, b"not gzip at all")?;
        let msg = read(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.starts_with(&path.display().to_string()) && msg.contains("corrupt gzip"),
            "{msg}"
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &idx(&[3], &[7, 8, 9]))?;
        std::fs::write(&path, gz.finish()?)?;
        assert_eq!(read(&path)?.data, vec![7, 8, 9]);
        assert_eq!(find(&dir, "x-idx1-ubyte")?, path);
        assert!(find(&dir, "y-idx1-ubyte").is_err());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
