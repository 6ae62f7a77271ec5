"""`kiln train --data images:...` in PyTorch: torchvision's ImageFolder and
transforms.v2, PyTorch's DataLoader (with num_workers worker processes) and
the quickstart tutorial's loop, with kiln's flags.

    PYTHONPATH=.libtorch python3 scripts/reference/image_folder.py --seed 0 \\
        --data images:DATA/train,test=DATA/test --workers 2 \\
        --transform random-resized-crop:size=24,scale=0.5;1.0 --transform random-horizontal-flip \\
        --test-transform center-crop:size=24

`--transform`/`--test-transform` take kiln's specs (`kiln transforms`) and
build the transforms.v2 classes of the same names with those arguments
(`a;b` lists, true/false, none); the pipeline is kiln's: ToImage(), the
transforms, ToDtype(torch.float32, scale=True) before the first float
transform (Normalize, RandomErasing) or at the end. Without `test=DIR` the
folder is split as kiln splits it: torch.randperm(n) on a generator seeded
with --seed, the first round(n * test_fraction) images for testing. The model
is the quickstart's NeuralNetwork (Linear 512, ReLU, Linear 512, ReLU, Linear
classes) over the flattened transformed image.
"""
import argparse
import os
import re
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quickstart  # noqa: E402  (the tutorial's train and test loops)


def value(text):
    """One option value of a kiln spec as Python: a;b lists, booleans, none, numbers."""
    if ";" in text:
        return [value(t) for t in text.split(";")]
    if text in ("true", "false"):
        return text == "true"
    if text == "none":
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def transform(spec):
    """The transforms.v2 object a kiln spec names (kebab-case or class name)."""
    name, _, options = spec.partition(":")
    cls = name if name[:1].isupper() else "".join(p.capitalize() for p in name.split("-"))
    kwargs = {}
    for option in filter(None, options.split(",")):
        key, _, text = option.partition("=")
        v = value(text)
        if key == "interpolation":
            v = v2.InterpolationMode[text.upper().replace("-", "_")]
        elif key == "dtype":
            v = getattr(torch, text)
        kwargs[key] = v
    return getattr(v2, cls)(**kwargs)


def pipeline(specs):
    """kiln's canonical pipeline of `specs`."""
    steps = [transform(s) for s in specs]
    if not any(isinstance(t, v2.ToDtype) for t in steps):
        at = next((i for i, t in enumerate(steps) if isinstance(t, (v2.Normalize, v2.RandomErasing))), len(steps))
        steps.insert(at, v2.ToDtype(torch.float32, scale=True))
    return v2.Compose([v2.ToImage(), *steps])


def datasets(spec, train_tf, test_tf, seed):
    kind, _, rest = spec.partition(":")
    assert kind == "images", f"--data {spec}: only images:DIR[,test=DIR,test_fraction=F]"
    parts = rest.split(",")
    options = dict(p.split("=", 1) for p in parts[1:])
    root = parts[0]
    if "test" in options:
        return ImageFolder(root, transform=train_tf), ImageFolder(options["test"], transform=test_tf)
    fraction = float(options.get("test_fraction", 0.2))
    train, test = ImageFolder(root, transform=train_tf), ImageFolder(root, transform=test_tf)
    n = len(train)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = round(n * fraction)
    return Subset(train, perm[n_test:]), Subset(test, perm[:n_test])


class NeuralNetwork(nn.Module):
    def __init__(self, features, classes):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(features, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, classes),
        )

    def forward(self, x):
        return self.linear_relu_stack(self.flatten(x))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--transform", action="append", default=[])
    p.add_argument("--test-transform", action="append", default=[])
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.9)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    training_data, test_data = datasets(
        args.data, pipeline(args.transform), pipeline(args.test_transform), args.seed
    )
    folder = training_data.dataset if isinstance(training_data, Subset) else training_data
    features = training_data[0][0].numel()
    torch.manual_seed(args.seed)
    model = NeuralNetwork(features, len(folder.classes))
    train_dataloader = DataLoader(training_data, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    test_dataloader = DataLoader(test_data, batch_size=args.batch_size, num_workers=args.workers)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    for t in range(args.epochs):
        print(f"Epoch {t+1}\n-------------------------------")
        quickstart.train(train_dataloader, model, loss_fn, optimizer)
        quickstart.test(test_dataloader, model, loss_fn)
    print("Training completed")


if __name__ == "__main__":
    main()
