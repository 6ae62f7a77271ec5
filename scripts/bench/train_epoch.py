"""kiln vs PyTorch on the tutorial job and on the MNIST example's CNN, same machine, same threads.

What users run is timed: `kiln train` itself (the Trainer with its callbacks,
metric files and checkpoints) against PyTorch's own loops on preloaded
tensors, alternated `--reps` times:
- the tutorial's train epoch: kiln's `epoch_train_seconds` (from its first
  batch to the end of its last, as its metrics.jsonl records it) vs the time
  PyTorch's `train(dataloader, model, loss_fn, optimizer)` takes;
- `--model cnn` (pytorch/examples mnist `Net`, Adadelta(lr=1.0), nll): kiln
  train's `epoch_train_seconds` on the first `--cnn-samples` training
  samples vs the example's own `train()` loop over the same samples;
- the whole process: `kiln train --epochs 1` (start-up, data loading, one
  epoch, the test pass, files) vs `python scripts/reference/quickstart.py
  --epochs 1`, wall clock, and the peak resident memory of both processes
  (the kernel's `ru_maxrss` of each child);
- the cost of `--logger tensorboard` on kiln's epoch, and `--precision
  bf16-mixed` against `32-true` (kiln and PyTorch; autocast on the CPU),
  each as the median ratio of back-to-back runs in alternating order, so a
  shared machine's drift between runs cancels.
Medians and the ratios kiln/PyTorch are printed. With --worker torch (or
torch-cnn) it runs one PyTorch epoch on preloaded tensors and prints
{"seconds": S}.
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


def preloaded(args, n=None):
    import torch

    sys.path.insert(0, os.path.join(ROOT, "scripts/reference"))
    from quickstart import find, read_idx

    images = read_idx(find(args.data_dir, "train-images-idx3-ubyte"))[:n].unsqueeze(1).to(torch.float32).div(255)
    labels = read_idx(find(args.data_dir, "train-labels-idx1-ubyte"))[:n].to(torch.int64)
    return images, labels


def torch_epoch(args):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    sys.path.insert(0, os.path.join(ROOT, "scripts/reference"))
    from quickstart import NeuralNetwork, train

    import quickstart

    quickstart.PRECISION = args.precision
    torch.set_num_threads(args.threads)
    images, labels = preloaded(args)
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


def torch_cnn_epoch(args):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    sys.path.insert(0, os.path.join(ROOT, "scripts/reference"))
    from mnist_cnn import Net

    torch.set_num_threads(args.threads)
    images, labels = preloaded(args, args.cnn_samples)
    torch.manual_seed(0)
    model = Net()
    loader = DataLoader(TensorDataset(images, labels), batch_size=64, shuffle=True)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    start = time.perf_counter()
    # pytorch/examples mnist/main.py's train(), log_interval 10 (to stderr).
    model.train()
    for batch_idx, (data, target) in enumerate(loader):
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % 10 == 0:
            print(f"[{batch_idx * len(data)}/{len(loader.dataset)}]\tLoss: {loss.item():.6f}", file=sys.stderr)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def run(cmd):
    """(wall seconds, stdout, peak resident memory in MB) of one child process."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - start
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{cmd[:3]}... exited with {p.returncode}")
    return seconds, out, usage.ru_maxrss / 1024


def kiln_run(args, extra=()):
    """One `kiln train --epochs 1`: (whole-process seconds, train-epoch seconds, peak MB)."""
    run_dir = tempfile.mkdtemp(prefix="kiln-bench-")
    shutil.rmtree(run_dir)
    try:
        cmd = [args.kiln_bin, "train", "--epochs", "1", "--seed", "0", "--threads", str(args.threads),
               "--data-dir", args.data_dir, "--run-dir", run_dir, "--quiet", *extra]
        seconds, _, peak = run(cmd)
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            epoch = [json.loads(l) for l in f if '"scope":"epoch"' in l][-1]
        return seconds, epoch["values"]["epoch_train_seconds"], peak
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=["torch", "torch-cnn"])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cnn-samples", type=int, default=6400, help="training samples of the cnn epoch")
    p.add_argument("--data-dir", default=os.path.join(ROOT, ".data/fashion-mnist"))
    p.add_argument("--kiln-bin", default=os.path.join(ROOT, "target/release/kiln"))
    p.add_argument("--precision", default="32-true")
    args = p.parse_args()
    if args.worker == "torch":
        return torch_epoch(args)
    if args.worker == "torch-cnn":
        return torch_cnn_epoch(args)

    common = ["--threads", str(args.threads), "--data-dir", args.data_dir]
    quickstart = [sys.executable, "-W", "ignore", os.path.join(ROOT, "scripts/reference/quickstart.py"),
                  "--epochs", "1", "--seed", "0", *common]
    worker = [sys.executable, "-W", "ignore", __file__, *common, "--cnn-samples", str(args.cnn_samples)]
    cnn = ["--model", "cnn", "--optimizer", "adadelta:lr=1.0", "--train-samples", str(args.cnn_samples),
           "--test-samples", "1000"]
    t = {k: [] for k in ["kiln epoch", "pytorch epoch", "kiln cnn epoch", "pytorch cnn epoch",
                         "kiln process", "pytorch process", "kiln peak MB", "pytorch peak MB"]}
    for rep in range(args.reps):
        process, epoch, peak = kiln_run(args)
        t["kiln epoch"].append(epoch)
        t["kiln process"].append(process)
        t["kiln peak MB"].append(peak)
        _, out, _ = run([*worker, "--worker", "torch"])
        t["pytorch epoch"].append(json.loads(out.strip().splitlines()[-1])["seconds"])
        seconds, _, peak = run(quickstart)
        t["pytorch process"].append(seconds)
        t["pytorch peak MB"].append(peak)
        t["kiln cnn epoch"].append(kiln_run(args, cnn)[1])
        _, out, _ = run([*worker, "--worker", "torch-cnn"])
        t["pytorch cnn epoch"].append(json.loads(out.strip().splitlines()[-1])["seconds"])
        print("rep {}: ".format(rep + 1) + ", ".join(f"{k} {v[-1]:.3f}" for k, v in t.items()), flush=True)
    m = {k: statistics.median(v) for k, v in t.items()}
    ratio = lambda a, b: m[a] / m[b]  # noqa: E731
    print(f"kiln vs PyTorch, {args.threads} threads, batch 64; medians of {args.reps}:")
    print(f"  tutorial train epoch (60000)  kiln train {m['kiln epoch']:.3f} s   pytorch train() {m['pytorch epoch']:.3f} s"
          f"   ratio kiln/pytorch = {ratio('kiln epoch', 'pytorch epoch'):.3f}")
    print(f"  cnn train epoch ({args.cnn_samples})      kiln train {m['kiln cnn epoch']:.3f} s   example train() {m['pytorch cnn epoch']:.3f} s"
          f"   ratio kiln/pytorch = {ratio('kiln cnn epoch', 'pytorch cnn epoch'):.3f}")
    print(f"  tutorial whole process        kiln train {m['kiln process']:.3f} s   quickstart.py   {m['pytorch process']:.3f} s"
          f"   ratio kiln/pytorch = {ratio('kiln process', 'pytorch process'):.3f}")
    print(f"  tutorial peak memory          kiln train {m['kiln peak MB']:.0f} MB   quickstart.py   {m['pytorch peak MB']:.0f} MB"
          f"   ratio kiln/pytorch = {ratio('kiln peak MB', 'pytorch peak MB'):.3f}")
    # The cost of the TensorBoard logger and bf16-mixed's speed, each as the
    # median of ratios of back-to-back runs (order alternating), so that a
    # drift in the machine's speed between runs cancels.
    tb_ratio, bf16_ratio, bf16_torch_ratio, bf16, bf16_torch = [], [], [], [], []
    torch_seconds = lambda *extra: json.loads(  # noqa: E731
        run([*worker, "--worker", "torch", *extra])[1].strip().splitlines()[-1])["seconds"]
    for rep in range(max(args.reps, 5)):
        flip = rep % 2 == 1
        pair = [["--logger", "csv,jsonl"], ["--logger", "csv,jsonl,tensorboard"], ["--precision", "bf16-mixed"]]
        times = {}
        for extra in (pair[::-1] if flip else pair):
            times[tuple(extra)] = kiln_run(args, extra)[1]
        plain, tb = times[("--logger", "csv,jsonl")], times[("--logger", "csv,jsonl,tensorboard")]
        low = times[("--precision", "bf16-mixed")]
        tb_ratio.append(tb / plain)
        bf16_ratio.append(low / plain)
        bf16.append(low)
        if flip:
            t16, t32 = torch_seconds("--precision", "bf16-mixed"), torch_seconds()
        else:
            t32, t16 = torch_seconds(), torch_seconds("--precision", "bf16-mixed")
        bf16_torch_ratio.append(t16 / t32)
        bf16_torch.append(t16)
    n = len(tb_ratio)
    print(f"  --logger tensorboard: cost {100 * (statistics.median(tb_ratio) - 1):+.1f} % of the train epoch"
          f" (median of {n} back-to-back pairs; pairs ranged {100 * (min(tb_ratio) - 1):+.1f} .. {100 * (max(tb_ratio) - 1):+.1f} %)")
    b, bt = statistics.median(bf16), statistics.median(bf16_torch)
    print(f"  bf16-mixed     kiln train {b:.3f} s ({statistics.median(bf16_ratio):.2f}x its 32-true)"
          f"   pytorch train() {bt:.3f} s ({statistics.median(bf16_torch_ratio):.2f}x its 32-true)"
          f"   ratio kiln/pytorch = {b / bt:.3f}")


if __name__ == "__main__":
    main()
