"""torch.optim's CPU step on the model of optim_step.rs (100 float32 tensors,
10 M values): the default path (single-tensor for loop), foreach=True and
fused=True, for SGD-momentum, Adam and AdamW; plus the machine's copy
bandwidth (torch copy_ on the same thread count). One JSON line per variant.

    PYTHONPATH=.libtorch python3 crates/optim/benches/optim_step.py
Environment: KILN_BENCH_THREADS (1), KILN_BENCH_STEPS (20), KILN_BENCH_TENSORS
(100), KILN_BENCH_NUMEL (100000).
"""
import json
import os
import time

import torch


def env(name, default):
    return int(os.environ.get(name, default))


def main():
    threads = env("KILN_BENCH_THREADS", 1)
    steps = env("KILN_BENCH_STEPS", 20)
    tensors = env("KILN_BENCH_TENSORS", 100)
    numel = env("KILN_BENCH_NUMEL", 100000)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    params = []
    for _ in range(tensors):
        p = torch.randn(numel, requires_grad=True)
        p.grad = torch.randn(numel)
        params.append(p)
    variants = [
        ("sgd", "default", torch.optim.SGD, dict(lr=1e-3, momentum=0.9)),
        ("sgd", "foreach", torch.optim.SGD, dict(lr=1e-3, momentum=0.9, foreach=True)),
        ("sgd", "fused", torch.optim.SGD, dict(lr=1e-3, momentum=0.9, fused=True)),
        ("adam", "default", torch.optim.Adam, dict(lr=1e-3)),
        ("adam", "foreach", torch.optim.Adam, dict(lr=1e-3, foreach=True)),
        ("adam", "fused", torch.optim.Adam, dict(lr=1e-3, fused=True)),
        ("adamw", "default", torch.optim.AdamW, dict(lr=1e-3, weight_decay=0.01)),
        ("adamw", "foreach", torch.optim.AdamW, dict(lr=1e-3, weight_decay=0.01, foreach=True)),
        ("adamw", "fused", torch.optim.AdamW, dict(lr=1e-3, weight_decay=0.01, fused=True)),
    ]
    for name, path, cls, kwargs in variants:
        opt = cls(params, **kwargs)
        for _ in range(3):
            opt.step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
        print(json.dumps({"impl": "torch", "optimizer": name, "path": path, "threads": threads,
                          "tensors": tensors, "numel": numel, "seconds": [round(t, 6) for t in times]}))
        del opt
    # Copy bandwidth on the step's own footprint: dst_i.copy_(src_i) over the
    # same 100 tensors of `numel` values (bytes counted: read + write).
    srcs = [torch.randn(numel) for _ in range(tensors)]
    dsts = [torch.empty_like(s) for s in srcs]
    def copy_all():
        for d, s in zip(dsts, srcs):
            d.copy_(s)
    for _ in range(3):
        copy_all()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        copy_all()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"impl": "copy", "bytes": 2 * tensors * numel * 4, "seconds": [round(t, 6) for t in times]}))


if __name__ == "__main__":
    main()
