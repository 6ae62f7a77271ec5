"""kiln vs PyTorch on the tutorial job, same machine, same threads.

What users run is timed: `kiln train` itself (the Trainer with its callbacks,
metric files and checkpoints) against the tutorial's own `train()` on
preloaded tensors, alternated `--reps` times:
- the train epoch: kiln's `epoch_train_seconds` (from its first batch to the
  end of its last, as its metrics.jsonl records it) vs the time PyTorch's
  `train(dataloader, model, loss_fn, optimizer)` takes;
- the whole process: `kiln train --epochs 1` (start-up, data loading, one
  epoch, the test pass, files) vs `python scripts/reference/quickstart.py
  --epochs 1`, wall clock;
- the cost of `--logger tensorboard` on kiln's epoch;
- `--precision bf16-mixed` against `32-true`, kiln and PyTorch (autocast on
  the CPU; bf16 may be slower than float32 without AMX).
Medians and the ratios kiln/PyTorch are printed. With --worker torch it runs
one PyTorch epoch on preloaded tensors and prints {"seconds": S}.
"""
import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def torch_epoch(args):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    sys.path.insert(0, os.path.join(ROOT, "scripts/reference"))
    from quickstart import NeuralNetwork, find, read_idx, train

    import quickstart

    quickstart.PRECISION = args.precision
    torch.set_num_threads(args.threads)
    images = read_idx(find(args.data_dir, "train-images-idx3-ubyte")).unsqueeze(1).to(torch.float32).div(255)
    labels = read_idx(find(args.data_dir, "train-labels-idx1-ubyte")).to(torch.int64)
    torch.manual_seed(0)
    model = NeuralNetwork()
    loader = DataLoader(TensorDataset(images, labels), batch_size=64, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    start = time.perf_counter()
    # The tutorial's own train loop; its progress lines go to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        train(loader, model, loss_fn, optimizer)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def wall(cmd, env=None):
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return time.perf_counter() - start, out


def kiln_run(args, extra=()):
    """One `kiln train --epochs 1`: (whole-process seconds, train-epoch seconds)."""
    run = tempfile.mkdtemp(prefix="kiln-bench-")
    shutil.rmtree(run)
    try:
        cmd = [args.kiln_bin, "train", "--epochs", "1", "--seed", "0", "--threads", str(args.threads),
               "--data-dir", args.data_dir, "--run-dir", run, "--quiet", *extra]
        seconds, _ = wall(cmd)
        with open(os.path.join(run, "metrics.jsonl")) as f:
            epoch = [json.loads(l) for l in f if '"scope":"epoch"' in l][-1]
        return seconds, epoch["values"]["epoch_train_seconds"]
    finally:
        shutil.rmtree(run, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=["torch"])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--data-dir", default=os.path.join(ROOT, ".data/fashion-mnist"))
    p.add_argument("--kiln-bin", default=os.path.join(ROOT, "target/release/kiln"))
    p.add_argument("--precision", default="32-true")
    args = p.parse_args()
    if args.worker == "torch":
        return torch_epoch(args)

    common = ["--threads", str(args.threads), "--data-dir", args.data_dir]
    quickstart = [sys.executable, "-W", "ignore", os.path.join(ROOT, "scripts/reference/quickstart.py"),
                  "--epochs", "1", "--seed", "0", *common]
    t = {"kiln epoch": [], "pytorch epoch": [], "kiln process": [], "pytorch process": []}
    for rep in range(args.reps):
        process, epoch = kiln_run(args)
        t["kiln epoch"].append(epoch)
        t["kiln process"].append(process)
        _, out = wall([sys.executable, "-W", "ignore", __file__, "--worker", "torch", *common])
        t["pytorch epoch"].append(json.loads(out.strip().splitlines()[-1])["seconds"])
        t["pytorch process"].append(wall(quickstart)[0])
        print("rep {}: ".format(rep + 1) + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in t.items()), flush=True)
    # The cost of the TensorBoard logger, and bf16-mixed, in the same run.
    tb, bf16, bf16_torch = [], [], []
    for rep in range(args.reps):
        tb.append(kiln_run(args, ["--logger", "csv,jsonl,tensorboard"])[1])
        bf16.append(kiln_run(args, ["--precision", "bf16-mixed"])[1])
        _, out = wall([sys.executable, "-W", "ignore", __file__, "--worker", "torch", *common,
                       "--precision", "bf16-mixed"])
        bf16_torch.append(json.loads(out.strip().splitlines()[-1])["seconds"])
    m = {k: statistics.median(v) for k, v in t.items()}
    print(f"tutorial job, 60000 samples, batch 64, {args.threads} threads; medians of {args.reps}:")
    print(f"  train epoch    kiln train {m['kiln epoch']:.3f} s   pytorch train() {m['pytorch epoch']:.3f} s"
          f"   ratio kiln/pytorch = {m['kiln epoch'] / m['pytorch epoch']:.3f}")
    print(f"  whole process  kiln train {m['kiln process']:.3f} s   quickstart.py   {m['pytorch process']:.3f} s"
          f"   ratio kiln/pytorch = {m['kiln process'] / m['pytorch process']:.3f}")
    tb_m = statistics.median(tb)
    print(f"  --logger tensorboard: epoch {tb_m:.3f} s vs {m['kiln epoch']:.3f} s without,"
          f" cost {100 * (tb_m / m['kiln epoch'] - 1):+.1f} %")
    b, bt = statistics.median(bf16), statistics.median(bf16_torch)
    print(f"  bf16-mixed     kiln train {b:.3f} s ({b / m['kiln epoch']:.2f}x its 32-true)"
          f"   pytorch train() {bt:.3f} s ({bt / m['pytorch epoch']:.2f}x)   ratio kiln/pytorch = {b / bt:.3f}")


if __name__ == "__main__":
    main()
