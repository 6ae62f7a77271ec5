"""The tutorial's training step against its floor, on this machine.

Measures, with the same thread count everywhere:
- the GEMM floor: the step's eight matrix products alone (`torch.addmm` /
  `torch.mm` at the tutorial's shapes, batch 64: forward 784->512->512->10,
  backward dX of layers 2 and 3, dW of all three), as one sequence;
- the optimizer's memory floor: SGD-momentum reads p, g, buf and writes p,
  buf -- 5 float32 streams of the model's 669,706 parameters -- at the copy
  bandwidth measured here (`dst.copy_(src)` over the model's tensors);
- PyTorch's eager step without data loading: forward, loss, backward,
  `optimizer.step()`, `zero_grad()` and `loss.item()` on preloaded batches;
- kiln's step as users run it: `kiln train --epochs 1` (the whole tutorial
  job: Trainer, callbacks, metric files), from the per-step timings its
  metrics.jsonl records (`step_seconds` and the phases).
Runs alternate kiln and PyTorch `--reps` times; every figure is a median, and
the ratios are also shown per rep (each kiln run against the floor measured
right after it) with their median, which the host's drift moves least.
Around each rep `core_latency.c` measures the cache-line round trip between
the two CPUs: on a VM the host may run the vCPUs on cores that share no
cache (~330 ns instead of ~70 ns here), which makes every two-thread step
far slower, kiln's and PyTorch's alike; the ratios are also shown for the
reps on each side of that line.
Prints the floor, kiln's step and PyTorch's eager step with the ratios, and
the per-phase split (data, forward, backward, optimizer, other) of both.
`--before FILE` adds a split recorded earlier (a JSON file this script wrote
with `--save`) beside the new one; `make bench` shows
`step_floor.before.json`, recorded at commit 7bfe6d1 (one-pass optimizer
kernels, before the serial small ops of the step), 2 threads, load ~4.

    PYTHONPATH=.libtorch python3 scripts/bench/step_floor.py --kiln-bin target/release/kiln
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH = 64
PHASES = ["data", "forward", "backward", "optimizer", "other"]


def median_time(fn, reps, warmup=10):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def floor_worker(args):
    """GEMM floor, copy bandwidth and PyTorch's eager step, as JSON."""
    import torch
    from torch import nn

    sys.path.insert(0, os.path.join(ROOT, "scripts/reference"))
    from quickstart import NeuralNetwork, find, read_idx

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = NeuralNetwork()
    params = list(model.parameters())
    numel = sum(p.numel() for p in params)
    (w1, b1), (w2, b2), (w3, b3) = [(params[i], params[i + 1]) for i in (0, 2, 4)]
    w1, b1, w2, b2, w3, b3 = (t.detach() for t in (w1, b1, w2, b2, w3, b3))

    # The eight GEMMs of a step, laid out as F.linear and AddmmBackward0 call them.
    x = torch.rand(BATCH, 784)
    h1 = torch.rand(BATCH, 512)
    h2 = torch.rand(BATCH, 512)
    g3 = torch.rand(BATCH, 10)
    g2 = torch.rand(BATCH, 512)
    g1 = torch.rand(BATCH, 512)

    def gemms():
        torch.addmm(b1, x, w1.t())  # forward
        torch.addmm(b2, h1, w2.t())
        torch.addmm(b3, h2, w3.t())
        torch.mm(g3, w3)  # backward: grad of the input of layer 3
        torch.mm(g3.t(), h2)  # grad of W3
        torch.mm(g2, w2)  # grad of the input of layer 2
        torch.mm(g2.t(), h1)  # grad of W2
        torch.mm(g1.t(), x)  # grad of W1

    gemm = median_time(gemms, args.floor_reps)

    # Copy bandwidth over the model's own tensors (read + write bytes).
    srcs = [torch.randn(p.shape) for p in params]
    dsts = [torch.empty_like(s) for s in srcs]

    def copy_all():
        for d, s in zip(dsts, srcs):
            d.copy_(s)

    copy = median_time(copy_all, args.floor_reps)
    bandwidth = 2 * 4 * numel / copy
    optimizer_floor = 5 * 4 * numel / bandwidth

    # PyTorch's eager step on preloaded batches (the tutorial's model, loss
    # and optimizer), timed by phase; data = slicing a batch out of a
    # preloaded, shuffled tensor with index_select (what kiln's loader does).
    images = read_idx(find(args.data_dir, "train-images-idx3-ubyte")).unsqueeze(1).to(torch.float32).div(255)
    labels = read_idx(find(args.data_dir, "train-labels-idx1-ubyte")).to(torch.int64)
    order = torch.randperm(len(labels))
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    steps = min(args.torch_steps, len(labels) // BATCH)
    phases = {k: [] for k in PHASES}
    totals = []
    for i in range(steps + 20):
        t0 = time.perf_counter()
        idx = order[i * BATCH : (i + 1) * BATCH]
        X, y = images.index_select(0, idx), labels.index_select(0, idx)
        t1 = time.perf_counter()
        loss = loss_fn(model(X), y)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        t4 = time.perf_counter()
        loss.item()
        t5 = time.perf_counter()
        if i < 20:
            continue  # warm-up
        phases["data"].append(t1 - t0)
        phases["forward"].append(t2 - t1)
        phases["backward"].append(t3 - t2)
        phases["optimizer"].append(t4 - t3)
        phases["other"].append(t5 - t4)
        totals.append(t5 - t1)
    print(json.dumps({
        "gemm": gemm,
        "bandwidth": bandwidth,
        "optimizer_floor": optimizer_floor,
        "numel": numel,
        "torch_step": statistics.median(totals),
        "torch_phases": {k: statistics.median(v) for k, v in phases.items()},
    }))


def kiln_run(args):
    """One `kiln train --epochs 1`: the medians of its per-step timings."""
    run = tempfile.mkdtemp(prefix="kiln-floor-")
    shutil.rmtree(run)
    try:
        cmd = [args.kiln_bin, "train", "--epochs", "1", "--seed", "0", "--threads", str(args.threads),
               "--data-dir", args.data_dir, "--run-dir", run, "--quiet"]
        subprocess.run(cmd, check=True, capture_output=True)
        with open(os.path.join(run, "metrics.jsonl")) as f:
            steps = [r["values"] for r in map(json.loads, f) if r["scope"] == "step"]
    finally:
        shutil.rmtree(run, ignore_errors=True)
    if not steps or "step_seconds" not in steps[0]:
        sys.exit(f"{args.kiln_bin}: its metrics.jsonl has no step timings (step_seconds)")
    col = lambda k: [s[f"{k}_seconds"] for s in steps]
    total = col("step")
    split = {k: col(k) for k in ["data", "forward", "backward", "optimizer"]}
    split["other"] = [t - sum(split[k][i] for k in split) for i, t in enumerate(total)]
    return {"step": statistics.median(total), "phases": {k: statistics.median(v) for k, v in split.items()}}


# Round trips below this share a cache (~70 ns here); across CCDs ~330 ns.
SHARED_CACHE_NS = 150


def core_latency_probe(tmp):
    """Compiles core_latency.c; returns a function giving the CPU-to-CPU
    cache-line round trip in ns (the lowest of three; None without a second
    CPU), or None without a C compiler."""
    exe = os.path.join(tmp, "core_latency")
    src = os.path.join(ROOT, "scripts/bench/core_latency.c")
    cc = os.environ.get("CC", "cc")
    if subprocess.run([cc, "-O2", "-pthread", src, "-o", exe], capture_output=True).returncode != 0:
        return None

    def probe():
        times = []
        for _ in range(3):
            out = subprocess.run([exe], capture_output=True, text=True)
            if out.returncode != 0:
                return None
            times.append(float(out.stdout))
        return min(times)

    return probe


def ms(seconds):
    return f"{seconds * 1e3:7.3f} ms"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--floor-reps", type=int, default=200)
    p.add_argument("--torch-steps", type=int, default=900)
    p.add_argument("--data-dir", default=os.path.join(ROOT, ".data/fashion-mnist"))
    p.add_argument("--kiln-bin", default=os.path.join(ROOT, "target/release/kiln"))
    p.add_argument("--save", help="write the medians to this JSON file")
    p.add_argument("--before", help="a JSON file written by --save earlier, shown beside")
    args = p.parse_args()
    if args.worker:
        return floor_worker(args)

    worker = [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--worker",
              "--threads", str(args.threads), "--data-dir", args.data_dir,
              "--floor-reps", str(args.floor_reps), "--torch-steps", str(args.torch_steps)]
    kiln, torch_runs, round_trips = [], [], []
    tmp = tempfile.mkdtemp(prefix="kiln-floor-probe-")
    try:
        probe = core_latency_probe(tmp)
        for rep in range(args.reps):
            before = probe() if probe else None
            kiln.append(kiln_run(args))
            out = subprocess.run(worker, check=True, capture_output=True, text=True).stdout
            torch_runs.append(json.loads(out.strip().splitlines()[-1]))
            after = probe() if probe else None
            round_trips.append(None if before is None or after is None else max(before, after))
            where = "" if round_trips[-1] is None else f", CPU round trip {round_trips[-1]:.0f} ns"
            print(f"rep {rep + 1}: kiln step {ms(kiln[-1]['step'])}, pytorch eager step {ms(torch_runs[-1]['torch_step'])}, "
                  f"gemm floor {ms(torch_runs[-1]['gemm'])}{where}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = lambda xs: statistics.median(xs)
    r = {
        "threads": args.threads,
        "load": os.getloadavg(),
        "gemm": med([t["gemm"] for t in torch_runs]),
        "bandwidth": med([t["bandwidth"] for t in torch_runs]),
        "optimizer_floor": med([t["optimizer_floor"] for t in torch_runs]),
        "torch_step": med([t["torch_step"] for t in torch_runs]),
        "kiln_step": med([k["step"] for k in kiln]),
        "kiln_phases": {k: med([x["phases"][k] for x in kiln]) for k in PHASES},
        "torch_phases": {k: med([t["torch_phases"][k] for t in torch_runs]) for k in PHASES},
    }
    floor = r["gemm"] + r["optimizer_floor"]
    r["floor"] = floor
    numel = torch_runs[0]["numel"]
    print(f"\ntutorial step (batch {BATCH}, {args.threads} threads), medians of {args.reps} runs; "
          f"load average {r['load'][0]:.2f} at the end")
    print(f"  GEMM floor (8 products alone)          {ms(r['gemm'])}")
    print(f"  optimizer floor (5 x {numel} floats)  {ms(r['optimizer_floor'])}   "
          f"copy bandwidth {r['bandwidth'] / 1e9:.1f} GB/s")
    print(f"  floor                                  {ms(floor)}")
    print(f"  PyTorch eager step (no data loading)   {ms(r['torch_step'])}   {r['torch_step'] / floor:.2f} x floor")
    print(f"  kiln train step (metrics.jsonl)        {ms(r['kiln_step'])}   {r['kiln_step'] / floor:.2f} x floor   "
          f"{r['kiln_step'] / r['torch_step']:.2f} x PyTorch's eager step")
    # The host's speed drifts between runs (other tenants): each rep's kiln
    # run is paired with the floor and PyTorch step measured right after it,
    # and the median of those ratios is the figure that drift moves least.
    kiln_floor = [k["step"] / (t["gemm"] + t["optimizer_floor"]) for k, t in zip(kiln, torch_runs)]
    torch_floor = [t["torch_step"] / (t["gemm"] + t["optimizer_floor"]) for t in torch_runs]
    kiln_torch = [k["step"] / t["torch_step"] for k, t in zip(kiln, torch_runs)]
    r["paired"] = {"kiln_floor": kiln_floor, "torch_floor": torch_floor, "kiln_torch": kiln_torch,
                   "round_trip_ns": round_trips}
    fmt = lambda xs: " ".join(f"{x:.2f}" for x in xs)
    print(f"  paired per rep: kiln / floor {fmt(kiln_floor)} (median {med(kiln_floor):.2f}); "
          f"PyTorch / floor {fmt(torch_floor)} (median {med(torch_floor):.2f}); "
          f"kiln / PyTorch {fmt(kiln_torch)} (median {med(kiln_torch):.2f})")
    # A VM's two vCPUs may sit on cores that share no cache (the host moves
    # them); then every two-thread step pays cross-die cache traffic, kiln's
    # and PyTorch's alike. Reps are split by the round trip measured around them.
    if all(t is not None for t in round_trips):
        shared = [i for i, t in enumerate(round_trips) if t < SHARED_CACHE_NS]
        split = [i for i, t in enumerate(round_trips) if t >= SHARED_CACHE_NS]
        for name, reps in (("sharing a cache", shared), ("not sharing a cache", split)):
            if reps:
                pick = lambda xs: med([xs[i] for i in reps])
                print(f"  reps with the two CPUs {name} (round trip < or >= {SHARED_CACHE_NS} ns): {len(reps)}; "
                      f"kiln / floor {pick(kiln_floor):.2f}, PyTorch / floor {pick(torch_floor):.2f}, "
                      f"kiln / PyTorch {pick(kiln_torch):.2f}")
    # On a shared machine a step that loses its core for a time slice puts
    # the loss in one phase; each phase's median stays near the uncontended
    # figure while the median step does not, so their sum is shown too.
    kiln_sum = sum(r["kiln_phases"][k] for k in PHASES)
    torch_sum = sum(r["torch_phases"][k] for k in PHASES if k != "data")
    print(f"  kiln, sum of phase medians             {ms(kiln_sum)}   {kiln_sum / floor:.2f} x floor   "
          f"{kiln_sum / torch_sum:.2f} x PyTorch's (no data: {ms(torch_sum)}, {torch_sum / floor:.2f} x floor)")
    before = None
    if args.before:
        with open(args.before) as f:
            before = json.load(f)
    head = f"  {'phase':<10} {'kiln':>10} {'pytorch':>10}"
    if before:
        head += f" {'kiln before':>12} {'pytorch before':>15}"
    print("\nper-phase split (medians per step; other = reading the loss, callbacks, metrics):")
    print(head)
    for k in PHASES + ["total"]:
        kv = r["kiln_step"] if k == "total" else r["kiln_phases"][k]
        tv = r["torch_step"] + r["torch_phases"]["data"] if k == "total" else r["torch_phases"][k]
        line = f"  {k:<10} {kv * 1e3:7.3f} ms {tv * 1e3:7.3f} ms"
        if before:
            bk = before["kiln_step"] if k == "total" else before["kiln_phases"][k]
            bt = (before["torch_step"] + before["torch_phases"]["data"]) if k == "total" else before["torch_phases"][k]
            line += f" {bk * 1e3:9.3f} ms {bt * 1e3:12.3f} ms"
        print(line)
    if before:
        bsum = sum(before["kiln_phases"][k] for k in PHASES)
        print(f"  (before: floor {ms(before['floor'])}, kiln {before['kiln_step'] / before['floor']:.2f} x floor, "
              f"{before['kiln_step'] / before['torch_step']:.2f} x PyTorch; sum of kiln's phase medians "
              f"{bsum / before['floor']:.2f} x floor; load {before['load'][0]:.2f})")
    if args.save:
        with open(args.save, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
