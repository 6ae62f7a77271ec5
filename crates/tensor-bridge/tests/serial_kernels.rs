//! `SerialAtenKernels` changes nothing until `set_threads` has given MKL a
//! thread count of its own (else MKL's GEMMs would drop to one thread with
//! OpenMP's and round differently). Its own test binary: the switch is
//! process-wide, and the unit tests call `set_threads`.
use kiln_tensor::device::{set_threads, SerialAtenKernels};

#[test]
fn serial_kernels_wait_for_a_pinned_thread_count() -> kiln_tensor::Result<()> {
    let before = kiln_tensor::tch::get_num_threads();
    assert!(SerialAtenKernels::enter()?.is_none());
    assert_eq!(kiln_tensor::tch::get_num_threads(), before);

    set_threads(2)?;
    let guard = SerialAtenKernels::enter()?;
    assert!(guard.is_some());
    assert_eq!(kiln_tensor::tch::get_num_threads(), 1);
    drop(guard);
    assert_eq!(kiln_tensor::tch::get_num_threads(), 2);
    Ok(())
}
