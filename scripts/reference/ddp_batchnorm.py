"""A small network with batch norm trained under torchrun with
DistributedDataParallel (gloo, broadcast_buffers=True): the reference for
kiln's buffer broadcasts (tests/ddp_batchnorm.rs: same data, same steps).
Every rank saves its final state dict (parameters and running statistics,
without num_batches_tracked, which tch's BatchNorm lacks) to
OUT/rank{R}.safetensors.

    PYTHONPATH=.libtorch python3 -m torch.distributed.run --standalone --nproc-per-node 2 \\
        scripts/reference/ddp_batchnorm.py --seed 1 --steps 5 --batch 8 --out /tmp/bn
"""
import argparse
import os
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ddp_quickstart import leave_process_group  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 16)
        self.bn = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model = Net()
    n = args.steps * world * args.batch
    x = torch.randn(n, 20)
    y = torch.randint(4, (n,))
    ddp = DDP(model)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    for s in range(args.steps):
        start = (s * world + rank) * args.batch
        loss = loss_fn(ddp(x[start : start + args.batch]), y[start : start + args.batch])
        loss.backward()
        opt.step()
        opt.zero_grad()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, os.path.join(args.out, f"rank{rank}.safetensors"))
    leave_process_group()


if __name__ == "__main__":
    main()
