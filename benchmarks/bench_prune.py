"""Pruning and compression benchmark: Han et al. 2015 on MNIST, Deep Compression storage,
and channel pruning of the small CNN, all measured here.

Run:  python benchmarks/bench_prune.py   (about 6 min on 2 idle CPU cores)
Writes benchmarks/results/prune.json and prints one table.

Targets (issue #5), each judged against a dense model given the *same
training budget* (the pruned model's epochs of training and fine-tuning,
with the same learning rates, but no pruning), not against the shorter
dense run that pruning starts from:
* LeNet-300-100 and LeNet-5: >= 12x fewer non-zero parameters, test error
  <= equal-budget dense + 0.1 points (paper: 1.64% -> 1.59% and 0.80% -> 0.77%);
* the pruned LeNet-300-100 stored sparsely: >= 30x smaller than the fp32
  state dict at <= 0.2 points drop (Deep Compression: 40x);
* SmallCNN with 50% of its channels removed: >= 1.5x CPU latency speed-up
  against the dense model in its fastest plain fp32 form (both BatchNorm-
  folded and channels-last where that is faster; batch 64, interleaved
  rounds) at <= 1 point drop after fine-tuning.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from _record import Record

from companion import data, infer, measure, models, prune, sparse, train

OUT = Path(__file__).resolve().parent / "results" / "prune.json"
THREADS = 1  # latency threads: the quietest, most repeatable setting on a shared machine


def han(model: torch.nn.Module, loaders: data.Loaders, *, epochs: int,
        steps: list[float], finetune_epochs: int, finetune_lr: float = 1e-4,
        final_epochs: int = 0) -> dict:
    """Train, then prune (global magnitude) -> fine-tune at each sparsity of ``steps``.

    After the last step, ``final_epochs`` more epochs at ``finetune_lr / 10``.
    The equal-budget dense model continues from the same trained weights with
    exactly the same epochs and learning rates, without pruning.
    """
    train.set_seed(0)
    train.fit(model, loaders.train, epochs=epochs, lr=1e-3, progress=False, device="cpu")
    base_err = 1 - train.evaluate(model, loaders.test)
    dense = measure.count_parameters(model)
    equal = train.clone(model)

    def fine_tune(m: torch.nn.Module) -> None:
        train.fit(m, loaders.train, epochs=finetune_epochs, lr=finetune_lr, progress=False,
                  device="cpu")

    train.set_seed(1)                                 # the same data order for both branches
    prune.iterative_prune_(model, steps, fine_tune, scope="global")
    train.set_seed(1)
    for _ in steps:                                   # the same epochs, nothing pruned
        fine_tune(equal)
    for m in (model, equal):
        if final_epochs:
            train.fit(m, loaders.train, epochs=final_epochs, lr=finetune_lr / 10,
                      progress=False, device="cpu")
    err = 1 - train.evaluate(model, loaders.test)
    equal_err = 1 - train.evaluate(equal, loaders.test)
    params = measure.count_parameters(model)
    total_epochs = epochs + len(steps) * finetune_epochs + final_epochs
    return {"model": model, "base_err": base_err, "equal_err": equal_err, "err": err,
            "epochs": total_epochs, "params": dense.total, "nonzero": params.nonzero,
            "ratio": dense.total / params.nonzero}


def han_row(name: str, r: dict) -> dict:
    return {"experiment": f"{name} (ours)", "params": f"{r['params']:,} -> {r['nonzero']:,}",
            "ratio": round(r["ratio"], 2),
            "error %": f"{100 * r['base_err']:.2f} (dense, start) -> {100 * r['err']:.2f} "
                       f"(pruned, {r['epochs']} epochs in all)",
            "equal-budget dense error %": round(100 * r["equal_err"], 2),
            "target met": r["ratio"] >= 12 and r["err"] <= r["equal_err"] + 0.001}


def main() -> None:
    record = Record(threads=THREADS, baselines={
        "accuracy": "a dense model trained for the same total epochs with the same learning "
                    "rates as the pruned one (continued from the same starting weights)",
        "speed": "the dense SmallCNN in its fastest plain fp32 form (infer.fastest_fp32), "
                 "the pruned one likewise; interleaved rounds"})
    ds = data.load_mnist()
    rows = []

    # 1. Han et al. 2015, LeNet-300-100 (all 50,000 training images)
    mlp_loaders = data.make_loaders(ds, batch_size=128, flatten=True)
    mlp = han(models.LeNet300100(), mlp_loaders, epochs=8,
              steps=[0.6, 0.8, 0.9, 0.925], finetune_epochs=6, finetune_lr=1e-3,
              final_epochs=2)
    rows.append({"experiment": "Han 2015 LeNet-300-100 (paper)", "params": "267K -> 22K",
                 "ratio": 12.0, "error %": "1.64 -> 1.59"})
    rows.append(han_row("Han 2015 LeNet-300-100", mlp))

    # 2. LeNet-5 (first 30,000 training images, to keep the run short)
    cnn_loaders = data.make_loaders(ds, batch_size=128, train_size=30_000)
    lenet5 = han(models.LeNet5(), cnn_loaders, epochs=4,
                 steps=[0.6, 0.8, 0.9, 0.925], finetune_epochs=2, finetune_lr=1e-3,
                 final_epochs=2)
    rows.append({"experiment": "Han 2015 LeNet-5 (paper)", "params": "431K -> 36K",
                 "ratio": 12.0, "error %": "0.80 -> 0.77"})
    rows.append(han_row("Han 2015 LeNet-5", lenet5))

    # 3. Storage of the pruned LeNet-300-100 (Deep Compression's 40x)
    dense_bytes = measure.state_dict_bytes(models.LeNet300100())
    cfg = sparse.SparseConfig(index="delta", values="kmeans", bits=5, codec="lzma")
    with tempfile.TemporaryDirectory() as tmp:
        file_bytes = sparse.save(mlp["model"], Path(tmp) / "lenet300.spz", cfg)
        restored = models.LeNet300100()
        restored.load_state_dict(sparse.load(Path(tmp) / "lenet300.spz"))
    stored_err = 1 - train.evaluate(restored, mlp_loaders.test)
    rows.append({"experiment": "Deep Compression LeNet-300-100 (paper)", "ratio": 40.0,
                 "error %": "1.64 -> 1.58"})
    rows.append({"experiment": "sparse file LeNet-300-100 (ours)",
                 "params": f"{dense_bytes:,} B -> {file_bytes:,} B",
                 "ratio": round(dense_bytes / file_bytes, 1),
                 "error %": f"{100 * mlp['err']:.2f} (pruned) -> {100 * stored_err:.2f} (file)",
                 "equal-budget dense error %": round(100 * mlp["equal_err"], 2),
                 "target met": dense_bytes / file_bytes >= 30
                 and stored_err <= mlp["err"] + 0.002})

    # 4. Channel pruning SmallCNN by 50% (MIT 6.5940 lab: 1.7x at 30%)
    train.set_seed(0)
    cnn = models.SmallCNN()
    train.fit(cnn, cnn_loaders.train, epochs=3, lr=1e-3, progress=False, device="cpu")
    small = prune.prune_channels(cnn, 0.5)
    pruned_acc = train.evaluate(small, cnn_loaders.test)
    dense5 = train.clone(cnn)                          # equal budget: 3 + 2 epochs, not pruned
    for m in (small, dense5):
        train.set_seed(0)
        train.fit(m, cnn_loaders.train, epochs=2, lr=5e-4, progress=False, device="cpu")
    small_acc, dense_acc = train.evaluate(small, cnn_loaders.test), train.evaluate(
        dense5, cnn_loaders.test)
    x = torch.randn(64, 1, 28, 28)
    fast = {name: infer.fastest_fp32(m, x, threads=THREADS) for name, m in
            (("dense", dense5), ("pruned", small))}
    timing = measure.compare_latency({k: f.model for k, f in fast.items()}, x, repeats=30,
                                     threads=THREADS)
    speedup = timing.speedup("pruned")
    rows.append({"experiment": "channel pruning 30% (MIT 6.5940)", "ratio": 1.7})
    rows.append({"experiment": "channel pruning 50% SmallCNN (ours)",
                 "params": f"{measure.count_parameters(cnn).total:,} -> "
                           f"{measure.count_parameters(small).total:,}",
                 "ratio": round(speedup, 2),
                 "error %": f"{100 * (1 - pruned_acc):.2f} (pruned, no FT) -> "
                            f"{100 * (1 - small_acc):.2f} (5 epochs in all)",
                 "equal-budget dense error %": round(100 * (1 - dense_acc), 2),
                 "latency ms": f"{timing.median_ms('dense'):.2f} ({fast['dense'].name}) -> "
                               f"{timing.median_ms('pruned'):.2f} ({fast['pruned'].name})",
                 "target met": speedup >= 1.5 and small_acc >= dense_acc - 0.01})

    table = measure.Table(rows, title=f"Pruning benchmark (latency: batch 64, {THREADS} thread, "
                                      f"30 interleaved rounds, CPU)")
    print(table)
    record.write(OUT, {"title": table.title, "rows": rows})


if __name__ == "__main__":
    main()
