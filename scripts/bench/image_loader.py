"""Image folders in kiln against PyTorch's DataLoader (issue 22), on this machine.

    PYTHONPATH=.libtorch python3 scripts/bench/image_loader.py --kiln-bin target/release/kiln

Writes 3200 FashionMNIST images (scripts/reference/make_image_folder.py) as
PNG and again as JPEG, then for each format, alternating kiln and PyTorch
--reps times with the same thread count and --workers data workers:
  - one training epoch (the pipeline random-resized-crop 24, horizontal flip,
    normalize; a small MLP, Linear 1728->64, ReLU, Linear 64->10; SGD):
    kiln's `epoch_train_seconds` (metrics_epoch.csv) against the same loop
    timed in PyTorch (ImageFolder + transforms.v2 + DataLoader(num_workers=N)),
    medians and the ratio kiln/PyTorch;
  - decode + transform throughput in samples/s: PyTorch's DataLoader
    iterated alone; kiln's epoch with a one-unit MLP (loader-bound: its
    training step is a few microseconds), 3200 / epoch_train_seconds.
Worker start-up is inside every figure on both sides (PyTorch starts its
worker processes at each epoch, kiln its threads).
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts", "reference"))
from image_folder import pipeline  # noqa: E402  (kiln's canonical pipeline in transforms.v2)

NORM = "normalize:mean=0.5;0.5;0.5,std=0.5;0.5;0.5"
TRANSFORMS = ["random-resized-crop:size=24,scale=0.5;1.0", "random-horizontal-flip", NORM]
TEST_TRANSFORMS = ["center-crop:size=24", NORM]


def kiln_epoch(args, folder, run, hidden):
    cmd = [args.kiln_bin, "train", "--seed", "0", "--epochs", "1", "--batch-size", str(args.batch_size),
           "--workers", str(args.workers), "--threads", str(args.threads), "--quiet",
           "--data", f"images:{folder}/train,test={folder}/test", "--model", f"mlp:hidden={hidden}",
           "--run-dir", run]
    for t in TRANSFORMS:
        cmd += ["--transform", t]
    for t in TEST_TRANSFORMS:
        cmd += ["--test-transform", t]
    subprocess.run(cmd, check=True)
    with open(os.path.join(run, "metrics_epoch.csv")) as f:
        return float(next(csv.DictReader(f))["epoch_train_seconds"])


def torch_epoch(args, folder, train):
    data = ImageFolder(os.path.join(folder, "train"), transform=pipeline(TRANSFORMS))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    torch.manual_seed(0)
    if not train:
        start = time.perf_counter()
        for _ in loader:
            pass
        return time.perf_counter() - start, len(data)
    features = data[0][0].numel()
    model = nn.Sequential(nn.Flatten(), nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, len(data.classes)))
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    start = time.perf_counter()
    for X, y in loader:
        loss = loss_fn(model(X), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start, len(data)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kiln-bin", default=os.path.join(ROOT, "target", "release", "kiln"))
    p.add_argument("--images", type=int, default=3200, help="training images (a multiple of 10)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--data-dir", default=os.environ.get("KILN_DATA_DIR", os.path.join(ROOT, ".data", "fashion-mnist")))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="kiln-image-bench-") as tmp:
        print(f"image folders: {args.images} FashionMNIST images (28x28 RGB), batch {args.batch_size}, "
              f"{args.workers} workers, {args.threads} threads, median of {args.reps}")
        for fmt in ("png", "jpeg"):
            folder = os.path.join(tmp, fmt)
            subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "reference", "make_image_folder.py"), folder,
                            "--per-class", str(args.images // 10), "--test-per-class", "2", "--format", fmt,
                            "--data-dir", args.data_dir], check=True)
            k_epoch, t_epoch, k_load, t_load = [], [], [], []
            for rep in range(args.reps):
                k_epoch.append(kiln_epoch(args, folder, os.path.join(tmp, f"{fmt}-epoch-{rep}"), 64))
                t_epoch.append(torch_epoch(args, folder, True)[0])
                k_load.append(args.images / kiln_epoch(args, folder, os.path.join(tmp, f"{fmt}-load-{rep}"), 1))
                seconds, n = torch_epoch(args, folder, False)
                t_load.append(n / seconds)
            ke, te = statistics.median(k_epoch), statistics.median(t_epoch)
            print(f"{fmt:>4}: training epoch  kiln {ke:7.3f} s   PyTorch {te:7.3f} s   kiln/PyTorch {ke / te:5.2f}")
            print(f"{fmt:>4}: decode+transform kiln {statistics.median(k_load):7.0f} samples/s   "
                  f"PyTorch {statistics.median(t_load):7.0f} samples/s")


if __name__ == "__main__":
    main()
