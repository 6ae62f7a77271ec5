"""Lightning's lr finder (lightning/pytorch/tuner/lr_finder.py, Lightning
2.x) replayed on the losses a kiln sweep computed: its _ExponentialLR /
_LinearLR scheduler (a torch LRScheduler, stepped once per optimizer step)
gives the lr of each step, its _LRCallback smooths the losses and decides
where the sweep stops, and _LRFinder.suggestion(skip_begin=10, skip_end=1)
picks the steepest descent with torch.gradient. Lightning is not a
dependency of the tests: these few rules are copied here.

stdin: {"raw_losses": [...], "min_lr", "max_lr", "num_training", "mode",
        "early_stop_threshold": number or null}
stdout: {"lrs": [...], "losses": [...], "stopped": bool, "suggestion": lr or null,
         "optimal_idx": int or null}
"""
import json
import sys

import torch
from torch.optim.lr_scheduler import LRScheduler


class _LinearLR(LRScheduler):
    def __init__(self, optimizer, end_lr, num_iter, last_epoch=-1):
        self.end_lr = end_lr
        self.num_iter = num_iter
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        curr_iter = self.last_epoch + 1
        r = curr_iter / self.num_iter
        if self.last_epoch > 0:
            val = [base_lr + r * (self.end_lr - base_lr) for base_lr in self.base_lrs]
        else:
            val = list(self.base_lrs)
        self._lr = val
        return val

    @property
    def lr(self):
        return self._lr


class _ExponentialLR(LRScheduler):
    def __init__(self, optimizer, end_lr, num_iter, last_epoch=-1):
        self.end_lr = end_lr
        self.num_iter = num_iter
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        curr_iter = self.last_epoch + 1
        r = curr_iter / self.num_iter
        if self.last_epoch > 0:
            val = [base_lr * (self.end_lr / base_lr) ** r for base_lr in self.base_lrs]
        else:
            val = list(self.base_lrs)
        self._lr = val
        return val

    @property
    def lr(self):
        return self._lr


def suggestion(results, skip_begin=10, skip_end=1):
    losses = torch.tensor(results["loss"][skip_begin:-skip_end])
    lrs = torch.tensor(results["lr"][skip_begin:-skip_end])
    is_finite = torch.isfinite(losses)
    losses = losses[is_finite]
    lrs = lrs[is_finite]
    if len(losses) < 2:
        return None, None
    gradients = torch.gradient(losses, spacing=[lrs])[0]
    min_grad = torch.argmin(gradients).item()
    all_losses_idx = torch.arange(len(results["loss"]))
    idx_non_skipped = all_losses_idx[skip_begin:-skip_end]
    idx_finite = idx_non_skipped[is_finite]
    optimal_idx = idx_finite[min_grad].item()
    return results["lr"][optimal_idx], optimal_idx


spec = json.load(sys.stdin)
param = torch.nn.Parameter(torch.zeros(1))
optimizer = torch.optim.SGD([param], lr=spec["min_lr"])
for group in optimizer.param_groups:
    group["lr"] = spec["min_lr"]
    group["initial_lr"] = spec["min_lr"]
scheduler_type = _LinearLR if spec["mode"] == "linear" else _ExponentialLR
scheduler = scheduler_type(optimizer, spec["max_lr"], spec["num_training"])

beta, threshold = 0.98, spec["early_stop_threshold"]
avg_loss, best_loss = 0.0, 0.0
lrs, losses, stopped = [], [], False
for index, current_loss in enumerate(spec["raw_losses"]):
    if stopped or index == spec["num_training"]:
        raise SystemExit(f"Lightning would have stopped before step {index + 1}")
    lrs.append(scheduler.lr[0])
    current_step = index + 1  # trainer.global_step after the optimizer step
    avg_loss = beta * avg_loss + (1 - beta) * current_loss
    smoothed_loss = avg_loss / (1 - beta ** (current_step + 1))
    if threshold is not None and current_step > 1 and smoothed_loss > threshold * best_loss:
        stopped = True
    if smoothed_loss < best_loss or current_step == 1:
        best_loss = smoothed_loss
    losses.append(smoothed_loss)
    optimizer.step()
    scheduler.step()

lr, optimal_idx = suggestion({"lr": lrs, "loss": losses})
json.dump(
    {"lrs": lrs, "losses": losses, "stopped": stopped, "suggestion": lr, "optimal_idx": optimal_idx},
    sys.stdout,
)
