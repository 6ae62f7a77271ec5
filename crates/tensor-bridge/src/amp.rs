//! Mixed precision through libtorch's own autocast state.
//!
//! tch's `autocast` only switches CUDA autocast on with its default dtype.
//! This module reaches `at::autocast` directly (per-device-type enable flag,
//! per-device-type dtype, nesting depth, weight-cast cache) and does exactly
//! what `torch.autocast.__enter__` / `__exit__` do:
//!
//! - enter: remember the cache flag, the device type's enable flag and dtype;
//!   set the enable flag and the dtype; increment the nesting depth; set the
//!   cache flag;
//! - exit: decrement the nesting depth and clear the cast cache when it reaches
//!   0 (the outermost region ends); restore the enable flag, the dtype and the
//!   cache flag.
//!
//! [`autocast`] / [`Autocast::enter`] return an [`AutocastGuard`] that exits on
//! drop, so regions nest like `with torch.autocast(...)` blocks. libtorch's
//! autocast state is thread-local, and so is the guard (it is not `Send`).
//!
//! Where PyTorch warns and silently runs *without* autocast (an unsupported
//! CPU dtype, CUDA autocast without a CUDA device), kiln returns an
//! [`Error::InvalidArgument`] instead: a one-line message naming the
//! combination and the alternatives.
//!
//! The module also binds the two kernels `torch.amp.GradScaler` is built on
//! ([`amp_foreach_non_finite_check_and_unscale_`], [`amp_update_scale_`]) and
//! defines [`Precision`], Lightning's precision names.
//!
//! ```no_run
//! use kiln_tensor::{amp, Device, Kind, Tensor};
//! # fn main() -> kiln_tensor::Result<()> {
//! let (x, w) = (Tensor::ones([4, 8], (Kind::Float, Device::Cpu)), Tensor::ones([8, 2], (Kind::Float, Device::Cpu)));
//! let y = {
//!     let _autocast = amp::autocast(Device::Cpu, Kind::BFloat16)?;
//!     x.f_matmul(&w)? // runs in bfloat16, as under torch.autocast("cpu", torch.bfloat16)
//! }; // autocast state restored here
//! assert_eq!(y.kind(), Kind::BFloat16);
//! # Ok(())
//! # }
//! ```
use crate::shim::{self, check, raw};
use crate::{Error, Result};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::c_int;
use std::str::FromStr;
use tch::{Device, Kind, Tensor};

/// A device type autocast and the gradient scaler work on (PyTorch's
/// `device_type` strings `"cpu"` and `"cuda"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// `"cpu"`: autocast dtypes bfloat16 (the default) and float16.
    Cpu,
    /// `"cuda"`: autocast dtype float16 by default; bfloat16 where the GPU supports it.
    Cuda,
}

impl DeviceType {
    /// The device type of `device` (`cuda:N` is `cuda`); other devices are an error.
    pub fn of(device: Device) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Self::Cpu),
            Device::Cuda(_) => Ok(Self::Cuda),
            other => Err(Error::InvalidArgument(format!(
                "mixed precision supports device types cpu and cuda, not {}",
                device_name(other)
            ))),
        }
    }

    /// PyTorch's name: `"cpu"` or `"cuda"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }

    /// Whether libtorch can use this device type here (`torch.cuda.is_available()` for CUDA).
    pub fn is_available(self) -> bool {
        match self {
            Self::Cpu => true,
            // Through kiln's device count, which loads libtorch_cuda first.
            Self::Cuda => crate::device::cuda_device_count() > 0,
        }
    }

    fn code(self) -> c_int {
        match self {
            Self::Cpu => 0,
            Self::Cuda => 1,
        }
    }
}

impl fmt::Display for DeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(Error::InvalidArgument(format!(
                "unknown autocast device type '{other}'; expected cpu or cuda"
            ))),
        }
    }
}

// c10::ScalarType values of the floating dtypes autocast can be set to.
const SCALAR_HALF: c_int = 5;
const SCALAR_FLOAT: c_int = 6;
const SCALAR_DOUBLE: c_int = 7;
const SCALAR_BFLOAT16: c_int = 15;

fn scalar_type(kind: Kind) -> Result<c_int> {
    match kind {
        Kind::Half => Ok(SCALAR_HALF),
        Kind::Float => Ok(SCALAR_FLOAT),
        Kind::Double => Ok(SCALAR_DOUBLE),
        Kind::BFloat16 => Ok(SCALAR_BFLOAT16),
        other => Err(Error::InvalidArgument(format!(
            "autocast dtype must be a floating type (float16, bfloat16, float32, float64), got {}",
            dtype_name(other)
        ))),
    }
}

fn kind_of(scalar_type: c_int) -> Result<Kind> {
    match scalar_type {
        SCALAR_HALF => Ok(Kind::Half),
        SCALAR_FLOAT => Ok(Kind::Float),
        SCALAR_DOUBLE => Ok(Kind::Double),
        SCALAR_BFLOAT16 => Ok(Kind::BFloat16),
        other => Err(Error::InvalidArgument(format!(
            "the autocast dtype is c10::ScalarType {other}, which kiln does not name"
        ))),
    }
}

/// `cpu`, `cuda:N`, or tch's name of another device, for messages.
fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// PyTorch's name of a dtype (`torch.bfloat16`) for messages.
pub fn dtype_name(kind: Kind) -> String {
    match kind {
        Kind::Half => "torch.float16".into(),
        Kind::BFloat16 => "torch.bfloat16".into(),
        Kind::Float => "torch.float32".into(),
        Kind::Double => "torch.float64".into(),
        other => format!("{other:?}"),
    }
}

fn out_int(f: impl FnOnce(*mut c_int) -> *mut std::os::raw::c_char) -> Result<c_int> {
    let mut out: c_int = 0;
    check(f(&mut out))?;
    Ok(out)
}

/// `torch.is_autocast_enabled(device_type)`.
pub fn is_autocast_enabled(device_type: DeviceType) -> Result<bool> {
    // SAFETY: `out` is a valid out-pointer for the call.
    out_int(|out| unsafe { shim::kiln_autocast_is_enabled(device_type.code(), out) })
        .map(|v| v != 0)
}

/// `torch.set_autocast_enabled(device_type, enabled)` (no nesting, no cache
/// handling: prefer [`autocast`]).
pub fn set_autocast_enabled(device_type: DeviceType, enabled: bool) -> Result<()> {
    // SAFETY: plain values; libtorch's thread-local state is changed.
    check(unsafe { shim::kiln_autocast_set_enabled(device_type.code(), c_int::from(enabled)) })
}

/// `torch.get_autocast_dtype(device_type)`: the dtype autocast casts to on
/// that device type (libtorch's defaults: bfloat16 on CPU, float16 on CUDA).
pub fn get_autocast_dtype(device_type: DeviceType) -> Result<Kind> {
    kind_of(raw_autocast_dtype(device_type)?)
}

fn raw_autocast_dtype(device_type: DeviceType) -> Result<c_int> {
    // SAFETY: `out` is a valid out-pointer for the call.
    out_int(|out| unsafe { shim::kiln_autocast_get_dtype(device_type.code(), out) })
}

fn set_raw_autocast_dtype(device_type: DeviceType, scalar_type: c_int) -> Result<()> {
    // SAFETY: plain values; the shim checks that `scalar_type` is a c10::ScalarType.
    check(unsafe { shim::kiln_autocast_set_dtype(device_type.code(), scalar_type) })
}

/// `torch.set_autocast_dtype(device_type, dtype)` for a floating `dtype`.
pub fn set_autocast_dtype(device_type: DeviceType, dtype: Kind) -> Result<()> {
    set_raw_autocast_dtype(device_type, scalar_type(dtype)?)
}

/// `torch.autocast_increment_nesting()`: returns the new nesting depth.
pub fn autocast_increment_nesting() -> Result<i32> {
    // SAFETY: `out` is a valid out-pointer for the call.
    out_int(|out| unsafe { shim::kiln_autocast_increment_nesting(out) })
}

/// `torch.autocast_decrement_nesting()`: returns the new nesting depth.
pub fn autocast_decrement_nesting() -> Result<i32> {
    // SAFETY: `out` is a valid out-pointer for the call.
    out_int(|out| unsafe { shim::kiln_autocast_decrement_nesting(out) })
}

/// `torch.clear_autocast_cache()`: drops the cached low-precision copies of
/// weights (leaf tensors that require grad) made inside autocast regions.
pub fn clear_autocast_cache() -> Result<()> {
    // SAFETY: no arguments.
    check(unsafe { shim::kiln_autocast_clear_cache() })
}

/// `torch.is_autocast_cache_enabled()`.
pub fn is_autocast_cache_enabled() -> Result<bool> {
    // SAFETY: `out` is a valid out-pointer for the call.
    out_int(|out| unsafe { shim::kiln_autocast_is_cache_enabled(out) }).map(|v| v != 0)
}

/// `torch.set_autocast_cache_enabled(enabled)`.
pub fn set_autocast_cache_enabled(enabled: bool) -> Result<()> {
    // SAFETY: a plain value.
    check(unsafe { shim::kiln_autocast_set_cache_enabled(c_int::from(enabled)) })
}

/// The options of one autocast region: `torch.autocast(device_type, dtype,
/// enabled, cache_enabled)`. Build with [`Autocast::new`], enter with
/// [`Autocast::enter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Autocast {
    device: Device,
    dtype: Option<Kind>,
    enabled: bool,
    cache_enabled: Option<bool>,
}

impl Autocast {
    /// `torch.autocast(device.type)`: enabled, the device type's current
    /// autocast dtype, the current cache flag.
    pub fn new(device: Device) -> Self {
        Self {
            device,
            dtype: None,
            enabled: true,
            cache_enabled: None,
        }
    }

    /// The dtype ops eligible for lower precision run in (`dtype=`).
    pub fn dtype(mut self, dtype: Kind) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// `enabled=`: `false` makes a region that switches autocast *off* (e.g.
    /// to run part of a model in float32 inside an autocast region).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// `cache_enabled=`: whether casts of weights are cached inside the region.
    pub fn cache_enabled(mut self, cache_enabled: bool) -> Self {
        self.cache_enabled = Some(cache_enabled);
        self
    }

    /// The device type and dtype the region would use, after PyTorch's checks
    /// (what `torch.autocast.__init__` checks), without changing any state.
    ///
    /// Errors (where PyTorch warns and disables autocast, or raises): a
    /// device other than CPU/CUDA; CPU with a dtype other than bfloat16 or
    /// float16; CUDA when CUDA is not available; CUDA bfloat16 on a GPU
    /// without bfloat16. A disabled region is never refused.
    pub fn check(&self) -> Result<(DeviceType, Kind)> {
        let device_type = DeviceType::of(self.device)?;
        let dtype = match self.dtype {
            Some(dtype) => dtype,
            None => get_autocast_dtype(device_type)?,
        };
        // Rejects non-floating dtypes early (set_autocast_dtype needs a ScalarType we name).
        scalar_type(dtype)?;
        if !self.enabled {
            return Ok((device_type, dtype));
        }
        match device_type {
            DeviceType::Cpu => {
                if !matches!(dtype, Kind::BFloat16 | Kind::Half) {
                    return Err(Error::InvalidArgument(format!(
                        "CPU autocast supports torch.bfloat16 and torch.float16, not {} \
                         (PyTorch would warn and run without autocast)",
                        dtype_name(dtype)
                    )));
                }
            }
            DeviceType::Cuda => {
                if !DeviceType::Cuda.is_available() {
                    return Err(Error::InvalidArgument(
                        "CUDA autocast needs a CUDA device, but CUDA is not available here \
                         (PyTorch would warn and run without autocast); use the cpu device"
                            .into(),
                    ));
                }
                if dtype == Kind::BFloat16 && !cuda_bf16_supported(self.device) {
                    return Err(Error::InvalidArgument(format!(
                        "{} does not support bfloat16; use float16 (16-mixed) instead",
                        device_name(self.device)
                    )));
                }
            }
        }
        Ok((device_type, dtype))
    }

    /// Enters the region (`torch.autocast.__enter__`); it ends when the guard drops.
    pub fn enter(self) -> Result<AutocastGuard> {
        let (device_type, dtype) = self.check()?;
        let cache_enabled = match self.cache_enabled {
            Some(c) => c,
            None => is_autocast_cache_enabled()?,
        };
        let prev_cache_enabled = is_autocast_cache_enabled()?;
        let prev_enabled = is_autocast_enabled(device_type)?;
        let prev_dtype = raw_autocast_dtype(device_type)?;
        set_autocast_enabled(device_type, self.enabled)?;
        set_autocast_dtype(device_type, dtype)?;
        autocast_increment_nesting()?;
        set_autocast_cache_enabled(cache_enabled)?;
        Ok(AutocastGuard {
            device_type,
            dtype,
            enabled: self.enabled,
            prev_enabled,
            prev_dtype,
            prev_cache_enabled,
            _thread_local: PhantomData,
        })
    }
}

/// `torch.cuda.is_bf16_supported()` (with emulation, its default): whether a
/// bfloat16 tensor can live on `device`.
fn cuda_bf16_supported(device: Device) -> bool {
    Tensor::f_zeros([1], (Kind::BFloat16, device)).is_ok()
}

/// `with torch.autocast(device.type, dtype=dtype):` as a guard — autocast is
/// on for `device`'s type with `dtype` until the guard drops.
///
/// `dtype` is `Kind::BFloat16` or `Kind::Half`; see [`Autocast::check`] for
/// the combinations refused.
pub fn autocast(device: Device, dtype: Kind) -> Result<AutocastGuard> {
    Autocast::new(device).dtype(dtype).enter()
}

/// An entered autocast region; dropping it exits the region
/// (`torch.autocast.__exit__`): the nesting depth goes down, the cast cache is
/// cleared when the outermost region ends, and the enable flag, dtype and
/// cache flag from before the region are restored.
///
/// Drop guards in reverse order of creation (as nested `with` blocks exit);
/// the guard is not `Send` because libtorch's autocast state is per thread.
#[must_use = "autocast ends when the guard is dropped"]
#[derive(Debug)]
pub struct AutocastGuard {
    device_type: DeviceType,
    dtype: Kind,
    enabled: bool,
    prev_enabled: bool,
    prev_dtype: c_int,
    prev_cache_enabled: bool,
    _thread_local: PhantomData<*const ()>,
}

impl AutocastGuard {
    /// The device type of the region.
    pub fn device_type(&self) -> DeviceType {
        self.device_type
    }

    /// The dtype of the region.
    pub fn dtype(&self) -> Kind {
        self.dtype
    }

    /// Whether the region enables autocast (`false`: it disables it).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // These calls only touch thread-local flags for a device type the
        // shim accepts, so they cannot fail; a drop has no way to report it.
        if matches!(autocast_decrement_nesting(), Ok(0)) {
            let _ = clear_autocast_cache();
        }
        let _ = set_autocast_enabled(self.device_type, self.prev_enabled);
        let _ = set_raw_autocast_dtype(self.device_type, self.prev_dtype);
        let _ = set_autocast_cache_enabled(self.prev_cache_enabled);
    }
}

/// `torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)`:
/// multiplies every tensor of `grads` by `inv_scale` in place and sets
/// `found_inf` to 1.0 if any element is inf or NaN.
///
/// `grads` share one device and dtype; `found_inf` and `inv_scale` are
/// one-element float32 tensors on that device (libtorch checks all of this).
pub fn amp_foreach_non_finite_check_and_unscale_(
    grads: &[&Tensor],
    found_inf: &Tensor,
    inv_scale: &Tensor,
) -> Result<()> {
    let g: Vec<*mut torch_sys::C_tensor> = grads.iter().map(|t| raw(t)).collect();
    // SAFETY: `g` holds `len` live tensors; `found_inf` and `inv_scale` are live for the call.
    check(unsafe {
        shim::kiln_amp_foreach_non_finite_check_and_unscale_(
            g.as_ptr(),
            g.len() as i64,
            raw(found_inf),
            raw(inv_scale),
        )
    })
}

/// `torch._amp_update_scale_(scale, growth_tracker, found_inf, growth_factor,
/// backoff_factor, growth_interval)`: in place, if `found_inf` is non-zero the
/// scale is multiplied by `backoff_factor` and the tracker reset to 0; else
/// the tracker counts up and, on reaching `growth_interval`, the scale is
/// multiplied by `growth_factor` (if that stays finite) and the tracker reset.
///
/// `scale` and `found_inf` are one-element float32 tensors, `growth_tracker`
/// a one-element int32 tensor, all on one device.
pub fn amp_update_scale_(
    scale: &Tensor,
    growth_tracker: &Tensor,
    found_inf: &Tensor,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: i64,
) -> Result<()> {
    // SAFETY: all tensors are live for the call.
    check(unsafe {
        shim::kiln_amp_update_scale_(
            raw(scale),
            raw(growth_tracker),
            raw(found_inf),
            growth_factor,
            backoff_factor,
            growth_interval,
        )
    })
}

/// Training precision, by Lightning's names: `32-true` (float32 throughout,
/// the default), `bf16-mixed` (autocast to bfloat16 around forward and loss,
/// no gradient scaling) and `16-mixed` (autocast to float16 plus a gradient
/// scaler), as `Trainer(precision=...)` in Lightning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// `32-true`: no autocast, no scaler.
    #[default]
    F32True,
    /// `bf16-mixed`: `torch.autocast(device_type, dtype=torch.bfloat16)`, no scaler.
    Bf16Mixed,
    /// `16-mixed`: `torch.autocast(device_type, dtype=torch.float16)` and
    /// `torch.amp.GradScaler(device_type)`.
    F16Mixed,
}

impl Precision {
    /// Every precision, in the order help texts list them.
    pub const ALL: [Precision; 3] = [Self::F32True, Self::Bf16Mixed, Self::F16Mixed];

    /// Lightning's name (`32-true`, `bf16-mixed`, `16-mixed`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32True => "32-true",
            Self::Bf16Mixed => "bf16-mixed",
            Self::F16Mixed => "16-mixed",
        }
    }

    /// The autocast dtype (`None` for `32-true`: no autocast).
    pub fn autocast_dtype(self) -> Option<Kind> {
        match self {
            Self::F32True => None,
            Self::Bf16Mixed => Some(Kind::BFloat16),
            Self::F16Mixed => Some(Kind::Half),
        }
    }

    /// Whether training needs a gradient scaler: `16-mixed` yes, the others
    /// no (as in Lightning, bf16 has float32's range).
    pub fn needs_grad_scaler(self) -> bool {
        self == Self::F16Mixed
    }

    /// Whether this precision can run on `device` here, checked up front
    /// (what entering the autocast region would refuse); errors name the
    /// combination and the alternatives.
    pub fn check(self, device: Device) -> Result<()> {
        let Some(dtype) = self.autocast_dtype() else {
            return Ok(());
        };
        Autocast::new(device)
            .dtype(dtype)
            .check()
            .map(|_| ())
            .map_err(|e| {
                Error::InvalidArgument(format!("precision {self} on {}: {e}", device_name(device)))
            })
    }

    /// Enters the autocast region of this precision on `device` (`None` for
    /// `32-true`). Put forward and loss inside it, backward and the optimizer
    /// step after it, as PyTorch's recipe does.
    pub fn autocast(self, device: Device) -> Result<Option<AutocastGuard>> {
        self.check(device)?;
        match self.autocast_dtype() {
            None => Ok(None),
            Some(dtype) => autocast(device, dtype).map(Some),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown precision '{s}'; expected one of 32-true, bf16-mixed, 16-mixed"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(d: DeviceType) -> (bool, Kind, bool) {
        (
            is_autocast_enabled(d).unwrap_or(true),
            get_autocast_dtype(d).unwrap_or(Kind::Int),
            is_autocast_cache_enabled().unwrap_or(false),
        )
    }

    #[test]
    fn libtorch_defaults_and_round_trips() -> Result<()> {
        // A fresh test thread has PyTorch's defaults.
        assert_eq!(state(DeviceType::Cpu), (false, Kind::BFloat16, true));
        assert_eq!(get_autocast_dtype(DeviceType::Cuda)?, Kind::Half);
        set_autocast_dtype(DeviceType::Cpu, Kind::Half)?;
        assert_eq!(get_autocast_dtype(DeviceType::Cpu)?, Kind::Half);
        set_autocast_dtype(DeviceType::Cpu, Kind::BFloat16)?;
        assert_eq!(autocast_increment_nesting()?, 1);
        assert_eq!(autocast_decrement_nesting()?, 0);
        assert!(set_autocast_dtype(DeviceType::Cpu, Kind::Int64).is_err());
        Ok(())
    }

    #[test]
    fn guard_casts_nests_and_restores() -> Result<()> {
        let _serial = crate::TEST_AUTOCAST.lock();
        let a = Tensor::f_ones([2, 3], (Kind::Float, Device::Cpu))?;
        let b = Tensor::f_ones([3, 2], (Kind::Float, Device::Cpu))?;
        assert_eq!(a.f_matmul(&b)?.kind(), Kind::Float);
        {
            let outer = autocast(Device::Cpu, Kind::BFloat16)?;
            assert_eq!(outer.dtype(), Kind::BFloat16);
            assert_eq!(state(DeviceType::Cpu), (true, Kind::BFloat16, true));
            assert_eq!(a.f_matmul(&b)?.kind(), Kind::BFloat16);
            {
                let _inner = autocast(Device::Cpu, Kind::Half)?;
                assert_eq!(a.f_matmul(&b)?.kind(), Kind::Half);
                {
                    let off = Autocast::new(Device::Cpu)
                        .enabled(false)
                        .cache_enabled(false)
                        .enter()?;
                    assert!(!off.is_enabled());
                    // `dtype=None` takes the current dtype (float16 from the inner region).
                    assert_eq!(off.dtype(), Kind::Half);
                    assert_eq!(a.f_matmul(&b)?.kind(), Kind::Float);
                    assert_eq!(state(DeviceType::Cpu), (false, Kind::Half, false));
                }
                assert_eq!(state(DeviceType::Cpu), (true, Kind::Half, true));
            }
            assert_eq!(state(DeviceType::Cpu), (true, Kind::BFloat16, true));
            // CUDA's flag is untouched by CPU regions.
            assert!(!is_autocast_enabled(DeviceType::Cuda)?);
        }
        assert_eq!(state(DeviceType::Cpu), (false, Kind::BFloat16, true));
        assert_eq!(a.f_matmul(&b)?.kind(), Kind::Float);
        // The nesting depth is back at 0.
        assert_eq!(autocast_increment_nesting()?, 1);
        assert_eq!(autocast_decrement_nesting()?, 0);
        Ok(())
    }

    #[test]
    fn weight_cast_cache_lives_until_the_outermost_region_ends() -> Result<()> {
        let _serial = crate::TEST_AUTOCAST.lock();
        // A leaf that requires grad is cast once per region and reused (cache).
        let w = Tensor::f_ones([3, 3], (Kind::Float, Device::Cpu))?.set_requires_grad(true);
        let x = Tensor::f_ones([2, 3], (Kind::Float, Device::Cpu))?;
        let guard = autocast(Device::Cpu, Kind::BFloat16)?;
        let first = x.f_linear::<&Tensor>(&w, None)?;
        {
            let _inner = autocast(Device::Cpu, Kind::BFloat16)?;
            let _ = x.f_linear::<&Tensor>(&w, None)?;
        }
        // Changing w in place (outside autograd) is not seen through the cache.
        let _ = tch::no_grad(|| w.shallow_clone().f_mul_scalar_(2.0))?;
        let cached = x.f_linear::<&Tensor>(&w, None)?;
        assert_eq!(
            cached.f_sum(Kind::Float)?.double_value(&[]),
            first.f_sum(Kind::Float)?.double_value(&[])
        );
        drop(guard);
        let _again = autocast(Device::Cpu, Kind::BFloat16)?;
        let fresh = x.f_linear::<&Tensor>(&w, None)?;
        assert_eq!(fresh.f_sum(Kind::Float)?.double_value(&[]), 36.0);
        Ok(())
    }

    #[test]
    fn unsupported_combinations_are_errors() {
        let _serial = crate::TEST_AUTOCAST.lock();
        let msg = |r: Result<AutocastGuard>| r.err().map(|e| e.to_string()).unwrap_or_default();
        let cpu32 = msg(autocast(Device::Cpu, Kind::Float));
        assert!(
            cpu32.contains("torch.float32") && cpu32.contains("torch.bfloat16"),
            "{cpu32}"
        );
        assert!(!cpu32.contains('\n'));
        assert!(msg(autocast(Device::Cpu, Kind::Int64)).contains("floating"));
        assert!(msg(autocast(Device::Mps, Kind::Half)).contains("cpu and cuda"));
        if crate::device::cuda_device_count() == 0 {
            assert!(msg(autocast(Device::Cuda(0), Kind::Half)).contains("CUDA is not available"));
            let err = Precision::F16Mixed
                .check(Device::Cuda(0))
                .err()
                .map(|e| e.to_string());
            assert!(err.is_some_and(|e| e
                .starts_with("precision 16-mixed on cuda:0: CUDA autocast")
                && e.contains("use the cpu device")
                && !e.contains('\n')));
            assert!(Precision::F32True.check(Device::Cuda(0)).is_ok());
        }
        // A disabled region is never refused, and failed attempts change nothing.
        assert!(Autocast::new(Device::Cpu)
            .dtype(Kind::Float)
            .enabled(false)
            .enter()
            .is_ok());
        assert_eq!(state(DeviceType::Cpu), (false, Kind::BFloat16, true));
    }

    #[test]
    fn precision_names() -> Result<()> {
        for p in Precision::ALL {
            assert_eq!(p.to_string().parse::<Precision>()?, p);
        }
        assert_eq!(Precision::default(), Precision::F32True);
        assert_eq!(Precision::Bf16Mixed.autocast_dtype(), Some(Kind::BFloat16));
        assert_eq!(Precision::F16Mixed.autocast_dtype(), Some(Kind::Half));
        assert!(Precision::F16Mixed.needs_grad_scaler());
        assert!(!Precision::Bf16Mixed.needs_grad_scaler());
        assert!(!Precision::F32True.needs_grad_scaler());
        let err = "fp16".parse::<Precision>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unknown precision 'fp16'; expected one of 32-true, bf16-mixed, 16-mixed")
        );
        assert!(Precision::F32True.autocast(Device::Cpu)?.is_none());
        let g = Precision::F16Mixed.autocast(Device::Cpu)?;
        assert_eq!(g.as_ref().map(AutocastGuard::dtype), Some(Kind::Half));
        assert!(is_autocast_enabled(DeviceType::Cpu)?);
        drop(g);
        assert!(!is_autocast_enabled(DeviceType::Cpu)?);
        assert_eq!("cuda".parse::<DeviceType>()?, DeviceType::Cuda);
        assert!("mps".parse::<DeviceType>().is_err());
        Ok(())
    }

    #[test]
    fn grad_scaler_kernels() -> Result<()> {
        let g1 = Tensor::from_slice(&[2.0f32, 4.0]);
        let g2 = Tensor::from_slice(&[8.0f32]);
        let found = Tensor::f_zeros([], (Kind::Float, Device::Cpu))?;
        let inv = Tensor::f_full([], 0.5, (Kind::Float, Device::Cpu))?;
        amp_foreach_non_finite_check_and_unscale_(&[&g1, &g2], &found, &inv)?;
        assert_eq!(
            Vec::<f32>::try_from(&g1).unwrap_or_default(),
            vec![1.0, 2.0]
        );
        assert_eq!(found.double_value(&[]), 0.0);
        let g3 = Tensor::from_slice(&[f32::INFINITY, 1.0]);
        amp_foreach_non_finite_check_and_unscale_(&[&g3], &found, &inv)?;
        assert_eq!(found.double_value(&[]), 1.0);
        // Wrong dtype of found_inf: libtorch's error, as an Err.
        let bad = Tensor::f_zeros([], (Kind::Double, Device::Cpu))?;
        assert!(amp_foreach_non_finite_check_and_unscale_(&[&g1], &bad, &inv).is_err());

        let scale = Tensor::f_full([], 65536.0, (Kind::Float, Device::Cpu))?;
        let tracker = Tensor::f_zeros([], (Kind::Int, Device::Cpu))?;
        amp_update_scale_(&scale, &tracker, &found, 2.0, 0.5, 2)?;
        assert_eq!(
            (scale.double_value(&[]), tracker.int64_value(&[])),
            (32768.0, 0)
        );
        let _ = found.shallow_clone().f_zero_()?;
        amp_update_scale_(&scale, &tracker, &found, 2.0, 0.5, 2)?;
        assert_eq!(
            (scale.double_value(&[]), tracker.int64_value(&[])),
            (32768.0, 1)
        );
        amp_update_scale_(&scale, &tracker, &found, 2.0, 0.5, 2)?;
        assert_eq!(
            (scale.double_value(&[]), tracker.int64_value(&[])),
            (65536.0, 0)
        );
        assert!(amp_update_scale_(&scale, &scale, &found, 2.0, 0.5, 2).is_err());
        Ok(())
    }
}
