"""`make gpu-check`: kiln on a CUDA GPU against PyTorch on the same GPU.

Run it on a machine with a CUDA GPU and this project's libtorch (torch
2.11.0, the CUDA wheel): build kiln elsewhere if there is no Rust toolchain,
carry `target/release/kiln` over, and point LD_LIBRARY_PATH at that torch's
`lib` directory. It checks, and prints a report of:

1. parity: the tutorial job with `--device cuda --deterministic` (and
   CUBLAS_WORKSPACE_CONFIG=:4096:8, as PyTorch's determinism needs) prints
   the same log as `scripts/reference/quickstart.py --device cuda
   --deterministic` with the same seed, in `32-true`, `bf16-mixed` and
   `16-mixed` (PyTorch's AMP: torch.autocast("cuda") + GradScaler("cuda"));
   the first differing line is shown otherwise;
2. the NCCL path with one rank (`mpirun -n 1 kiln train --distributed nccl`),
   when `mpirun` exists and kiln was built with the `nccl` feature;
3. a checkpoint written on the GPU resumed on the CPU, and back;
4. epoch times, kiln's `kiln train` epoch (`epoch_train_seconds`) beside
   PyTorch's tutorial `train()` on preloaded GPU tensors, per precision.

`--device cpu` runs the same checks on the CPU (the NCCL step is skipped),
which is how the script itself is tested where there is no GPU.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISIONS = ["32-true", "bf16-mixed", "16-mixed"]


def run(cmd, env=None, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    return p


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a.splitlines(), b.splitlines())):
        if x != y:
            return f"line {i + 1}: kiln {x!r} vs pytorch {y!r}"
    if len(a.splitlines()) != len(b.splitlines()):
        return f"kiln printed {len(a.splitlines())} lines, pytorch {len(b.splitlines())}"
    return None


def torch_epoch_seconds(args, precision):
    """PyTorch's tutorial train() on preloaded device tensors, one epoch."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    sys.path.insert(0, os.path.join(ROOT, "scripts/reference"))
    import quickstart as q

    q.PRECISION, q.DEVICE = precision, args.device
    q.SCALER = torch.amp.GradScaler(torch.device(args.device).type) if precision == "16-mixed" else None
    images = q.read_idx(q.find(args.data_dir, "train-images-idx3-ubyte")).unsqueeze(1).to(torch.float32).div(255)
    labels = q.read_idx(q.find(args.data_dir, "train-labels-idx1-ubyte")).to(torch.int64)
    images, labels = images.to(args.device), labels.to(args.device)
    torch.manual_seed(0)
    model = q.NeuralNetwork().to(args.device)
    loader = DataLoader(TensorDataset(images, labels), batch_size=64, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        stdout, sys.stdout = sys.stdout, devnull
        try:
            q.train(loader, model, nn.CrossEntropyLoss(), optimizer)
        finally:
            sys.stdout = stdout
    sync()
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kiln-bin", default=os.path.join(ROOT, "target/release/kiln"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir", default=os.path.join(ROOT, ".data/fashion-mnist"))
    p.add_argument("--train-samples", type=int, default=12800, help="for the parity runs")
    p.add_argument("--reps", type=int, default=3, help="epoch-time repetitions (medians)")
    p.add_argument("--worker", nargs=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps({"seconds": torch_epoch_seconds(args, args.worker[0])}))
        return 0

    import torch

    env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8")
    report, failures = [], 0
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("gpu-check: no CUDA GPU visible to PyTorch; run it on a GPU machine (or --device cpu)")
            return 2
        report.append(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        report.append(f"device {args.device} (no GPU: the script's own check), torch {torch.__version__}")
    scratch = tempfile.mkdtemp(prefix="kiln-gpu-check-")
    base = ["--seed", "0", "--epochs", "2", "--train-samples", str(args.train_samples),
            "--test-samples", "2000", "--data-dir", args.data_dir, "--deterministic"]
    common = [*base, "--device", args.device]
    try:
        # 1. Parity per precision.
        for precision in PRECISIONS:
            ref = run([sys.executable, "-W", "ignore", os.path.join(ROOT, "scripts/reference/quickstart.py"),
                       *common, "--precision", precision], env=env)
            out = run([args.kiln_bin, "train", *common, "--precision", precision,
                       "--run-dir", os.path.join(scratch, f"parity-{precision}")], env=env, check=False)
            if out.returncode != 0:
                failures += 1
                report.append(f"parity {precision}: kiln failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            diff = first_difference(out.stdout, ref.stdout)
            if diff is None:
                report.append(f"parity {precision}: identical logs ({len(ref.stdout.splitlines())} lines)")
            else:
                failures += 1
                report.append(f"parity {precision}: DIFFERS at {diff}")
        # 2. NCCL with one rank.
        mpirun = shutil.which("mpirun")
        if not args.device.startswith("cuda"):
            report.append("nccl: skipped (no GPU)")
        elif mpirun is None:
            report.append("nccl: skipped (no mpirun on this machine)")
        else:
            root_flag = ["--allow-run-as-root"] if os.geteuid() == 0 else []
            out = run([mpirun, *root_flag, "-n", "1", args.kiln_bin, "train", *common, "--max-steps", "50",
                       "--distributed", "nccl", "--run-dir", os.path.join(scratch, "nccl")], env=env, check=False)
            ok = out.returncode == 0
            failures += 0 if ok else 1
            last = (out.stdout + out.stderr).strip().splitlines()[-1:] if not ok else []
            report.append(f"nccl one rank: {'ran 50 steps' if ok else 'FAILED ' + str(last)}")
        # 3. Checkpoint on the GPU, resume on the CPU, and back.
        moved = os.path.join(scratch, "moved")
        steps = []
        for device, max_steps in [(args.device, 30), ("cpu", 60), (args.device, 90)]:
            extra = ["--resume", moved] if steps else [*base, "--run-dir", moved, "--checkpoint-every", "10"]
            cmd = [args.kiln_bin, "train", *extra, "--device", device, "--max-steps", str(max_steps)]
            out = run(cmd, env=env, check=False)
            steps.append((device, max_steps, out.returncode))
            if out.returncode != 0:
                failures += 1
                report.append(f"resume across devices: {device} to step {max_steps} FAILED: "
                              f"{out.stderr.strip().splitlines()[-1:]}")
                break
        else:
            report.append("resume across devices: " + " -> ".join(f"{d} to step {s}" for d, s, _ in steps) + ": ok")
        # 4. Epoch times.
        report.append(f"train epoch (60000 samples, batch 64), median of {args.reps}:")
        for precision in PRECISIONS:
            kiln, torch_s = [], []
            for rep in range(args.reps):
                run_dir = os.path.join(scratch, f"time-{precision}-{rep}")
                run([args.kiln_bin, "train", "--epochs", "1", "--seed", "0", "--device", args.device,
                     "--data-dir", args.data_dir, "--precision", precision, "--quiet", "--run-dir", run_dir], env=env)
                with open(os.path.join(run_dir, "metrics.jsonl")) as f:
                    epoch = [json.loads(l) for l in f if '"scope":"epoch"' in l][-1]
                kiln.append(epoch["values"]["epoch_train_seconds"])
                w = run([sys.executable, "-W", "ignore", __file__, "--device", args.device, "--data-dir",
                         args.data_dir, "--worker", precision], env=env)
                torch_s.append(json.loads(w.stdout.strip().splitlines()[-1])["seconds"])
            k, t = statistics.median(kiln), statistics.median(torch_s)
            report.append(f"  {precision:<10} kiln {k:7.3f} s   pytorch {t:7.3f} s   ratio {k / t:.3f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("\n".join(report))
    print("gpu-check: " + ("all checks passed" if failures == 0 else f"{failures} check(s) failed"))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
