"""PyTorch's side of tests/checkpoint.rs: a stack of residual blocks
(linear, GELU, dropout) trained one step from the global generator, each
block under torch.utils.checkpoint.checkpoint(use_reentrant=False) or not,
with a dropout between blocks outside any checkpoint and a draw after the
step. Prints JSON: per result [shape, hex of the raw bytes], in the order of
`step` in checkpoint.rs."""
import json
import sys

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

BLOCKS, WIDTH, BATCH = 4, 16, 8


def raw(t):
    t = t.detach().contiguous()
    return [list(t.shape), bytes(t.reshape(-1).view(torch.uint8).tolist()).hex()]


def params():
    ws, bs = [], []
    for i in range(BLOCKS):
        g = torch.Generator().manual_seed(100 + i)
        ws.append((torch.randn(WIDTH, WIDTH, generator=g) * 0.3).requires_grad_())
        bs.append((torch.randn(WIDTH, generator=g) * 0.1).requires_grad_())
    x = torch.randn(BATCH, WIDTH, generator=torch.Generator().manual_seed(7)).requires_grad_()
    return x, ws, bs


def step(seed, checkpointed):
    x, ws, bs = params()
    torch.manual_seed(seed)
    h = x
    for i in range(BLOCKS):
        def block(h, w=ws[i], b=bs[i]):
            return h + F.dropout(F.gelu(F.linear(h, w, b)), p=0.25, training=True)
        h = checkpoint(block, h, use_reentrant=False) if checkpointed else block(h)
        if i == 1:
            h = F.dropout(h, p=0.1, training=True)
    loss = (h * h).sum(dtype=torch.float32)
    loss.backward()
    out = [raw(h), raw(loss), raw(x.grad)]
    out += [raw(w.grad) for w in ws] + [raw(b.grad) for b in bs]
    out.append(raw(torch.get_rng_state()))
    out.append(raw(torch.rand(3)))
    return out


def main():
    torch.set_num_threads(1)
    seed = int(sys.argv[1])
    print(json.dumps({"plain": step(seed, False), "checkpointed": step(seed, True)}))


if __name__ == "__main__":
    main()
