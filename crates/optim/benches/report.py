"""Aggregates the JSON lines of optim_step.rs / optim_step.py runs (stdin):
medians per variant, ratios and the memory floor. Used by run.sh."""
import json
import statistics
import sys

# float32 tensors read + written per element by one step (param, grad, state).
TRAFFIC = {"sgd": 5, "adam": 7, "adamw": 7}  # sgd: r p,g,buf w p,buf; adam: r p,g,m,v w p,m,v


def main():
    samples, copy = {}, []
    numel = None
    for line in sys.stdin:
        line = line.strip()
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if rec["impl"] == "copy":
            copy.extend(s / rec["bytes"] for s in rec["seconds"])
            continue
        numel = rec["tensors"] * rec["numel"]
        samples.setdefault((rec["optimizer"], rec["impl"], rec["path"]), []).extend(rec["seconds"])
    med = {k: statistics.median(v) for k, v in samples.items()}
    sec_per_byte = statistics.median(copy) if copy else float("nan")
    print(f"copy bandwidth (torch copy_, read+write): {1 / sec_per_byte / 1e9:.2f} GB/s")
    print(f"{'optimizer':9} {'kiln default':>13} {'kiln fused':>11} {'torch default':>14} {'torch foreach':>14} "
          f"{'torch fused':>12} {'floor':>8} {'fast/default':>13} {'fast/fused':>11} {'fast/floor':>11} {'default/default':>16}")
    for opt in ("sgd", "adam", "adamw"):
        get = lambda i, p: med.get((opt, i, p), float("nan")) * 1e3
        floor = TRAFFIC[opt] * 4 * (numel or 0) * sec_per_byte * 1e3
        kd, kf = get("kiln", "default"), get("kiln", "fused")
        td, tf = get("torch", "default"), get("torch", "fused")
        print(f"{opt:9} {kd:11.2f}ms {kf:9.2f}ms {td:12.2f}ms {get('torch', 'foreach'):12.2f}ms "
              f"{tf:10.2f}ms {floor:6.2f}ms {kf / td:13.3f} {kf / tf:11.3f} {kf / floor:11.3f} {kd / td:16.3f}")
    n = {k: len(v) for k, v in samples.items()}
    print(f"samples per variant: {min(n.values()) if n else 0}")


if __name__ == "__main__":
    main()
