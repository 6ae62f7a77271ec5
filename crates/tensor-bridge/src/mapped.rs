//! [`MappedFile`]: a data file mapped read-only into memory, read in pieces
//! without ever being loaded whole (nanoGPT's `np.memmap`), with resident
//! memory kept flat however large the file is.
//!
//! Pages of a mapped file that a process has read count in its resident
//! memory until the kernel reclaims them; reading a 10 GB file once would
//! show 10 GB resident. `MappedFile` tells the kernel it no longer needs the
//! pages read so far (`madvise(MADV_DONTNEED)`) every [`RELEASE_EVERY`]
//! bytes read: the pages stay in the page cache (a later read is a minor
//! fault), but no longer in this process's resident set.
use crate::{Error, Result};
use memmap2::{Mmap, UncheckedAdvice};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes read between two releases of the pages read.
pub const RELEASE_EVERY: usize = 64 << 20;

/// A file mapped read-only (see the module docs).
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    /// `None` for an empty file (which cannot be mapped).
    map: Option<Mmap>,
    /// Bytes read since the last release.
    read_since_release: AtomicUsize,
}

impl MappedFile {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only and handed out only as `&[u8]`;
            // kiln never writes a data file while reading it. As with
            // numpy's memmap, another process truncating the file while it
            // is mapped would fault the reader.
            Some(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        Ok(Self {
            path: path.to_path_buf(),
            map,
            read_since_release: AtomicUsize::new(0),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes `start..start + len`, or `None` past the end. Every
    /// [`RELEASE_EVERY`] bytes read, the pages read so far leave this
    /// process's resident memory.
    pub fn read(&self, start: usize, len: usize) -> Option<&[u8]> {
        let map = self.map.as_ref()?;
        let bytes = map.get(start..start.checked_add(len)?)?;
        let read = self.read_since_release.fetch_add(len, Ordering::Relaxed) + len;
        if read >= RELEASE_EVERY {
            self.read_since_release.store(0, Ordering::Relaxed);
            // Nothing to do if it fails: the pages are then reclaimed later.
            let _ = self.release();
        }
        Some(bytes)
    }

    /// Drops the pages read so far from this process's resident memory
    /// (they stay in the page cache). References handed out stay valid: a
    /// later access reads the page again.
    pub fn release(&self) -> Result<()> {
        let Some(map) = &self.map else {
            return Ok(());
        };
        // SAFETY: MADV_DONTNEED on a private read-only file mapping only
        // discards this process's copies of unmodified file pages; the next
        // access maps the file's page again, with the same bytes.
        unsafe { map.unchecked_advise(UncheckedAdvice::DontNeed) }.map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }
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

    #[test]
    fn reads_pieces_and_keeps_resident_memory_flat() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("kiln-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("data.bin");
        // 256 MiB: four releases' worth.
        let size = 4 * RELEASE_EVERY;
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&path).map_err(|source| Error::Io {
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
        let mapped = MappedFile::open(&path)?;
        assert_eq!(mapped.len(), size);
        assert_eq!(mapped.read(3, 4), Some(&chunk[3..7]));
        assert_eq!(mapped.read(size - 1, 2), None);
        let before = resident();
        let mut sum = 0u64;
        for start in (0..size).step_by(1 << 20) {
            let piece = mapped.read(start, 1 << 20).unwrap_or_default();
            sum += piece.iter().map(|&b| u64::from(b)).sum::<u64>();
        }
        let grown = resident().saturating_sub(before);
        let want: u64 =
            chunk.iter().map(|&b| u64::from(b)).sum::<u64>() * (size / chunk.len()) as u64;
        assert_eq!(sum, want);
        // Read whole, the file would add 256 MiB; released, at most one
        // release interval stays resident.
        assert!(
            grown <= RELEASE_EVERY + (8 << 20),
            "resident memory grew by {} MiB reading a 256 MiB file",
            grown >> 20
        );
        let empty = dir.join("empty.bin");
        std::fs::write(&empty, b"").map_err(|source| Error::Io {
            path: empty.clone(),
            source,
        })?;
        assert!(MappedFile::open(&empty)?.is_empty());
        assert!(MappedFile::open(&dir.join("absent")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
