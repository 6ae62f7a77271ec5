"""Reference for kiln's param groups by selector: nanoGPT's AdamW param
groups over a small GPT's parameters and three steps of torch.optim.AdamW on
them; run at test time by tests/registry.rs
(`adamw_over_nanogpt_groups_matches_pytorch`).

nanoGPT's `configure_optimizers` (model.py) keeps the parameters that
require grad in `named_parameters()` order, puts those with `dim() >= 2` in
a first group with `weight_decay` and the others in a second group with
`weight_decay=0.0`, and builds `torch.optim.AdamW(groups, lr, betas)` (fused
only on CUDA; on the CPU, the single-tensor path). kiln's equivalent is
`adamw:lr=6e-4,betas=0.9;0.95,weight_decay=0.1` with the group
`ndim<2:weight_decay=0`.

Writes JSON to stdout: the parameters (name, shape, float32 values),
the gradients of each step, the param groups (names and hyperparameters)
and every parameter after each step; float32 values as Python floats
(exact through JSON).
"""
import json

import torch

# A one-block GPT's parameters in nanoGPT's names and order (lm_head.weight
# is tied to transformer.wte.weight, so named_parameters() lists it once).
V, T, C = 16, 6, 8
SHAPES = [
    ("transformer.wte.weight", (V, C)),
    ("transformer.wpe.weight", (T, C)),
    ("transformer.h.0.ln_1.weight", (C,)),
    ("transformer.h.0.ln_1.bias", (C,)),
    ("transformer.h.0.attn.c_attn.weight", (3 * C, C)),
    ("transformer.h.0.attn.c_attn.bias", (3 * C,)),
    ("transformer.h.0.attn.c_proj.weight", (C, C)),
    ("transformer.h.0.attn.c_proj.bias", (C,)),
    ("transformer.h.0.ln_2.weight", (C,)),
    ("transformer.h.0.ln_2.bias", (C,)),
    ("transformer.h.0.mlp.c_fc.weight", (4 * C, C)),
    ("transformer.h.0.mlp.c_fc.bias", (4 * C,)),
    ("transformer.h.0.mlp.c_proj.weight", (C, 4 * C)),
    ("transformer.h.0.mlp.c_proj.bias", (C,)),
    ("transformer.ln_f.weight", (C,)),
    ("transformer.ln_f.bias", (C,)),
]
STEPS = 3
LR, BETAS, WEIGHT_DECAY = 6e-4, (0.9, 0.95), 0.1


def values(t):
    return t.detach().reshape(-1).double().tolist()


def main():
    gen = torch.Generator().manual_seed(0)
    named = [(n, torch.nn.Parameter(torch.randn(s, generator=gen))) for n, s in SHAPES]
    grads = [[torch.randn(p.shape, generator=gen) for _, p in named] for _ in range(STEPS)]
    out = {
        "torch": torch.__version__,
        "params": [[n, list(p.shape), values(p)] for n, p in named],
        "grads": [[values(g) for g in step] for step in grads],
    }

    # nanoGPT's split, in its order.
    param_dict = {n: p for n, p in named if p.requires_grad}
    decay = [(n, p) for n, p in param_dict.items() if p.dim() >= 2]
    nodecay = [(n, p) for n, p in param_dict.items() if p.dim() < 2]
    groups = [
        {"params": [p for _, p in decay], "weight_decay": WEIGHT_DECAY},
        {"params": [p for _, p in nodecay], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS)
    out["groups"] = [
        {
            "names": [n for n, _ in members],
            "lr": g["lr"],
            "betas": list(g["betas"]),
            "eps": g["eps"],
            "weight_decay": g["weight_decay"],
        }
        for members, g in zip([decay, nodecay], opt.param_groups)
    ]
    after = []
    for step in grads:
        for (_, p), g in zip(named, step):
            p.grad = g.clone()
        opt.step()
        after.append([values(p) for _, p in named])
    out["after"] = after
    print(json.dumps(out))


if __name__ == "__main__":
    main()
