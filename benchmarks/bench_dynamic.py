"""Early-exit benchmark (BranchyNet style) on MNIST.

Run:  python benchmarks/bench_dynamic.py   (about 2-5 minutes on 2 CPU cores)
Writes benchmarks/results/dynamic.json and prints the accuracy / FLOPs curve.

Goal (issue #7): >= 40% fewer average FLOPs than the full network at <= 0.5
points of test accuracy, and a measured latency saving on real batches
(10,000 test images in batches of 1,000, one thread, alternating runs).
The threshold is chosen on the 10,000 validation images; the test images only
report the result of that choice.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from _record import Record

from companion import data, dynamic, measure, train

OUT = Path(__file__).resolve().parent / "results" / "dynamic.json"
THRESHOLDS = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 0.999, 1.0]


def main() -> None:
    record = Record(threads=1, baselines={
        "accuracy": "the same network's final exit (the full network), same weights",
        "speed": "the full network on the same batches, alternating runs"})
    mnist = data.load_mnist()
    loaders = data.make_loaders(mnist, 64, train_size=20_000)
    train.set_seed(0)
    net = dynamic.EarlyExitNet()
    dynamic.fit_early_exit_(net, loaders.train, epochs=3, lr=1e-3)
    x = torch.from_numpy(mnist.test.x).unsqueeze(1)
    y = torch.from_numpy(mnist.test.y)
    macs = dynamic.exit_macs(net)
    logits = dynamic.exit_logits(net, x)
    curve = dynamic.exit_curve(logits, y, macs, THRESHOLDS)
    xv, yv = torch.from_numpy(mnist.val.x).unsqueeze(1), torch.from_numpy(mnist.val.y)
    val_curve = dynamic.exit_curve(dynamic.exit_logits(net, xv), yv, macs, THRESHOLDS)
    full = curve[-1]
    rows = [{"threshold": r.threshold, "val acc": v.accuracy, "test acc": r.accuracy,
             "avg MFLOPs": r.avg_flops / 1e6, "FLOPs saved": 1 - r.avg_macs / full.avg_macs,
             "exit fractions": [round(f, 4) for f in r.exit_fractions]}
            for v, r in zip(val_curve, curve, strict=True)]
    print(measure.Table(rows, title="early exits, MNIST validation and test sets"))
    chosen = min((v for v in val_curve if v.accuracy >= val_curve[-1].accuracy - 0.005),
                 key=lambda v: v.avg_macs)
    best = curve[THRESHOLDS.index(chosen.threshold)]
    timings = [dynamic.time_early_exit(net, x[i:i + 1000], best.threshold, warmup=1, repeats=5,
                                       threads=1) for i in range(0, 10_000, 1000)]
    full_ms = sum(t.full_ms for t in timings)
    early_ms = sum(t.early_exit_ms for t in timings)
    result = {
        "exit_macs": macs, "curve": rows, "chosen_threshold": best.threshold,
        "threshold_chosen_on": "validation images (10,000)",
        "accuracy_full": full.accuracy, "accuracy_early_exit": best.accuracy,
        "accuracy_drop_points": 100 * (full.accuracy - best.accuracy),
        "flops_saved": 1 - best.avg_macs / full.avg_macs,
        "latency_full_ms_10k": full_ms, "latency_early_exit_ms_10k": early_ms,
        "latency_saved": 1 - early_ms / full_ms, "threads": 1,
        "goal_met": (1 - best.avg_macs / full.avg_macs >= 0.40
                     and full.accuracy - best.accuracy <= 0.005),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2))
    record.write(OUT, result)


if __name__ == "__main__":
    main()
