"""PyTorch's predictions for a kiln checkpoint: what `kiln predict` is compared with.

Loads the quickstart model's weights (a kiln checkpoint's model.safetensors)
with safetensors.torch.load_file + load_state_dict(strict=True), runs it in
eval mode under torch.no_grad() over the first N FashionMNIST test samples
(DataLoader, batch_size 64, in order) and writes `outputs` and `targets` to a
safetensors file; `softmax(outputs).max(1)` gives the CSV's class and
probability. Run by tests/predict.rs:

    PYTHONPATH=.libtorch python3 tests/golden/predict/reference.py WEIGHTS DATA_DIR N OUT
"""
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Subset

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "scripts/reference"))
from quickstart import IdxImages, NeuralNetwork  # noqa: E402


def main():
    weights, data_dir, samples, out = sys.argv[1:5]
    torch.set_num_threads(1)
    model = NeuralNetwork()
    model.load_state_dict(load_file(weights), strict=True)
    model.eval()
    data = Subset(IdxImages(data_dir, "t10k"), range(int(samples)))
    outputs, targets = [], []
    with torch.no_grad():
        for x, y in DataLoader(data, batch_size=64):
            outputs.append(model(x))
            targets.append(y)
    outputs = torch.cat(outputs)
    probability, label = torch.softmax(outputs, 1).max(1)
    save_file(
        {
            "outputs": outputs.contiguous(),
            "targets": torch.cat(targets).contiguous(),
            "class": label.contiguous(),
            "probability": probability.contiguous(),
        },
        out,
    )


if __name__ == "__main__":
    main()
