"""The PyTorch quickstart training job, as kiln's reference.

This is the tutorial's program (https://pytorch.org/tutorials/beginner/basics/quickstart_tutorial.html)
with FashionMNIST read straight from the IDX files (no torchvision) and the same
flags as `kiln train`. Datasets apply ToTensor's arithmetic per sample
(`uint8.to(float32).div(255)`), and DataLoader/RandomSampler are PyTorch's own,
so this consumes the global generator exactly as the tutorial does.

    PYTHONPATH=.libtorch python3 scripts/reference/quickstart.py --seed 0 --epochs 1

`--ema DECAY` and `--swa START:lr=X[,anneal_epochs=N,anneal_strategy=S]` add
torch.optim.swa_utils' weight averaging as its documentation drives it (an
EMA `AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY),
use_buffers=True)` updated after every `optimizer.step()`; for SWA,
`AveragedModel(model)` + `SWALR`, updated and stepped after each epoch from
START on); the test loop then evaluates the averaged model, and
`--averaged-out FILE` saves its `module.state_dict()` at the end.
"""
import argparse
import contextlib
import gzip
import os
import struct
import sys

import torch
from torch import nn
from torch.optim import swa_utils
from torch.utils.data import DataLoader, Dataset, Subset


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, rank = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08, f"{path}: not an unsigned-byte IDX file"
    dims = struct.unpack(">" + "I" * rank, data[4 : 4 + 4 * rank])
    body = bytearray(data[4 + 4 * rank :])
    return torch.frombuffer(body, dtype=torch.uint8).reshape(dims)


def find(data_dir, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    sys.exit(f"{data_dir}: no {stem}[.gz]")


class IdxImages(Dataset):
    """torchvision.datasets.FashionMNIST with transform=ToTensor()."""

    def __init__(self, data_dir, prefix):
        self.images = read_idx(find(data_dir, f"{prefix}-images-idx3-ubyte"))
        self.labels = read_idx(find(data_dir, f"{prefix}-labels-idx1-ubyte"))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        img = self.images[index].unsqueeze(0).to(dtype=torch.float32).div(255)
        return img, int(self.labels[index])


class NeuralNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


# Mixed precision (kiln's --precision; Lightning's names): autocast around
# forward and loss; 16-mixed also scales the loss with GradScaler("cpu").
AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
PRECISION = "32-true"
SCALER = None
# --ema: the AveragedModel updated after every optimizer step.
EMA = None


DEVICE = "cpu"


def add_job_arguments(p, seed_required=False, threads=None):
    """The flags every reference job shares: epochs, batch size, seed,
    threads and the data (directory, order, sample counts for `datasets`)."""
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, required=seed_required)
    p.add_argument("--threads", type=int, default=threads)
    p.add_argument("--data-dir", default=os.environ.get("KILN_DATA_DIR", ".data/fashion-mnist"))
    p.add_argument("--no-shuffle", action="store_true")
    p.add_argument("--train-samples", type=int)
    p.add_argument("--test-samples", type=int)


def datasets(args):
    """FashionMNIST's train and test sets, cut to --train-samples/--test-samples."""
    training_data = IdxImages(args.data_dir, "train")
    test_data = IdxImages(args.data_dir, "t10k")
    if args.train_samples is not None:
        training_data = Subset(training_data, range(min(args.train_samples, len(training_data))))
    if args.test_samples is not None:
        test_data = Subset(test_data, range(min(args.test_samples, len(test_data))))
    return training_data, test_data


def autocast():
    dtype = AUTOCAST[PRECISION]
    return torch.autocast(DEVICE, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def train(dataloader, model, loss_fn, optimizer):
    size = len(dataloader.dataset)
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        X, y = X.to(DEVICE), y.to(DEVICE)
        with autocast():
            pred = model(X)
            loss = loss_fn(pred, y)
        if SCALER is not None:
            SCALER.scale(loss).backward()
            SCALER.step(optimizer)
            SCALER.update()
        else:
            loss.backward()
            optimizer.step()
        if EMA is not None:
            EMA.update_parameters(model)
        optimizer.zero_grad()
        if batch % 100 == 0:
            loss, current = loss.item(), batch * len(X)
            print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")


def test(dataloader, model, loss_fn):
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    model.eval()
    test_loss, correct = 0, 0
    with torch.no_grad():
        for X, y in dataloader:
            X, y = X.to(DEVICE), y.to(DEVICE)
            with autocast():
                pred = model(X)
                batch_loss = loss_fn(pred, y)
            test_loss += batch_loss.item()
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    test_loss /= num_batches
    correct /= size
    print(f"Test Error: \n Accuracy: {(100*correct):>0.1f}%, Avg loss: {test_loss:>8f} \n")


def averaging(args, model, optimizer):
    """`--ema DECAY` / `--swa START:lr=X[,anneal_epochs=N,anneal_strategy=S]`:
    the AveragedModel (the EMA one also as the global `EMA` that `train`
    updates after every step), SWA's start epoch and its SWALR."""
    global EMA
    averaged, swa_start, swa_scheduler = None, None, None
    if args.ema is not None:
        averaged = EMA = swa_utils.AveragedModel(
            model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(args.ema), use_buffers=True
        )
    if args.swa:
        start, _, options = args.swa.partition(":")
        options = dict(kv.split("=", 1) for kv in options.split(",") if kv)
        swa_start = int(start)
        averaged = swa_utils.AveragedModel(model)
        swa_scheduler = swa_utils.SWALR(
            optimizer,
            swa_lr=float(options["lr"]),
            anneal_epochs=int(options.get("anneal_epochs", 10)),
            anneal_strategy=options.get("anneal_strategy", "cos"),
        )
    return averaged, swa_start, swa_scheduler


def main():
    p = argparse.ArgumentParser()
    add_job_arguments(p)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--precision", choices=sorted(AUTOCAST), default="32-true")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the data moves to it batch by batch)")
    p.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms(True)")
    p.add_argument("--ema", type=float, help="EMA decay")
    p.add_argument("--swa", help="START:lr=X[,anneal_epochs=N,anneal_strategy=cos|linear]")
    p.add_argument("--averaged-out", help="save the averaged model's state dict (safetensors)")
    args = p.parse_args()
    global PRECISION, SCALER, DEVICE
    PRECISION, DEVICE = args.precision, args.device
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    if PRECISION == "16-mixed":
        SCALER = torch.amp.GradScaler(torch.device(DEVICE).type)

    if args.threads:
        torch.set_num_threads(args.threads)
    training_data, test_data = datasets(args)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    model = NeuralNetwork().to(DEVICE)
    train_dataloader = DataLoader(training_data, batch_size=args.batch_size, shuffle=not args.no_shuffle)
    test_dataloader = DataLoader(test_data, batch_size=args.batch_size)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    averaged, swa_start, swa_scheduler = averaging(args, model, optimizer)
    for t in range(args.epochs):
        print(f"Epoch {t+1}\n-------------------------------")
        train(train_dataloader, model, loss_fn, optimizer)
        if swa_start is not None and t + 1 >= swa_start:
            averaged.update_parameters(model)
            swa_scheduler.step()
        evaluated = averaged if averaged is not None and averaged.n_averaged > 0 else model
        test(test_dataloader, evaluated, loss_fn)
    print("Training completed")
    if args.averaged_out:
        from safetensors.torch import save_file

        save_file(averaged.module.state_dict(), args.averaged_out)


if __name__ == "__main__":
    main()
