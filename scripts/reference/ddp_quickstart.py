"""The PyTorch quickstart job, data-parallel under torchrun: kiln's reference
for `mpirun -n N kiln train --distributed mpi`.

Every rank builds the tutorial's model from the same seed, wraps it in
DistributedDataParallel (gloo backend, CPU, DDP's defaults: 25 MiB buckets
with a 1 MiB first one, broadcast_buffers=True) and trains on its shard of
each epoch (DistributedSampler with the run's seed, set_epoch(epoch));
`--batch-size` is per rank. With `--accumulate-grad-batches K` each batch's
loss is divided by K and the K-1 batches before a step run under
`ddp.no_sync()`, as kiln does. Evaluation runs through the DDP module on
each rank's strided, unpadded slice of the test set and sums the totals over
ranks, as kiln does. Rank 0 prints the tutorial's lines and, with `--out`,
saves the final state dict (safetensors, PyTorch's names).

    PYTHONPATH=.libtorch python3 -m torch.distributed.run --standalone --nproc-per-node 2 \\
        scripts/reference/ddp_quickstart.py --seed 0 --epochs 1 --train-samples 6400 --out /tmp/ddp.safetensors
"""
import argparse
import contextlib
import os
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Subset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quickstart import NeuralNetwork, add_job_arguments, datasets  # noqa: E402


def train(dataloader, model, loss_fn, optimizer, accumulate, rank):
    size = len(dataloader.dataset)
    batches = len(dataloader)
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        step_now = (batch + 1) % accumulate == 0 or batch + 1 == batches
        with contextlib.nullcontext() if step_now else model.no_sync():
            pred = model(X)
            loss = loss_fn(pred, y)
            scaled = loss / accumulate if accumulate > 1 else loss
            scaled.backward()
        if step_now:
            optimizer.step()
            optimizer.zero_grad()
        if batch % 100 == 0 and rank == 0:
            loss, current = loss.item(), batch * len(X)
            print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")


def test(dataloader, model, loss_fn, rank):
    model.eval()
    test_loss, correct, batches, samples = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for X, y in dataloader:
            pred = model(X)
            test_loss += loss_fn(pred, y).item()
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()
            batches += 1
            samples += len(y)
    totals = torch.tensor([test_loss, correct, float(batches), float(samples)], dtype=torch.float64)
    dist.all_reduce(totals)
    test_loss, correct, batches, samples = totals.tolist()
    if rank == 0:
        print(f"Test Error: \n Accuracy: {(100*correct/samples):>0.1f}%, Avg loss: {test_loss/batches:>8f} \n")


def leave_process_group():
    """Ends the rank together with the others and exits without tearing gloo
    down: its teardown (destroy_process_group, or the interpreter's exit)
    aborts a rank now and then with "terminate called without an active
    exception", barrier or not. Call it once everything is written."""
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main():
    p = argparse.ArgumentParser()
    add_job_arguments(p, seed_required=True, threads=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--accumulate-grad-batches", type=int, default=1)
    p.add_argument("--bucket-cap-mb", type=float)
    p.add_argument("--out", help="save rank 0's final state dict here (safetensors)")
    args = p.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(args.threads)
    training_data, test_data = datasets(args)
    torch.manual_seed(args.seed)
    model = NeuralNetwork()
    ddp = DDP(model, bucket_cap_mb=args.bucket_cap_mb)
    sampler = DistributedSampler(
        training_data, num_replicas=world, rank=rank, shuffle=not args.no_shuffle, seed=args.seed
    )
    train_dataloader = DataLoader(training_data, batch_size=args.batch_size, sampler=sampler)
    test_shard = Subset(test_data, range(rank, len(test_data), world))
    test_dataloader = DataLoader(test_shard, batch_size=args.batch_size)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=args.momentum)
    for t in range(args.epochs):
        sampler.set_epoch(t)
        if rank == 0:
            print(f"Epoch {t+1}\n-------------------------------")
        train(train_dataloader, ddp, loss_fn, optimizer, args.accumulate_grad_batches, rank)
        test(test_dataloader, ddp, loss_fn, rank)
    if rank == 0:
        print("Training completed")
        if args.out:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
    leave_process_group()


if __name__ == "__main__":
    main()
