"""Writes the golden logs kiln's same-seed test compares against.

Each file is the stdout of scripts/reference/quickstart.py (PyTorch's
quickstart, run on the torch the setup installed) under the arguments on its
first line. Regenerate with `make golden`.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = {
    "shuffled": "--seed 0 --epochs 2 --train-samples 12800 --test-samples 2000 --threads 2",
    "no_shuffle": "--seed 7 --epochs 2 --train-samples 12800 --test-samples 2000 --threads 2 --no-shuffle",
    "short_last_batch": "--seed 3 --epochs 1 --batch-size 50 --lr 0.01 --momentum 0.5 --train-samples 10025 --test-samples 1001 --threads 2",
}

for name, args in CASES.items():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts/reference/quickstart.py"), *args.split()],
        check=True, capture_output=True, text=True,
    ).stdout
    path = os.path.join(ROOT, "tests/golden/quickstart", name + ".txt")
    with open(path, "w") as f:
        f.write(f"# args: {args}\n{out}")
    print(path)
