"""PyTorch's DataLoader over a dataset whose __getitem__ draws from torch's
generator (noise added to a stored sample): the batches of two epochs for
each case, as raw float32 bytes in hex, for crates/loop/tests/loader.rs.

usage: dataloader.py CASES_JSON
CASES_JSON: [{"n": 23, "batch": 4, "shuffle": true, "workers": 2, "seed": 7,
              "replicas": null | [num_replicas, rank]}, ...]
"""
import json
import sys

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


class Noisy(Dataset):
    """Sample i: base[i] + torch.randn(3) (the worker's or the global generator)."""

    def __init__(self, n):
        self.base = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
        self.labels = torch.arange(n) % 5

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return {"inputs": self.base[i] + torch.randn(3), "targets": self.labels[i]}


def hexes(t):
    return t.contiguous().view(torch.uint8).numpy().tobytes().hex()


def run(case):
    torch.manual_seed(case["seed"])
    ds = Noisy(case["n"])
    kwargs = dict(batch_size=case["batch"], num_workers=case["workers"])
    sampler = None
    if case["replicas"] is not None:
        replicas, rank = case["replicas"]
        sampler = DistributedSampler(ds, num_replicas=replicas, rank=rank,
                                     shuffle=case["shuffle"], seed=case["seed"])
        loader = DataLoader(ds, sampler=sampler, **kwargs)
    else:
        loader = DataLoader(ds, shuffle=case["shuffle"], **kwargs)
    epochs = []
    for epoch in range(2):
        if sampler is not None:
            sampler.set_epoch(epoch)
        epochs.append([[hexes(b["inputs"]), b["targets"].tolist()] for b in loader])
    # What the main process's generator did: it draws the base (and sampler) seeds.
    return {"epochs": epochs, "after": torch.rand(1).item()}


if __name__ == "__main__":
    print(json.dumps([run(c) for c in json.loads(sys.argv[1])]))
