"""Models with several inputs and several outputs: the PyTorch side of
`kiln train --data tensors:FILE,inputs=ids;mask --model torchscript:PATH,output=…`.

    PYTHONPATH=.libtorch python3 scripts/reference/multi_input.py write OUT_DIR
    PYTHONPATH=.libtorch python3 scripts/reference/multi_input.py train OUT_DIR/dict.pt \
        --output logits --data OUT_DIR/train.safetensors --test OUT_DIR/test.safetensors \
        --seed 3 --epochs 3 --batch-size 16 --lr 0.1 --out weights.safetensors

`write` saves, with torch.manual_seed(0):
  dict.pt    a scripted BagOfTokens: forward(ids, mask) -> {"logits": [B, 3], "pooled": [B, 8]}
  tuple.pt   the same network returning (pooled, logits)
  train.safetensors / test.safetensors   ids int64 [N, 6] in 0..20, mask float32 [N, 6]
             (the first 2..6 positions 1), the same mask as bool under mask_bool, targets
             int64 [N]: the sum of the kept ids mod 3.
`train` is the tutorial's loop (quickstart.py's train/test, their printed lines) over
TensorDataset(ids, mask, targets) with `pred = model(ids, mask)[output]`: DataLoader with
shuffle=True after torch.manual_seed(seed), CrossEntropyLoss, SGD(lr, momentum=0.9).
"""
import argparse
import os
from typing import Dict, Tuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

VOCAB, LENGTH, WIDTH, CLASSES = 20, 6, 8, 3


class BagOfTokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def pool(self, ids, mask):
        kept = self.embed(ids) * mask.unsqueeze(-1)
        return kept.sum(1) / mask.sum(1, keepdim=True)


class AsDict(BagOfTokens):
    def forward(self, ids, mask) -> Dict[str, torch.Tensor]:
        pooled = self.pool(ids, mask)
        return {"logits": self.head(pooled), "pooled": pooled}


class AsTuple(BagOfTokens):
    def forward(self, ids, mask) -> Tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pool(ids, mask)
        return pooled, self.head(pooled)


def samples(n, g):
    ids = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    lengths = torch.randint(2, LENGTH + 1, (n, 1), generator=g)
    mask = (torch.arange(LENGTH).unsqueeze(0) < lengths).to(torch.float32)
    targets = (ids * mask.to(torch.int64)).sum(1) % CLASSES
    return {"ids": ids, "mask": mask, "mask_bool": mask.bool(), "targets": targets}


def write(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(AsDict()), os.path.join(out, "dict.pt"))
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(AsTuple()), os.path.join(out, "tuple.pt"))
    g = torch.Generator().manual_seed(1)
    save_file(samples(200, g), os.path.join(out, "train.safetensors"))
    save_file(samples(60, g), os.path.join(out, "test.safetensors"))


def select(result, output):
    return result[int(output)] if output.isdigit() else result[output]


def dataset(path):
    t = load_file(path)
    return TensorDataset(t["ids"], t["mask"], t["targets"])


def train(args):
    torch.manual_seed(args.seed)
    model = torch.jit.load(args.model)
    train_loader = DataLoader(dataset(args.data), batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(dataset(args.test), batch_size=args.batch_size)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    for t in range(args.epochs):
        print(f"Epoch {t+1}\n-------------------------------")
        size = len(train_loader.dataset)
        model.train()
        for batch, (ids, mask, y) in enumerate(train_loader):
            loss = loss_fn(select(model(ids, mask), args.output), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if batch % 100 == 0:
                loss, current = loss.item(), batch * len(ids)
                print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")
        size, num_batches = len(test_loader.dataset), len(test_loader)
        model.eval()
        test_loss, correct = 0, 0
        with torch.no_grad():
            for ids, mask, y in test_loader:
                pred = select(model(ids, mask), args.output)
                test_loss += loss_fn(pred, y).item()
                correct += (pred.argmax(1) == y).type(torch.float).sum().item()
        test_loss /= num_batches
        correct /= size
        print(f"Test Error: \n Accuracy: {(100*correct):>0.1f}%, Avg loss: {test_loss:>8f} \n")
    print("Training completed")
    if args.out:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["write", "train"])
    p.add_argument("path")
    p.add_argument("--output", default="logits")
    p.add_argument("--data")
    p.add_argument("--test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.command == "write":
        write(args.path)
    else:
        args.model = args.path
        train(args)


if __name__ == "__main__":
    main()
