//! An image folder read with torchvision's `ImageFolder` rules
//! (`torchvision.datasets.folder`: `find_classes`, `make_dataset`,
//! `has_file_allowed_extension`).
//!
//! - Classes are the sub-directories of the root (symbolic links to
//!   directories count), sorted; a class's index in that order is its label.
//! - Each class directory is walked with its sub-directories (links
//!   followed, as `os.walk(followlinks=True)`); the directories are visited
//!   in the order of their sorted paths, and each one's files in sorted
//!   order. A file is a sample when its name ends, ignoring case, with one
//!   of [`IMG_EXTENSIONS`] — the content is only looked at when the sample
//!   is loaded.
//! - A root without class directories, or a class without any image, is
//!   refused as torchvision refuses it, in one line naming the directory.
//!
//! Names sort as Python sorts `str`s: by code point, with bytes that are not
//! UTF-8 standing for U+DC80..U+DCFF (Python's `surrogateescape`).
//!
//! Two deliberate differences, where Python silently goes on: a directory
//! that cannot be read is an error naming it (`os.walk` skips it), and a
//! symbolic-link loop is an error naming the directory (`os.walk` would
//! walk it until the path is too long).
use super::decode::decode_file;
use crate::{Error, Result};
use kiln_tensor::Tensor;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// torchvision's `IMG_EXTENSIONS`: the file endings `ImageFolder` takes.
pub const IMG_EXTENSIONS: [&str; 9] = [
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
];

/// torchvision's `has_file_allowed_extension`: whether `name`, lowercased,
/// ends with one of `extensions` (given in lowercase).
pub fn has_file_allowed_extension(name: &OsStr, extensions: &[&str]) -> bool {
    let lower = name.to_string_lossy().to_lowercase();
    extensions.iter().any(|e| lower.ends_with(e))
}

/// The order of Python's `sorted()` on the `str` Python makes of `name`.
fn python_sort_key(name: &OsStr) -> Vec<u32> {
    let mut key = Vec::with_capacity(name.len());
    for chunk in name.as_bytes().utf8_chunks() {
        key.extend(chunk.valid().chars().map(u32::from));
        key.extend(chunk.invalid().iter().map(|&b| 0xDC00 + u32::from(b)));
    }
    key
}

/// A scanned image folder: its classes and its samples, as torchvision's
/// `ImageFolder(root)` lists them (`classes`, `samples`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, i64)>,
}

impl ImageFolder {
    /// Scans `root` (see the module docs). Errors name the directory: it
    /// cannot be read, has no class directory, or a class has no image.
    pub fn scan(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let class_dirs = find_classes(&root)?;
        let mut samples = Vec::new();
        let mut empty = Vec::new();
        for (label, name) in class_dirs.iter().enumerate() {
            let before = samples.len();
            let mut dirs = Vec::new();
            walk(&root.join(name), &mut Vec::new(), &mut dirs)?;
            dirs.sort_by_cached_key(|(dir, _)| python_sort_key(dir.as_os_str()));
            for (dir, mut files) in dirs {
                files.sort_by_cached_key(|f| python_sort_key(f));
                for file in files {
                    if has_file_allowed_extension(&file, &IMG_EXTENSIONS) {
                        samples.push((dir.join(file), label as i64));
                    }
                }
            }
            if samples.len() == before {
                empty.push(name.to_string_lossy().into_owned());
            }
        }
        if !empty.is_empty() {
            return Err(Error::Data {
                path: root,
                message: format!(
                    "Found no valid file for the classes {}. Supported extensions are: {}",
                    empty.join(", "),
                    IMG_EXTENSIONS.join(", ")
                ),
            });
        }
        Ok(Self {
            root,
            classes: class_dirs
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect(),
            samples,
        })
    }

    /// The directory scanned.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The class names, sorted; a class's index is its label.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Every sample: the image's path and its class index, in
    /// torchvision's order.
    pub fn samples(&self) -> &[(PathBuf, i64)] {
        &self.samples
    }

    /// The class index of every sample, in order (`ImageFolder.targets`).
    pub fn targets(&self) -> Vec<i64> {
        self.samples.iter().map(|(_, t)| *t).collect()
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no sample (never true for a scanned folder).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Sample `index` decoded as torchvision's default loader and
    /// `ToImage()` give it (a uint8 `[3, H, W]` tensor), with its class.
    /// Errors name the file.
    pub fn load(&self, index: usize) -> Result<(Tensor, i64)> {
        let (path, class) = self.samples.get(index).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "image index {index} is out of range for {} samples",
                self.samples.len()
            ))
        })?;
        Ok((decode_file(path)?, *class))
    }
}

fn read_dir_error(dir: &Path, e: std::io::Error) -> Error {
    Error::Data {
        path: dir.to_path_buf(),
        message: format!("cannot read the directory: {e}"),
    }
}

/// `find_classes`: the names of `root`'s directory entries that are
/// directories (following links), sorted.
fn find_classes(root: &Path) -> Result<Vec<OsString>> {
    let mut classes = Vec::new();
    for entry in fs::read_dir(root).map_err(|e| read_dir_error(root, e))? {
        let entry = entry.map_err(|e| read_dir_error(root, e))?;
        // `DirEntry.is_dir()` of Python follows links; an error means "no".
        if fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
            classes.push(entry.file_name());
        }
    }
    if classes.is_empty() {
        return Err(Error::Data {
            path: root.to_path_buf(),
            message:
                "Couldn't find any class folder (ImageFolder needs one sub-directory per class)"
                    .to_string(),
        });
    }
    classes.sort_by_cached_key(|c| python_sort_key(c));
    Ok(classes)
}

/// `os.walk(dir, followlinks=True)`: every directory under `dir` (itself
/// included) with the names of its entries that are not directories.
/// `ancestors` holds the (device, inode) of the directories being walked, to
/// refuse a link back to one of them.
fn walk(
    dir: &Path,
    ancestors: &mut Vec<(u64, u64)>,
    out: &mut Vec<(PathBuf, Vec<OsString>)>,
) -> Result<()> {
    let meta = fs::metadata(dir).map_err(|e| read_dir_error(dir, e))?;
    let id = (meta.dev(), meta.ino());
    if ancestors.contains(&id) {
        return Err(Error::Data {
            path: dir.to_path_buf(),
            message: "a symbolic link loop: this directory contains itself".to_string(),
        });
    }
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| read_dir_error(dir, e))? {
        let entry = entry.map_err(|e| read_dir_error(dir, e))?;
        if fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
            subdirs.push(entry.path());
        } else {
            files.push(entry.file_name());
        }
    }
    out.push((dir.to_path_buf(), files));
    ancestors.push(id);
    for sub in subdirs {
        walk(&sub, ancestors, out)?;
    }
    ancestors.pop();
    Ok(())
}
