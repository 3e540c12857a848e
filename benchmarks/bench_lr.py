"""Learning-rate range test vs grid search, and optimizers vs torch.optim.

1. Grid: LeNet-300-100 with Adam on 10,000 MNIST images, 7 learning rates
   (1e-4 ... 1e-1), 3 seeds, 5 epochs; the best LR by final mean validation
   accuracy. Range test: one run of 100 steps from 1e-5 to 1.
   Goal (issue #6): suggested LR within 3x of the grid's best, at <= 20% of
   the grid's optimizer steps.
2. companion.optim vs torch.optim: max abs weight difference after 100 steps
   (float64 and float32). Goal: <= 1e-6.

Usage: ``python benchmarks/bench_lr.py`` (writes benchmarks/results/lr.json).
"""

from __future__ import annotations

from pathlib import Path

import torch
from _record import Record

from companion import data, lr, measure, models, train
from companion import optim as O

GRID, SEEDS, EPOCHS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1], (0, 1, 2), 5
OUT = Path(__file__).parent / "results" / "lr.json"
PAIRS = {
    "GD": (O.GD, torch.optim.SGD, {"lr": 0.1}),
    "momentum": (O.Momentum, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    "Nesterov": (O.Momentum, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    "RMSprop": (O.RMSprop, torch.optim.RMSprop, {"lr": 0.01}),
    "Adam": (O.Adam, torch.optim.Adam, {"lr": 0.01}),
    "Adam + L2": (O.Adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.01}),
    "AdamW": (O.AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.01}),
}


def _train_100(cls, dtype, **kw) -> torch.Tensor:
    torch.manual_seed(0)
    x, y = torch.randn(128, 8, dtype=dtype), torch.randint(0, 3, (128,))
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    net.to(dtype)
    opt = cls(net.parameters(), **kw)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def optimizer_table() -> measure.Table:
    rows = []
    for name, (ours, theirs, kw) in PAIRS.items():
        row = {"optimizer": name}
        for dtype in (torch.float64, torch.float32):
            diff = (_train_100(ours, dtype, **kw) - _train_100(theirs, dtype, **kw)).abs().max()
            row[f"max diff {str(dtype)[6:]}"] = diff.item()
        rows.append(row)
    return measure.Table(rows, title="companion.optim vs torch.optim, 100 steps")


def main() -> None:
    record = Record(threads=torch.get_num_threads(), baselines={
        "accuracy": "the best learning rate of a 7-point grid, 3 seeds each (same epochs)",
        "optimizers": "torch.optim with the same hyper-parameters"})
    loaders = data.make_loaders(data.load_mnist(), batch_size=128, train_size=10_000,
                                test_size=2_000, flatten=True)
    grid = {g: lr.seed_sweep(f"Adam lr={g:g}", models.LeNet300100, loaders.train, loaders.val,
                             seeds=SEEDS, epochs=EPOCHS, lr=g) for g in GRID}
    grid_table = measure.Table([r.as_row() for r in grid.values()], title="grid search")
    print(grid_table)
    grid_steps = sum(r.steps * len(r.seeds) for r in grid.values())
    best = max(GRID, key=lambda g: grid[g].final_acc[0])
    train.set_seed(0)
    rt = lr.lr_range_test(models.LeNet300100(), loaders.train, min_lr=1e-5, max_lr=1.0,
                          steps=100)
    ratio = max(rt.suggested_lr / best, best / rt.suggested_lr)
    frac = rt.steps / grid_steps
    print(rt)
    print(f"suggested {rt.suggested_lr:.3g} vs grid best {best:g}: {ratio:.2f}x (goal <= 3x); "
          f"{rt.steps} vs {grid_steps} steps = {frac:.1%} (goal <= 20%)")
    opt_table = optimizer_table()
    print(opt_table)
    worst64 = max(r["max diff float64"] for r in opt_table.rows)
    result = {
        "grid": grid_table.rows, "grid_best_lr": best, "grid_steps": grid_steps,
        "range_test": {"suggested_lr": rt.suggested_lr, "steps": rt.steps,
                       "stop_reason": rt.stop_reason, "min_loss_lr": rt.min_loss_lr},
        "ratio_to_best": ratio, "step_fraction": frac,
        "goal_within_3x_met": ratio <= 3, "goal_steps_20pct_met": frac <= 0.2,
        "optimizers": opt_table.rows, "optimizer_max_diff_float64": worst64,
        "goal_optimizers_1e-6_met": worst64 <= 1e-6,
        "device": str(train.default_device()),
    }
    record.write(OUT, result)


if __name__ == "__main__":
    main()
