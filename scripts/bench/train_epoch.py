"""kiln vs PyTorch: one training epoch of the quickstart job, same machine.

With --worker torch it runs one PyTorch epoch on preloaded tensors and prints
{"seconds": S}. Without it, it alternates kiln's bench binary and the PyTorch
worker `--reps` times each with the same thread count and prints the medians
and the ratio kiln/PyTorch.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def torch_epoch(args):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    sys.path.insert(0, os.path.join(ROOT, "scripts/reference"))
    from quickstart import NeuralNetwork, find, read_idx, train

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


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=["torch"])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--data-dir", default=os.path.join(ROOT, ".data/fashion-mnist"))
    p.add_argument("--kiln-bin", default=None)
    args = p.parse_args()
    if args.worker == "torch":
        return torch_epoch(args)

    kiln_bin = args.kiln_bin
    common = ["--threads", str(args.threads), "--data-dir", args.data_dir]
    times = {"kiln": [], "pytorch": []}
    for rep in range(args.reps):
        times["kiln"].append(run([kiln_bin, *common]))
        times["pytorch"].append(run([sys.executable, "-W", "ignore", __file__, "--worker", "torch", *common]))
        print(f"rep {rep + 1}: kiln {times['kiln'][-1]:.3f} s, pytorch {times['pytorch'][-1]:.3f} s", flush=True)
    k, t = statistics.median(times["kiln"]), statistics.median(times["pytorch"])
    print(f"train epoch (60000 samples, batch 64, {args.threads} threads), median of {args.reps}:")
    print(f"  kiln    {k:.3f} s")
    print(f"  pytorch {t:.3f} s")
    print(f"  ratio kiln/pytorch = {k / t:.3f}")


if __name__ == "__main__":
    main()
