"""PyTorch's own optimizer test database (`optim_db`) as kiln's parity spec.

Run from the repository root (`make golden` does):
    PYTHONPATH=.libtorch python3 crates/optim/tests/conformance/make_optim_db.py

Walks `optim_db` of `torch/testing/_internal/common_optimizers.py` (the
configurations and error inputs PyTorch's own `test_optim.py` runs) with
`_get_optim_inputs_including_global_cliquey_kwargs(device="cpu", ...)`, i.e.
every CPU configuration including the `fused` / `differentiable` variants, and
writes `optim_db.json` next to this script:

- for every configuration, three runs: float32 parameters, float64 parameters
  under the default dtype float32 (PyTorch's own tests run so), and float64
  parameters under `torch.set_default_dtype(torch.float64)`. Each run is
  PyTorch's `test_forloop_goes_right_direction` problem made smaller: `weight`
  (4x3), `bias` (4) and an `unused` parameter that never gets a gradient;
  loss `(weight.mv(input) + bias).pow(2).sum()`; STEPS calls of
  `optimizer.step(closure)` (Muon gets only 2-D parameters; SparseAdam gets the
  gradients as sparse tensors, as PyTorch's test converts them). Recorded:
  every closure evaluation (its loss and the gradients it left, in order), the
  parameters after every step, and the state dict at the end (per-parameter
  state and the param groups' hyperparameters);
- every CPU error input with PyTorch's actual message (or warning);
- every configuration or error input kiln cannot express, with the reason
  (`skip`), so the Rust side counts and lists it instead of dropping it.

Machine independence. The fixture records PyTorch's *gradients*, and the Rust
test (`tests/conformance.rs`) feeds those exact gradients to kiln's optimizer
through the closure instead of recomputing them. Forward and backward passes
(matrix products through MKL/oneDNN, vectorised `tanh`, reductions) round
differently on different CPUs, so a fixture whose gradients were recomputed
on the test machine only matches the machine that wrote it; the optimizers'
own arithmetic on given gradients is elementwise (plus LBFGS's dot products
and Muon's small matrix products), and ATen's AVX2 and AVX-512 kernels give
the same bits for it (checked by rerunning this script with
`ATEN_CPU_CAPABILITY=avx2` / `avx512` and `MKL_ENABLE_INSTRUCTIONS=SSE4_2` …
`AVX512`: identical files). Only ATen's `default` (no-AVX2, no-FMA) kernels,
used on x86-64 CPUs older than AVX2, round `add(alpha=)`-style updates
differently. The comparison is bit for bit, so one ulp off in kiln's update
fails the test.
"""
import copy
import json
import math
import os
import sys
import warnings

import torch
from torch.testing._internal.common_optimizers import (
    OptimizerErrorEnum,
    _get_optim_inputs_including_global_cliquey_kwargs,
    optim_db,
)

STEPS = 5

# torch class name -> kiln registry name.
NAMES = {
    "Adadelta": "adadelta", "Adafactor": "adafactor", "Adagrad": "adagrad", "Adam": "adam",
    "AdamW": "adamw", "Adamax": "adamax", "ASGD": "asgd", "LBFGS": "lbfgs", "Muon": "muon",
    "NAdam": "nadam", "RAdam": "radam", "RMSprop": "rmsprop", "Rprop": "rprop", "SGD": "sgd",
    "SparseAdam": "sparse_adam",
}

RUNS = [  # (key, parameter dtype, default dtype)
    ("f32", torch.float32, torch.float32),
    ("f64", torch.float64, torch.float32),
    ("f64_default_f64", torch.float64, torch.float64),
]


def num(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def enc(t):
    """A tensor as {dtype, shape, data} (sparse: indices and values)."""
    t = t.detach()
    dtype = str(t.dtype).replace("torch.", "")
    if t.is_sparse:
        return {"dtype": dtype, "shape": list(t.shape), "sparse": True,
                "indices": t._indices().tolist(), "values": [num(x) for x in t._values().reshape(-1).tolist()]}
    return {"dtype": dtype, "shape": list(t.shape), "data": [num(x) for x in t.reshape(-1).tolist()]}


def enc_value(v):
    if isinstance(v, torch.Tensor):
        return enc(v)
    if isinstance(v, (list, tuple)):
        return [enc_value(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return num(v)
    raise TypeError(f"cannot encode {type(v)}")


def spec_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        return ";".join(spec_value(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def skip_reason(kwargs):
    """Why kiln cannot express this configuration, or None."""
    if kwargs.get("differentiable"):
        return "differentiable=True: autograd through the optimizer step is not implemented in kiln"
    if kwargs.get("foreach"):
        return "foreach=True: kiln has the single-tensor and fused paths only"
    if kwargs.get("capturable"):
        return "capturable=True: CUDA-graph capture is not implemented in kiln"
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor) or (isinstance(v, tuple) and any(isinstance(x, torch.Tensor) for x in v)):
            return f"{k} as a Tensor: kiln's hyperparameters are floats"
    return None


def spec_of(name, kwargs):
    items = []
    for k, v in kwargs.items():
        if k in ("differentiable", "foreach", "capturable") and v is False:
            continue  # kiln has no such switch; False is its only behaviour
        items.append(f"{k}={spec_value(v)}")
    return NAMES[name] + (":" + ",".join(items) if items else "")


def problem(pdtype, muon):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn((4, 3), generator=g, dtype=torch.float64).to(pdtype)
    bias = torch.randn(4, generator=g, dtype=torch.float64).to(pdtype)
    inp = torch.randn(3, generator=g, dtype=torch.float64).to(pdtype)
    unused = torch.randn((2, 2) if muon else (2,), generator=g, dtype=torch.float64).to(pdtype)
    params = [("weight", weight)] + ([] if muon else [("bias", bias)]) + [("unused", unused)]
    return [(n, torch.nn.Parameter(t.clone())) for n, t in params], bias.clone(), inp


def run(info, kwargs, pdtype, default_dtype):
    torch.set_default_dtype(default_dtype)
    try:
        muon = info.name == "Muon"
        sparse = info.only_supports_sparse_grads
        named, bias_const, inp = problem(pdtype, muon)
        p = dict(named)
        weight = p["weight"]
        bias = p.get("bias", bias_const)
        opt = info.optim_cls([t for _, t in named], **kwargs)
        evals = []

        def closure():
            opt.zero_grad()
            loss = (weight.mv(inp) + bias).pow(2).sum()
            loss.backward()
            if sparse:
                for _, t in named:
                    if t.grad is not None:
                        t.grad = t.grad.to_sparse()
            evals.append({"loss": float(loss),
                          "grads": [None if t.grad is None else enc(t.grad) for _, t in named]})
            return loss

        trajectory, losses = [], []
        for _ in range(STEPS):
            start = len(evals)
            loss = opt.step(closure)
            losses.append(float(loss))
            trajectory.append({"evals": evals[start:], "params": [enc(t) for _, t in named]})
        sd = opt.state_dict()
        names = [n for n, _ in named]
        state = {names[i]: {k: enc_value(v) for k, v in s.items()} for i, s in sd["state"].items()}
        groups = [{k: enc_value(v) for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
        return {
            "init": [[n, enc(t0)] for (n, t0) in problem(pdtype, muon)[0]],
            "steps": trajectory,
            "losses": losses,
            "state": state,
            "param_groups": groups,
        }
    finally:
        torch.set_default_dtype(torch.float32)


def param_kind(ps):
    """(how kiln's side builds the parameters of an error input, skip reason)."""
    if ps is None:
        return "default", None
    if not isinstance(ps, (list, tuple)):
        return None, "params is a bare tensor: kiln's constructors take a Vec of named parameters"
    if all(isinstance(g, dict) for g in ps):
        groups = [g["params"] if isinstance(g["params"], list) else [g["params"]] for g in ps]
        flat = [t for g in groups for t in g]
        if any(isinstance(t, tuple) for t in flat):
            return None, "unnamed parameters: every kiln parameter has a name"
        if len(flat) == 2 and flat[0] is flat[1]:
            return "same_param_in_two_groups", None
        return tensor_kind(flat[0]) + "_in_group", None
    if any(isinstance(t, tuple) for t in ps):
        return None, "unnamed parameters: every kiln parameter has a name"
    if len(ps) == 2 and ps[0] is ps[1]:
        return "same_param_twice", None
    return tensor_kind(ps[0]), None


def tensor_kind(t):
    if t.is_sparse:
        return "sparse"
    if t.is_complex():
        return "complex"
    return "shape:" + ",".join(str(s) for s in t.shape)


def pytorch_error(info, params, kwargs, err):
    """(PyTorch's message, exception type name or None for a warning)."""
    params = copy.deepcopy(params)
    if params is None:
        params = [torch.nn.Parameter(torch.randn(2, 3))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            opt = info.optim_cls(params, **kwargs)
            if err.error_on == OptimizerErrorEnum.STEP_ERROR:
                opt.step()
        except Exception as e:  # noqa: BLE001 - PyTorch's message is the point
            return str(e), type(e).__name__
    hits = [str(w.message) for w in caught if issubclass(w.category, err.error_type)]
    return (hits[0] if hits else None), None


def error_case(info, err):
    """Runs one ErrorOptimizerInput; returns its record (with PyTorch's message)."""
    oi = err.optimizer_error_input
    rec = {"desc": oi.desc, "error_on": err.error_on.name, "error_type": err.error_type.__name__}
    kwargs = dict(oi.kwargs)
    # How kiln can express the input (before PyTorch's constructor rewrites the groups).
    kind, reason = param_kind(oi.params)
    message, rec["raised"] = pytorch_error(info, oi.params, kwargs, err)
    rec["message"] = message
    floats = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in kwargs.items()}
    if floats != kwargs or any(type(a) is not type(b) for a, b in zip(floats.values(), kwargs.values())):
        # kiln's hyperparameters are floats: `weight_decay=-1` is `-1.0` there,
        # and PyTorch formats the value it was given.
        rec["kiln_input"] = "integer hyperparameters as floats"
        rec["message"] = pytorch_error(info, oi.params, floats, err)[0]
        rec["message_as_given"] = message
    reason = reason or skip_reason(kwargs)
    if reason is None and issubclass(err.error_type, Warning):
        reason = (f"PyTorch only warns ({err.error_type.__name__}: {message}); "
                  "kiln keys state by parameter name and refuses a repeated name outright")
    if reason is None and isinstance(kwargs.get("adjust_lr_fn"), str):
        reason = ("adjust_lr_fn by name: kiln's spec takes adjust_lr_fn as 0 (original) or 1 "
                  "(match_rms_adamw), so an unknown function name cannot be written")
    if reason is None and kind == "same_param_in_two_groups" and info.name == "LBFGS":
        reason = ("two param groups: kiln's LBFGS takes one parameter list (PyTorch's LBFGS "
                  "refuses a second group too, after this check)")
    if reason is not None:
        rec["skip"] = reason
        return rec
    rec["params"] = kind
    rec["spec"] = spec_of(info.name, kwargs)
    return rec


def main():
    torch.set_num_threads(1)
    out = {"torch": torch.__version__, "steps": STEPS, "optimizers": []}
    for info in optim_db:
        name = info.name
        entry = {"name": name, "spec_name": NAMES[name], "configs": [], "errors": []}
        for oi in _get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.float32, info):
            kwargs = dict(oi.kwargs)
            case = {"desc": oi.desc, "kwargs": {k: spec_value(v) if not isinstance(v, torch.Tensor) else "tensor"
                                                for k, v in kwargs.items()}}
            reason = skip_reason(kwargs)
            if reason is not None:
                case["skip"] = reason
            else:
                case["spec"] = spec_of(name, kwargs)
                for key, pdtype, ddtype in RUNS:
                    case[key] = run(info, kwargs, pdtype, ddtype)
            entry["configs"].append(case)
        if info.optim_error_inputs_func is not None:
            torch.manual_seed(0)
            for err in info.optim_error_inputs_func(device="cpu", dtype=torch.float32):
                entry["errors"].append(error_case(info, err))
        out["optimizers"].append(entry)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim_db.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    n_cfg = sum(len(e["configs"]) for e in out["optimizers"])
    n_skip = sum(1 for e in out["optimizers"] for c in e["configs"] if "skip" in c)
    n_err = sum(len(e["errors"]) for e in out["optimizers"])
    print(f"wrote {path}: {os.path.getsize(path)} bytes, {n_cfg} configurations ({n_skip} skipped), "
          f"{n_err} error inputs", file=sys.stderr)


if __name__ == "__main__":
    main()
