"""Records torch.optim trajectories for kiln-optim's golden tests.

Run from the repository root:
    PYTHONPATH=.libtorch python3 crates/optim/tests/golden/make_golden.py

For every optimizer and flag combination: a small MLP (Linear(4,3), tanh,
Linear(3,2)) plus one parameter that never receives a gradient, fixed data,
MSE loss, STEPS steps; the parameters after each step are recorded, in
float64 and float32. Each case carries the kiln spec string that must build
the same optimizer. Writes optim_golden.json next to this script.

Machine independence: every gradient PyTorch computed is recorded too (per
step; per closure evaluation for LBFGS, with the loss; the sparse gradients
of the SparseAdam cases as PyTorch's uncoalesced indices and values; the
gradients clip_grad_norm_ / clip_grad_value_ start from), and the Rust tests
feed exactly those gradients to kiln instead of recomputing them. The
model's forward and backward (matrix products through MKL, vectorised tanh,
reductions) round differently on different CPUs, so recomputed gradients
match only the machine that wrote this file, while the optimizers' own
arithmetic on given gradients is elementwise (plus LBFGS's dot products,
Muon's small matrix products and clip_grad_norm_'s norms), for which ATen's
AVX2 and AVX-512 kernels and MKL's code paths give the same bits (checked by
rerunning with ATEN_CPU_CAPABILITY=avx2|avx512 and
MKL_ENABLE_INSTRUCTIONS=SSE4_2|AVX|AVX2|AVX512: identical results). Only
ATen's `default` kernels (x86-64 CPUs without AVX2/FMA) round
`add(alpha=)`-style updates differently. The tests compare bit for bit, so
one ulp off in kiln's update fails them.
"""
import json
import math
import os

import torch

STEPS = 20
LBFGS_STEPS = 4

# (spec, torch class name, kwargs, overrides)
# overrides: list of (patterns, hyperparameters) -> extra param groups.
CASES = [
    ("sgd:lr=0.05", "SGD", dict(lr=0.05), []),
    ("sgd:lr=0.05,momentum=0.9", "SGD", dict(lr=0.05, momentum=0.9), []),
    ("sgd:lr=0.05,momentum=0.9,nesterov=true", "SGD", dict(lr=0.05, momentum=0.9, nesterov=True), []),
    ("sgd:lr=0.05,momentum=0.8,dampening=0.1,weight_decay=0.01", "SGD",
     dict(lr=0.05, momentum=0.8, dampening=0.1, weight_decay=0.01), []),
    ("sgd:lr=0.05,momentum=0.9,maximize=true", "SGD", dict(lr=0.05, momentum=0.9, maximize=True), []),
    ("sgd:lr=0.05,momentum=0.9,weight_decay=0.1", "SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.1),
     [(["*.bias"], dict(weight_decay=0.0, lr=0.1))]),
    ("sgd:lr=0.05,momentum=0.9,fused=true", "SGD", dict(lr=0.05, momentum=0.9, fused=True), []),
    ("sgd:lr=0.05,momentum=0.9,nesterov=true,weight_decay=0.01,fused=true", "SGD",
     dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, fused=True), []),
    ("sgd:lr=0.05,fused=true", "SGD", dict(lr=0.05, fused=True), []),
    ("adam:lr=0.05", "Adam", dict(lr=0.05), []),
    ("adam:lr=0.05,betas=0.8;0.99,eps=1e-6,amsgrad=true", "Adam",
     dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, amsgrad=True), []),
    ("adam:lr=0.05,weight_decay=0.1", "Adam", dict(lr=0.05, weight_decay=0.1), []),
    ("adam:lr=0.05,weight_decay=0.1,decoupled_weight_decay=true", "Adam",
     dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True), []),
    ("adam:lr=0.05,maximize=true", "Adam", dict(lr=0.05, maximize=True), []),
    ("adam:lr=0.05,fused=true", "Adam", dict(lr=0.05, fused=True), []),
    ("adam:lr=0.05,amsgrad=true,weight_decay=0.1,fused=true", "Adam",
     dict(lr=0.05, amsgrad=True, weight_decay=0.1, fused=True), []),
    ("adamw:lr=0.05", "AdamW", dict(lr=0.05), []),
    ("adamw:lr=0.05,weight_decay=0.05,amsgrad=true", "AdamW", dict(lr=0.05, weight_decay=0.05, amsgrad=True), []),
    ("adamw:lr=0.05,maximize=true", "AdamW", dict(lr=0.05, maximize=True), []),
    ("adamw:lr=0.05,weight_decay=0.1", "AdamW", dict(lr=0.05, weight_decay=0.1),
     [(["*.bias", "unused"], dict(weight_decay=0.0))]),
    ("adamw:lr=0.05,weight_decay=0.1,fused=true", "AdamW", dict(lr=0.05, weight_decay=0.1, fused=True), []),
    ("adagrad:lr=0.1", "Adagrad", dict(lr=0.1), []),
    ("adagrad:lr=0.1,lr_decay=0.01,weight_decay=0.1,initial_accumulator_value=0.1", "Adagrad",
     dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1), []),
    ("adagrad:lr=0.1,maximize=true", "Adagrad", dict(lr=0.1, maximize=True), []),
    ("adadelta", "Adadelta", dict(), []),
    ("adadelta:lr=0.5,rho=0.5,weight_decay=0.1", "Adadelta", dict(lr=0.5, rho=0.5, weight_decay=0.1), []),
    ("adadelta:maximize=true", "Adadelta", dict(maximize=True), []),
    ("adamax:lr=0.05", "Adamax", dict(lr=0.05), []),
    ("adamax:lr=0.05,betas=0.8;0.9,weight_decay=0.1", "Adamax", dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.1), []),
    ("adamax:lr=0.05,maximize=true", "Adamax", dict(lr=0.05, maximize=True), []),
    ("nadam:lr=0.05", "NAdam", dict(lr=0.05), []),
    ("nadam:lr=0.05,weight_decay=0.1,momentum_decay=0.01", "NAdam",
     dict(lr=0.05, weight_decay=0.1, momentum_decay=0.01), []),
    ("nadam:lr=0.05,weight_decay=0.1,decoupled_weight_decay=true", "NAdam",
     dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True), []),
    ("nadam:lr=0.05,maximize=true", "NAdam", dict(lr=0.05, maximize=True), []),
    ("radam:lr=0.05", "RAdam", dict(lr=0.05), []),
    ("radam:lr=0.05,weight_decay=0.1", "RAdam", dict(lr=0.05, weight_decay=0.1), []),
    ("radam:lr=0.05,weight_decay=0.1,decoupled_weight_decay=true", "RAdam",
     dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True), []),
    ("radam:lr=0.05,maximize=true", "RAdam", dict(lr=0.05, maximize=True), []),
    ("rmsprop:lr=0.01", "RMSprop", dict(lr=0.01), []),
    ("rmsprop:lr=0.01,centered=true", "RMSprop", dict(lr=0.01, centered=True), []),
    ("rmsprop:lr=0.01,momentum=0.9", "RMSprop", dict(lr=0.01, momentum=0.9), []),
    ("rmsprop:lr=0.01,alpha=0.9,centered=true,momentum=0.5,weight_decay=0.1", "RMSprop",
     dict(lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1), []),
    ("rmsprop:lr=0.01,maximize=true", "RMSprop", dict(lr=0.01, maximize=True), []),
    ("rprop:lr=0.01", "Rprop", dict(lr=0.01), []),
    ("rprop:lr=0.01,etas=0.3;1.5,step_sizes=0.001;0.02", "Rprop",
     dict(lr=0.01, etas=(0.3, 1.5), step_sizes=(0.001, 0.02)), []),
    ("rprop:lr=0.01,maximize=true", "Rprop", dict(lr=0.01, maximize=True), []),
    ("asgd:lr=0.05", "ASGD", dict(lr=0.05), []),
    ("asgd:lr=0.05,lambd=0.01,alpha=0.5,t0=5,weight_decay=0.1", "ASGD",
     dict(lr=0.05, lambd=0.01, alpha=0.5, t0=5, weight_decay=0.1), []),
    ("asgd:lr=0.05,t0=3,maximize=true", "ASGD", dict(lr=0.05, t0=3, maximize=True), []),
    ("adafactor:lr=0.05", "Adafactor", dict(lr=0.05), []),
    ("adafactor:lr=0.05,weight_decay=0.1,beta2_decay=-0.5,d=2.0", "Adafactor",
     dict(lr=0.05, weight_decay=0.1, beta2_decay=-0.5, d=2.0), []),
    ("adafactor:lr=0.05,eps=1e-4;1e-2,maximize=true", "Adafactor", dict(lr=0.05, eps=(1e-4, 1e-2), maximize=True), []),
    ("muon:lr=0.05", "Muon", dict(lr=0.05), [], ["0.weight", "2.weight"]),
    ("muon:lr=0.05,nesterov=false,momentum=0.9,weight_decay=0,ns_steps=3,adjust_lr_fn=1", "Muon",
     dict(lr=0.05, nesterov=False, momentum=0.9, weight_decay=0.0, ns_steps=3, adjust_lr_fn="match_rms_adamw"), [],
     ["0.weight", "2.weight"]),
]

LBFGS_CASES = [
    ("lbfgs", dict()),
    ("lbfgs:lr=0.5,max_iter=5,history_size=3", dict(lr=0.5, max_iter=5, history_size=3)),
    ("lbfgs:line_search_fn=strong_wolfe", dict(line_search_fn="strong_wolfe")),
    ("lbfgs:line_search_fn=strong_wolfe,max_iter=7,history_size=2,tolerance_change=1e-12", dict(
        line_search_fn="strong_wolfe", max_iter=7, history_size=2, tolerance_change=1e-12)),
]


# Invalid hyperparameters: kiln must refuse them with PyTorch's message.
ERRORS = [
    ("sgd:lr=-1", "SGD", dict(lr=-1.0)),
    ("sgd:momentum=-0.5", "SGD", dict(momentum=-0.5)),
    ("sgd:weight_decay=-1e-5", "SGD", dict(weight_decay=-1e-5)),
    ("sgd:nesterov=true", "SGD", dict(nesterov=True)),
    ("adam:lr=nan", "Adam", dict(lr=float("nan"))),
    ("adam:lr=-0.001", "Adam", dict(lr=-0.001)),
    ("adam:eps=-1e-8", "Adam", dict(eps=-1e-8)),
    ("adam:betas=1.0;0.999", "Adam", dict(betas=(1.0, 0.999))),
    ("adam:betas=0.9;-0.1", "Adam", dict(betas=(0.9, -0.1))),
    ("adam:weight_decay=-0.1", "Adam", dict(weight_decay=-0.1)),
    ("adamw:betas=0.9;1.5", "AdamW", dict(betas=(0.9, 1.5))),
    ("adagrad:lr_decay=-1", "Adagrad", dict(lr_decay=-1.0)),
    ("adagrad:initial_accumulator_value=-0.1", "Adagrad", dict(initial_accumulator_value=-0.1)),
    ("adagrad:eps=-1", "Adagrad", dict(eps=-1.0)),
    ("adadelta:rho=1.5", "Adadelta", dict(rho=1.5)),
    ("adadelta:eps=-1", "Adadelta", dict(eps=-1.0)),
    ("adamax:betas=-0.1;0.9", "Adamax", dict(betas=(-0.1, 0.9))),
    ("nadam:momentum_decay=-0.004", "NAdam", dict(momentum_decay=-0.004)),
    ("radam:weight_decay=-1", "RAdam", dict(weight_decay=-1.0)),
    ("rmsprop:alpha=-0.5", "RMSprop", dict(alpha=-0.5)),
    ("rmsprop:momentum=-0.9", "RMSprop", dict(momentum=-0.9)),
    ("rprop:etas=0.5;0.9", "Rprop", dict(etas=(0.5, 0.9))),
    ("rprop:etas=1.5;2.0", "Rprop", dict(etas=(1.5, 2.0))),
    ("asgd:weight_decay=-0.01", "ASGD", dict(weight_decay=-0.01)),
    ("lbfgs:lr=-1", "LBFGS", dict(lr=-1.0)),
    ("adafactor:beta2_decay=0.5", "Adafactor", dict(beta2_decay=0.5)),
    ("adafactor:d=0.5", "Adafactor", dict(d=0.5)),
    ("adafactor:eps=-1;0.001", "Adafactor", dict(eps=(-1.0, 1e-3))),
    ("muon:momentum=-1", "Muon", dict(momentum=-1.0)),
    ("sparse_adam:lr=0", "SparseAdam", dict(lr=0.0)),
    ("sparse_adam:eps=0", "SparseAdam", dict(eps=0.0)),
]


def data(dtype):
    x = torch.tensor([[math.sin(0.7 * i + 0.3 * j) for j in range(4)] for i in range(8)], dtype=dtype)
    y = torch.tensor([[math.cos(0.5 * i - 0.9 * j) for j in range(2)] for i in range(8)], dtype=dtype)
    return x, y


def init_params(dtype):
    def mat(r, c, s):
        return torch.tensor([[math.sin(s + 1.3 * i + 0.71 * j) * 0.5 for j in range(c)] for i in range(r)],
                            dtype=dtype)

    def vec(n, s):
        return torch.tensor([math.cos(s + 0.9 * i) * 0.1 for i in range(n)], dtype=dtype)

    return [("0.weight", mat(3, 4, 0.1)), ("0.bias", vec(3, 0.2)), ("unused", vec(2, 0.5)),
            ("2.weight", mat(2, 3, 0.3)), ("2.bias", vec(2, 0.4))]


def loss_fn(params, x, y):
    p = dict(params)
    h = torch.tanh(torch.nn.functional.linear(x, p["0.weight"], p["0.bias"]))
    out = torch.nn.functional.linear(h, p["2.weight"], p["2.bias"])
    return torch.nn.functional.mse_loss(out, y)


def flat(params):
    return [v for _, p in params for v in p.detach().reshape(-1).tolist()]


def grads_at_init(dtype):
    x, y = data(dtype)
    params = [(n, t.clone().requires_grad_(True)) for n, t in init_params(dtype)]
    loss_fn(params, x, y).backward()
    return params


def grads_flat(params):
    return [v for _, p in params if p.grad is not None for v in p.grad.reshape(-1).tolist()]


def grads_per_param(params):
    """Each parameter's gradient, flattened (None without one), in parameter order."""
    return [None if p.grad is None else p.grad.reshape(-1).tolist() for _, p in params]


def make_groups(params, overrides):
    if not overrides:
        return [p for _, p in params]
    import fnmatch
    groups = [{"params": []}] + [dict(hp, params=[]) for _, hp in overrides]
    for name, p in params:
        slot = 0
        for i, (pats, _) in enumerate(overrides):
            if any(fnmatch.fnmatchcase(name, pat) for pat in pats):
                slot = i + 1
                break
        groups[slot]["params"].append(p)
    return groups


def run(cls, kwargs, overrides, dtype, only=None):
    x, y = data(dtype)
    params = [(n, t.clone().requires_grad_(True)) for n, t in init_params(dtype)]
    chosen = [(n, p) for n, p in params if only is None or n in only]
    opt = getattr(torch.optim, cls)(make_groups(chosen, overrides), **kwargs)
    traj, grads = [], []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = loss_fn(params, x, y)
        loss.backward()
        grads.append(grads_per_param(params))
        opt.step()
        traj.append(flat(params))
    return traj, grads


SPARSE_CASES = [
    ("sparse_adam:lr=0.05", dict(lr=0.05)),
    ("sparse_adam:lr=0.05,betas=0.8;0.99,eps=1e-6,maximize=true", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6,
                                                                         maximize=True)),
]
SPARSE_INDICES = [[1, 3, 3, 7], [0, 1, 9, 3], [5, 5, 2, 8]]


def sparse_weight(dtype):
    return torch.tensor([[math.sin(0.37 * i + 0.11 * j) for j in range(3)] for i in range(10)], dtype=dtype)


def run_sparse(kwargs, dtype):
    """An embedding bag with sparse gradients (nn.Embedding(sparse=True))."""
    w = sparse_weight(dtype).requires_grad_(True)
    idx = torch.tensor(SPARSE_INDICES)
    target = torch.tensor([[0.5, -0.5, 1.0], [1.0, 0.0, -1.0], [-0.5, 0.25, 0.75]], dtype=dtype)
    opt = torch.optim.SparseAdam([w], **kwargs)
    traj, grads = [], []
    for _ in range(STEPS):
        opt.zero_grad()
        emb = torch.nn.functional.embedding(idx, w, sparse=True)
        loss = torch.nn.functional.mse_loss(emb.sum(1), target)
        loss.backward()
        g = w.grad
        grads.append({"indices": g._indices().tolist(), "values": g._values().reshape(-1).tolist(),
                      "coalesced": g.is_coalesced()})
        opt.step()
        traj.append(w.detach().reshape(-1).tolist())
    return traj, grads


def run_lbfgs(kwargs, dtype):
    x, y = data(dtype)
    params = [(n, t.clone().requires_grad_(True)) for n, t in init_params(dtype)]
    opt = torch.optim.LBFGS([p for _, p in params], **kwargs)
    traj, losses, evals = [], [], []

    def closure():
        opt.zero_grad()
        loss = loss_fn(params, x, y)
        loss.backward()
        evals[-1].append({"loss": float(loss), "grads": grads_per_param(params)})
        return loss

    for _ in range(LBFGS_STEPS):
        evals.append([])
        losses.append(float(opt.step(closure)))
        traj.append(flat(params))
    return traj, losses, evals


def main():
    torch.set_num_threads(1)
    out = {"torch": torch.__version__, "steps": STEPS, "cases": [], "lbfgs": []}
    for spec, cls, kwargs, overrides, *only in CASES:
        only = only[0] if only else None
        case = {"spec": spec, "overrides": [{"patterns": p, "hyperparameters": h} for p, h in overrides]}
        if only is not None:
            case["params"] = only
        for key, dtype in (("f64", torch.float64), ("f32", torch.float32)):
            case[key], case[key + "_grads"] = run(cls, kwargs, overrides, dtype, only)
        out["cases"].append(case)
    for spec, kwargs in LBFGS_CASES:
        case = {"spec": spec}
        for key, dtype in (("f64", torch.float64), ("f32", torch.float32)):
            case[key], case[key + "_loss"], case[key + "_evals"] = run_lbfgs(kwargs, dtype)
        out["lbfgs"].append(case)
    out["sparse"] = []
    for spec, kwargs in SPARSE_CASES:
        case = {"spec": spec}
        for key, dtype in (("f64", torch.float64), ("f32", torch.float32)):
            case[key], case[key + "_grads"] = run_sparse(kwargs, dtype)
        out["sparse"].append(case)
    out["sparse_init"] = {key: sparse_weight(dtype).reshape(-1).tolist()
                          for key, dtype in (("f64", torch.float64), ("f32", torch.float32))}
    out["grads_at_init"] = {key: grads_per_param(grads_at_init(dtype))
                            for key, dtype in (("f64", torch.float64), ("f32", torch.float32))}
    out["clip"] = []
    for max_norm, norm_type in ((0.1, 2.0), (0.05, 1.0), (0.02, math.inf), (0.1, 0.5), (0.1, 3.0), (100.0, 2.0)):
        case = {"max_norm": max_norm, "norm_type": "inf" if math.isinf(norm_type) else norm_type}
        for key, dtype in (("f64", torch.float64), ("f32", torch.float32)):
            params = grads_at_init(dtype)
            total = torch.nn.utils.clip_grad_norm_([p for _, p in params], max_norm, norm_type)
            case[key] = {"total_norm": float(total), "grads": grads_flat(params)}
        out["clip"].append(case)
    out["clip_value"] = {}
    for key, dtype in (("f64", torch.float64), ("f32", torch.float32)):
        params = grads_at_init(dtype)
        torch.nn.utils.clip_grad_value_([p for _, p in params], 0.05)
        out["clip_value"][key] = grads_flat(params)
    out["errors"] = []
    for spec, cls, kwargs in ERRORS:
        try:
            getattr(torch.optim, cls)([torch.zeros(2, requires_grad=True)], **kwargs)
            raise SystemExit(f"{spec} did not fail")
        except ValueError as e:
            out["errors"].append({"spec": spec, "message": str(e)})
    init = {}
    for key, dtype in (("f64", torch.float64), ("f32", torch.float32)):
        x, y = data(dtype)
        init[key] = {"x": x.reshape(-1).tolist(), "y": y.reshape(-1).tolist(),
                     "params": [[n, list(t.shape), t.reshape(-1).tolist()] for n, t in init_params(dtype)]}
    out["init"] = init
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim_golden.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"wrote {path}: {os.path.getsize(path)} bytes, {len(out['cases'])} cases + {len(out['lbfgs'])} lbfgs")


if __name__ == "__main__":
    main()
