//! Event files: naming, TFRecord framing, buffered writing and reading back.
//!
//! A file is a sequence of TFRecords, each
//!
//! ```text
//! u64 little-endian   length of the payload
//! u32 little-endian   masked CRC-32C of those 8 bytes
//! [u8; length]        the payload: one serialized `Event`
//! u32 little-endian   masked CRC-32C of the payload
//! ```
//!
//! where the mask is TFRecord's (`((crc >> 15) | (crc << 17)) + 0xa282ead8`)
//! and the CRC-32C (Castagnoli) comes from the `crc32c` crate. The first
//! record of every file is an `Event` with `file_version: "brain.Event:2"`,
//! which tells readers to honour `SessionLog.START` purges.
//!
//! Files are named as PyTorch's `SummaryWriter` names them,
//! `events.out.tfevents.<secs>.<host>.<pid>.<n>` (`<secs>` zero-padded to 10
//! digits, `<n>` a per-process counter), and never overwrite an existing file.
//! TensorBoard reads a run's files in name order, so a new file must sort
//! after the ones already there: when an existing file's `<secs>` is not older
//! than now (a restart within the same second), `<secs>` becomes that value
//! plus one.
use super::proto::{event, Event};
use crate::loggers::metrics_log::output_error;
use crate::notice::Notices;
use crate::{Error, Result};
use prost::Message;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `file_version` of the first event of every file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// What every event file name starts with.
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// Buffered bytes beyond which an `add` writes the buffer out at once
/// instead of waiting for the next timed flush.
const MAX_BUFFER: usize = 4 << 20;

/// TFRecord's CRC mask constant.
const MASK_DELTA: u32 = 0xa282_ead8;

/// The masked CRC-32C TFRecord stores: `((crc >> 15) | (crc << 17)) + 0xa282ead8`.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Appends `payload` to `out` as one TFRecord.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u64).to_le_bytes();
    out.reserve(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
}

/// The records of an event file, as [`read_records`] found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Records {
    /// The payloads, in file order, each with a valid length and CRCs.
    pub payloads: Vec<Vec<u8>>,
    /// Bytes after the last whole record: a record still being written, or
    /// one torn by a killed writer. Readers (TensorBoard's too) ignore them.
    pub torn_tail: usize,
}

/// Splits `bytes` into TFRecords, checking both CRCs of each.
///
/// A record cut short at the end is reported in [`Records::torn_tail`]; a
/// CRC mismatch is an error naming `path` and the byte offset.
pub fn read_records(path: &Path, bytes: &[u8]) -> Result<Records> {
    let corrupt = |offset: usize, what: &str| Error::Data {
        path: path.to_path_buf(),
        message: format!("corrupt TFRecord at byte {offset}: {what}"),
    };
    let mut payloads = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let (Some(len_bytes), Some(len_crc)) = (rest.get(..8), rest.get(8..12)) else {
            break;
        };
        if masked_crc32c(len_bytes) != u32::from_le_bytes(le4(len_crc)) {
            return Err(corrupt(pos, "length checksum mismatch"));
        }
        let len = u64::from_le_bytes(le8(len_bytes));
        let Some(end) = usize::try_from(len).ok().and_then(|l| l.checked_add(16)) else {
            return Err(corrupt(pos, "length does not fit in memory"));
        };
        let Some(record) = rest.get(..end) else {
            break;
        };
        let payload = &record[12..end - 4];
        if masked_crc32c(payload) != u32::from_le_bytes(le4(&record[end - 4..])) {
            return Err(corrupt(pos, "payload checksum mismatch"));
        }
        payloads.push(payload.to_vec());
        pos += end;
    }
    Ok(Records {
        payloads,
        torn_tail: bytes.len() - pos,
    })
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut a = [0; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    a
}

/// Reads every whole event of an event file (a torn last record is skipped).
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = fs::read(path).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        message: format!("cannot read: {e}"),
    })?;
    read_records(path, &bytes)?
        .payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Event::decode(p.as_slice()).map_err(|e| Error::Data {
                path: path.to_path_buf(),
                message: format!("record {i} is not an Event: {e}"),
            })
        })
        .collect()
}

/// The event files directly in `dir`, in the order TensorBoard reads them
/// (by name). A missing directory has none.
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(output_error(dir, "listing", e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| output_error(dir, "listing", e))?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && entry.file_name().to_string_lossy().contains("tfevents") {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Seconds since the Unix epoch, as `time.time()` gives them.
pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The machine's host name (`socket.gethostname()`), made safe for a file name.
fn host_name() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// The `<secs>` field of an event file name, if it has one.
fn name_secs(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix(FILE_PREFIX)?;
    rest.split('.').next()?.parse().ok()
}

/// Per-process counter of the `<n>` field, as PyTorch's `_global_uid`.
static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a new event file in `dir` (created if missing), named to sort
/// after every event file already there.
fn create_event_file(dir: &Path, suffix: &str) -> Result<(PathBuf, File)> {
    fs::create_dir_all(dir).map_err(|e| output_error(dir, "creating", e))?;
    let newest = event_files(dir)?.iter().filter_map(|p| name_secs(p)).max();
    let now = now_secs() as u64;
    let secs = match newest {
        Some(n) if n >= now => n + 1,
        _ => now,
    };
    let host = host_name();
    let pid = std::process::id();
    loop {
        let n = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{FILE_PREFIX}{secs:010}.{host}.{pid}.{n}{suffix}"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(output_error(&path, "creating", e)),
        }
    }
}

/// State shared with the flushing thread.
struct State {
    /// Encoded records not yet written.
    buffer: Vec<u8>,
    file: File,
    /// Length of the file's whole records.
    written: u64,
    /// A failure of the flushing thread, reported by the next call.
    failed: Option<io::Error>,
    closing: bool,
}

impl State {
    /// Writes the buffer out. On failure the file is cut back to its last
    /// whole record (so nothing lands after a torn one) and the buffer kept.
    fn write_out(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        match self
            .file
            .write_all(&self.buffer)
            .and_then(|()| self.file.flush())
        {
            Ok(()) => {
                self.written += self.buffer.len() as u64;
                self.buffer.clear();
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.written);
                Err(e)
            }
        }
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain bytes behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One event file being written: records are encoded by the caller into a
/// buffer that a background thread writes out every `flush_interval` (and
/// [`flush`](Self::flush) at once). With a zero interval every record is
/// written before [`add`](Self::add) returns and no thread is started.
pub(crate) struct EventFileWriter {
    path: PathBuf,
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    write_through: bool,
    /// Told about events lost when the writer is dropped without `close`.
    pub(crate) notices: Notices,
}

impl EventFileWriter {
    /// Creates the file in `dir` and writes the `file_version` event with
    /// `step` (PyTorch gives it the purge step when it has one, else 0).
    pub(crate) fn create(
        dir: &Path,
        suffix: &str,
        flush_interval: Duration,
        step: i64,
    ) -> Result<Self> {
        let (path, file) = create_event_file(dir, suffix)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buffer: Vec::new(),
                file,
                written: 0,
                failed: None,
                closing: false,
            }),
            wake: Condvar::new(),
        });
        let write_through = flush_interval.is_zero();
        let flusher = if write_through {
            None
        } else {
            let shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name("kiln-tensorboard".into())
                .spawn(move || flush_loop(&shared, flush_interval));
            Some(spawned.map_err(|e| output_error(&path, "starting the flush thread for", e))?)
        };
        let mut writer = Self {
            path,
            shared,
            flusher,
            write_through,
            notices: Notices::ignore(),
        };
        writer.add(&Event {
            wall_time: now_secs(),
            step,
            what: Some(event::What::FileVersion(FILE_VERSION.into())),
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// The file being written.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, e: io::Error) -> Error {
        output_error(&self.path, "writing", e)
    }

    /// Queues one event (written at once when write-through or when the
    /// buffer is large).
    pub(crate) fn add(&mut self, event: &Event) -> Result<()> {
        let payload = event.encode_to_vec();
        let mut state = self.shared.lock();
        if let Some(e) = state.failed.take() {
            return Err(self.error(e));
        }
        encode_record(&payload, &mut state.buffer);
        if self.write_through || state.buffer.len() >= MAX_BUFFER {
            state.write_out().map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// Writes everything queued to the file (not synced to disk).
    pub(crate) fn flush(&mut self) -> Result<()> {
        let mut state = self.shared.lock();
        if let Some(e) = state.failed.take() {
            return Err(self.error(e));
        }
        state.write_out().map_err(|e| self.error(e))
    }

    /// Writes everything queued and syncs the file to disk.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.flush()?;
        let state = self.shared.lock();
        state.file.sync_data().map_err(|e| self.error(e))
    }

    /// Flushes, syncs the file to disk and stops the flushing thread.
    pub(crate) fn close(mut self) -> Result<()> {
        self.stop_thread();
        self.flush()?;
        let state = self.shared.lock();
        state.file.sync_all().map_err(|e| self.error(e))
    }

    fn stop_thread(&mut self) {
        if let Some(handle) = self.flusher.take() {
            self.shared.lock().closing = true;
            self.shared.wake.notify_all();
            let _ = handle.join();
        }
    }
}

impl Drop for EventFileWriter {
    fn drop(&mut self) {
        self.stop_thread();
        let mut state = self.shared.lock();
        let result = match state.failed.take() {
            Some(e) => Err(e),
            None => state.write_out(),
        };
        if let Err(e) = result {
            self.notices.warn(format!(
                "{}: events lost at close: {e}",
                self.path.display()
            ));
        }
    }
}

fn flush_loop(shared: &Shared, interval: Duration) {
    let mut state = shared.lock();
    loop {
        // Checked under the lock before each wait, so a stop requested
        // before the thread first waits is not missed.
        if state.closing {
            return;
        }
        let (guard, _) = shared
            .wake
            .wait_timeout(state, interval)
            .unwrap_or_else(|p| p.into_inner());
        state = guard;
        if state.closing {
            return;
        }
        if state.failed.is_none() {
            if let Err(e) = state.write_out() {
                state.failed = Some(e);
            }
        }
    }
}
