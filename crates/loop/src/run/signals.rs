//! SIGINT and SIGTERM as a request to stop cleanly.
//!
//! The first signal sets a flag that the Trainer reads after every optimizer
//! step: it finishes the step, writes a checkpoint and stops. A second
//! signal of either kind ends the process at once (exit 130 for SIGINT, 143
//! for SIGTERM, as a shell reports a process killed by it).
use crate::{Error, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

/// Installs the handlers; returns the flag the Trainer watches (the signal
/// number once one arrived, 0 before).
pub fn install() -> Result<Arc<AtomicUsize>> {
    let signal = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        let failed = |e: std::io::Error| {
            Error::InvalidArgument(format!("cannot install the handler of signal {sig}: {e}"))
        };
        // Order matters: the exit check runs before the flag is set.
        flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&seen)).map_err(failed)?;
        flag::register(sig, Arc::clone(&seen)).map_err(failed)?;
        flag::register_usize(sig, Arc::clone(&signal), sig as usize).map_err(failed)?;
    }
    Ok(signal)
}
