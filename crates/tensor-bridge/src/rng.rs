//! Random numbers exactly as PyTorch draws them.
//!
//! Parity rule: for the same seed, kiln consumes libtorch's global CPU
//! generator in the same order and with the same arithmetic as the equivalent
//! PyTorch program. The global generator is libtorch's own (tch's
//! `manual_seed`, `random_`, `uniform_`); private generators that PyTorch
//! creates with `torch.Generator().manual_seed(s)` (RandomSampler's) are
//! re-implemented here as [`Mt19937`], which the tests prove bit-identical to
//! libtorch's `CPUGeneratorImpl`.
use crate::shim::{check, kiln_cpu_rng_state, kiln_cuda_rng_state, owned, raw};
use crate::{Error, Result};
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
    let t = Tensor::f_empty([] as [i64; 0], (Kind::Int64, Device::Cpu))?.f_random_()?;
    let value = t.f_int64_value(&[])?;
    u64::try_from(value)
        .map_err(|_| Error::Torch(format!("random_() drew a negative seed {value}")))
}

/// The global CPU generator's state (`torch.get_rng_state()`), a uint8 tensor.
pub fn cpu_rng_state() -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: `out` is a valid place for the shim to store a new tensor.
    check(unsafe { kiln_cpu_rng_state(&mut out) })?;
    owned(out)
}

/// Restores the global CPU generator (`torch.set_rng_state(state)`).
pub fn set_cpu_rng_state(state: &Tensor) -> Result<()> {
    // SAFETY: `state` is a live tensor for the duration of the call.
    check(unsafe { crate::shim::kiln_set_cpu_rng_state(raw(state)) })
}

/// CUDA device `index`'s generator state (`torch.cuda.get_rng_state(index)`).
pub fn cuda_rng_state(index: usize) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: `out` is a valid place for the shim to store a new tensor.
    check(unsafe { kiln_cuda_rng_state(index as i64, &mut out) })?;
    owned(out)
}

/// Restores CUDA device `index`'s generator (`torch.cuda.set_rng_state`).
pub fn set_cuda_rng_state(index: usize, state: &Tensor) -> Result<()> {
    // SAFETY: `state` is a live tensor for the duration of the call.
    check(unsafe { crate::shim::kiln_set_cuda_rng_state(index as i64, raw(state)) })
}

const N: usize = 624;
const M: usize = 397;

/// The 32-bit Mersenne Twister behind libtorch's `CPUGeneratorImpl`
/// (`at::mt19937`): `Mt19937::new(s)` is `torch.Generator().manual_seed(s)`.
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

    fn libtorch_randperm(seed: u64, n: i64) -> Vec<i64> {
        manual_seed(seed);
        let t = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
        Vec::<i64>::try_from(&t).unwrap_or_default()
    }

    // Tests that reseed the global generator hold TEST_RNG.
    #[test]
    fn matches_libtorch_generator_and_state_round_trips() {
        let _guard = crate::TEST_RNG.lock();
        for (seed, n) in [
            (0u64, 1i64),
            (0, 2),
            (7, 10),
            (1234, 1000),
            (u64::MAX, 60_000),
        ] {
            let ours = Mt19937::new(seed).randperm(n as usize).unwrap_or_default();
            assert_eq!(ours, libtorch_randperm(seed, n), "seed {seed}, n {n}");
        }
        // Same draw as PyTorch's DataLoader base seed, and reproducible.
        manual_seed(42);
        let state = cpu_rng_state().unwrap_or_else(|_| Tensor::new());
        let a = draw_seed().unwrap_or(0);
        let b = draw_seed().unwrap_or(0);
        assert_ne!(a, b);
        assert!(a < 1 << 63 && b < 1 << 63);
        assert!(set_cpu_rng_state(&state).is_ok());
        assert_eq!(draw_seed().unwrap_or(1), a);
        manual_seed(42);
        assert_eq!(draw_seed().unwrap_or(1), a);
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
