//! Autograd beyond tch, through the shim's `cpp/autograd.cpp`:
//! post-accumulate-grad hooks ([`register_post_accumulate_grad_hook`], what
//! data-parallel gradient buckets hang on) and activation checkpointing
//! ([`checkpoint`]), and anomaly mode ([`set_detect_anomaly`]).
//!
//! [`checkpoint`] is `torch.utils.checkpoint.checkpoint(f, *inputs,
//! use_reentrant=False)` (with its defaults: `preserve_rng_state=True`,
//! early stop, the shape/dtype/device determinism check), done by libtorch's
//! own saved-tensor hook mechanism in `cpp/autograd.cpp`: while `f` runs
//! forward, the tensors autograd would keep for backward are dropped; the
//! first time backward needs one of them, `f` runs again with the CPU (and
//! the inputs' CUDA) generators set to their state before the forward and
//! autocast as it was, its saved tensors are captured, and the generators
//! are put back. Backward then runs through the forward's own graph, so
//! gradients, and the generators' state after the step, are those of the
//! same program without checkpointing, bit for bit.
//!
//! Mind: kiln installs its own autograd engine (libtorch's, with the
//! saved-tensor hooks added, as PyTorch's Python engine does) the first time
//! a checkpoint runs; nothing else changes.
use crate::shim::{self, check, raw};
use crate::{Error, Result};
use std::ffi::c_void;
use std::os::raw::{c_char, c_int};
use std::sync::Mutex;
use tch::Tensor;
use torch_sys::C_tensor;

/// The checkpointed function, shared by the forward call and the recomputations.
type Body = Mutex<Box<dyn Fn(&[Tensor]) -> Result<Vec<Tensor>> + Send>>;

/// `torch.utils.checkpoint.checkpoint(f, *inputs, use_reentrant=False)`:
/// runs `f(inputs)` and returns its outputs without keeping the activations
/// autograd would save inside `f`; backward recomputes them by running `f`
/// again on the same inputs, with the CPU generator (and the CUDA generators
/// of the inputs' devices) at their state before this call and the autocast
/// state of this call, and restores the generators afterwards (PyTorch's
/// `preserve_rng_state=True`), so dropout inside `f` draws the same masks.
///
/// `f` may run again on another thread (libtorch's autograd threads run
/// CUDA backward) and after this call returns, hence `Send + 'static`: it
/// takes its parameters by handle (`Tensor::shallow_clone`). It must compute
/// the same operations when it runs again; a different number of saved
/// tensors or different shapes, dtypes or devices make backward fail with
/// PyTorch's message. An error of `f` in the forward comes back here; an
/// error while it runs again comes back from `backward`. With grad mode off
/// (`tch::no_grad`) `f` just runs.
pub fn checkpoint<F>(f: F, inputs: &[&Tensor]) -> Result<Vec<Tensor>>
where
    F: Fn(&[Tensor]) -> Result<Vec<Tensor>> + Send + 'static,
{
    let body: std::sync::Arc<Body> = std::sync::Arc::new(Mutex::new(Box::new(f)));
    let ctx = std::sync::Arc::into_raw(std::sync::Arc::clone(&body)) as *mut c_void;
    let raws: Vec<*mut C_tensor> = inputs.iter().map(|t| raw(t)).collect();
    let mut handle = std::ptr::null_mut();
    // SAFETY: `raws` holds live tensors for the call; the shim takes
    // ownership of `ctx` in every case and releases it through `drop_body`.
    check(unsafe {
        shim::kiln_checkpoint_enter(
            raws.as_ptr(),
            raws.len() as i64,
            recompute,
            drop_body,
            ctx,
            &mut handle,
        )
    })?;
    let region = Region(handle);
    let args: Vec<Tensor> = inputs.iter().map(|t| t.shallow_clone()).collect();
    let out = {
        let f = body
            .lock()
            .map_err(|_| Error::Torch("the checkpointed function panicked earlier".into()))?;
        (*f)(&args)
    };
    region.end()?;
    out
}

/// A region of [`checkpoint`] on this thread, ended when dropped (after a
/// panic of the function too).
struct Region(*mut c_void);

impl Region {
    fn end(mut self) -> Result<()> {
        let handle = std::mem::replace(&mut self.0, std::ptr::null_mut());
        end_region(handle)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = end_region(self.0);
    }
}

fn end_region(handle: *mut c_void) -> Result<()> {
    if handle.is_null() {
        return Ok(());
    }
    // SAFETY: a handle from `kiln_checkpoint_enter`, ended once.
    check(unsafe { shim::kiln_checkpoint_exit(handle) })
}

/// Runs the function again for backward (called by the shim).
unsafe extern "C" fn recompute(
    ctx: *mut c_void,
    inputs: *const *mut C_tensor,
    n: i64,
    error: *mut c_void,
) -> c_int {
    // SAFETY: `ctx` is the `Arc<Body>` given to `kiln_checkpoint_enter`,
    // alive until `drop_body`; `inputs` holds `n` tensors allocated for us.
    let (body, args) = unsafe {
        let body = &*(ctx as *const Body);
        let args: Vec<Tensor> = (0..n.max(0) as usize)
            .map(|i| Tensor::from_ptr(*inputs.add(i)))
            .collect();
        (body, args)
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let f = body
            .lock()
            .map_err(|_| Error::Torch("the checkpointed function panicked earlier".into()))?;
        (*f)(&args).map(drop)
    }));
    let message = match result {
        Ok(Ok(())) => return 0,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the checkpointed function panicked while backward recomputed it".to_string(),
    };
    // SAFETY: `error` is the shim's string for this call; the message is copied.
    unsafe { shim::kiln_error_assign(error, message.as_ptr() as *const c_char, message.len()) };
    1
}

/// Drops the shim's reference to the function.
unsafe extern "C" fn drop_body(ctx: *mut c_void) {
    // SAFETY: the reference `Arc::into_raw` made in `checkpoint`, released once.
    drop(unsafe { std::sync::Arc::from_raw(ctx as *const Body) });
}

/// The callback a [`PostAccumulateGradHook`] runs.
type HookFn = Box<dyn Fn() + Send + Sync>;

/// A callback registered with [`register_post_accumulate_grad_hook`]; the
/// hook is removed when this handle is dropped.
pub struct PostAccumulateGradHook {
    tensor: Tensor,
    ctx: *mut c_void,
}

// SAFETY: the handle only keeps a shallow clone of the tensor (tch tensors
// are Send) and an opaque pointer it never dereferences; it is passed back to
// the shim, which compares it.
unsafe impl Send for PostAccumulateGradHook {}

impl std::fmt::Debug for PostAccumulateGradHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostAccumulateGradHook({:?})", self.tensor.size())
    }
}

unsafe extern "C" fn call_hook(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `Box<HookFn>` made in `register_post_accumulate_grad_hook`,
    // alive until `drop_hook` runs (the shim's hook owns it).
    let hook = unsafe { &*(ctx as *const HookFn) };
    // A panic must not unwind into libtorch's autograd engine.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook));
}

unsafe extern "C" fn drop_hook(ctx: *mut c_void) {
    // SAFETY: called exactly once, by the destructor of the shim's hook that owns `ctx`.
    drop(unsafe { Box::from_raw(ctx as *mut HookFn) });
}

/// `tensor.register_post_accumulate_grad_hook(hook)`: after autograd has
/// accumulated a gradient into `tensor.grad` during a backward pass, `hook`
/// runs (on the thread that runs that part of the backward pass: the caller
/// of `backward` on CPU, an autograd device thread on CUDA). `tensor` must be
/// a leaf that requires grad and may carry one such hook at a time. A panic
/// inside `hook` is caught and ignored; report failures through its state.
pub fn register_post_accumulate_grad_hook(
    tensor: &Tensor,
    hook: impl Fn() + Send + Sync + 'static,
) -> Result<PostAccumulateGradHook> {
    let boxed: HookFn = Box::new(hook);
    let ctx = Box::into_raw(Box::new(boxed)) as *mut c_void;
    // SAFETY: the tensor is live; the shim takes ownership of `ctx` in every
    // case and frees it with `drop_hook`.
    check(unsafe {
        shim::kiln_set_post_accumulate_grad_hook(raw(tensor), call_hook, drop_hook, ctx)
    })?;
    Ok(PostAccumulateGradHook {
        tensor: tensor.shallow_clone(),
        ctx,
    })
}

impl Drop for PostAccumulateGradHook {
    fn drop(&mut self) {
        // SAFETY: the tensor is live; the shim only compares `ctx`.
        let _ = check(unsafe {
            shim::kiln_clear_post_accumulate_grad_hook(raw(&self.tensor), self.ctx)
        });
    }
}

/// `torch.autograd.set_detect_anomaly(enabled)`: with it on, backward fails
/// as soon as a backward function returns a NaN, naming it (`Function
/// 'SqrtBackward0' returned nan values in its 0th output.`), instead of
/// letting the NaN reach the parameters. A process-wide switch, as in
/// PyTorch; it slows backward down (every output is checked).
pub fn set_detect_anomaly(enabled: bool) {
    // SAFETY: sets two static flags of libtorch; no pointers cross.
    unsafe { shim::kiln_set_detect_anomaly(enabled, true) }
}

/// `torch.autograd.set_detect_anomaly(enabled)` as a context manager:
/// anomaly mode as asked while the value lives, what it was before
/// afterwards.
#[derive(Debug)]
pub struct DetectAnomaly {
    previous: bool,
}

impl DetectAnomaly {
    /// Turns anomaly mode on (`true`) or off until the value is dropped.
    pub fn new(enabled: bool) -> Self {
        let previous = is_anomaly_enabled();
        set_detect_anomaly(enabled);
        Self { previous }
    }
}

impl Drop for DetectAnomaly {
    fn drop(&mut self) {
        set_detect_anomaly(self.previous);
    }
}

/// `torch.is_anomaly_enabled()`.
pub fn is_anomaly_enabled() -> bool {
    // SAFETY: reads a static flag of libtorch.
    unsafe { shim::kiln_is_anomaly_enabled() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tch::Kind;

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(&t.f_reshape([-1]).unwrap_or_else(|_| Tensor::new()))
            .unwrap_or_default()
    }

    /// `w * sin(w * x)` with its gradients, checkpointed or not.
    fn sine_layer(checkpointed: bool) -> Result<Vec<Tensor>> {
        let w = Tensor::from_slice(&[1.0f64, 2.0, 3.0]).set_requires_grad(true);
        let x = Tensor::from_slice(&[0.5f64, -1.0, 2.0]).set_requires_grad(true);
        let wc = w.shallow_clone();
        let f = move |xs: &[Tensor]| Ok(vec![xs[0].f_mul(&wc)?.f_sin()?.f_mul(&wc)?]);
        let out = if checkpointed {
            checkpoint(f, &[&x])?
        } else {
            f(&[x.shallow_clone()])?
        };
        out[0].f_sum(Kind::Double)?.f_backward()?;
        Ok(vec![out[0].f_detach()?, x.grad(), w.grad()])
    }

    #[test]
    fn gradients_flow_through_a_checkpointed_function() -> Result<()> {
        let _serial = crate::TEST_AUTOCAST.lock();
        // The recomputation sets and restores the global generator.
        let _rng = crate::TEST_RNG.lock();
        let (plain, checkpointed) = (sine_layer(false)?, sine_layer(true)?);
        for (a, b) in plain.iter().zip(&checkpointed) {
            assert!(a.defined() && a.equal(b), "{a:?} vs {b:?}");
        }
        Ok(())
    }

    #[test]
    fn errors_come_back_from_forward_and_backward() -> Result<()> {
        let _serial = crate::TEST_AUTOCAST.lock();
        // The recomputation sets and restores the global generator.
        let _rng = crate::TEST_RNG.lock();
        let x = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let err = checkpoint(
            |xs| Ok(vec![xs[0].f_matmul(&Tensor::from_slice(&[1.0f32]))?]),
            &[&x],
        )
        .err();
        assert!(err.is_some_and(|e| e.to_string().starts_with("libtorch:")));
        // Fails only when it runs again.
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = std::sync::Arc::clone(&runs);
        let out = checkpoint(
            move |xs| {
                if r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                    return Err(Error::InvalidArgument("second run refused".into()));
                }
                Ok(vec![xs[0].f_exp()?])
            },
            &[&x],
        )?;
        let err = out[0]
            .f_sum(Kind::Float)?
            .f_backward()
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("second run refused")),
            "{err:?}"
        );
        // A function that saves different tensors when it runs again.
        let flip = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fl = std::sync::Arc::clone(&flip);
        let out = checkpoint(
            move |xs| {
                let y = if fl.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    xs[0].f_reshape([2, 1])?.f_exp()?.f_reshape([2])?
                } else {
                    xs[0].f_exp()?
                };
                Ok(vec![y])
            },
            &[&x],
        )?;
        let err = out[0]
            .f_sum(Kind::Float)?
            .f_backward()
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("different metadata")),
            "{err:?}"
        );
        // A panic is an error too, not an abort.
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = std::sync::Arc::clone(&count);
        let out = checkpoint(
            move |xs| {
                assert!(
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0,
                    "again"
                );
                Ok(vec![xs[0].f_exp()?])
            },
            &[&x],
        )?;
        let err = out[0]
            .f_sum(Kind::Float)?
            .f_backward()
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("panicked")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn without_grad_the_function_just_runs() -> Result<()> {
        let x = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let out = tch::no_grad(|| checkpoint(|xs| Ok(vec![xs[0].f_mul_scalar(2.0)?]), &[&x]))?;
        assert!(!out[0].requires_grad());
        assert_eq!(values(&out[0].f_to_kind(Kind::Double)?), vec![2.0, 4.0]);
        Ok(())
    }

    #[test]
    fn hooks_run_after_accumulation_and_stop_when_dropped() -> Result<()> {
        let w = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.5f32]).set_requires_grad(true);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicUsize::new(0));
        let (o, s) = (Arc::clone(&order), Arc::clone(&seen));
        let wc = std::sync::Mutex::new(w.shallow_clone());
        let hw = register_post_accumulate_grad_hook(&w, move || {
            // The gradient is already in `.grad` when the hook runs.
            let g = wc
                .lock()
                .map(|w| Vec::<f32>::try_from(&w.grad()).unwrap_or_default())
                .unwrap_or_default();
            s.store(g.len(), Ordering::SeqCst);
            o.lock().map(|mut v| v.push("w")).ok();
        })?;
        let o = Arc::clone(&order);
        let hb = register_post_accumulate_grad_hook(&b, move || {
            o.lock().map(|mut v| v.push("b")).ok();
        })?;
        // A second hook on the same tensor is refused.
        assert!(register_post_accumulate_grad_hook(&w, || {}).is_err());
        // Non-leaves and tensors without grad are refused.
        assert!(register_post_accumulate_grad_hook(&Tensor::from_slice(&[1.0f32]), || {}).is_err());
        let loss = ((&w * &w).sum(Kind::Float) + &b * 3.0).sum(Kind::Float);
        loss.f_backward()?;
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        let mut got = order.lock().map(|v| v.clone()).unwrap_or_default();
        got.sort_unstable();
        assert_eq!(got, vec!["b", "w"]);
        drop(hw);
        drop(hb);
        let loss = ((&w * &w).sum(Kind::Float) + &b * 3.0).sum(Kind::Float);
        loss.f_backward()?;
        assert_eq!(order.lock().map(|v| v.len()).unwrap_or_default(), 2);
        // The hook slot is free again.
        let again = register_post_accumulate_grad_hook(&w, || {})?;
        drop(again);
        Ok(())
    }

    #[test]
    fn anomaly_mode_names_the_backward_function_that_returned_nan() -> Result<()> {
        // sqrt of -1 in the branch `where` leaves out: a finite forward, and
        // SqrtBackward0 returns 0 / NaN.
        let x = Tensor::from_slice(&[-1.0f64, 4.0]).set_requires_grad(true);
        let root = x.f_sqrt()?;
        let y = root.f_where_self(&x.f_gt(0.0)?, &x.f_zeros_like()?)?;
        let before = is_anomaly_enabled();
        let result = {
            let _anomaly = DetectAnomaly::new(true);
            assert!(is_anomaly_enabled());
            y.f_sum(Kind::Double)?.f_backward()
        };
        assert_eq!(is_anomaly_enabled(), before);
        let err = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("Function 'SqrtBackward0' returned nan values in its 0th output"),
            "{err}"
        );
        Ok(())
    }
}
