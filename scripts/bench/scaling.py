"""Data-parallel scaling of `kiln train --distributed mpi` on this machine,
and a model of larger jobs from the measured all-reduce cost.

Runs the `scaling` bench binary (crates/cli/benches/scaling.rs, feature
`mpi`) under `mpirun -n 1` and `-n 2`, one libtorch thread per rank, and prints:
  1. per rank count: samples/s per rank, compute and all-reduce time per
     step (quickstart MLP, per-rank batch 64, float32 gradients in one buffer);
  2. the 2-rank all-reduce time by buffer size, fitted to the ring model
     t(p, n) = 2(p-1)/p * n / bandwidth + 2(p-1) * latency
     (for p = 2: t = n / bandwidth + 2 latency);
  3. the model's all-reduce time, step time and throughput for 8 and 64
     ranks, assuming each rank keeps the measured compute time (weak scaling:
     batch 64 per rank) and links as fast as the measured ones. The
     measurement is shared memory inside one host; between hosts, use the
     network's latency and bandwidth instead (--latency-us, --gbytes-per-s).

Usage: python3 scripts/bench/scaling.py --bin target/release/deps/scaling-<hash>
"""
import argparse
import json
import os
import subprocess
import sys

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def run(binary, ranks, steps):
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", str(ranks), binary,
           "--threads", "1", "--steps", str(steps)]
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


def fit(points):
    """The alpha-beta fit of t = a + b * n: a from the smallest message,
    b from the slope between the smallest and the largest."""
    (n0, t0), (n1, t1) = min(points), max(points)
    return t0, max((t1 - t0) / (n1 - n0), 1e-15)


def ring(p, nbytes, latency, seconds_per_byte):
    return 2 * (p - 1) / p * nbytes * seconds_per_byte + 2 * (p - 1) * latency


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the scaling bench binary")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--latency-us", type=float, help="model with this latency instead of the measured one")
    ap.add_argument("--gbytes-per-s", type=float, help="model with this bandwidth instead of the measured one")
    args = ap.parse_args()

    results = {p: run(args.bin, p, args.steps) for p in (1, 2)}
    print("## Data-parallel scaling (kiln train --distributed mpi, quickstart MLP, batch 64 per rank, 1 thread per rank)\n")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cores on this machine: {os.cpu_count()}, load average at the start: {load:.1f}\n")
    print("| ranks | samples/s per rank | samples/s total | compute ms/step | all-reduce ms/step | all-reduce share |")
    print("|---:|---:|---:|---:|---:|---:|")
    for p, r in results.items():
        t = r["train"]
        step = t["compute_s_per_step"] + t["allreduce_s_per_step"]
        print(f"| {p} | {t['samples_per_s_per_rank']:.0f} | {p * t['samples_per_s_per_rank']:.0f} | "
              f"{1e3 * t['compute_s_per_step']:.2f} | {1e3 * t['allreduce_s_per_step']:.3f} | "
              f"{100 * t['allreduce_s_per_step'] / step:.1f}% |")
    grad_bytes = results[2]["train"]["grad_bytes"]

    sweep = [(s["bytes"], s["seconds"]) for s in results[2]["allreduce"]]
    print(f"\n### 2-rank all-reduce (float32 sum, MPI_Allreduce, shared memory)\n")
    print("| bytes | µs | GB/s (bytes / time) |")
    print("|---:|---:|---:|")
    for b, s in sweep:
        print(f"| {b} | {1e6 * s:.1f} | {b / s / 1e9:.2f} |")
    a, per_byte = fit(sweep)
    latency = max(a / 2, 0.0)  # p = 2: t = n * per_byte + 2 * latency
    if args.latency_us is not None:
        latency = args.latency_us * 1e-6
    if args.gbytes_per_s is not None:
        per_byte = 1 / (args.gbytes_per_s * 1e9)
    print(f"\nfit: latency {1e6 * latency:.1f} µs, bandwidth {1 / per_byte / 1e9:.2f} GB/s "
          f"(cost {per_byte * 1e12:.1f} ps/byte); gradient buffer {grad_bytes / 1e6:.2f} MB\n")

    compute = results[1]["train"]["compute_s_per_step"]
    batch = results[1]["train"]["batch_per_rank"]
    print("### Model: ring all-reduce 2(p-1)/p × bytes / bandwidth + 2(p-1) × latency, compute per rank as measured with 1 rank\n")
    print("| ranks | all-reduce ms/step | step ms | samples/s total | efficiency |")
    print("|---:|---:|---:|---:|---:|")
    for p in (2, 8, 64):
        t_ar = ring(p, grad_bytes, latency, per_byte)
        step = compute + t_ar
        print(f"| {p} | {1e3 * t_ar:.3f} | {1e3 * step:.2f} | {p * batch / step:.0f} | {100 * compute / step:.1f}% |")
    measured = results[2]["train"]["allreduce_s_per_step"]
    print(f"\n(2 ranks measured: {1e3 * measured:.3f} ms per gradient all-reduce including the flatten/copy-back; "
          f"on {os.cpu_count()} cores the ranks also share the CPU with each other.)")


if __name__ == "__main__":
    main()
