"""Data-parallel scaling of `kiln train --distributed mpi` on this machine:
where a step's time goes with DDP's gradient buckets, what the overlap with
backward hides, and a model of larger jobs from the measured all-reduce cost.

Runs the `scaling` bench binary (crates/cli/benches/scaling.rs, feature
`mpi`) under `mpirun -n 1` and `-n 2`, one libtorch thread per rank, and prints:
  1. per model (the quickstart MLP, per-rank batch 64; the PyTorch MNIST
     example's CNN, per-rank batch 32) and per way of averaging gradients,
     the median time per step split into compute (forward + backward, the
     bucket hooks included), exposed communication (after backward, until
     the averaged gradients are in place) and the optimizer step; the
     transport's own time for all buckets and the share of it hidden behind
     backward (1 - exposed / transport time). Ways: `flat` is the path before
     buckets (one buffer all-reduced after backward with MPI_Allreduce, then
     divided), `buckets` DDP's buckets started after backward, `overlap` the
     buckets started from autograd hooks during backward (what kiln does);
  2. the 2-rank float32 sum by buffer size: MPI_Allreduce, and kiln's bucket
     sum (gloo's order: MPI_Ialltoallv, the fold, MPI_Iallgatherv, on the
     bucket thread), median and minimum of repeated calls, with the
     alpha-beta fit of MPI_Allreduce's minima
     t(p, n) = 2(p-1)/p * n / bandwidth + 2(p-1) * latency
     (for p = 2: t = n / bandwidth + 2 latency);
  3. the model's communication, step time, throughput and efficiency for 8,
     64 and 512 ranks, per model, without and with overlap, assuming each
     rank keeps the measured 1-rank compute (weak scaling), the measured
     buckets, links as fast as the measured ones, and the measured window
     between the first bucket's start and the end of backward: exposed =
     sum of the bucket times without overlap, and
     max(last bucket, sum - window) with it. The measurement is shared memory
     inside one host; between hosts use the network's latency and bandwidth
     instead (--latency-us, --gbytes-per-s).

Timings on a small shared machine are noisy: the ways are interleaved in
blocks and medians reported; the load average is printed with the results.
mpirun runs with `--mca mpi_yield_when_idle 1`: the cores are shared with
other processes and with each rank's bucket thread.

Usage: python3 scripts/bench/scaling.py --bin target/release/deps/scaling-<hash>
"""
import argparse
import json
import os
import subprocess
import sys

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
MODELS = {"mlp": "quickstart MLP (784-512-512-10)", "cnn": "MNIST example CNN (conv 32, 64; 9216-128-10)"}


def run(binary, ranks, args):
    # The cores are shared (with other processes, and with each rank's
    # bucket thread): ranks that busy-poll would lose whole time slices.
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "--mca", "mpi_yield_when_idle", "1",
           "-n", str(ranks), binary, "--threads", "1"] + args
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


def fit(points):
    """t = a + b * n: a from the messages up to 1 KiB (median), b by least
    squares over those of 64 KiB and more."""
    small = sorted(t for n, t in points if n <= 1024)
    a = small[len(small) // 2]
    big = [(n, t - a) for n, t in points if n >= 65536]
    b = sum(n * t for n, t in big) / sum(n * n for n, _ in big)
    return a, max(b, 1e-15)


def ring(p, nbytes, latency, seconds_per_byte):
    return 2 * (p - 1) / p * nbytes * seconds_per_byte + 2 * (p - 1) * latency


def ms(s):
    return f"{1e3 * s:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the scaling bench binary")
    ap.add_argument("--steps", type=int, default=60, help="measured MLP steps per way")
    ap.add_argument("--cnn-steps", type=int, default=12, help="measured CNN steps per way")
    ap.add_argument("--blocks", type=int, default=3, help="blocks the ways are interleaved in")
    ap.add_argument("--latency-us", type=float, help="model with this latency instead of the measured one")
    ap.add_argument("--gbytes-per-s", type=float, help="model with this bandwidth instead of the measured one")
    args = ap.parse_args()

    bench_args = ["--steps", str(args.steps), "--cnn-steps", str(args.cnn_steps), "--blocks", str(args.blocks)]
    load_before = os.getloadavg()[0]
    results = {p: run(args.bin, p, bench_args) for p in (1, 2)}
    load_after = os.getloadavg()[0]
    print("## Data-parallel scaling (kiln train --distributed mpi: DDP's gradient buckets, 1 thread per rank)\n")
    print(f"cores on this machine: {os.cpu_count()}, load average {load_before:.1f} at the start and "
          f"{load_after:.1f} at the end (other processes share the cores: medians of interleaved blocks)\n")

    print("### Time per step (median, ms)\n")
    print("| model | ranks | way | compute | exposed comm | optimizer | step | bucket sums (transport) | hidden |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for name in MODELS:
        for p, r in results.items():
            t = r["train"][name]
            for way in ("single", "flat", "buckets", "overlap"):
                if way not in t:
                    continue
                w = t[way]
                step = w["compute_s"] + w["exposed_s"] + w["optimizer_s"]
                comm = w["comm_s"]
                hidden = f"{100 * max(0.0, 1 - w['exposed_s'] / comm):.0f}%" if comm > 0 else "-"
                print(f"| {name} | {p} | {way} | {ms(w['compute_s'])} | {ms(w['exposed_s'])} | "
                      f"{ms(w['optimizer_s'])} | {ms(step)} | {ms(comm) if comm > 0 else '-'} | {hidden} |")
    for name in MODELS:
        t = results[2]["train"][name]
        flat, over = t["flat"]["exposed_s"], t["overlap"]["exposed_s"]
        print(f"\n{name}: exposed communication per step {ms(over)} ms with overlap vs {ms(flat)} ms with the "
              f"flat all-reduce ({'lower' if over < flat else 'NOT lower'}); buckets {t['overlap']['bucket_bytes']} bytes; "
              f"window from the first bucket's start to the end of backward {ms(t['overlap']['window_s'])} ms")

    sweep = results[2]["allreduce"]
    print("\n### 2-rank float32 sum by size (median and minimum of repeated calls)\n")
    print("| bytes | MPI_Allreduce µs (median) | min µs | GB/s (min) | kiln bucket sum µs (median) | min µs | GB/s (min) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for s in sweep:
        b, m, mm, k, km = (s["bytes"], s["mpi_allreduce_s"], s["mpi_allreduce_min_s"],
                           s["kiln_bucket_s"], s["kiln_bucket_min_s"])
        print(f"| {b} | {1e6 * m:.1f} | {1e6 * mm:.1f} | {b / mm / 1e9:.2f} | {1e6 * k:.1f} | {1e6 * km:.1f} | {b / km / 1e9:.2f} |")
    # The links' own cost: the minimum over repetitions (the median also
    # holds time slices lost to other processes on this machine).
    a, per_byte = fit([(s["bytes"], s["mpi_allreduce_min_s"]) for s in sweep])
    ka, kper_byte = fit([(s["bytes"], s["kiln_bucket_min_s"]) for s in sweep])
    latency = max(a / 2, 0.0)  # p = 2: t = n * per_byte + 2 * latency
    print(f"\nfits of the minima: MPI_Allreduce latency {1e6 * latency:.2f} µs, bandwidth {1 / per_byte / 1e9:.2f} GB/s; "
          f"kiln bucket sum latency {1e6 * max(ka / 2, 0.0):.2f} µs, bandwidth {1 / kper_byte / 1e9:.2f} GB/s")
    if args.latency_us is not None:
        latency = args.latency_us * 1e-6
    if args.gbytes_per_s is not None:
        per_byte = 1 / (args.gbytes_per_s * 1e9)
    print(f"model uses: latency {1e6 * latency:.2f} µs, bandwidth {1 / per_byte / 1e9:.2f} GB/s\n")

    print("### Model: per bucket 2(p-1)/p × bytes / bandwidth + 2(p-1) × latency; compute per rank as measured with 1 rank\n")
    print("| model | ranks | comm ms/step | exposed, no overlap | step ms | samples/s | efficiency | "
          "exposed, overlap | step ms | samples/s | efficiency |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in MODELS:
        one = results[1]["train"][name]["single"]
        two = results[2]["train"][name]["overlap"]
        compute = one["compute_s"] + one["optimizer_s"]
        batch = results[1]["train"][name]["batch_per_rank"]
        buckets = two["bucket_bytes"]
        window = two["window_s"]
        for p in (2, 8, 64, 512):
            times = [ring(p, b, latency, per_byte) for b in buckets]
            total = sum(times)
            exposed = max(times[-1], total - window)
            plain = compute + total
            hidden = compute + exposed
            print(f"| {name} | {p} | {ms(total)} | {ms(total)} | {ms(plain)} | {p * batch / plain:.0f} | "
                  f"{100 * compute / plain:.1f}% | {ms(exposed)} | {ms(hidden)} | {p * batch / hidden:.0f} | "
                  f"{100 * compute / hidden:.1f}% |")
    print("\n(MLP and CNN buckets are DDP's: 1 MiB first, then 25 MiB, in gradient-ready order; "
          "the CNN is `--model cnn`.)")


if __name__ == "__main__":
    main()
