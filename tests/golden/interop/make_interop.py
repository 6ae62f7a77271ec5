"""Checkpoints cross between kiln and PyTorch.

1. PyTorch trains the quickstart model briefly and saves its state dict with
   safetensors.torch.save_file -> pytorch_model.safetensors; its test report on
   the first 1000 test samples -> pytorch_model.expected.
2. kiln (target/release/kiln) trains briefly; its checkpoint's
   model.safetensors -> kiln_model.safetensors; PyTorch loads it with
   safetensors.torch.load_file + load_state_dict(strict=True) and writes its
   test report -> kiln_model.expected.

tests/interop.rs checks that `kiln eval --weights` prints both reports
exactly. Regenerate with `make golden` (after `make build`).
"""
import os
import shutil
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Subset

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "scripts/reference"))
from quickstart import IdxImages, NeuralNetwork, test, train  # noqa: E402

DATA = os.environ.get("KILN_DATA_DIR", os.path.join(ROOT, ".data/fashion-mnist"))
TEST_SAMPLES = 1000


def report(model):
    test_data = Subset(IdxImages(DATA, "t10k"), range(TEST_SAMPLES))
    from io import StringIO
    from contextlib import redirect_stdout

    buf = StringIO()
    with redirect_stdout(buf):
        test(DataLoader(test_data, batch_size=64), model, nn.CrossEntropyLoss())
    return buf.getvalue()


def pytorch_side():
    torch.manual_seed(11)
    model = NeuralNetwork()
    train_data = Subset(IdxImages(DATA, "train"), range(3200))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    with open(os.devnull, "w") as devnull:
        from contextlib import redirect_stdout

        with redirect_stdout(devnull):
            train(DataLoader(train_data, batch_size=64, shuffle=True), model, nn.CrossEntropyLoss(), optimizer)
    save_file(model.state_dict(), os.path.join(HERE, "pytorch_model.safetensors"))
    with open(os.path.join(HERE, "pytorch_model.expected"), "w") as f:
        f.write(report(model))


def kiln_side():
    kiln = os.path.join(ROOT, "target/release/kiln")
    with tempfile.TemporaryDirectory() as run:
        subprocess.run(
            [kiln, "train", "--seed", "12", "--epochs", "1", "--lr", "0.01", "--train-samples", "3200",
             "--test-samples", str(TEST_SAMPLES), "--data-dir", DATA, "--run-dir", run, "--quiet"],
            check=True,
        )
        ckpts = sorted(os.listdir(os.path.join(run, "checkpoints")))
        shutil.copy(os.path.join(run, "checkpoints", ckpts[-1], "model.safetensors"), os.path.join(HERE, "kiln_model.safetensors"))
    model = NeuralNetwork()
    model.load_state_dict(load_file(os.path.join(HERE, "kiln_model.safetensors")), strict=True)
    with open(os.path.join(HERE, "kiln_model.expected"), "w") as f:
        f.write(report(model))


if __name__ == "__main__":
    pytorch_side()
    kiln_side()
    print("wrote", HERE)
