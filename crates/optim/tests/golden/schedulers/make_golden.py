"""Golden learning-rate sequences for kiln-optim's schedulers, from PyTorch.

Run from the repository root (any PyTorch; the fixtures were made with 2.11):

    PYTHONPATH=.libtorch python3 crates/optim/tests/golden/schedulers/make_golden.py

Writes, next to this script:
- schedulers.json: for each case, the optimizer (kind, group lrs, and the
  groups' `initial_lr` when a resuming case sets it), the schedulers built on
  it in order (PyTorch class name + kwargs, `last_epoch=N` to resume), an
  optional composition (SequentialLR / ChainedScheduler), the operations
  applied ("s" = step the top scheduler, {"m": x} = step(metric), {"e": x} =
  step(epoch) (closed form, or CosineAnnealingWarmRestarts' fractional
  epochs), {"k": i} = step the i-th built scheduler, {"km": [i, x]} = step
  the i-th built scheduler with a metric: several schedulers on one
  optimizer, as test_lrscheduler.py's compound tests do), and the lr (and
  momentum / betas[0]) of every group after construction and after each
  operation.

The cases follow what PyTorch's test_lrscheduler.py checks: every scheduler
with its options, compound schedulers stepped together (with
ReduceLROnPlateau too), SequentialLR and ChainedScheduler with milestones,
step(epoch) against the closed forms, resuming with last_epoch (the groups
carrying initial_lr, as a restored optimizer does), warm restarts with
T_mult, OneCycleLR's three phases and linear annealing, CyclicLR's exp_range,
ReduceLROnPlateau's threshold modes, cooldown and min_lr.
- errors.json: constructor arguments PyTorch rejects, with its message.
- averaged.json: AveragedModel (SWA and EMA) averages after each update.

Floats are written as repr() strings so they parse back to the same bits.
"""
import json
import math
import os
import warnings

import torch
from torch.optim import lr_scheduler as L
from torch.optim import swa_utils as S

warnings.simplefilter("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))

# Closures shared with the Rust tests (same formulas there).
LAMBDAS = {
    "pow095": lambda e: 0.95**e,
    "inv": lambda e: 1.0 / (e + 1),
    "const09": lambda e: 0.9,
    "alt": lambda e: 0.95 if e % 2 else 1.0,
    "scale_inv": lambda x: 1 / (1 + x),
    "scale_pow": lambda x: 0.99**x,
}


def f(x):
    return repr(float(x))


def floats_as_strings(v):
    """Every float (not int or bool) of a JSON-like value as its repr() string."""
    if isinstance(v, float):
        return f(v)
    if isinstance(v, list):
        return [floats_as_strings(x) for x in v]
    if isinstance(v, dict):
        return {k: floats_as_strings(x) for k, x in v.items()}
    return v


def make_optimizer(kind, lrs):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lrs[0], betas=(0.9, 0.999))
    if kind == "adagrad":
        return torch.optim.Adagrad(groups, lr=lrs[0])
    raise ValueError(kind)


CLASSES = {
    "LambdaLR": L.LambdaLR,
    "MultiplicativeLR": L.MultiplicativeLR,
    "StepLR": L.StepLR,
    "MultiStepLR": L.MultiStepLR,
    "ConstantLR": L.ConstantLR,
    "LinearLR": L.LinearLR,
    "ExponentialLR": L.ExponentialLR,
    "PolynomialLR": L.PolynomialLR,
    "CosineAnnealingLR": L.CosineAnnealingLR,
    "CosineAnnealingWarmRestarts": L.CosineAnnealingWarmRestarts,
    "CyclicLR": L.CyclicLR,
    "OneCycleLR": L.OneCycleLR,
    "ReduceLROnPlateau": L.ReduceLROnPlateau,
    "SWALR": S.SWALR,
}


def build(opt, spec):
    kwargs = dict(spec["kwargs"])
    for key in ("lr_lambda", "scale_fn"):
        if key in kwargs:
            v = kwargs[key]
            kwargs[key] = [LAMBDAS[n] for n in v] if isinstance(v, list) else LAMBDAS[v]
    return CLASSES[spec["type"]](opt, **kwargs)


def momenta(opt):
    out = []
    for g in opt.param_groups:
        if "betas" in g:
            out.append(f(g["betas"][0]))
        elif "momentum" in g:
            out.append(f(g["momentum"]))
    return out


def run_case(case):
    opt = make_optimizer(case["optimizer"], case["lrs"])
    for g, initial in zip(opt.param_groups, case.get("initial_lr") or []):
        g["initial_lr"] = initial
    built = [build(opt, s) for s in case["build"]]
    comp = case.get("compose")
    if comp is None:
        top = built[0]
    elif comp["type"] == "sequential":
        top = L.SequentialLR(opt, built, milestones=comp["milestones"])
    else:
        top = L.ChainedScheduler(built, opt)
    lr = [[f(g["lr"]) for g in opt.param_groups]]
    mom = [momenta(opt)]
    for op in case["ops"]:
        if op == "s":
            top.step()
        elif "m" in op:
            top.step(op["m"])
        elif "e" in op:
            top.step(op["e"])
        elif "km" in op:
            built[op["km"][0]].step(op["km"][1])
        else:
            built[op["k"]].step()
        lr.append([f(g["lr"]) for g in opt.param_groups])
        mom.append(momenta(opt))
    # get_last_lr() agrees with the groups (unless another scheduler stepped last).
    if not any(isinstance(op, dict) and ("k" in op or "km" in op) for op in case["ops"]):
        assert [f(x) for x in top.get_last_lr()] == lr[-1], case["name"]
    out = floats_as_strings(case)
    out["lr"] = lr
    if case.get("record_momentum"):
        out["momentum"] = mom
    return out


def steps(n):
    return ["s"] * n


def c(name, optimizer, lrs, build_list, ops, compose=None, record_momentum=False, initial_lr=None):
    return {
        "name": name,
        "optimizer": optimizer,
        "lrs": lrs,
        "initial_lr": initial_lr,
        "build": build_list,
        "compose": compose,
        "ops": ops,
        "record_momentum": record_momentum,
    }


def both(n):
    """Step the first and the second built scheduler n times (a compound schedule)."""
    return [{"k": 0}, {"k": 1}] * n


def b(type_, **kwargs):
    return {"type": type_, "kwargs": kwargs}


CASES = [
    c("lambda_one", "sgd", [0.1, 0.05], [b("LambdaLR", lr_lambda="pow095")], steps(15)),
    c("lambda_per_group", "sgd", [0.1, 0.05], [b("LambdaLR", lr_lambda=["pow095", "inv"])], steps(15)),
    c("multiplicative_one", "sgd", [0.1], [b("MultiplicativeLR", lr_lambda="const09")], steps(15)),
    c("multiplicative_per_group", "sgd", [0.1, 0.3], [b("MultiplicativeLR", lr_lambda=["alt", "const09"])], steps(15)),
    c("step_a", "sgd", [0.1, 0.05], [b("StepLR", step_size=3, gamma=0.5)], steps(20)),
    c("step_b", "sgd", [0.3], [b("StepLR", step_size=1, gamma=0.9)], steps(25)),
    c("multistep_a", "sgd", [0.1, 0.02], [b("MultiStepLR", milestones=[2, 5, 5, 9], gamma=0.3)], steps(15)),
    c("constant_default", "sgd", [0.1], [b("ConstantLR")], steps(10)),
    c("constant_b", "sgd", [0.1, 0.07], [b("ConstantLR", factor=0.5, total_iters=3)], steps(8)),
    c("linear_default", "sgd", [0.1], [b("LinearLR")], steps(10)),
    c("linear_b", "sgd", [0.1, 0.03], [b("LinearLR", start_factor=0.1, end_factor=0.9, total_iters=7)], steps(12)),
    c("linear_c", "sgd", [0.1], [b("LinearLR", start_factor=1.0, end_factor=0.0, total_iters=10)], steps(12)),
    c("exponential_a", "sgd", [0.1, 0.01], [b("ExponentialLR", gamma=0.93)], steps(30)),
    c("polynomial_default", "sgd", [0.1], [b("PolynomialLR")], steps(8)),
    c("polynomial_b", "sgd", [0.1, 0.2], [b("PolynomialLR", total_iters=10, power=2.0)], steps(14)),
    c("polynomial_c", "sgd", [0.1], [b("PolynomialLR", total_iters=7, power=0.5)], steps(10)),
    c("cosine_a", "sgd", [0.1], [b("CosineAnnealingLR", T_max=10)], steps(35)),
    c("cosine_b", "sgd", [0.1, 0.05], [b("CosineAnnealingLR", T_max=7, eta_min=0.001)], steps(30)),
    c("cosine_long", "sgd", [0.1], [b("CosineAnnealingLR", T_max=100, eta_min=1e-5)], steps(120)),
    c("cawr_a", "sgd", [0.1], [b("CosineAnnealingWarmRestarts", T_0=5)], steps(25)),
    c("cawr_b", "sgd", [0.1, 0.05], [b("CosineAnnealingWarmRestarts", T_0=3, T_mult=2, eta_min=0.01)], steps(30)),
    c(
        "cawr_fractional",
        "sgd",
        [0.1],
        [b("CosineAnnealingWarmRestarts", T_0=3, T_mult=2, eta_min=0.001)],
        [{"e": ep + i / 5} for ep in range(12) for i in range(5)] + steps(4) + [{"e": 2.5}, {"e": 40}] + steps(3),
    ),
    c(
        "cawr_fractional_mult1",
        "sgd",
        [0.1],
        [b("CosineAnnealingWarmRestarts", T_0=4)],
        [{"e": ep + i / 3} for ep in range(9) for i in range(3)] + steps(5),
    ),
    c(
        "cyclic_triangular",
        "sgd",
        [0.1],
        [b("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=4)],
        steps(30),
        record_momentum=True,
    ),
    c(
        "cyclic_triangular2",
        "sgd",
        [0.1, 0.1],
        [b("CyclicLR", base_lr=[0.01, 0.02], max_lr=[0.1, 0.05], step_size_up=3, step_size_down=5, mode="triangular2")],
        steps(40),
        record_momentum=True,
    ),
    c(
        "cyclic_exp_range_adam",
        "adam",
        [0.001],
        [b("CyclicLR", base_lr=0.001, max_lr=0.006, step_size_up=5, mode="exp_range", gamma=0.97, base_momentum=0.85, max_momentum=0.95)],
        steps(40),
        record_momentum=True,
    ),
    c(
        "cyclic_scale_fn_cycle",
        "sgd",
        [0.1],
        [b("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=2, step_size_down=3, scale_fn="scale_inv")],
        steps(25),
        record_momentum=True,
    ),
    c(
        "cyclic_scale_fn_iterations",
        "sgd",
        [0.1],
        [b("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=3, scale_fn="scale_pow", scale_mode="iterations")],
        steps(25),
        record_momentum=True,
    ),
    c(
        "cyclic_no_momentum",
        "adagrad",
        [0.1],
        [b("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=4, cycle_momentum=False)],
        steps(20),
    ),
    c("onecycle_default", "sgd", [0.1], [b("OneCycleLR", max_lr=0.1, total_steps=50)], steps(50), record_momentum=True),
    c(
        "onecycle_three_phase",
        "sgd",
        [0.1, 0.1],
        [b("OneCycleLR", max_lr=[0.1, 0.2], total_steps=40, three_phase=True)],
        steps(40),
        record_momentum=True,
    ),
    c(
        "onecycle_linear",
        "sgd",
        [0.1],
        [b("OneCycleLR", max_lr=0.05, total_steps=30, anneal_strategy="linear", pct_start=0.25, div_factor=10.0, final_div_factor=100.0)],
        steps(30),
        record_momentum=True,
    ),
    c(
        "onecycle_adam_epochs",
        "adam",
        [0.001],
        [b("OneCycleLR", max_lr=0.01, epochs=4, steps_per_epoch=7, base_momentum=0.8, max_momentum=0.9)],
        steps(28),
        record_momentum=True,
    ),
    c(
        "onecycle_three_phase_linear",
        "sgd",
        [0.1],
        [b("OneCycleLR", max_lr=0.3, total_steps=25, three_phase=True, anneal_strategy="linear", pct_start=0.4)],
        steps(25),
        record_momentum=True,
    ),
    c(
        "onecycle_no_momentum",
        "adagrad",
        [0.1],
        [b("OneCycleLR", max_lr=0.1, total_steps=20, cycle_momentum=False)],
        steps(20),
    ),
    c(
        "plateau_min_rel",
        "sgd",
        [0.1, 0.01],
        [b("ReduceLROnPlateau", patience=2)],
        [{"m": m} for m in [1.0, 0.9, 0.95, 0.93, 0.92, 0.9, 0.91, 0.89995, 0.9, 0.9, 0.9, 0.5, 0.6, 0.6, 0.6, 0.6]],
    ),
    c(
        "plateau_max_abs_cooldown",
        "sgd",
        [0.1],
        [b("ReduceLROnPlateau", mode="max", factor=0.5, patience=1, threshold=0.01, threshold_mode="abs", cooldown=2, min_lr=0.01)],
        [{"m": m} for m in [0.5, 0.6, 0.605, 0.6, 0.7, 0.7, 0.69, 0.7, 0.71, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]],
    ),
    c(
        "plateau_min_lr_list_eps",
        "sgd",
        [0.1, 1e-7],
        [b("ReduceLROnPlateau", patience=0, min_lr=[0.001, 0.0], eps=1e-7, threshold_mode="abs", threshold=0.0)],
        [{"m": m} for m in [1.0] * 12],
    ),
    c(
        "plateau_max_rel",
        "sgd",
        [0.2],
        [b("ReduceLROnPlateau", mode="max", patience=3, threshold=0.1)],
        [{"m": m} for m in [1.0, 1.05, 1.2, 1.25, 1.3, 1.31, 1.5, 1.4, 1.4, 1.4, 1.4, 1.4, 2.0]],
    ),
    c("swalr_cos", "sgd", [0.1, 0.2], [b("SWALR", swa_lr=0.05, anneal_epochs=5)], steps(10)),
    c("swalr_linear_list", "sgd", [0.1, 0.2], [b("SWALR", swa_lr=[0.01, 0.5], anneal_epochs=3, anneal_strategy="linear")], steps(8)),
    c("swalr_zero_epochs", "sgd", [0.1], [b("SWALR", swa_lr=0.02, anneal_epochs=0)], steps(5)),
    c(
        "swalr_after_cosine",
        "sgd",
        [0.1],
        [b("CosineAnnealingLR", T_max=20), b("SWALR", swa_lr=0.02, anneal_epochs=4)],
        [{"k": 0}] * 8 + [{"k": 1}] * 10,
    ),
    c(
        "sequential_warmup_cosine",
        "sgd",
        [0.1, 0.05],
        [b("LinearLR", start_factor=0.1, total_iters=4), b("CosineAnnealingLR", T_max=10)],
        steps(20),
        compose={"type": "sequential", "milestones": [4]},
    ),
    c(
        "sequential_three",
        "sgd",
        [0.1],
        [b("ConstantLR", factor=0.5, total_iters=2), b("ExponentialLR", gamma=0.9), b("StepLR", step_size=2, gamma=0.5)],
        steps(16),
        compose={"type": "sequential", "milestones": [3, 8]},
    ),
    c(
        "sequential_exp_cawr",
        "sgd",
        [0.1],
        [b("ExponentialLR", gamma=0.8), b("CosineAnnealingWarmRestarts", T_0=4)],
        steps(15),
        compose={"type": "sequential", "milestones": [5]},
    ),
    c(
        "sequential_lambda_multistep_poly",
        "sgd",
        [0.1, 0.2],
        [b("LambdaLR", lr_lambda="inv"), b("MultiStepLR", milestones=[2, 4]), b("PolynomialLR", total_iters=4, power=2.0)],
        steps(14),
        compose={"type": "sequential", "milestones": [3, 7]},
    ),
    c(
        "sequential_multiplicative_linear",
        "sgd",
        [0.1],
        [b("MultiplicativeLR", lr_lambda="const09"), b("LinearLR", start_factor=0.5, total_iters=3)],
        steps(10),
        compose={"type": "sequential", "milestones": [4]},
    ),
    c(
        "sequential_linear_onecycle",
        "sgd",
        [0.1],
        [b("LinearLR", start_factor=0.2, total_iters=3), b("OneCycleLR", max_lr=0.5, total_steps=12)],
        steps(14),
        compose={"type": "sequential", "milestones": [3]},
        record_momentum=True,
    ),
    c(
        "sequential_onecycle_first",
        "sgd",
        [0.1],
        [b("OneCycleLR", max_lr=0.5, total_steps=10), b("ExponentialLR", gamma=0.9)],
        steps(14),
        compose={"type": "sequential", "milestones": [8]},
        record_momentum=True,
    ),
    c(
        "sequential_constant_cyclic",
        "sgd",
        [0.1],
        [b("ConstantLR", factor=0.5, total_iters=2), b("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=3)],
        steps(14),
        compose={"type": "sequential", "milestones": [4]},
        record_momentum=True,
    ),
    c(
        "sequential_cosine_swalr",
        "sgd",
        [0.1],
        [b("CosineAnnealingLR", T_max=10), b("SWALR", swa_lr=0.01, anneal_epochs=3)],
        steps(16),
        compose={"type": "sequential", "milestones": [10]},
    ),
    c(
        "sequential_exponential_cosine",
        "sgd",
        [0.1],
        [b("ExponentialLR", gamma=0.5), b("CosineAnnealingLR", T_max=5)],
        steps(10),
        compose={"type": "sequential", "milestones": [2]},
    ),
    c(
        "chained_constant_exponential",
        "sgd",
        [0.1],
        [b("ConstantLR", factor=0.1, total_iters=2), b("ExponentialLR", gamma=0.9)],
        steps(10),
        compose={"type": "chained"},
    ),
    c(
        "chained_linear_cosine",
        "sgd",
        [0.1, 0.02],
        [b("LinearLR", start_factor=0.25, total_iters=3), b("CosineAnnealingLR", T_max=6, eta_min=0.001)],
        steps(15),
        compose={"type": "chained"},
    ),
    c(
        "chained_step_multiplicative",
        "sgd",
        [0.1],
        [b("StepLR", step_size=2, gamma=0.5), b("MultiplicativeLR", lr_lambda="alt")],
        steps(10),
        compose={"type": "chained"},
    ),
]

# The cases test_lrscheduler.py is known for (its setUp optimizer: two groups,
# lr 0.05 and 0.5).
TLR = [0.05, 0.5]
CASES += [
    # Compound schedulers: each stepped once per epoch on the same optimizer.
    c("compound_step_multistep", "sgd", TLR,
      [b("StepLR", gamma=0.1, step_size=3), b("MultiStepLR", gamma=0.1, milestones=[2, 5, 9])], both(20)),
    c("compound_step_exp", "sgd", TLR, [b("StepLR", gamma=0.1, step_size=3), b("ExponentialLR", gamma=0.9)],
      both(20)),
    c("compound_exp_multistep", "sgd", TLR,
      [b("MultiStepLR", gamma=0.1, milestones=[2, 5, 9]), b("ExponentialLR", gamma=0.9)], both(20)),
    c("compound_exp_linear", "sgd", TLR,
      [b("ExponentialLR", gamma=0.9), b("LinearLR", start_factor=0.2, end_factor=0.6, total_iters=4)], both(20)),
    c("compound_step_constant", "sgd", TLR,
      [b("StepLR", gamma=0.1, step_size=3), b("ConstantLR", factor=0.1, total_iters=4)], both(20)),
    c("compound_linear_multistep", "sgd", TLR,
      [b("MultiStepLR", gamma=0.1, milestones=[2, 5, 9]), b("LinearLR", start_factor=0.2, total_iters=4)],
      both(20)),
    c("compound_cosine_step", "sgd", TLR,
      [b("CosineAnnealingLR", T_max=20, eta_min=0.001), b("StepLR", gamma=0.1, step_size=3)], both(20)),
    c("compound_cosine_multistep", "sgd", TLR,
      [b("CosineAnnealingLR", T_max=20, eta_min=0.001), b("MultiStepLR", gamma=0.1, milestones=[2, 5, 9])],
      both(20)),
    c("compound_cosine_linear", "sgd", TLR,
      [b("LinearLR", start_factor=0.2, total_iters=4), b("CosineAnnealingLR", T_max=20, eta_min=0.001)],
      both(20)),
    c("compound_cosine_exp", "sgd", TLR,
      [b("CosineAnnealingLR", T_max=20, eta_min=0.001), b("ExponentialLR", gamma=0.9)], both(20)),
    c("compound_cosine_poly", "sgd", TLR,
      [b("CosineAnnealingLR", T_max=20, eta_min=0.001), b("PolynomialLR", total_iters=5, power=2.0)], both(20)),
    c("compound_step_plateau", "sgd", TLR,
      [b("StepLR", gamma=0.1, step_size=3), b("ReduceLROnPlateau", patience=0, cooldown=1, threshold=0.1)],
      [op for i in range(20) for op in ({"k": 0}, {"km": [1, [10, 9, 8, 7, 7, 7, 7, 6, 6, 5][i % 10] + 0.0]})]),
    c("compound_exp_plateau_max_abs", "sgd", TLR,
      [b("ExponentialLR", gamma=0.9),
       b("ReduceLROnPlateau", mode="max", patience=1, threshold_mode="abs", threshold=0.1, factor=0.5)],
      [op for i in range(20) for op in ({"k": 0}, {"km": [1, 1.0 + 0.05 * (i % 6)]})]),
    c("compound_linear_plateau_min_lr", "sgd", TLR,
      [b("LinearLR", start_factor=0.2, total_iters=4), b("ReduceLROnPlateau", patience=0, min_lr=[0.01, 0.04])],
      [op for i in range(20) for op in ({"k": 0}, {"km": [1, 5.0]})]),
    # SequentialLR and ChainedScheduler with milestones.
    c("sequential_constant_exp", "sgd", TLR,
      [b("ConstantLR", factor=0.1, total_iters=2), b("ExponentialLR", gamma=0.9)], steps(10),
      compose={"type": "sequential", "milestones": [2]}),
    c("sequential_constant_exp_step", "sgd", TLR,
      [b("ConstantLR", factor=0.1, total_iters=2), b("ExponentialLR", gamma=0.9), b("StepLR", gamma=0.1, step_size=3)],
      steps(15), compose={"type": "sequential", "milestones": [2, 6]}),
    c("sequential_multistep_linear", "sgd", TLR,
      [b("MultiStepLR", gamma=0.1, milestones=[2, 4]), b("LinearLR", start_factor=0.1, total_iters=3)],
      steps(12), compose={"type": "sequential", "milestones": [5]}),
    c("sequential_linear_exp_late", "sgd", TLR,
      [b("LinearLR", start_factor=0.1, total_iters=5), b("ExponentialLR", gamma=0.9)], steps(12),
      compose={"type": "sequential", "milestones": [3]}),
    c("chained_step", "sgd", TLR, [b("StepLR", gamma=0.1, step_size=3)], steps(10), compose={"type": "chained"}),
    c("chained_linear", "sgd", TLR, [b("LinearLR", start_factor=0.4, total_iters=3)], steps(10),
      compose={"type": "chained"}),
    c("chained_step_linear", "sgd", TLR,
      [b("StepLR", gamma=0.1, step_size=3), b("LinearLR", start_factor=0.4, total_iters=3)], steps(10),
      compose={"type": "chained"}),
    c("chained_exp_constant_step", "sgd", TLR,
      [b("ExponentialLR", gamma=0.9), b("ConstantLR", factor=0.1, total_iters=3), b("StepLR", gamma=0.1, step_size=2)],
      steps(10), compose={"type": "chained"}),
    c("chained_multistep_cosine", "sgd", TLR,
      [b("MultiStepLR", gamma=0.1, milestones=[2, 5, 9]), b("CosineAnnealingLR", T_max=10, eta_min=0.001)],
      steps(15), compose={"type": "chained"}),
    # step(epoch): the closed forms, and a constant epoch keeps the lr constant.
    c("closed_form_step", "sgd", TLR, [b("StepLR", gamma=0.1, step_size=3)], [{"e": e} for e in range(12)]),
    c("closed_form_multistep", "sgd", TLR, [b("MultiStepLR", gamma=0.1, milestones=[2, 5, 9])],
      [{"e": e} for e in range(12)]),
    c("closed_form_exp", "sgd", TLR, [b("ExponentialLR", gamma=0.9)], [{"e": e} for e in [0, 1, 2, 5, 3, 10, 10]]),
    c("closed_form_cosine", "sgd", TLR, [b("CosineAnnealingLR", T_max=10, eta_min=0.01)],
      [{"e": e} for e in [0, 1, 3, 7, 10, 14, 20, 2]]),
    c("closed_form_linear", "sgd", TLR, [b("LinearLR", start_factor=0.2, end_factor=0.8, total_iters=5)],
      [{"e": e} for e in range(8)]),
    c("closed_form_constant", "sgd", TLR, [b("ConstantLR", factor=0.25, total_iters=4)],
      [{"e": e} for e in [0, 1, 3, 4, 6, 2, 2]]),
    c("closed_form_poly", "sgd", TLR, [b("PolynomialLR", total_iters=6, power=0.9)], [{"e": e} for e in range(9)]),
    c("constant_epoch_step", "sgd", TLR, [b("StepLR", step_size=2)], [{"e": 2}] * 6),
    c("constant_epoch_linear", "sgd", TLR, [b("LinearLR")], [{"e": 2}] * 6),
    # Resuming with last_epoch: the restored groups carry initial_lr.
    c("resume_step", "sgd", TLR, [b("StepLR", gamma=0.1, step_size=3, last_epoch=10)], steps(12),
      initial_lr=[0.01, 0.01]),
    c("resume_multistep", "sgd", TLR, [b("MultiStepLR", gamma=0.1, milestones=[2, 5, 9], last_epoch=4)], steps(10),
      initial_lr=[0.1, 1.0]),
    c("resume_exp", "sgd", TLR, [b("ExponentialLR", gamma=0.9, last_epoch=3)], steps(8), initial_lr=[0.1, 1.0]),
    c("resume_cosine_continue", "sgd", [0.0875, 0.875],
      [b("CosineAnnealingLR", T_max=5, eta_min=0.1, last_epoch=0)], steps(12), initial_lr=[0.05, 0.5]),
    c("resume_cosine_late", "sgd", TLR, [b("CosineAnnealingLR", T_max=10, eta_min=0.001, last_epoch=6)], steps(10),
      initial_lr=[0.1, 1.0]),
    c("resume_linear", "sgd", TLR, [b("LinearLR", start_factor=0.5, total_iters=4, last_epoch=1)], steps(6),
      initial_lr=[0.1, 1.0]),
    c("resume_constant", "sgd", TLR, [b("ConstantLR", factor=0.5, total_iters=4, last_epoch=2)], steps(6),
      initial_lr=[0.1, 1.0]),
    c("resume_poly", "sgd", TLR, [b("PolynomialLR", total_iters=8, power=2.0, last_epoch=3)], steps(8),
      initial_lr=[0.1, 1.0]),
    c("resume_lambda", "sgd", TLR, [b("LambdaLR", lr_lambda="pow095", last_epoch=5)], steps(6),
      initial_lr=[0.1, 1.0]),
    c("resume_multiplicative", "sgd", TLR, [b("MultiplicativeLR", lr_lambda="const09", last_epoch=5)], steps(6),
      initial_lr=[0.1, 1.0]),
    # Warm restarts with T_mult.
    c("cawr_t_mult_3", "sgd", TLR, [b("CosineAnnealingWarmRestarts", T_0=2, T_mult=3, eta_min=1e-4)], steps(30)),
    c("cawr_epochs_t_mult_2", "sgd", TLR, [b("CosineAnnealingWarmRestarts", T_0=10, T_mult=2, eta_min=1e-4)],
      [{"e": 0.1 * i} for i in range(0, 400, 7)]),
    # CyclicLR exp_range and OneCycleLR on the two-group optimizer.
    c("cyclic_exp_range_sgd", "sgd", TLR,
      [b("CyclicLR", base_lr=[0.01, 0.1], max_lr=[0.05, 0.5], step_size_up=4, mode="exp_range", gamma=0.9)],
      steps(30), record_momentum=True),
    c("onecycle_three_phase_two_groups", "sgd", TLR,
      [b("OneCycleLR", max_lr=[0.1, 1.0], total_steps=25, three_phase=True, anneal_strategy="linear")],
      steps(25), record_momentum=True),
    # ReduceLROnPlateau: threshold modes, cooldown, min_lr per group, eps.
    c("plateau_rel_min_cooldown", "sgd", TLR,
      [b("ReduceLROnPlateau", threshold=0.1, factor=0.1, patience=0, cooldown=2)],
      [{"m": 10 - i * 0.05} for i in range(20)]),
    c("plateau_abs_min", "sgd", TLR,
      [b("ReduceLROnPlateau", threshold_mode="abs", threshold=3, factor=0.5, patience=1)],
      [{"m": m} for m in [10, 8, 6, 4, 2, 1, 0.5, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1]]),
    c("plateau_rel_max_cooldown", "sgd", TLR,
      [b("ReduceLROnPlateau", mode="max", threshold=0.1, factor=0.1, patience=0, cooldown=1)],
      [{"m": m} for m in [1, 1.05, 1.1, 1.2, 1.25, 1.3, 1.5, 1.6, 1.6, 1.6, 2, 2.1]]),
    c("plateau_abs_max_min_lr", "sgd", TLR,
      [b("ReduceLROnPlateau", mode="max", threshold_mode="abs", threshold=0.5, factor=0.5, patience=0,
         min_lr=[0.01, 0.2])],
      [{"m": m} for m in [1, 1.2, 1.4, 1.6, 3, 3.2, 3.4, 3.6, 3.8, 4]]),
    c("plateau_eps_blocks_tiny_changes", "sgd", [1e-7, 0.5],
      [b("ReduceLROnPlateau", factor=0.9, patience=0, eps=1e-6)], [{"m": 1.0}] * 8),
]

ERRORS = [
    ("sgd", b("ConstantLR", factor=1.5)),
    ("sgd", b("LinearLR", start_factor=0.0)),
    ("sgd", b("LinearLR", end_factor=1.5)),
    ("sgd", b("CosineAnnealingWarmRestarts", T_0=0)),
    ("sgd", b("CosineAnnealingWarmRestarts", T_0=2, T_mult=0)),
    ("adagrad", b("CyclicLR", base_lr=0.01, max_lr=0.1)),
    ("sgd", b("CyclicLR", base_lr=[0.01, 0.02], max_lr=0.1)),
    ("sgd", b("OneCycleLR", max_lr=0.1, total_steps=0)),
    ("sgd", b("OneCycleLR", max_lr=0.1, total_steps=-3)),
    ("sgd", b("OneCycleLR", max_lr=0.1)),
    ("sgd", b("OneCycleLR", max_lr=0.1, epochs=0, steps_per_epoch=3)),
    ("sgd", b("OneCycleLR", max_lr=0.1, epochs=3, steps_per_epoch=-1)),
    ("sgd", b("OneCycleLR", max_lr=0.1, total_steps=10, pct_start=1.5)),
    ("adagrad", b("OneCycleLR", max_lr=0.1, total_steps=10)),
    ("sgd", b("OneCycleLR", max_lr=[0.1, 0.2], total_steps=10)),
    ("sgd", b("ReduceLROnPlateau", factor=1.0)),
    ("sgd", b("ReduceLROnPlateau", min_lr=[0.1, 0.2])),
    ("sgd", b("SWALR", swa_lr=0.1, anneal_epochs=-1)),
    ("sgd", b("SWALR", swa_lr=[0.1, 0.2])),
    ("sgd", b("LambdaLR", lr_lambda=["pow095", "inv"])),
    # Resuming needs the groups' initial_lr (PyTorch raises a KeyError).
    ("sgd", b("StepLR", step_size=3, last_epoch=10)),
    ("sgd", b("CosineAnnealingLR", T_max=10, last_epoch=0)),
]


def run_errors():
    out = []
    for kind, spec in ERRORS:
        opt = make_optimizer(kind, [0.1])
        try:
            build(opt, spec)
        except (ValueError, TypeError) as e:
            out.append({"optimizer": kind, "build": floats_as_strings(spec), "error": str(e)})
            continue
        except KeyError as e:
            # A KeyError's str() is the repr of its message: keep its first line.
            out.append({"optimizer": kind, "build": floats_as_strings(spec), "error": e.args[0].split("\n")[0]})
            continue
        raise AssertionError(f"{spec} did not fail")
    # Stepping OneCycleLR past total_steps.
    opt = make_optimizer("sgd", [0.1])
    s = L.OneCycleLR(opt, max_lr=0.1, total_steps=3)
    for _ in range(3):
        s.step()
    try:
        s.step()
    except ValueError as e:
        out.append({"optimizer": "sgd", "build": floats_as_strings(b("OneCycleLR", max_lr=0.1, total_steps=3)), "steps": 4, "error": str(e)})
    return out


def run_averaged():
    torch.manual_seed(0)
    shapes = {"w": (2, 3), "b": (3,)}
    seq = [{k: torch.randn(s) for k, s in shapes.items()} for _ in range(7)]
    out = []
    for name, kwargs in [
        ("swa", {}),
        ("ema", {"multi_avg_fn": S.get_ema_multi_avg_fn(0.9)}),
        ("ema_999", {"multi_avg_fn": S.get_ema_multi_avg_fn(0.999)}),
    ]:
        model = torch.nn.Module()
        model.w = torch.nn.Parameter(seq[0]["w"].clone())
        model.b = torch.nn.Parameter(seq[0]["b"].clone())
        avg = S.AveragedModel(model, **kwargs)
        history = []
        for values in seq:
            with torch.no_grad():
                model.w.copy_(values["w"])
                model.b.copy_(values["b"])
            avg.update_parameters(model)
            history.append({k: [f(x) for x in getattr(avg.module, k).flatten().tolist()] for k in shapes})
        out.append({"name": name, "decay": floats_as_strings({"swa": None, "ema": 0.9, "ema_999": 0.999}[name]), "history": history})
    inputs = [{k: [f(x) for x in v.flatten().tolist()] for k, v in values.items()} for values in seq]
    return {"shapes": {k: list(s) for k, s in shapes.items()}, "inputs": inputs, "runs": out}


def main():
    cases = [run_case(case) for case in CASES]
    with open(os.path.join(HERE, "schedulers.json"), "w") as fh:
        json.dump({"torch": torch.__version__, "cases": cases}, fh, indent=None, separators=(",", ":"))
    with open(os.path.join(HERE, "errors.json"), "w") as fh:
        json.dump({"torch": torch.__version__, "errors": run_errors()}, fh, indent=1)
    with open(os.path.join(HERE, "averaged.json"), "w") as fh:
        json.dump({"torch": torch.__version__, **run_averaged()}, fh, indent=None, separators=(",", ":"))
    print(f"{len(cases)} cases")


if __name__ == "__main__":
    main()
