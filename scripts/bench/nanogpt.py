"""kiln's language-model training step against nanoGPT's train.py (issue 23), on this machine.

    PYTHONPATH=.libtorch python3 scripts/bench/nanogpt.py --kiln-bin target/release/kiln

1. Milliseconds per iteration of nanoGPT's CPU recipe (README: block_size 64,
   batch 12, 4 layers, 4 heads, 128 wide, dropout 0; AdamW lr 1e-3, betas
   0.9/0.99, weight decay 0.1 on matrices only, warm-up 100 then cosine to
   1e-4 at 2000, clipping at 1.0): 220 iterations, the median of iterations
   20..219 as each program prints it (`iter N: loss X, time T.TTms`), kiln
   (`kiln train --data tokens:… --model gpt:…`) against
   scripts/reference/nanogpt.py (train.py statement for statement,
   `--compile=False`), with the same thread count, alternating the two
   programs --reps times; target kiln/nanoGPT <= 0.8.
2. Peak resident memory (the kernel's ru_maxrss) of `kiln train` on a
   6-layer, 6-head, 384-wide gpt at block size 256 (batch --memory-batch, 3
   steps), with and without --gradient-checkpointing.

The text is 1,115,394 characters (the size of nanoGPT's shakespeare_char
input) drawn at random from that file's 65 characters with a fixed seed:
nothing can be downloaded here, and an iteration's time depends only on the
sizes, not on the words.
"""
import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NANOGPT = os.path.join(ROOT, "scripts", "reference", "nanogpt.py")
CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ITERS = 220
WARMUP = 20
ITER_LINE = re.compile(r"^iter (\d+): loss [0-9.naninf]+, time ([0-9.]+)ms", re.M)


def write_text(path):
    rng = random.Random(1337)
    with open(path, "w") as f:
        f.write("".join(rng.choice(CHARS) for _ in range(1_115_394)))


def check(proc, what):
    if proc.returncode != 0:
        sys.exit(f"{what} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def iteration_ms(stdout, what):
    times = [float(ms) for it, ms in ITER_LINE.findall(stdout) if WARMUP <= int(it) < ITERS]
    if len(times) != ITERS - WARMUP:
        sys.exit(f"{what}: expected {ITERS - WARMUP} timed iterations, found {len(times)}")
    return statistics.median(times)


def kiln_recipe(kiln, data, run_dir, threads):
    return [kiln, "train", "--data", f"tokens:{data},block_size=64",
            "--model", "gpt:n_layer=4,n_head=4,n_embd=128,dropout=0.0,bias=false",
            "--batch-size", "12", "--max-steps", str(ITERS),
            "--optimizer", "adamw:lr=1e-3,betas=0.9;0.99,weight_decay=0.1",
            "--param-group", "ndim<2:weight_decay=0",
            "--scheduler", "warmup-cosine:warmup_steps=100,decay_steps=2000,min_lr=1e-4",
            "--clip-grad-norm", "1.0", "--eval-every-steps", "250", "--eval-batches", "20",
            "--seed", "1337", "--device", "cpu", "--threads", str(threads), "--run-dir", run_dir]


def nanogpt_recipe(data, threads):
    return [sys.executable, NANOGPT, "train", f"--data_dir={data}", "--device=cpu",
            "--compile=False", "--eval_iters=20", "--eval_interval=250", "--log_interval=1",
            "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
            "--dropout=0.0", "--bias=False", f"--max_iters={ITERS - 1}", "--lr_decay_iters=2000",
            "--warmup_iters=100", "--learning_rate=1e-3", "--min_lr=1e-4", "--beta2=0.99",
            "--weight_decay=0.1", "--grad_clip=1.0", "--seed=1337", f"--threads={threads}",
            "--out_dir="]


def peak_rss(argv):
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    stderr = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv[:2])} failed: {stderr[-2000:]}")
    return usage.ru_maxrss * 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kiln-bin", required=True)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--memory-batch", type=int, default=12)
    args = parser.parse_args()
    # nanogpt.py runs in the temporary directory: the torch path made absolute.
    path = os.pathsep.join(os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    env = dict(os.environ, PYTHONUTF8="1", PYTHONPATH=path)
    with tempfile.TemporaryDirectory(prefix="kiln-bench-nanogpt-") as tmp:
        text = os.path.join(tmp, "input.txt")
        data = os.path.join(tmp, "chars")
        write_text(text)
        check(subprocess.run([args.kiln_bin, "prepare-text", text, "--out", data],
                             capture_output=True, text=True), "kiln prepare-text")
        print(f"nanoGPT's CPU recipe, ms per iteration (median of iterations {WARMUP}..{ITERS - 1})")
        for threads in args.threads:
            kiln_ms, ref_ms = [], []
            for rep in range(args.reps):
                run_dir = os.path.join(tmp, f"run-{threads}-{rep}")
                out = check(subprocess.run(kiln_recipe(args.kiln_bin, data, run_dir, threads),
                                           capture_output=True, text=True, env=env), "kiln train")
                kiln_ms.append(iteration_ms(out, "kiln"))
                out = check(subprocess.run(nanogpt_recipe(data, threads), capture_output=True,
                                           text=True, env=env, cwd=tmp), "nanogpt.py train")
                ref_ms.append(iteration_ms(out, "nanoGPT"))
            k, r = statistics.median(kiln_ms), statistics.median(ref_ms)
            print(f"  {threads} thread(s): kiln {k:7.2f} ms, nanoGPT {r:7.2f} ms, "
                  f"kiln/nanoGPT {k / r:.2f} (target <= 0.8; runs: kiln {kiln_ms}, nanoGPT {ref_ms})")
        print(f"Peak resident memory, gpt 6 layers x 384 wide, block 256, batch {args.memory_batch}, 3 steps")
        for flag in ([], ["--gradient-checkpointing"]):
            argv = [args.kiln_bin, "train", "--data", f"tokens:{data},block_size=256",
                    "--model", "gpt:n_layer=6,n_head=6,n_embd=384,dropout=0.2,bias=false",
                    "--batch-size", str(args.memory_batch), "--max-steps", "3",
                    "--eval-every-steps", "1000", "--eval-batches", "1", "--seed", "1337",
                    "--device", "cpu", "--threads", str(max(args.threads)), "--quiet",
                    "--run-dir", os.path.join(tmp, f"memory{len(flag)}")] + flag
            label = flag[0] if flag else "without checkpointing"
            print(f"  {label:>26}: {peak_rss(argv) / 1e6:8.1f} MB")


if __name__ == "__main__":
    main()
