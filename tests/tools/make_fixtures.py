"""Writes what tests/tools.rs feeds to kiln and compares it with, into OUT_DIR (run at test time).

    PYTHONPATH=.libtorch python3 tests/tools/make_fixtures.py OUT_DIR

summaries.json  the model summary kiln must print for each case, built here from the PyTorch
                modules: Lightning's ModelSummary table (max_depth=1; _format_summary_table and
                get_human_readable_count, reimplemented below: Lightning is not installed),
                rows from named_children() with their class names (kiln's types), or the first
                components of the parameter names with type n/a where kiln does not know the
                modules (TorchScript); counts sum(p.numel()) over named_parameters() under each
                row (a tied weight counted once, where named_parameters() lists it), totals over
                model.parameters(), trainable ones with requires_grad. Each case also records
                its rows (name, type, count) and the total and trainable counts, exact.
small.pt        scripts/reference/torchscript_cnn.py's SmallNet, scripted
tokens/         nanoGPT token files (train.bin, val.bin: uint16) over a vocabulary of 11
nan_grad.pt     a scripted module whose backward makes a NaN once a sample's first feature is
                negative (sqrt of it in the branch torch.where leaves out: finite forward,
                SqrtBackward0 returns 0 / NaN)
anomaly_train.safetensors  80 samples [80, 4], labels 0/1; the first feature is 1 for samples
                           0..47 and -1 from sample 48 on (the 4th and 5th batches of 16)
anomaly_test.safetensors   16 samples with the first feature 1
"""
import json
import math
import os
import sys
from array import array

import torch
from safetensors.torch import save_file
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts/reference"))
from mnist_cnn import Net  # noqa: E402
from nanogpt import GPT, GPTConfig  # noqa: E402
from quickstart import NeuralNetwork  # noqa: E402
from torchscript_cnn import SmallNet  # noqa: E402

LABELS = [" ", "K", "M", "B", "T"]


def get_human_readable_count(number):
    num_digits = int(math.floor(math.log10(number)) + 1 if number > 0 else 1)
    num_groups = int(math.ceil(num_digits / 3))
    num_groups = min(num_groups, len(LABELS))
    shift = -3 * (num_groups - 1)
    number = number * (10**shift)
    index = num_groups - 1
    if index < 1 or number >= 100:
        return f"{int(number):,d} {LABELS[index]}"
    return f"{number:,.1f} {LABELS[index]}"


def format_summary_table(total, trainable, model_size, *cols):
    n_rows = len(cols[0][1])
    n_cols = 1 + len(cols)
    col_widths = []
    for c in cols:
        col_width = max(len(str(a)) for a in c[1]) if n_rows else 0
        col_widths.append(max(col_width, len(c[0])))
    s = "{:<{}}"
    total_width = sum(col_widths) + 3 * n_cols
    header = [s.format(c[0], w) for c, w in zip(cols, col_widths)]
    summary = " | ".join(header) + "\n" + "-" * total_width
    for i in range(n_rows):
        line = [s.format(str(c[1][i]), w) for c, w in zip(cols, col_widths)]
        summary += "\n" + " | ".join(line)
    summary += "\n" + "-" * total_width
    summary += "\n" + s.format(get_human_readable_count(trainable), 10) + "Trainable params"
    summary += "\n" + s.format(get_human_readable_count(total - trainable), 10) + "Non-trainable params"
    summary += "\n" + s.format(get_human_readable_count(total), 10) + "Total params"
    summary += "\n" + s.format(f"{model_size:,.3f}", 10) + "Total estimated model params size (MB)"
    return summary


def summary(model, by_prefix=False):
    named = list(model.named_parameters())
    if by_prefix:
        rows = []
        for name, _ in named:
            if "." in name and name.split(".")[0] not in [r for r, _ in rows]:
                rows.append((name.split(".")[0], "n/a"))
    else:
        rows = [(name, type(m).__name__) for name, m in model.named_children()]
    counts = [sum(p.numel() for n, p in named if n.startswith(r + ".")) for r, _ in rows]
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    index, names, types, modes = list(map(str, range(len(rows)))), [r for r, _ in rows], [t for _, t in rows], ["train"] * len(rows)
    if total > sum(counts):
        index.append(" ")
        names.append("other params")
        types.append("n/a")
        counts.append(total - sum(counts))
        modes.append("n/a")
    table = format_summary_table(
        total,
        trainable,
        total * 32 / 8.0 * 1e-6,
        (" ", index),
        ("Name", names),
        ("Type", types),
        ("Params", list(map(get_human_readable_count, counts))),
        ("Mode", modes),
    )
    return {
        "table": table,
        "rows": [[n, t, c] for n, t, c in zip(names, types, counts)],
        "total": total,
        "trainable": trainable,
    }


class NanGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        gate = x[:, 0:1]
        root = torch.sqrt(gate * self.scale)
        return self.fc(x) + torch.where(gate < 0, torch.zeros_like(root), root)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    path = lambda name: os.path.join(out, name)  # noqa: E731
    torch.manual_seed(0)
    cases = {}
    cases["mlp"] = summary(NeuralNetwork())
    cnn = Net()
    for name, p in cnn.named_parameters():
        if name.startswith("conv"):
            p.requires_grad_(False)
    cases["cnn_frozen_convs"] = summary(cnn)
    small = SmallNet()
    torch.jit.save(torch.jit.script(small), path("small.pt"))
    cases["torchscript"] = summary(small, by_prefix=True)
    gpt = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=16, bias=True))
    cases["gpt"] = summary(gpt)
    nan_grad = NanGrad()
    torch.jit.save(torch.jit.script(nan_grad), path("nan_grad.pt"))
    cases["nan_grad"] = summary(nan_grad, by_prefix=True)
    with open(path("summaries.json"), "w") as f:
        json.dump(cases, f, indent=1)

    os.makedirs(path("tokens"), exist_ok=True)
    g = torch.Generator().manual_seed(1)
    for split, n in [("train", 400), ("val", 100)]:
        ids = torch.randint(0, 11, (n,), generator=g).tolist()
        with open(os.path.join(path("tokens"), f"{split}.bin"), "wb") as f:
            array("H", ids).tofile(f)

    x = torch.randn(80, 4, generator=g)
    x[:, 0] = torch.where(torch.arange(80) < 48, 1.0, -1.0)
    y = (x[:, 1] > 0).to(torch.int64)
    save_file({"inputs": x, "targets": y}, path("anomaly_train.safetensors"))
    xt = torch.randn(16, 4, generator=g)
    xt[:, 0] = 1.0
    save_file({"inputs": xt, "targets": (xt[:, 1] > 0).to(torch.int64)}, path("anomaly_test.safetensors"))


if __name__ == "__main__":
    main()
