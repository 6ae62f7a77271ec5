"""PyTorch's own module test database (`module_db`) as kiln-losses' parity spec.

Run from the repository root (`make golden` does):
    PYTHONPATH=.libtorch python3 crates/losses/tests/conformance/make_module_db.py

Walks the loss entries of `module_db` in `torch/testing/_internal/
common_modules.py` (the inputs PyTorch's own `test_modules.py` runs) for
float32 and float64 on the CPU and writes `module_db.json` next to this
script: for every module input, the constructor options as a kiln spec
string, the forward inputs, and PyTorch's output and the gradient of
`output.sum()` with respect to every floating input that requires grad — or
PyTorch's error message. Tensors are stored exactly (raw little-endian
values in base64); gradients by an FNV-1a-64 hash of their raw values plus
their first values (storing them whole would triple the file); and every error input of `module_error_inputs_func`
with PyTorch's message. Inputs kiln's API cannot express are listed with the
reason (`skip`), never dropped.

Machine independence: the loss kernels reduce in blocks of the SIMD width
and call MKL's vector math (log, exp, sqrt) on the CPU, so their last bits
depend on the ATen CPU capability and on MKL's code path. This script pins
both, as `tests/conformance.rs` does in its own process before libtorch runs
a kernel: ATEN_CPU_CAPABILITY=avx2 (ATen's AVX2 kernels, which every x86-64
CPU with AVX2 runs) and MKL_CBWR=COMPATIBLE with one thread (MKL's
conditional numerical reproducibility: the same results on every x86
processor). The comparison is bit for bit.
"""
import math
import os
import sys

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"}
if any(os.environ.get(k) != v for k, v in PINNED.items()):
    # The pins must be in place before torch is imported.
    os.environ.update(PINNED)
    os.execv(sys.executable, sys.orig_argv)

import base64  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db  # noqa: E402

DTYPES = [("f32", torch.float32), ("f64", torch.float64)]

# torch.nn class -> (kiln spec name, how kiln calls it).
KILN = {
    "BCELoss": ("bce", "forward"),
    "BCEWithLogitsLoss": ("bce-with-logits", "forward"),
    "CosineEmbeddingLoss": ("cosine-embedding", "forward3"),
    "CrossEntropyLoss": ("cross-entropy", "forward"),
    "CTCLoss": ("ctc", "ctc"),
    "GaussianNLLLoss": ("gaussian-nll", "forward_var"),
    "HingeEmbeddingLoss": ("hinge-embedding", "forward"),
    "HuberLoss": ("huber", "forward"),
    "KLDivLoss": ("kl-div", "forward"),
    "L1Loss": ("l1", "forward"),
    "MarginRankingLoss": ("margin-ranking", "forward3"),
    "MSELoss": ("mse", "forward"),
    "MultiLabelMarginLoss": ("multilabel-margin", "forward"),
    "MultiLabelSoftMarginLoss": ("multilabel-soft-margin", "forward"),
    "MultiMarginLoss": ("multi-margin", "forward"),
    "NLLLoss": ("nll", "forward"),
    "PoissonNLLLoss": ("poisson-nll", "forward"),
    "SmoothL1Loss": ("smooth-l1", "forward"),
    "SoftMarginLoss": ("soft-margin", "forward"),
}


def num(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def raw(t):
    """The tensor's values as little-endian bytes, in row-major order."""
    return t.detach().contiguous().reshape(-1).numpy().astype(t.detach().numpy().dtype.newbyteorder("<")).tobytes()


def enc(t):
    """A tensor exactly: dtype, shape and its raw values in base64."""
    return {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
            "b64": base64.b64encode(raw(t)).decode()}


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def enc_hashed(t):
    """A tensor by dtype, shape, FNV-1a-64 of its raw values and its first values
    (gradients: the fixture would be three times larger with their values)."""
    data = raw(t)
    return {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
            "fnv1a64": f"{fnv1a64(data):016x}", "head": [num(x) for x in t.detach().reshape(-1)[:4].tolist()]}


def enc_arg(a):
    if isinstance(a, torch.Tensor):
        return enc(a)
    if isinstance(a, (tuple, list)):
        return {"ints": list(a)}
    raise TypeError(f"cannot encode {type(a)}")


def spec_of(name, args, kwargs, dtype):
    """kiln's spec string for the constructor call, or (None, reason)."""
    if args:
        return None, "positional constructor arguments"
    items = []
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor):
            if v.dtype == dtype and v.dim() <= 1:
                # A 0-dim weight is one number: kiln's weight [w] broadcasts the same.
                v = ";".join(repr(x) for x in v.reshape(-1).tolist())
            else:
                return None, f"{k} of dtype {v.dtype}: kiln's {k} is a list of numbers in the input's dtype"
        elif isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, float):
            v = repr(v)
        items.append(f"{k}={v}")
    return name + (":" + ",".join(items) if items else ""), None


def leaves(fwd):
    """Fresh leaf copies of the forward inputs; floating ones that required grad require grad."""
    out = []
    for a in fwd:
        if isinstance(a, torch.Tensor):
            c = a.detach().clone()
            if a.requires_grad and a.dtype.is_floating_point:
                c.requires_grad_(True)
            out.append(c)
        else:
            out.append(a)
    return out


def record(info, mi, dtype_key):
    cls = info.module_cls
    spec_name, call = KILN[cls.__name__]
    ctor, fwd = mi.constructor_input, mi.forward_input
    rec = {"desc": mi.desc or "default", "dtype": dtype_key, "call": call}
    spec, reason = spec_of(spec_name, ctor.args, ctor.kwargs, dict(DTYPES)[dtype_key])
    if fwd.kwargs:
        reason = reason or "keyword forward arguments"
    zero_dim = [k for k, v in ctor.kwargs.items() if isinstance(v, torch.Tensor) and v.dim() == 0]
    if zero_dim and any(isinstance(a, torch.Tensor) and a.dim() == 0 for a in fwd.args):
        reason = reason or (f"0-dim {zero_dim[0]} with 0-dim inputs: kiln's {zero_dim[0]} is a list of "
                            "numbers (shape [1]), which would broadcast the inputs to [1]")
    if reason is not None:
        rec["skip"] = reason
        return rec
    rec["spec"] = spec
    inputs = leaves(fwd.args)
    rec["args"] = [enc_arg(a) for a in inputs]
    try:
        out = cls(*ctor.args, **ctor.kwargs)(*inputs)
    except Exception as e:  # noqa: BLE001 - PyTorch's message is the point
        rec["error"] = str(e).split("\n")[0]
        return rec
    rec["output"] = enc(out)
    grads = [i for i, a in enumerate(inputs) if isinstance(a, torch.Tensor) and a.requires_grad]
    if grads and out.requires_grad:
        out.sum().backward()
        rec["grads"] = {str(i): enc_hashed(inputs[i].grad) if inputs[i].grad is not None else None
                        for i in grads}
    return rec


def error_record(info, err, dtype_key):
    cls = info.module_cls
    mi = err.module_error_input
    rec = {"desc": mi.desc or "error input", "dtype": dtype_key, "call": KILN[cls.__name__][1],
           "error_on": err.error_on.name}
    message = None
    try:
        m = cls(*mi.constructor_input.args, **mi.constructor_input.kwargs)
        if err.error_on == ModuleErrorEnum.FORWARD_ERROR:
            m(*mi.forward_input.args, **mi.forward_input.kwargs)
    except Exception as e:  # noqa: BLE001
        message = str(e).split("\n")[0]
    rec["error"] = message
    spec, reason = spec_of(KILN[cls.__name__][0], mi.constructor_input.args, mi.constructor_input.kwargs,
                           dict(DTYPES)[dtype_key])
    if reason is not None:
        rec["skip"] = reason
        return rec
    rec["spec"] = spec
    rec["args"] = [enc_arg(a) for a in mi.forward_input.args]
    return rec


def main():
    torch.set_num_threads(1)
    out = {"torch": torch.__version__, "pinned": PINNED, "losses": []}
    for info in module_db:
        name = info.module_cls.__name__
        if not name.endswith("Loss"):
            continue
        entry = {"name": name, "spec_name": KILN[name][0], "inputs": [], "errors": []}
        for key, dtype in DTYPES:
            torch.manual_seed(0)
            for mi in info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True, training=True):
                entry["inputs"].append(record(info, mi, key))
            if info.module_error_inputs_func is not None:
                torch.manual_seed(0)
                for err in info.module_error_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                                         training=True):
                    entry["errors"].append(error_record(info, err, key))
        out["losses"].append(entry)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "module_db.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    n = sum(len(e["inputs"]) for e in out["losses"])
    n_skip = sum(1 for e in out["losses"] for r in e["inputs"] if "skip" in r)
    n_err = sum(1 for e in out["losses"] for r in e["inputs"] if "error" in r)
    print(f"wrote {path}: {os.path.getsize(path)} bytes, {len(out['losses'])} losses, {n} inputs "
          f"({n_skip} skipped, {n_err} raising), "
          f"{sum(len(e['errors']) for e in out['losses'])} error inputs", file=sys.stderr)


if __name__ == "__main__":
    main()
