"""PyTorch reference for kiln's one-pass optimizer kernels (crates/optim/tests/one_pass.rs).

torch.optim's default CPU path (single-tensor: `foreach` and `fused` left
unset) for SGD, Adam and AdamW in every option that changes the arithmetic
(momentum, dampening, Nesterov, weight decay, maximize, AMSGrad, lerp
weights below and above 0.5, decoupled weight decay), in float32 and
float64, over parameters chosen to exercise the kernels' loops:

  a [40007]        above libtorch's grain size (32768): with 2 threads the
                   split falls at 20004, inside a vector step, so a scalar
                   tail sits in the middle of the tensor
  b [33, 17]       561 values: vector steps and a tail
  c [5]            a scalar tail only
  d [64, 40]       a transposed (non-contiguous) leaf, its gradient contiguous
  e [3, 1000]      values of every magnitude: zeros of both signs, tiny and
                   subnormal values, values near float32's range

STEPS steps each, every gradient drawn once and recorded. The Rust test
feeds the same gradients to kiln's optimizers and compares every parameter
after every step and the optimizer state after the last, bit for bit.
libtorch's kernels differ per CPU and build (fused multiply-adds in its
AVX2/AVX-512 kernels, none in x86 `DEFAULT` ones; MKL's `sqrt` per CPU), so
the test runs this script at test time, on the same machine and with the
same `ATEN_CPU_CAPABILITY`. Writes into --out:

  one_pass.safetensors  <dtype>.init.<p>, <dtype>.grad.<step>.<p>;
                        <case>.<dtype>.step<k>.<p> (after step k, 1-based);
                        <case>.<dtype>.state.<p>.<buffer> (after the last step)
  one_pass.json         the cases (name, kiln spec, torch class and kwargs), steps,
                        dtypes, parameter names, threads, cpu capability, torch version

    PYTHONPATH=.libtorch python3 crates/optim/tests/golden/one_pass/make_reference.py --out /tmp/one_pass
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file

STEPS = 3
THREADS = 2
DTYPES = {"f32": torch.float32, "f64": torch.float64}

# (name, kiln spec, torch class, kwargs)
CASES = [
    ("sgd_plain", "sgd:lr=0.01", "SGD", dict(lr=0.01)),
    ("sgd_tutorial", "sgd:lr=0.001,momentum=0.9", "SGD", dict(lr=1e-3, momentum=0.9)),
    ("sgd_dampening_wd", "sgd:lr=0.1,momentum=0.8,dampening=0.3,weight_decay=0.01", "SGD",
     dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("sgd_nesterov_max", "sgd:lr=0.05,momentum=0.9,nesterov=true,weight_decay=0.1,maximize=true", "SGD",
     dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True)),
    ("sgd_wd_only", "sgd:lr=0.2,weight_decay=0.3", "SGD", dict(lr=0.2, weight_decay=0.3)),
    ("adam_default", "adam", "Adam", dict()),
    ("adam_l2_amsgrad", "adam:lr=0.01,betas=0.6;0.99,weight_decay=0.1,amsgrad=true", "Adam",
     dict(lr=0.01, betas=(0.6, 0.99), weight_decay=0.1, amsgrad=True)),
    ("adam_large_lerp_max", "adam:lr=0.003,betas=0.3;0.9,eps=0.001,maximize=true", "Adam",
     dict(lr=0.003, betas=(0.3, 0.9), eps=1e-3, maximize=True)),
    ("adam_decoupled", "adam:lr=0.02,weight_decay=0.05,decoupled_weight_decay=true", "Adam",
     dict(lr=0.02, weight_decay=0.05, decoupled_weight_decay=True)),
    ("adamw_default", "adamw", "AdamW", dict()),
    ("adamw_amsgrad", "adamw:lr=0.01,weight_decay=0.1,amsgrad=true", "AdamW",
     dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("adamw_large_lerp_max", "adamw:lr=0.001,betas=0.2;0.5,maximize=true", "AdamW",
     dict(lr=1e-3, betas=(0.2, 0.5), maximize=True)),
]


def extremes(shape, dtype, gen):
    """Values of every magnitude, with zeros of both signs."""
    n = 1
    for s in shape:
        n *= s
    exp = torch.randint(-45, 37, (n,), generator=gen).to(torch.float64)
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    v = sign * torch.rand(n, generator=gen, dtype=torch.float64) * torch.pow(10.0, exp)
    v[::97] = 0.0
    v[1::89] = -0.0
    return v.to(dtype).reshape(shape)


def tensors(dtype, gen):
    """The parameters' initial values and the gradients of every step."""
    init = {
        "a": torch.randn(40007, generator=gen, dtype=dtype),
        "b": torch.randn(33, 17, generator=gen, dtype=dtype),
        "c": torch.randn(5, generator=gen, dtype=dtype),
        # Saved as its contiguous base [40, 64]; the parameter is base.t().
        "d": torch.randn(40, 64, generator=gen, dtype=dtype),
        "e": extremes((3, 1000), dtype, gen),
    }
    grads = []
    for _ in range(STEPS):
        g = {}
        for name, p in init.items():
            shape = (64, 40) if name == "d" else tuple(p.shape)
            if name == "e":
                g[name] = extremes(shape, dtype, gen)
            else:
                scale = 10.0 ** torch.randint(-3, 2, (), generator=gen).item()
                g[name] = torch.randn(shape, generator=gen, dtype=dtype) * scale
        grads.append(g)
    return init, grads


def leaf(name, value):
    base = value.clone()
    p = base.t() if name == "d" else base
    return p.requires_grad_(True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    os.makedirs(args.out, exist_ok=True)
    out = {}
    names = ["a", "b", "c", "d", "e"]
    for dname, dtype in DTYPES.items():
        gen = torch.Generator().manual_seed(20260 + len(dname))
        init, grads = tensors(dtype, gen)
        for n in names:
            out[f"{dname}.init.{n}"] = init[n].contiguous()
            for k, g in enumerate(grads):
                out[f"{dname}.grad.{k}.{n}"] = g[n].contiguous()
        for case, _spec, cls, kwargs in CASES:
            params = [leaf(n, init[n]) for n in names]
            opt = getattr(torch.optim, cls)(params, **kwargs)
            for k, g in enumerate(grads):
                for n, p in zip(names, params):
                    p.grad = g[n].clone()
                opt.step()
                for n, p in zip(names, params):
                    out[f"{case}.{dname}.step{k + 1}.{n}"] = p.detach().contiguous().clone()
            for n, p in zip(names, params):
                for key, value in opt.state[p].items():
                    if key != "step" and value is not None:
                        out[f"{case}.{dname}.state.{n}.{key}"] = value.contiguous().clone()
    save_file(out, os.path.join(args.out, "one_pass.safetensors"))
    meta = {
        "steps": STEPS,
        "threads": THREADS,
        "dtypes": list(DTYPES),
        "params": names,
        "cases": [{"name": c, "spec": s, "class": cls} for c, s, cls, _ in CASES],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
    }
    with open(os.path.join(args.out, "one_pass.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
