"""A TorchScript model trained by PyTorch, as kiln's reference for `--model torchscript:PATH`.

Three commands:

    write OUT.pt [--seed S] [--trace]
        Builds `SmallNet` (Conv2d, BatchNorm2d, ReLU, max_pool2d, Dropout,
        Linear: parameters, buffers and both train/eval behaviours), seeded,
        and saves `torch.jit.script(model)` (or `torch.jit.trace`) with
        torch.jit.save.
    train MODEL.pt --seed S [--epochs E --lr X --train-samples N ...] [--out W.safetensors]
        torch.jit.load(MODEL.pt), then the quickstart tutorial's loop and
        printing (scripts/reference/quickstart.py) with CrossEntropyLoss and
        Adam(lr) — what `kiln train --model torchscript:MODEL.pt --optimizer
        adam:lr=X --seed S ...` runs — and saves the trained state dict with
        safetensors.torch.save_file. With `--ema DECAY --averaged-out
        A.safetensors`: an EMA AveragedModel (use_buffers=True) updated after
        every optimizer step, tested, and its state dict saved to A. With `--swa START:lr=X[,anneal_epochs=N,
        anneal_strategy=S] --averaged-out A.safetensors`: torch.optim.swa_utils'
        SWA (AveragedModel + SWALR from epoch START, the averaged model
        tested), then `swa_utils.update_bn(train_loader, averaged)` and the
        averaged model's state dict saved to A. `update_bn` changes nothing
        on a scripted model: its BatchNorm2d is no `_BatchNorm` (and its
        momentum is a compiled constant), so the averaged model keeps the
        statistics AveragedModel copied at its last update.
    eval MODEL.pt[+W.safetensors] ... [--test-samples N]
        For each argument: loads MODEL.pt (and, with +W,
        `load_state_dict(load_file(W), strict=True)`) and prints the
        tutorial's test report.

    PYTHONPATH=.libtorch python3 scripts/reference/torchscript_cnn.py write /tmp/m.pt --seed 3
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim import swa_utils
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quickstart  # noqa: E402
from quickstart import IdxImages, test, train  # noqa: E402


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.bn1 = nn.BatchNorm2d(8)
        self.dropout = nn.Dropout(0.25)
        self.fc = nn.Linear(8 * 13 * 13, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 2)
        x = self.dropout(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def data(args, prefix, n):
    ds = IdxImages(args.data_dir, prefix)
    return ds if n is None else Subset(ds, range(min(n, len(ds))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["write", "train", "eval"])
    p.add_argument("model", nargs="+")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trace", action="store_true")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int)
    p.add_argument("--data-dir", default=os.environ.get("KILN_DATA_DIR", ".data/fashion-mnist"))
    p.add_argument("--train-samples", type=int)
    p.add_argument("--test-samples", type=int)
    p.add_argument("--out")
    p.add_argument("--ema", type=float, help="EMA decay (buffers averaged too)")
    p.add_argument("--swa", help="START:lr=X[,anneal_epochs=N,anneal_strategy=cos|linear]")
    p.add_argument("--averaged-out")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.command == "write":
        torch.manual_seed(args.seed)
        model = SmallNet()
        if args.trace:
            module = torch.jit.trace(model, torch.rand(2, 1, 28, 28))
        else:
            module = torch.jit.script(model)
        torch.jit.save(module, args.model[0])
        return

    if args.command == "eval":
        test_data = data(args, "t10k", args.test_samples)
        for item in args.model:
            path, _, weights = item.partition("+")
            model = torch.jit.load(path)
            if weights:
                model.load_state_dict(load_file(weights), strict=True)
            test(DataLoader(test_data, batch_size=args.batch_size), model, nn.CrossEntropyLoss())
        return

    training_data = data(args, "train", args.train_samples)
    test_data = data(args, "t10k", args.test_samples)
    torch.manual_seed(args.seed)
    model = torch.jit.load(args.model[0])
    train_dataloader = DataLoader(training_data, batch_size=args.batch_size, shuffle=True)
    test_dataloader = DataLoader(test_data, batch_size=args.batch_size)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    averaged, swa_start, swa_scheduler = quickstart.averaging(args, model, optimizer)
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
        if args.swa:
            # PyTorch's own: a no-op here (see above).
            swa_utils.update_bn(train_dataloader, averaged)
        state = averaged.module.state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, args.averaged_out)
    if args.out:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)


if __name__ == "__main__":
    main()
