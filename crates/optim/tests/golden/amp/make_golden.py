"""PyTorch reference for kiln's mixed-precision parity tests (crates/optim/tests/amp.rs).

The tutorial's job — the quickstart MLP (Flatten, Linear(784,512), ReLU,
Linear(512,512), ReLU, Linear(512,10)) with PyTorch's default init after
torch.manual_seed(0), CrossEntropyLoss, SGD(lr=1e-3, momentum=0.9), batches of
64 of the first FashionMNIST training images in file order — for STEPS steps,
with forward and loss under torch.autocast("cpu", dtype), in four cases:

  bf16      autocast bfloat16, no scaler (Lightning's bf16-mixed)
  fp16      autocast float16 + torch.amp.GradScaler("cpu") with its defaults (16-mixed)
  overflow  autocast float16 + GradScaler("cpu", init_scale=2**24, growth_interval=3),
            unscale_ + clip_grad_norm_(1.0) before step: float16 gradients overflow,
            steps are skipped, the scale backs off and grows back (asserted below)
  resume    the overflow case stopped after RESUME_AT steps; model, optimizer and
            scaler state dicts (the scaler's through JSON) loaded into fresh
            objects, which continue to STEPS; asserted identical to `overflow`

Float results depend on the CPU's kernels (AVX2 vs AVX-512, bf16 instructions),
so the Rust test runs this script at test time on the same machine rather than
reading committed numbers. It writes into --out:

  amp_golden.safetensors  data.x, data.y; init.<param>; <case>.loss (float32 per step),
                          <case>.scale (scale after update), <case>.growth_tracker,
                          <case>.stepped (1 = optimizer stepped, 0 = skipped),
                          <case>.final.<param>
  amp_golden.json         steps, batch size, resume point, the scaler's state_dict
                          at the resume point, torch version

    PYTHONPATH=.libtorch python3 crates/optim/tests/golden/amp/make_golden.py --out /tmp/amp
"""
import argparse
import copy
import json
import os
import sys

import torch
from safetensors.torch import save_file
from torch import nn

STEPS = 30
BATCH = 64
SEED = 0
THREADS = 1
MIN_RESUME_AT = 10


# The tutorial's network and IDX reading, from the tutorial's reference script.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../../../scripts/reference"))
from quickstart import NeuralNetwork, find, read_idx  # noqa: E402


CASES = {
    "bf16": dict(dtype=torch.bfloat16, scaler=None, clip=None),
    "fp16": dict(dtype=torch.float16, scaler={}, clip=None),
    "overflow": dict(
        dtype=torch.float16, scaler=dict(init_scale=2.0**24, growth_interval=3), clip=1.0
    ),
}


def fresh(case):
    torch.manual_seed(SEED)
    model = NeuralNetwork()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    cfg = CASES[case]["scaler"]
    scaler = None if cfg is None else torch.amp.GradScaler("cpu", **cfg)
    return model, opt, scaler


def train(case, model, opt, scaler, x, y, start, end, rec):
    cfg = CASES[case]
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for i in range(start, end):
        xb, yb = x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]
        opt.zero_grad()
        with torch.autocast("cpu", dtype=cfg["dtype"]):
            loss = loss_fn(model(xb), yb)
        assert loss.dtype == torch.float32
        if scaler is None:
            loss.backward()
            opt.step()
            stepped, scale, tracker = 1, 1.0, 0
        else:
            scaler.scale(loss).backward()
            if cfg["clip"] is not None:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
            scaler.step(opt)
            found = sum(v.item() for v in scaler._found_inf_per_device(opt).values())
            stepped = int(found == 0)
            scaler.update()
            scale, tracker = scaler.get_scale(), scaler._get_growth_tracker()
        rec["loss"].append(loss.detach().clone())
        rec["scale"].append(scale)
        rec["growth_tracker"].append(tracker)
        rec["stepped"].append(stepped)


def record():
    return {"loss": [], "scale": [], "growth_tracker": [], "stepped": []}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-dir", default=".data/fashion-mnist")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    n = STEPS * BATCH
    images = read_idx(find(args.data_dir, "train-images-idx3-ubyte"))[:n]
    labels = read_idx(find(args.data_dir, "train-labels-idx1-ubyte"))[:n]
    x = images.unsqueeze(1).to(torch.float32).div(255)
    y = labels.to(torch.int64)
    out = {"data.x": x, "data.y": y}
    for name, p in fresh("bf16")[0].named_parameters():
        out[f"init.{name}"] = p.detach().clone()

    results = {}
    for case in CASES:
        model, opt, scaler = fresh(case)
        rec = record()
        train(case, model, opt, scaler, x, y, 0, STEPS, rec)
        results[case] = (model, rec)

    # The overflow case must really overflow: skipped steps, backoffs and regrowth.
    ov = results["overflow"][1]
    skipped = ov["stepped"].count(0)
    assert skipped >= 3, f"only {skipped} skipped steps"
    assert any(b > a for a, b in zip(ov["scale"], ov["scale"][1:])), "the scale never grew"
    assert results["fp16"][1]["stepped"].count(1) >= 1

    # Resume where the growth tracker is non-zero, so every state field matters.
    resume_at = next(
        i + 1
        for i in range(MIN_RESUME_AT - 1, STEPS - 1)
        if ov["growth_tracker"][i] > 0 and ov["scale"][i] != 2.0**24
    )
    model, opt, scaler = fresh("overflow")
    rec = record()
    train("overflow", model, opt, scaler, x, y, 0, resume_at, rec)
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    scaler_state = json.loads(json.dumps(scaler.state_dict()))
    del model, opt, scaler
    torch.manual_seed(SEED + 1)  # a different init, overwritten by the load
    model = NeuralNetwork()
    model.load_state_dict(model_state)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    opt.load_state_dict(opt_state)
    scaler = torch.amp.GradScaler("cpu")  # defaults; the state dict restores the rest
    scaler.load_state_dict(scaler_state)
    train("overflow", model, opt, scaler, x, y, resume_at, STEPS, rec)
    results["resume"] = (model, rec)
    for key in ov:
        a = torch.stack(rec[key]) if key == "loss" else torch.tensor(rec[key])
        b = torch.stack(ov[key]) if key == "loss" else torch.tensor(ov[key])
        assert torch.equal(a, b), f"PyTorch's own resume differs in {key}"
    for (na, pa), (nb, pb) in zip(
        results["resume"][0].named_parameters(), results["overflow"][0].named_parameters()
    ):
        assert na == nb and torch.equal(pa, pb), f"PyTorch's own resume differs in {na}"

    for case, (model, rec) in results.items():
        out[f"{case}.loss"] = torch.stack(rec["loss"])
        out[f"{case}.scale"] = torch.tensor(rec["scale"], dtype=torch.float32)
        out[f"{case}.growth_tracker"] = torch.tensor(rec["growth_tracker"], dtype=torch.int64)
        out[f"{case}.stepped"] = torch.tensor(rec["stepped"], dtype=torch.int64)
        for name, p in model.named_parameters():
            out[f"{case}.final.{name}"] = p.detach().clone()

    os.makedirs(args.out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(args.out, "amp_golden.safetensors"))
    meta = {
        "steps": STEPS,
        "batch_size": BATCH,
        "seed": SEED,
        "threads": THREADS,
        "resume_at": resume_at,
        "scaler_state_at_resume": scaler_state,
        "torch": torch.__version__,
        "skipped": {case: rec["stepped"].count(0) for case, (_, rec) in results.items()},
        "scales": {case: rec["scale"] for case, (_, rec) in results.items()},
    }
    with open(os.path.join(args.out, "amp_golden.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
