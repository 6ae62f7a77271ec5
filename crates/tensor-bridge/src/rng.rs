//! Random numbers exactly as PyTorch draws them.
//!
//! Parity rule: for the same seed, kiln consumes libtorch's generators in the
//! same order and with the same arithmetic as the equivalent PyTorch program.
//! [`Generator`] is a libtorch `at::Generator` (`torch.Generator`): a private
//! one (`torch.Generator().manual_seed(s)`, a `DataLoader` worker's) or a
//! handle to the global CPU generator ([`Generator::global`]); every draw is
//! libtorch's own function called with that generator, so it equals
//! PyTorch's by construction. [`Mt19937`] re-implements the engine of a
//! private generator for the one draw on the sampler's hot path
//! (`randperm`), proven identical to [`Generator::randperm`].
use crate::shim::{self, check, owned, raw, RawGenerator};
use crate::{Error, Result};
use std::ptr::NonNull;
use tch::{Device, Kind, Tensor};

/// `torch.manual_seed(seed)`: seeds the CPU generator and every CUDA generator.
pub fn manual_seed(seed: u64) {
    // tch takes an i64 and libtorch reinterprets it as u64, as Python does.
    tch::manual_seed(seed as i64);
}

/// `torch.empty((), dtype=torch.int64).random_().item()`: one draw from the
/// global CPU generator in [0, 2^63). This is what `DataLoader`'s iterator
/// takes as its base seed and what `RandomSampler` takes as its seed.
pub fn draw_seed() -> Result<u64> {
    Generator::global()?.draw_seed()
}

/// The global CPU generator's state (`torch.get_rng_state()`), a uint8 tensor.
pub fn cpu_rng_state() -> Result<Tensor> {
    Generator::global()?.state()
}

/// Restores the global CPU generator (`torch.set_rng_state(state)`).
pub fn set_cpu_rng_state(state: &Tensor) -> Result<()> {
    Generator::global()?.set_state(state)
}

/// CUDA device `index`'s generator state (`torch.cuda.get_rng_state(index)`).
pub fn cuda_rng_state(index: usize) -> Result<Tensor> {
    Generator::default_of(DEVICE_CUDA, index)?.state()
}

/// Restores CUDA device `index`'s generator (`torch.cuda.set_rng_state`).
pub fn set_cuda_rng_state(index: usize, state: &Tensor) -> Result<()> {
    Generator::default_of(DEVICE_CUDA, index)?.set_state(state)
}

// The shim's device types.
const DEVICE_CPU: i32 = 0;
const DEVICE_CUDA: i32 = 1;

/// A libtorch CPU generator (`torch.Generator()`): an `at::Generator` owned
/// through the shim. Every draw is the torch function called with
/// `generator=self`, so it gives PyTorch's numbers bit for bit.
///
/// [`Generator::new`] makes a private generator (`torch.Generator()
/// .manual_seed(seed)`, what a `DataLoader` worker seeded `base_seed +
/// worker_id` draws from); [`Generator::global`] is a handle to libtorch's
/// default CPU generator, the one `torch.rand()` uses without `generator=`,
/// so draws through it interleave with every other draw from that generator.
///
/// A generator can move between threads and be shared: libtorch's kernels
/// lock the generator's mutex for each draw, and seeding and state access
/// lock it here, as PyTorch's Python bindings do. Draws take `&mut self`
/// because they advance the generator.
pub struct Generator {
    ptr: NonNull<RawGenerator>,
}

// SAFETY: the handle owns an `at::Generator` (an atomically reference-counted
// pointer to the generator); every use of the generator locks its mutex
// (libtorch's kernels for draws, the shim for seeding and state).
unsafe impl Send for Generator {}
// SAFETY: as above; `&self` methods only read under the generator's mutex.
unsafe impl Sync for Generator {}

impl Drop for Generator {
    fn drop(&mut self) {
        // SAFETY: the handle came from the shim and is freed once.
        unsafe { shim::kiln_generator_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Generator");
        if let Ok(seed) = self.initial_seed() {
            d.field("initial_seed", &seed);
        }
        d.finish_non_exhaustive()
    }
}

/// Takes a generator handle the shim made.
fn handle(out: *mut RawGenerator) -> Result<Generator> {
    NonNull::new(out)
        .map(|ptr| Generator { ptr })
        .ok_or_else(|| Error::Torch("libtorch returned no generator".into()))
}

/// A size as the shim takes it.
fn dims(size: &[i64]) -> (*const i64, i64) {
    (size.as_ptr(), size.len() as i64)
}

impl Generator {
    /// `torch.Generator().manual_seed(seed)`: a new CPU generator.
    pub fn new(seed: u64) -> Result<Self> {
        let mut out = std::ptr::null_mut();
        // SAFETY: `out` is a valid place for the new handle.
        check(unsafe { shim::kiln_generator_new(seed, &mut out) })?;
        handle(out)
    }

    /// A handle to libtorch's default CPU generator (`torch.default_generator`,
    /// what `torch.rand()` draws from without `generator=`).
    pub fn global() -> Result<Self> {
        Self::default_of(DEVICE_CPU, 0)
    }

    /// A handle to a device type's default generator (the CUDA ones are
    /// only reached through the free state functions).
    fn default_of(device_type: i32, index: usize) -> Result<Self> {
        let mut out = std::ptr::null_mut();
        // SAFETY: `out` is a valid place for the new handle.
        check(unsafe { shim::kiln_generator_default(device_type, index as i64, &mut out) })?;
        handle(out)
    }

    fn raw(&self) -> *mut RawGenerator {
        self.ptr.as_ptr()
    }

    /// A new tensor from a shim call that fills `out`.
    fn make(
        &self,
        call: impl FnOnce(*mut RawGenerator, *mut *mut torch_sys::C_tensor) -> *mut std::os::raw::c_char,
    ) -> Result<Tensor> {
        let mut out = std::ptr::null_mut();
        check(call(self.raw(), &mut out))?;
        owned(out)
    }

    /// `g.manual_seed(seed)`.
    pub fn manual_seed(&mut self, seed: u64) -> Result<()> {
        // SAFETY: a live handle.
        check(unsafe { shim::kiln_generator_manual_seed(self.raw(), seed) })
    }

    /// `g.initial_seed()`: the seed it was last seeded with.
    pub fn initial_seed(&self) -> Result<u64> {
        let mut seed = 0;
        // SAFETY: a live handle and a valid out-pointer.
        check(unsafe { shim::kiln_generator_initial_seed(self.raw(), &mut seed) })?;
        Ok(seed)
    }

    /// `g.get_state()`: the generator's state, a uint8 tensor.
    pub fn state(&self) -> Result<Tensor> {
        // SAFETY: a live handle; `out` receives a tensor we then own.
        self.make(|g, out| unsafe { shim::kiln_generator_get_state(g, out) })
    }

    /// `g.set_state(state)`, with libtorch's checks of the state tensor.
    pub fn set_state(&mut self, state: &Tensor) -> Result<()> {
        // SAFETY: a live handle and a live tensor.
        check(unsafe { shim::kiln_generator_set_state(self.raw(), raw(state)) })
    }

    /// `torch.rand(size, generator=g, dtype=kind)`.
    pub fn rand(&mut self, size: &[i64], kind: Kind) -> Result<Tensor> {
        let (ptr, ndim) = dims(size);
        let dtype = crate::dtype::scalar_type(kind);
        // SAFETY: a live handle; `size` holds `ndim` values for the call.
        self.make(|g, out| unsafe { shim::kiln_generator_rand(g, ptr, ndim, dtype, out) })
    }

    /// `torch.randn(size, generator=g, dtype=kind)`.
    pub fn randn(&mut self, size: &[i64], kind: Kind) -> Result<Tensor> {
        let (ptr, ndim) = dims(size);
        let dtype = crate::dtype::scalar_type(kind);
        // SAFETY: a live handle; `size` holds `ndim` values for the call.
        self.make(|g, out| unsafe { shim::kiln_generator_randn(g, ptr, ndim, dtype, out) })
    }

    /// `torch.randint(low, high, size, generator=g)`: int64 values in `[low, high)`.
    pub fn randint(&mut self, low: i64, high: i64, size: &[i64]) -> Result<Tensor> {
        let (ptr, ndim) = dims(size);
        // SAFETY: a live handle; `size` holds `ndim` values for the call.
        self.make(|g, out| unsafe { shim::kiln_generator_randint(g, low, high, ptr, ndim, out) })
    }

    /// `torch.randperm(n, generator=g)`: an int64 permutation of `0..n`.
    pub fn randperm(&mut self, n: i64) -> Result<Tensor> {
        // SAFETY: a live handle; `out` receives a tensor we then own.
        self.make(|g, out| unsafe { shim::kiln_generator_randperm(g, n, out) })
    }

    /// `t.uniform_(from, to, generator=g)`.
    pub fn uniform_(&mut self, t: &Tensor, from: f64, to: f64) -> Result<()> {
        // SAFETY: a live handle and a live tensor.
        check(unsafe { shim::kiln_generator_uniform_(self.raw(), raw(t), from, to) })
    }

    /// `t.normal_(mean, std, generator=g)`.
    pub fn normal_(&mut self, t: &Tensor, mean: f64, std: f64) -> Result<()> {
        // SAFETY: a live handle and a live tensor.
        check(unsafe { shim::kiln_generator_normal_(self.raw(), raw(t), mean, std) })
    }

    /// `t.random_(generator=g)`: integers over the dtype's range (`[0, 2^mantissa]`
    /// for floating dtypes).
    pub fn random_(&mut self, t: &Tensor) -> Result<()> {
        // SAFETY: a live handle and a live tensor.
        check(unsafe { shim::kiln_generator_random_(self.raw(), raw(t)) })
    }

    /// `t.bernoulli_(p, generator=g)`.
    pub fn bernoulli_(&mut self, t: &Tensor, p: f64) -> Result<()> {
        // SAFETY: a live handle and a live tensor.
        check(unsafe { shim::kiln_generator_bernoulli_(self.raw(), raw(t), p) })
    }

    /// `torch.multinomial(probs, num_samples, replacement, generator=g)` (int64 indices).
    pub fn multinomial(
        &mut self,
        probs: &Tensor,
        num_samples: i64,
        replacement: bool,
    ) -> Result<Tensor> {
        let (p, r) = (raw(probs), i32::from(replacement));
        // SAFETY: a live handle and a live tensor; `out` receives a tensor we then own.
        self.make(|g, out| unsafe { shim::kiln_generator_multinomial(g, p, num_samples, r, out) })
    }

    /// `torch.empty((), dtype=torch.int64).random_(generator=g).item()`: one
    /// draw in `[0, 2^63)`, how PyTorch derives seeds (`DataLoader`'s base seed,
    /// `RandomSampler`'s seed).
    pub fn draw_seed(&mut self) -> Result<u64> {
        let t = Tensor::f_empty([] as [i64; 0], (Kind::Int64, Device::Cpu))?;
        self.random_(&t)?;
        let value = t.f_int64_value(&[])?;
        u64::try_from(value)
            .map_err(|_| Error::Torch(format!("random_() drew a negative seed {value}")))
    }
}

const N: usize = 624;
const M: usize = 397;

/// The 32-bit Mersenne Twister behind libtorch's `CPUGeneratorImpl`
/// (`at::mt19937`): `Mt19937::new(s)` is `torch.Generator().manual_seed(s)`
/// for [`Mt19937::randperm`], a plain `Vec` without a tensor or a lock, for
/// samplers that draw one permutation per epoch. Every other draw goes
/// through [`Generator`].
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    next: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Mt19937 {
    /// Seeds like `at::mt19937(seed)`: only the low 32 bits of the seed count.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = (seed & 0xffff_ffff) as u32;
        for j in 1..N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Self { state, next: N }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..N {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }

    /// The next 32-bit output (`CPUGeneratorImpl::random()`).
    pub fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `torch.randperm(n, generator=self)` on the CPU, for n below
    /// 2^32 / 20 (libtorch's small-n Fisher–Yates; larger n is refused
    /// because libtorch switches algorithms there).
    pub fn randperm(&mut self, n: usize) -> Result<Vec<i64>> {
        if n as u64 >= u64::from(u32::MAX) / 20 {
            return Err(Error::InvalidArgument(format!(
                "randperm of {n} elements is beyond the {} that kiln reproduces exactly",
                u32::MAX / 20
            )));
        }
        let mut perm: Vec<i64> = (0..n as i64).collect();
        for i in 0..n.saturating_sub(1) {
            let z = (u64::from(self.next_u32()) % (n - i) as u64) as usize;
            perm.swap(i, i + z);
        }
        Ok(perm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<i64> {
        Vec::<i64>::try_from(t).unwrap_or_default()
    }

    #[test]
    fn mt19937_randperm_is_the_generators() -> Result<()> {
        for (seed, n) in [
            (0u64, 0usize),
            (0, 1),
            (0, 2),
            (7, 10),
            (1234, 1000),
            (u64::MAX, 60_000),
        ] {
            let ours = Mt19937::new(seed).randperm(n)?;
            let libtorch = values(&Generator::new(seed)?.randperm(n as i64)?);
            assert_eq!(ours, libtorch, "seed {seed}, n {n}");
        }
        Ok(())
    }

    // Tests that reseed the global generator hold TEST_RNG.
    #[test]
    fn free_functions_use_the_global_generator() -> Result<()> {
        let _guard = crate::TEST_RNG.lock();
        // The global generator through tch's own draws, through a handle, and
        // the free functions: one stream.
        manual_seed(42);
        let state = cpu_rng_state()?;
        let a = draw_seed()?;
        let b = Generator::global()?.draw_seed()?;
        assert_ne!(a, b);
        assert!(a < 1 << 63 && b < 1 << 63);
        set_cpu_rng_state(&state)?;
        assert_eq!(draw_seed()?, a);
        let mut global = Generator::global()?;
        assert_eq!(global.initial_seed()?, 42);
        assert_eq!(global.draw_seed()?, b);
        manual_seed(42);
        let tch_draw = Tensor::f_empty([] as [i64; 0], (Kind::Int64, Device::Cpu))?.f_random_()?;
        assert_eq!(tch_draw.f_int64_value(&[])? as u64, a);
        assert_eq!(global.draw_seed()?, b);
        Ok(())
    }

    #[test]
    fn state_round_trips_and_seeding_restarts() -> Result<()> {
        let mut g = Generator::new(3)?;
        assert_eq!(g.initial_seed()?, 3);
        let state = g.state()?;
        assert_eq!(state.f_kind()?, Kind::Uint8);
        let first = g.randn(&[5], Kind::Float)?;
        let second = g.randn(&[5], Kind::Float)?;
        assert!(!first.equal(&second));
        g.set_state(&state)?;
        assert!(g.randn(&[5], Kind::Float)?.equal(&first));
        g.manual_seed(3)?;
        assert!(g.randn(&[5], Kind::Float)?.equal(&first));
        // libtorch's own check of a state tensor.
        let bad = Tensor::f_zeros([3], (Kind::Uint8, Device::Cpu))?;
        assert!(g.set_state(&bad).is_err());
        // libtorch's argument checks come back as errors.
        assert!(g
            .multinomial(&Tensor::from_slice(&[-1.0f32]), 1, false)
            .is_err());
        Ok(())
    }

    #[test]
    fn reference_mt19937_sequence() {
        // The C++ standard requires the 10000th output of mt19937 seeded with 5489.
        let mut g = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = g.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }
}
