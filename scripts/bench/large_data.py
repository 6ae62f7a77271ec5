"""Peak resident memory of `kiln train` over a `tensors:` file of 200 MB and
of 2 GB: the inputs are read per batch from the file, so the two runs'
peaks differ by far less than the files do (target: under 100 MB).

Each file holds uint8 inputs [N, 4096] (random bytes) and int64 labels in
0..10; one epoch of `--model mlp:hidden=8` in batches of 512, one libtorch
thread, the 20 % test split evaluated at the end. The peak is the kernel's
`ru_maxrss` of the child. The files are written to a temporary directory
(2.2 GB of disk) and removed afterwards.

Usage: python3 scripts/bench/large_data.py --kiln-bin target/release/kiln
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

FEATURES = 4096


def write_tensors(path, n):
    inputs = n * FEATURES
    header = json.dumps({
        "inputs": {"dtype": "U8", "shape": [n, FEATURES], "data_offsets": [0, inputs]},
        "targets": {"dtype": "I64", "shape": [n], "data_offsets": [inputs, inputs + 8 * n]},
    }, separators=(",", ":"))
    header += " " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header.encode())
        chunk = 4096
        for start in range(0, n, chunk):
            f.write(os.urandom(min(chunk, n - start) * FEATURES))
        f.write(b"".join((i % 10).to_bytes(8, "little") for i in range(n)))


def run(kiln, path, run_dir):
    start = time.perf_counter()
    proc = subprocess.Popen([kiln, "train", "--data", f"tensors:{path},classes=10",
                             "--model", "mlp:hidden=8", "--batch-size", "512", "--epochs", "1",
                             "--seed", "0", "--threads", "1", "--quiet", "--run-dir", run_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    stderr = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"kiln train failed over {path}: {stderr}")
    return usage.ru_maxrss * 1024, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kiln-bin", required=True)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="kiln-large-data-")
    try:
        rows = []
        for label, size in (("200 MB", 200_000_000), ("2 GB", 2_000_000_000)):
            n = size // FEATURES
            path = os.path.join(tmp, "data.safetensors")
            write_tensors(path, n)
            peak, seconds = run(args.kiln_bin, path, os.path.join(tmp, f"run-{n}"))
            os.remove(path)
            rows.append((label, n, peak, seconds))
        print("Peak resident memory of kiln train over a tensors: file (one epoch, mlp:hidden=8)")
        for label, n, peak, seconds in rows:
            print(f"  {label:>6} ({n} samples of {FEATURES} bytes): {peak / 1e6:7.1f} MB peak, {seconds:6.1f} s")
        grown = (rows[1][2] - rows[0][2]) / 1e6
        print(f"  difference: {grown:.1f} MB for 1.8 GB more data (target: under 100 MB)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
