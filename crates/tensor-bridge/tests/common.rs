//! What the tests of this binary share.
use std::sync::{Mutex, MutexGuard};

/// Held by every test that seeds or draws from libtorch's global CPU
/// generator or changes another process-wide setting (the thread count):
/// all the tests of one process share them.
pub fn global_state() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
