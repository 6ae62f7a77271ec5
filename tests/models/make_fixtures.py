"""Writes the files tests/models.rs feeds to kiln, into OUT_DIR (run at test time).

    PYTHONPATH=.libtorch python3 tests/models/make_fixtures.py OUT_DIR DATA_DIR

TorchScript modules (torch.jit.save):
  small.pt        scripts/reference/torchscript_cnn.py's SmallNet (Conv2d, BatchNorm2d, Dropout, Linear), scripted
  traced.pt       the same network, traced
  no_params.pt    a scripted module without parameters
  tuple.pt        a scripted module whose forward returns a tuple
  linear100.pt    a scripted nn.Linear(100, 10): does not fit 28x28 images
  state_dict.pt   torch.save(model.state_dict()): a zip archive, but not a module
  corrupt.pt      bytes that are no archive at all
safetensors data (safetensors.torch.save_file):
  mnist_train/test.safetensors   the first 640 / 200 FashionMNIST samples as uint8 [N, 1, 28, 28] + int64 labels
  points.safetensors             float64 inputs [300, 2] (x, y), int32 labels: 3 angular sectors
  values.safetensors             float32 inputs [200, 3] under "x", float targets [200] under "y" (a linear function)
  missing_key.safetensors        only "inputs"
  mismatch.safetensors           100 inputs, 99 targets
  out_of_range.safetensors       labels 0..4 (for classes=3)
  negative.safetensors           a label -1
  nonfinite.safetensors          float inputs with a NaN in sample 7
  int_inputs.safetensors         int64 inputs (not floats), int64 labels
  binary.safetensors             float32 inputs [200, 2], int64 labels 0/1 (which side of a line)
  binary_float.safetensors       the same with float32 targets [200, 1]
"""
import math
import os
import sys

import torch
from safetensors.torch import save_file
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts/reference"))
from quickstart import find, read_idx  # noqa: E402
from torchscript_cnn import SmallNet  # noqa: E402


class NoParams(nn.Module):
    def forward(self, x):
        return torch.relu(x).flatten(1)


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        return y, y


def main():
    out, data = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    path = lambda name: os.path.join(out, name)  # noqa: E731
    torch.manual_seed(3)
    torch.jit.save(torch.jit.script(SmallNet()), path("small.pt"))
    torch.manual_seed(3)
    torch.jit.save(torch.jit.trace(SmallNet(), torch.rand(2, 1, 28, 28)), path("traced.pt"))
    torch.jit.save(torch.jit.script(NoParams()), path("no_params.pt"))
    torch.jit.save(torch.jit.script(Pair()), path("tuple.pt"))
    torch.jit.save(torch.jit.script(nn.Linear(100, 10)), path("linear100.pt"))
    torch.save(SmallNet().state_dict(), path("state_dict.pt"))
    with open(path("corrupt.pt"), "wb") as f:
        f.write(b"this is not a TorchScript archive\n" * 10)

    for prefix, name, n in [("train", "mnist_train", 640), ("t10k", "mnist_test", 200)]:
        images = read_idx(find(data, f"{prefix}-images-idx3-ubyte"))[:n].unsqueeze(1).contiguous()
        labels = read_idx(find(data, f"{prefix}-labels-idx1-ubyte"))[:n].to(torch.int64)
        save_file({"inputs": images, "targets": labels}, path(f"{name}.safetensors"))

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g, dtype=torch.float64) * 2 - 1
    sector = ((torch.atan2(xy[:, 1], xy[:, 0]) + math.pi) / (2 * math.pi / 3)).floor().clamp(0, 2)
    save_file({"inputs": xy, "targets": sector.to(torch.int32)}, path("points.safetensors"))
    x = torch.randn(200, 3, generator=g)
    y = x @ torch.tensor([1.5, -2.0, 0.5]) + 0.25
    save_file({"x": x, "y": y}, path("values.safetensors"))

    save_file({"inputs": torch.rand(10, 4)}, path("missing_key.safetensors"))
    save_file({"inputs": torch.rand(100, 4), "targets": torch.zeros(99, dtype=torch.int64)}, path("mismatch.safetensors"))
    save_file({"inputs": torch.rand(100, 4), "targets": torch.arange(100) % 5}, path("out_of_range.safetensors"))
    labels = torch.zeros(100, dtype=torch.int64)
    labels[7] = -1
    save_file({"inputs": torch.rand(100, 4), "targets": labels}, path("negative.safetensors"))
    inputs = torch.rand(100, 4)
    inputs[7, 2] = float("nan")
    save_file({"inputs": inputs, "targets": torch.arange(100) % 3}, path("nonfinite.safetensors"))
    save_file({"inputs": torch.randint(0, 10, (100, 4)), "targets": torch.arange(100) % 3}, path("int_inputs.safetensors"))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 2, generator=g)
    side = (x[:, 0] + 0.5 * x[:, 1] > 0).to(torch.int64)
    save_file({"inputs": x, "targets": side}, path("binary.safetensors"))
    save_file({"inputs": x, "targets": side.to(torch.float32).unsqueeze(1)}, path("binary_float.safetensors"))


if __name__ == "__main__":
    main()
