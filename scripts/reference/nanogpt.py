"""nanoGPT (karpathy/nanoGPT: model.py, train.py, sample.py, data/shakespeare_char/prepare.py)
as one program: the PyTorch reference of kiln's language-model commands.

    PYTHONPATH=.libtorch python3 scripts/reference/nanogpt.py prepare input.txt data/chars
    PYTHONPATH=.libtorch python3 scripts/reference/nanogpt.py train --data_dir=data/chars \
        --device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 \
        --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 \
        --lr_decay_iters=2000 --dropout=0.0
    PYTHONPATH=.libtorch python3 scripts/reference/nanogpt.py sample --out_dir=out --device=cpu

The model, the training loop and the sampler follow nanoGPT's files statement for statement;
flags are nanoGPT's `--key=value` (its configurator: the value is a Python literal of the
default's type). Differences, all outside the numbers:
- the data directory is `--data_dir=DIR` (nanoGPT: `data/<dataset>`); `train` starts from
  the CPU recipe's `config/train_shakespeare_char.py` values only where given as flags;
- the seed is `--seed` (train.py hard-codes 1337; the default here is the same);
- `iter` lines end after the time (`iter N: loss X.XXXX, time T.TTms`), without the MFU
  estimate, which is about an A100;
- under torchrun on the CPU the process group is gloo and the device stays `cpu`
  (train.py moves each rank to `cuda:LOCAL_RANK` with nccl);
- `compile=True` is refused (the reference runs eagerly);
- `--gradient_checkpointing=True` runs each block under `torch.utils.checkpoint(block, x,
  use_reentrant=False)` (kiln's `--gradient-checkpointing`; nanoGPT has no such flag);
- `sample --weights=FILE.safetensors` (with the model's sizes as flags and `--meta=meta.pkl`)
  samples from a state dict saved by kiln, next to sample.py's `--out_dir` checkpoint;
- `train --weights_out=FILE.safetensors` also writes the final state dict (safetensors);
- `train --torchscript=FILE.pt` trains a TorchScript module returning logits `[B, T, V]` in
  GPT's place (loaded, not drawn; the loss and the optimizer's groups as GPT's), and
  `script` writes such a module (`TokenMLP`).
Subcommands `init`, `step` and `batches` write what crates/loop/tests/gpt.rs compares kiln with;
`script` writes a TorchScript language model for tests/lm.rs.
"""
import inspect
import json
import math
import os
import pickle
import sys
import time
from ast import literal_eval
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------- data/shakespeare_char/prepare.py


def prepare(argv):
    """prepare.py with the input file and output directory as arguments (no download)."""
    input_file_path, out_dir = argv
    with open(input_file_path, "r") as f:
        data = f.read()
    print(f"length of dataset in characters: {len(data):,}")

    chars = sorted(list(set(data)))
    vocab_size = len(chars)
    print("all the unique characters:", "".join(chars))
    print(f"vocab size: {vocab_size:,}")

    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}

    def encode(s):
        return [stoi[c] for c in s]

    n = len(data)
    train_data = data[: int(n * 0.9)]
    val_data = data[int(n * 0.9) :]

    train_ids = encode(train_data)
    val_ids = encode(val_data)
    print(f"train has {len(train_ids):,} tokens")
    print(f"val has {len(val_ids):,} tokens")

    os.makedirs(out_dir, exist_ok=True)
    train_ids = np.array(train_ids, dtype=np.uint16)
    val_ids = np.array(val_ids, dtype=np.uint16)
    train_ids.tofile(os.path.join(out_dir, "train.bin"))
    val_ids.tofile(os.path.join(out_dir, "val.bin"))

    meta = {
        "vocab_size": vocab_size,
        "itos": itos,
        "stoi": stoi,
    }
    with open(os.path.join(out_dir, "meta.pkl"), "wb") as f:
        pickle.dump(meta, f)


if __name__ == "__main__" and sys.argv[1:2] == ["prepare"]:
    prepare(sys.argv[2:])  # before importing torch, which prepare.py does not use
    sys.exit(0)

import torch
import torch.nn as nn
import torch.utils.checkpoint
from torch.nn import functional as F

# ----------------------------------------------------------------------------- model.py


class LayerNorm(nn.Module):
    """LayerNorm but with an optional bias. PyTorch doesn't support simply bias=False"""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        y = self.resid_dropout(self.c_proj(y))
        return y


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        x = self.c_fc(x)
        x = self.gelu(x)
        x = self.c_proj(x)
        x = self.dropout(x)
        return x


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True


class GPT(nn.Module):
    def __init__(self, config, checkpointing=False):
        super().__init__()
        assert config.vocab_size is not None
        assert config.block_size is not None
        self.config = config
        # torch.utils.checkpoint per block (non-reentrant, RNG state preserved): kiln's
        # --gradient-checkpointing; nanoGPT has no such option.
        self.checkpointing = checkpointing

        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

        print("number of parameters: %.2fM" % (self.get_num_params() / 1e6,))

    def get_num_params(self, non_embedding=True):
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        device = idx.device
        b, t = idx.size()
        assert t <= self.config.block_size, f"Cannot forward sequence of length {t}, block size is only {self.config.block_size}"
        pos = torch.arange(0, t, dtype=torch.long, device=device)

        tok_emb = self.transformer.wte(idx)
        pos_emb = self.transformer.wpe(pos)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            if self.checkpointing:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.transformer.ln_f(x)

        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            logits = self.lm_head(x[:, [-1], :])
            loss = None

        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        param_dict = {pn: p for pn, p in self.named_parameters()}
        param_dict = {pn: p for pn, p in param_dict.items() if p.requires_grad}
        decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
        nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
        optim_groups = [
            {"params": decay_params, "weight_decay": weight_decay},
            {"params": nodecay_params, "weight_decay": 0.0},
        ]
        num_decay_params = sum(p.numel() for p in decay_params)
        num_nodecay_params = sum(p.numel() for p in nodecay_params)
        print(f"num decayed parameter tensors: {len(decay_params)}, with {num_decay_params:,} parameters")
        print(f"num non-decayed parameter tensors: {len(nodecay_params)}, with {num_nodecay_params:,} parameters")
        fused_available = "fused" in inspect.signature(torch.optim.AdamW).parameters
        use_fused = fused_available and device_type == "cuda"
        extra_args = dict(fused=True) if use_fused else dict()
        optimizer = torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, **extra_args)
        print(f"using fused AdamW: {use_fused}")
        return optimizer

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size :]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("Inf")
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


def configure_optimizers(model, weight_decay, learning_rate, betas, device_type):
    """GPT.configure_optimizers for any module (the same statements)."""
    return GPT.configure_optimizers(model, weight_decay, learning_rate, betas, device_type)


class SequenceLoss(nn.Module):
    """A module returning logits [B, T, V] with GPT's forward(idx, targets) and loss."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, idx, targets=None):
        logits = self.module(idx)
        if targets is None:
            return logits[:, [-1], :], None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


class TokenMLP(nn.Module):
    """A small language model for TorchScript: embedding, layer norm, linear: logits [B, T, V]."""

    def __init__(self, vocab_size, n_embd):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.ln = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx):
        return self.head(torch.tanh(self.ln(self.wte(idx))))


# ----------------------------------------------------------------------------- configurator.py


def configure(defaults, argv):
    """nanoGPT's configurator on a dict: `--key=value`, value a literal of the default's type
    (a default of None takes any literal)."""
    config = dict(defaults)
    for arg in argv:
        assert arg.startswith("--") and "=" in arg, f"expected --key=value, got {arg!r}"
        key, val = arg.split("=", 1)
        key = key[2:]
        if key not in config:
            raise ValueError(f"Unknown config key: {key}")
        try:
            attempt = literal_eval(val)
        except (SyntaxError, ValueError):
            attempt = val
        if config[key] is not None and attempt is not None:
            if type(config[key]) is float and type(attempt) is int:
                attempt = float(attempt)
            assert type(attempt) == type(config[key]), f"--{key}: {attempt!r} is not a {type(config[key]).__name__}"
        config[key] = attempt
    return config


def model_config(c):
    return GPTConfig(
        block_size=c["block_size"],
        vocab_size=c["vocab_size"],
        n_layer=c["n_layer"],
        n_head=c["n_head"],
        n_embd=c["n_embd"],
        dropout=c["dropout"],
        bias=c["bias"],
    )


def read_meta(path):
    with open(path, "rb") as f:
        return pickle.load(f)


# ----------------------------------------------------------------------------- train.py

TRAIN_DEFAULTS = dict(
    out_dir="out",
    eval_interval=2000,
    log_interval=1,
    eval_iters=200,
    eval_only=False,
    always_save_checkpoint=True,
    data_dir="data/shakespeare_char",
    gradient_accumulation_steps=1,
    batch_size=12,
    block_size=1024,
    n_layer=12,
    n_head=12,
    n_embd=768,
    dropout=0.0,
    bias=False,
    learning_rate=6e-4,
    max_iters=600000,
    weight_decay=1e-1,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,
    decay_lr=True,
    warmup_iters=2000,
    lr_decay_iters=600000,
    min_lr=6e-5,
    backend="gloo",
    device="cpu",
    dtype="float32",
    compile=False,
    seed=1337,
    threads=0,
    gradient_checkpointing=False,
    weights_out="",
    torchscript="",
)


def train(argv):
    config = configure(TRAIN_DEFAULTS, argv)
    globals().update(config)
    assert not config["compile"], "the reference runs eagerly: --compile=False"
    global gradient_accumulation_steps, device
    if threads > 0:
        torch.set_num_threads(threads)

    ddp = int(os.environ.get("RANK", -1)) != -1
    if ddp:
        from torch.distributed import destroy_process_group, init_process_group
        from torch.nn.parallel import DistributedDataParallel as DDP

        init_process_group(backend=backend)
        ddp_rank = int(os.environ["RANK"])
        ddp_local_rank = int(os.environ["LOCAL_RANK"])
        ddp_world_size = int(os.environ["WORLD_SIZE"])
        if device.startswith("cuda"):
            device = f"cuda:{ddp_local_rank}"
            torch.cuda.set_device(device)
        master_process = ddp_rank == 0
        seed_offset = ddp_rank
        assert gradient_accumulation_steps % ddp_world_size == 0
        gradient_accumulation_steps //= ddp_world_size
    else:
        master_process = True
        seed_offset = 0
        ddp_world_size = 1
    tokens_per_iter = gradient_accumulation_steps * ddp_world_size * batch_size * block_size
    print(f"tokens per iteration will be: {tokens_per_iter:,}")

    if master_process and out_dir:
        os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(seed + seed_offset)
    device_type = "cuda" if "cuda" in device else "cpu"
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    ctx = nullcontext() if device_type == "cpu" else torch.amp.autocast(device_type=device_type, dtype=ptdtype)

    def get_batch(split):
        if split == "train":
            data = np.memmap(os.path.join(data_dir, "train.bin"), dtype=np.uint16, mode="r")
        else:
            data = np.memmap(os.path.join(data_dir, "val.bin"), dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy((data[i : i + block_size]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i + 1 : i + 1 + block_size]).astype(np.int64)) for i in ix])
        if device_type == "cuda":
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        else:
            x, y = x.to(device), y.to(device)
        return x, y

    iter_num = 0
    best_val_loss = 1e9

    meta_path = os.path.join(data_dir, "meta.pkl")
    meta_vocab_size = None
    if os.path.exists(meta_path):
        meta_vocab_size = read_meta(meta_path)["vocab_size"]
        print(f"found vocab_size = {meta_vocab_size} (inside {meta_path})")

    model_args = dict(
        n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=bias, vocab_size=None, dropout=dropout
    )
    print("Initializing a new model from scratch")
    if meta_vocab_size is None:
        print("defaulting to vocab_size of GPT-2 to 50304 (50257 rounded up for efficiency)")
    model_args["vocab_size"] = meta_vocab_size if meta_vocab_size is not None else 50304
    if torchscript:
        # A TorchScript module returning logits [B, T, V] in GPT's place (no draws).
        model = SequenceLoss(torch.jit.load(torchscript))
    else:
        model = GPT(GPTConfig(**model_args), checkpointing=gradient_checkpointing)
    model.to(device)

    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
    optimizer = configure_optimizers(model, weight_decay, learning_rate, (beta1, beta2), device_type)

    if ddp:
        model = DDP(model, device_ids=[ddp_local_rank] if device_type == "cuda" else None)

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in ["train", "val"]:
            losses = torch.zeros(eval_iters)
            for k in range(eval_iters):
                X, Y = get_batch(split)
                with ctx:
                    logits, loss = model(X, Y)
                losses[k] = loss.item()
            out[split] = losses.mean()
        model.train()
        return out

    def get_lr(it):
        if it < warmup_iters:
            return learning_rate * (it + 1) / (warmup_iters + 1)
        if it > lr_decay_iters:
            return min_lr
        decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
        assert 0 <= decay_ratio <= 1
        coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
        return min_lr + coeff * (learning_rate - min_lr)

    X, Y = get_batch("train")
    t0 = time.time()
    local_iter_num = 0
    raw_model = model.module if ddp else model
    while True:
        lr = get_lr(iter_num) if decay_lr else learning_rate
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr

        if iter_num % eval_interval == 0 and master_process:
            losses = estimate_loss()
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            if losses["val"] < best_val_loss or always_save_checkpoint:
                best_val_loss = losses["val"]
                if iter_num > 0 and out_dir:
                    checkpoint = {
                        "model": raw_model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "model_args": model_args,
                        "iter_num": iter_num,
                        "best_val_loss": best_val_loss,
                        "config": config,
                    }
                    print(f"saving checkpoint to {out_dir}")
                    torch.save(checkpoint, os.path.join(out_dir, "ckpt.pt"))
        if iter_num == 0 and eval_only:
            break

        for micro_step in range(gradient_accumulation_steps):
            if ddp:
                model.require_backward_grad_sync = micro_step == gradient_accumulation_steps - 1
            with ctx:
                logits, loss = model(X, Y)
                loss = loss / gradient_accumulation_steps
            X, Y = get_batch("train")
            scaler.scale(loss).backward()
        if grad_clip != 0.0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        t1 = time.time()
        dt = t1 - t0
        t0 = t1
        if iter_num % log_interval == 0 and master_process:
            lossf = loss.item() * gradient_accumulation_steps
            print(f"iter {iter_num}: loss {lossf:.4f}, time {dt*1000:.2f}ms")
        iter_num += 1
        local_iter_num += 1

        if iter_num > max_iters:
            break

    if weights_out and master_process:
        save(weights_out, raw_model.state_dict())
    if ddp:
        destroy_process_group()


# ----------------------------------------------------------------------------- sample.py

SAMPLE_DEFAULTS = dict(
    init_from="resume",
    out_dir="out",
    weights="",
    meta="",
    block_size=1024,
    vocab_size=50304,
    n_layer=12,
    n_head=12,
    n_embd=768,
    dropout=0.0,
    bias=True,
    start="\n",
    num_samples=10,
    max_new_tokens=500,
    temperature=0.8,
    top_k=200,
    seed=1337,
    device="cpu",
    dtype="float32",
    compile=False,
)


def sample(argv):
    c = configure(SAMPLE_DEFAULTS, argv)
    assert not c["compile"], "the reference runs eagerly: --compile=False"
    device = c["device"]
    torch.manual_seed(c["seed"])
    torch.cuda.manual_seed(c["seed"])
    device_type = "cuda" if "cuda" in device else "cpu"
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[c["dtype"]]
    ctx = nullcontext() if device_type == "cpu" else torch.amp.autocast(device_type=device_type, dtype=ptdtype)

    meta_path = c["meta"]
    if c["weights"]:
        # A state dict written by kiln (safetensors), the model's sizes as flags.
        from safetensors.torch import load_file

        model = GPT(model_config(c))
        model.load_state_dict(load_file(c["weights"]))
    else:
        checkpoint = torch.load(os.path.join(c["out_dir"], "ckpt.pt"), map_location=device)
        model = GPT(GPTConfig(**checkpoint["model_args"]))
        state_dict = checkpoint["model"]
        unwanted_prefix = "_orig_mod."
        for k, v in list(state_dict.items()):
            if k.startswith(unwanted_prefix):
                state_dict[k[len(unwanted_prefix) :]] = state_dict.pop(k)
        model.load_state_dict(state_dict)
        if not meta_path and "config" in checkpoint and "data_dir" in checkpoint["config"]:
            meta_path = os.path.join(checkpoint["config"]["data_dir"], "meta.pkl")

    model.eval()
    model.to(device)

    assert meta_path and os.path.exists(meta_path), "no meta.pkl (the GPT-2 tokenizer fallback is not part of the reference)"
    print(f"Loading meta from {meta_path}...")
    meta = read_meta(meta_path)
    stoi, itos = meta["stoi"], meta["itos"]
    encode = lambda s: [stoi[ch] for ch in s]
    decode = lambda l: "".join([itos[i] for i in l])

    start = c["start"]
    if start.startswith("FILE:"):
        with open(start[5:], "r", encoding="utf-8") as f:
            start = f.read()
    start_ids = encode(start)
    x = torch.tensor(start_ids, dtype=torch.long, device=device)[None, ...]

    with torch.no_grad():
        with ctx:
            for k in range(c["num_samples"]):
                y = model.generate(x, c["max_new_tokens"], temperature=c["temperature"], top_k=c["top_k"])
                print(decode(y[0].tolist()))
                print("---------------")


# ----------------------------------------------------------------------------- test support

PARITY_DEFAULTS = dict(
    out="",
    seed=1337,
    block_size=16,
    vocab_size=37,
    n_layer=2,
    n_head=2,
    n_embd=16,
    dropout=0.0,
    bias=True,
    batch_size=3,
    learning_rate=1e-3,
    weight_decay=0.1,
    beta1=0.9,
    beta2=0.99,
    checkpointing=False,
)


def save(path, tensors):
    from safetensors.torch import save_file

    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, path)


def quiet_model(c, checkpointing=False):
    """GPT(config) without its parameter-count line on stdout."""
    stdout, sys.stdout = sys.stdout, open(os.devnull, "w")
    try:
        return GPT(model_config(c), checkpointing=checkpointing)
    finally:
        sys.stdout.close()
        sys.stdout = stdout


def init(argv):
    """`torch.manual_seed(seed); GPT(config)`: the state dict, the generator's state after
    __init__, and (on stdout) the names of named_parameters() and state_dict()."""
    c = configure(PARITY_DEFAULTS, argv)
    torch.manual_seed(c["seed"])
    model = quiet_model(c)
    out = dict(model.state_dict())
    out["rng_state"] = torch.get_rng_state()
    save(c["out"], out)
    print(
        json.dumps(
            {
                "parameters": [n for n, _ in model.named_parameters()],
                "state_dict": list(model.state_dict().keys()),
                "num_params": model.get_num_params(),
            }
        )
    )


def step(argv):
    """One training step of nanoGPT's loop on random ids: seed, GPT(config), X and Y from
    torch.randint (Y[0, 0] = -1, ignored by the loss), forward in training mode (dropout on the
    global generator), loss, backward, clip_grad_norm_(1.0), AdamW with configure_optimizers'
    groups; then the eval-mode last-position logits (forward without targets)."""
    c = configure(PARITY_DEFAULTS, argv)
    torch.manual_seed(c["seed"])
    model = quiet_model(c, checkpointing=c["checkpointing"])
    B, T, V = c["batch_size"], c["block_size"], c["vocab_size"]
    X = torch.randint(V, (B, T))
    Y = torch.randint(V, (B, T))
    Y[0, 0] = -1
    stdout, sys.stdout = sys.stdout, open(os.devnull, "w")
    optimizer = model.configure_optimizers(c["weight_decay"], c["learning_rate"], (c["beta1"], c["beta2"]), "cpu")
    sys.stdout.close()
    sys.stdout = stdout
    model.train()
    logits, loss = model(X, Y)
    loss.backward()
    out = {"X": X, "Y": Y, "logits": logits, "loss": loss, "rng_state_after_backward": torch.get_rng_state()}
    for n, p in model.named_parameters():
        out["grad." + n] = p.grad.clone()  # before clipping scales it in place
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    for n, p in model.named_parameters():
        out["param." + n] = p
    model.eval()
    with torch.no_grad():
        last, _ = model(X)
    out["last_logits"] = last
    save(c["out"], out)


SCRIPT_DEFAULTS = dict(out="", seed=0, vocab_size=37, n_embd=16)


def script(argv):
    """torch.jit.save(torch.jit.script(TokenMLP(vocab_size, n_embd))) after torch.manual_seed(seed)."""
    c = configure(SCRIPT_DEFAULTS, argv)
    torch.manual_seed(c["seed"])
    torch.jit.save(torch.jit.script(TokenMLP(c["vocab_size"], c["n_embd"])), c["out"])


BATCH_DEFAULTS = dict(out="", data_dir="", seed=1337, block_size=8, batch_size=4, draws=3)


def batches(argv):
    """nanoGPT's get_batch after torch.manual_seed(seed): `draws` batches of train, then of
    val, alternating."""
    c = configure(BATCH_DEFAULTS, argv)
    torch.manual_seed(c["seed"])
    block_size, batch_size = c["block_size"], c["batch_size"]

    def get_batch(split):
        data = np.memmap(os.path.join(c["data_dir"], f"{split}.bin"), dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy((data[i : i + block_size]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i + 1 : i + 1 + block_size]).astype(np.int64)) for i in ix])
        return x, y

    out = {}
    for k in range(c["draws"]):
        for split in ["train", "val"]:
            x, y = get_batch(split)
            out[f"{split}.{k}.x"], out[f"{split}.{k}.y"] = x, y
    save(c["out"], out)


COMMANDS = dict(
    train=train, sample=sample, prepare=prepare, init=init, step=step, batches=batches, script=script
)

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: nanogpt.py {{{'|'.join(COMMANDS)}}} [--key=value ...]")
    COMMANDS[sys.argv[1]](sys.argv[2:])
