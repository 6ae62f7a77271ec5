"""Reference learning rates for the schedulers kiln builds from nested or
nanoGPT-style spec strings; run at test time by tests/schedulers.rs
(`specs_match_pytorch_and_nanogpt`), which prints nothing itself.

- `warmup-cosine`: nanoGPT's `get_lr(it)` (train.py; the same operations
  below), applied as nanoGPT applies it: `param_group['lr'] = get_lr(iter_num)`
  before the update of step `iter_num`, for every group; each group's
  `learning_rate` is its own lr (nanoGPT has one for all groups).
- `sequential`: torch.optim.lr_scheduler.SequentialLR over the schedulers
  the spec names, built in order on the same optimizer as a PyTorch program
  builds them; `warmup-cosine` inside one is nanoGPT's `get_lr` as an
  LRScheduler (its closed form is itself).

Writes JSON to stdout: {"torch": version, "cases": [{"spec", "lrs", "total_steps",
"lr": [[lr of each group] after building, then after each step]}]}, floats
as repr() strings (exact through Rust's parser).
"""
import json
import math

import torch
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    SequentialLR,
    StepLR,
)


def nanogpt_get_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """nanoGPT's get_lr(it) (train.py), the same Python float operations in the same order."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


class NanoGptWarmupCosine(LRScheduler):
    """nanoGPT's get_lr(last_epoch) of each group's base lr, as a PyTorch scheduler."""

    def __init__(self, optimizer, warmup_iters, lr_decay_iters, min_lr):
        self.warmup_iters, self.lr_decay_iters, self.min_lr = warmup_iters, lr_decay_iters, min_lr
        super().__init__(optimizer)

    def get_lr(self):
        return [
            nanogpt_get_lr(self.last_epoch, base, self.warmup_iters, self.lr_decay_iters, self.min_lr)
            for base in self.base_lrs
        ]

    def _get_closed_form_lr(self):
        return self.get_lr()


def sgd(lrs):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], momentum=0.9)


def group_lrs(opt):
    return [repr(float(g["lr"])) for g in opt.param_groups]


def nanogpt(warmup, decay, min_lr):
    def run(lrs, steps):
        return [[repr(nanogpt_get_lr(it, lr, warmup, decay, min_lr)) for lr in lrs] for it in range(steps + 1)]

    return run


def torch_schedule(build):
    def run(lrs, steps):
        opt = sgd(lrs)
        sched = build(opt)
        out = [group_lrs(opt)]
        for _ in range(steps):
            opt.step()
            sched.step()
            out.append(group_lrs(opt))
        return out

    return run


# (spec, group lrs, the run's total steps (the hint), steps, reference)
CASES = [
    ("warmup-cosine:warmup_steps=10,decay_steps=50,min_lr=6e-5", [6e-4], None, 60, nanogpt(10, 50, 6e-5)),
    ("WarmupCosineLR:warmup_iters=3,lr_decay_iters=12,min_lr=0.01", [0.1, 0.05], None, 16, nanogpt(3, 12, 0.01)),
    ("warmup-cosine:warmup_steps=0", [1.0], 8, 10, nanogpt(0, 8, 0.0)),
    ("warmup-cosine:warmup_steps=2,decay_steps=3,min_lr=1e-3", [0.3], None, 6, nanogpt(2, 3, 1e-3)),
    (
        "sequential:schedulers=[linear:start_factor=0.1,total_iters=5;cosine:T_max=10],milestones=5",
        [0.1],
        None,
        20,
        torch_schedule(
            lambda o: SequentialLR(
                o, [LinearLR(o, start_factor=0.1, total_iters=5), CosineAnnealingLR(o, T_max=10)], milestones=[5]
            )
        ),
    ),
    (
        "SequentialLR:schedulers=[constant:factor=0.5,total_iters=3;[multistep:milestones=2;4,gamma=0.5];"
        "exponential:gamma=0.9],milestones=[3;8]",
        [0.1, 0.01],
        None,
        14,
        torch_schedule(
            lambda o: SequentialLR(
                o,
                [ConstantLR(o, factor=0.5, total_iters=3), MultiStepLR(o, [2, 4], gamma=0.5), ExponentialLR(o, 0.9)],
                milestones=[3, 8],
            )
        ),
    ),
    (
        "sequential:schedulers=[sequential:schedulers=[constant:factor=0.5,total_iters=2;"
        "linear:start_factor=0.5,total_iters=2],milestones=2;step:step_size=2,gamma=0.5],milestones=5",
        [0.1],
        None,
        12,
        torch_schedule(
            lambda o: SequentialLR(
                o,
                [
                    SequentialLR(
                        o, [ConstantLR(o, factor=0.5, total_iters=2), LinearLR(o, start_factor=0.5, total_iters=2)], [2]
                    ),
                    StepLR(o, step_size=2, gamma=0.5),
                ],
                milestones=[5],
            )
        ),
    ),
    (
        # cosine's t_max comes from its stretch of the run: 20 - 4 steps.
        "sequential:schedulers=[linear:start_factor=0.25,total_iters=4;cosine:eta_min=0.001],milestones=4",
        [0.1],
        20,
        22,
        torch_schedule(
            lambda o: SequentialLR(
                o,
                [LinearLR(o, start_factor=0.25, total_iters=4), CosineAnnealingLR(o, T_max=16, eta_min=0.001)],
                milestones=[4],
            )
        ),
    ),
    (
        "sequential:schedulers=[constant:factor=0.1,total_iters=2;"
        "warmup-cosine:warmup_steps=2,decay_steps=6,min_lr=0.001],milestones=3",
        [0.1, 0.2],
        None,
        12,
        torch_schedule(
            lambda o: SequentialLR(
                o, [ConstantLR(o, factor=0.1, total_iters=2), NanoGptWarmupCosine(o, 2, 6, 0.001)], milestones=[3]
            )
        ),
    ),
]


def main():
    cases = [
        {"spec": spec, "lrs": [repr(lr) for lr in lrs], "total_steps": total, "lr": run(lrs, steps)}
        for spec, lrs, total, steps, run in CASES
    ]
    print(json.dumps({"torch": torch.__version__, "cases": cases}))


if __name__ == "__main__":
    main()
