//! kiln's arena CPU allocator (`kiln_tensor::memory`): large blocks come from
//! huge-page arenas and are reused per size class, small ones from libtorch,
//! values are the same bits wherever they live, and tensors made before the
//! install are freed by their own allocator. One test: the allocator and its
//! byte counts are process-wide.
use kiln_tensor::memory::{arena_stats, install_arena_allocator, ArenaStats};
use kiln_tensor::{Device, Kind, Tensor};

type Res = Result<(), Box<dyn std::error::Error>>;

const MIB: i64 = 1 << 20;

fn stats() -> Result<ArenaStats, String> {
    arena_stats().ok_or_else(|| "the allocator reports no counts once installed".into())
}

fn floats(bytes: i64) -> Result<Tensor, kiln_tensor::Error> {
    Ok(Tensor::f_ones([bytes / 4], (Kind::Float, Device::Cpu))?)
}

/// The `VmFlags` of the mapping that holds `addr`, from /proc/self/smaps.
fn vm_flags(addr: usize) -> Result<String, Box<dyn std::error::Error>> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return Ok(flags.trim().to_string());
            }
        }
    }
    Err(format!("no mapping holds {addr:#x}").into())
}

fn product_bits(a: &Tensor, b: &Tensor) -> Result<Vec<u32>, Box<dyn std::error::Error>> {
    let c = a
        .f_mm(b)?
        .f_relu()?
        .f_sum_dim_intlist(1, false, Kind::Float)?;
    let values = Vec::<f32>::try_from(&c)?;
    Ok(values.iter().map(|v| v.to_bits()).collect())
}

#[test]
fn arenas_serve_large_blocks_reuse_them_and_change_no_value() -> Res {
    // Before: no counts, and a block from libtorch's allocator.
    assert!(arena_stats().is_none());
    kiln_tensor::tch::manual_seed(0);
    let a = Tensor::f_randn([512, 512], (Kind::Float, Device::Cpu))?;
    let b = Tensor::f_randn([512, 512], (Kind::Float, Device::Cpu))?;
    let expected = product_bits(&a, &b)?;
    let early = floats(MIB)?;

    assert!(install_arena_allocator());
    assert!(!install_arena_allocator(), "a second install is a no-op");
    let start = stats()?;
    assert_eq!(start.live, 0);

    // The same product on arena memory: the same bits.
    let (a2, b2) = (a.f_contiguous()?.f_mul_scalar(1.0)?, b.f_mul_scalar(1.0)?);
    assert!(stats()?.live >= 2 * MIB as u64, "{:?}", stats()?);
    assert_eq!(product_bits(&a2, &b2)?, expected);
    drop((a2, b2));

    // A block made before the install goes back to libtorch's allocator.
    drop(early);

    // One 1 MiB block: live while held, cached when dropped, reused after.
    let base = stats()?;
    let t = floats(MIB)?;
    let held = stats()?;
    let class = held.live - base.live;
    assert!(
        (MIB as u64..MIB as u64 * 9 / 8 + 4096).contains(&class),
        "{held:?}"
    );
    assert!(held.reserved >= 64 * MIB as u64);
    let flags = vm_flags(t.data_ptr() as usize)?;
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !thp.is_empty() && !thp.contains("[never]") {
        assert!(
            flags.split_whitespace().any(|f| f == "hg"),
            "arena not marked for huge pages: {flags}"
        );
    }
    assert_eq!(t.f_sum(Kind::Float)?.double_value(&[]), (MIB / 4) as f64);
    let addr = t.data_ptr() as usize;
    drop(t);
    let freed = stats()?;
    assert_eq!(freed.live, base.live);
    assert_eq!(freed.cached, held.cached + class);
    let again = Tensor::f_zeros([MIB / 4], (Kind::Float, Device::Cpu))?;
    assert_eq!(again.data_ptr() as usize, addr, "the freed block is reused");
    assert_eq!(stats()?.reserved, freed.reserved);
    assert_eq!(again.f_sum(Kind::Float)?.double_value(&[]), 0.0);
    drop(again);

    // Small blocks stay with libtorch.
    let before_small = stats()?;
    let small = floats(4096)?;
    assert_eq!(stats()?.live, before_small.live);
    drop(small);

    // A block larger than an arena gets an arena of its own.
    let big = floats(100 * MIB)?;
    assert!(stats()?.reserved >= freed.reserved + 100 * MIB as u64);
    assert_eq!(big.f_sum(Kind::Float)?.double_value(&[]), (25 * MIB) as f64);
    drop(big);

    // Threads allocating and freeing at once each read back their own values.
    let workers: Vec<_> = (0..4)
        .map(|id| {
            std::thread::spawn(move || -> Result<(), String> {
                for i in 0..100i64 {
                    let n = (MIB / 4) + (i % 7) * 10_000 + id * 1000;
                    let t = Tensor::f_full([n], id as f64, (Kind::Float, Device::Cpu))
                        .map_err(|e| e.to_string())?;
                    let sum = t.f_sum(Kind::Double).map_err(|e| e.to_string())?;
                    if sum.double_value(&[]) != (n * id) as f64 {
                        return Err(format!("thread {id}: wrong sum at {i}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "a worker panicked")??;
    }
    assert_eq!(stats()?.live, base.live, "every block came back");

    // Freed blocks past 512 MiB of cache give their pages back.
    let untouched: Vec<Tensor> = (0..3)
        .map(|_| Tensor::f_empty([50 * MIB], (Kind::Float, Device::Cpu)))
        .collect::<Result<_, _>>()?;
    drop(untouched);
    let end = stats()?;
    assert!(end.cached >= 600 * MIB as u64, "{end:?}");
    assert!(end.resident_cached <= 512 * MIB as u64, "{end:?}");
    Ok(())
}
