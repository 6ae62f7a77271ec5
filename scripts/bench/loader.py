"""Data-loader throughput: kiln's DataLoader (thread workers) against
PyTorch's (process workers) on the same dataset and per-sample work, for
N = 0, 1, 2 workers, in one run on this machine.

The dataset (`Augmented`, the same in crates/cli/benches/loader.rs): stored
uint8 images [3, 32, 32]; reading one converts it as ToTensor does, adds
0.1 * randn noise from the loader's generator and normalises per channel.
One shuffled pass in batches of 64 is timed per run; kiln and PyTorch runs
alternate, `--repeats` times, and medians are reported with the ratio
kiln / PyTorch (samples per second). PyTorch's workers run one libtorch
thread each, as kiln's do; the main process keeps libtorch's default.

Usage: python3 scripts/bench/loader.py --bin target/release/deps/loader-<hash>
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset


class Augmented(Dataset):
    def __init__(self, n):
        torch.manual_seed(0)
        self.images = torch.randint(256, (n, 3, 32, 32), dtype=torch.uint8)
        self.labels = torch.randint(10, (n,))
        self.mean = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
        self.std = torch.tensor([0.25, 0.25, 0.25]).view(3, 1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].to(torch.float32).div(255)
        x = x + torch.randn(3, 32, 32) * 0.1
        return (x - self.mean) / self.std, self.labels[i]


def pytorch(workers, n):
    dataset = Augmented(n)
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=workers,
                        persistent_workers=False)
    start = time.perf_counter()
    samples = 0
    for _, y in loader:
        samples += len(y)
    return samples / (time.perf_counter() - start)


def kiln(binary, workers, n):
    out = subprocess.run([binary, str(workers), str(n)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["samples_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="the loader bench binary")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin}: not an executable; build it with cargo build --release -p kiln-cli --benches")
    print(f"Data loader, {args.samples} samples [3, 32, 32] per pass, batches of 64, "
          f"median of {args.repeats} (load average {os.getloadavg()[0]:.2f})")
    print(f"{'workers':>7}  {'kiln samples/s':>15}  {'PyTorch samples/s':>18}  {'kiln / PyTorch':>14}")
    for workers in (0, 1, 2):
        k, p = [], []
        for _ in range(args.repeats):
            k.append(kiln(args.bin, workers, args.samples))
            p.append(pytorch(workers, args.samples))
        km, pm = statistics.median(k), statistics.median(p)
        print(f"{workers:>7}  {km:>15.0f}  {pm:>18.0f}  {km / pm:>13.2f}x")


if __name__ == "__main__":
    main()
