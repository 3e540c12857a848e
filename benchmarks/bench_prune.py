"""Pruning and compression benchmark: Han et al. 2015 on MNIST, Deep Compression storage,
and channel pruning of the small CNN, all measured here.

Run:  python benchmarks/bench_prune.py   (1,322 s = 22 min on 2 shared, loaded CPU cores)
Writes benchmarks/results/prune.json and prints one table.

Targets (issue #5):
* LeNet-300-100 and LeNet-5: >= 12x fewer non-zero parameters, test error
  <= baseline + 0.1 points (paper: 1.64% -> 1.59% and 0.80% -> 0.77% at 12x);
* the pruned LeNet-300-100 stored sparsely: >= 30x smaller than the fp32
  state dict at <= 0.2 points drop (Deep Compression: 40x);
* SmallCNN with 50% of its channels removed: >= 1.5x CPU latency speed-up
  (batch 64, median of >= 20 runs) at <= 1 point drop after fine-tuning.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from companion import data, measure, models, prune, sparse, train

OUT = Path(__file__).resolve().parent / "results" / "prune.json"
THREADS = 1  # latency threads: the quietest, most repeatable setting on a shared machine


def han(model: torch.nn.Module, loaders: data.Loaders, *, epochs: int,
        steps: list[float], finetune_epochs: int, finetune_lr: float = 1e-4,
        final_epochs: int = 0) -> dict:
    """Train, then prune (global magnitude) -> fine-tune at each sparsity of ``steps``.

    After the last step, ``final_epochs`` more epochs at ``finetune_lr / 10``.
    """
    train.set_seed(0)
    train.fit(model, loaders.train, epochs=epochs, lr=1e-3, progress=False, device="cpu")
    base_err = 1 - train.evaluate(model, loaders.test)
    dense = measure.count_parameters(model)

    def fine_tune(m: torch.nn.Module) -> None:
        train.fit(m, loaders.train, epochs=finetune_epochs, lr=finetune_lr, progress=False,
                  device="cpu")

    prune.iterative_prune_(model, steps, fine_tune, scope="global")
    if final_epochs:
        train.fit(model, loaders.train, epochs=final_epochs, lr=finetune_lr / 10,
                  progress=False, device="cpu")
    err = 1 - train.evaluate(model, loaders.test)
    params = measure.count_parameters(model)
    return {"model": model, "base_err": base_err, "err": err, "params": dense.total,
            "nonzero": params.nonzero, "ratio": dense.total / params.nonzero}


def main() -> None:
    start = time.perf_counter()
    ds = data.load_mnist()
    rows = []

    # 1. Han et al. 2015, LeNet-300-100 (all 50,000 training images)
    mlp_loaders = data.make_loaders(ds, batch_size=128, flatten=True)
    mlp = han(models.LeNet300100(), mlp_loaders, epochs=8,
              steps=[0.6, 0.8, 0.9, 0.925], finetune_epochs=6, finetune_lr=1e-3,
              final_epochs=2)
    rows.append({"experiment": "Han 2015 LeNet-300-100 (paper)", "params": "267K -> 22K",
                 "ratio": 12.0, "error %": "1.64 -> 1.59"})
    rows.append({"experiment": "Han 2015 LeNet-300-100 (ours)",
                 "params": f"{mlp['params']:,} -> {mlp['nonzero']:,}",
                 "ratio": round(mlp["ratio"], 2),
                 "error %": f"{100 * mlp['base_err']:.2f} -> {100 * mlp['err']:.2f}",
                 "target met": mlp["ratio"] >= 12 and mlp["err"] <= mlp["base_err"] + 0.001})

    # 2. LeNet-5 (first 30,000 training images, to keep the run short)
    cnn_loaders = data.make_loaders(ds, batch_size=128, train_size=30_000)
    lenet5 = han(models.LeNet5(), cnn_loaders, epochs=4,
                 steps=[0.6, 0.8, 0.9, 0.925], finetune_epochs=1)
    rows.append({"experiment": "Han 2015 LeNet-5 (paper)", "params": "431K -> 36K",
                 "ratio": 12.0, "error %": "0.80 -> 0.77"})
    rows.append({"experiment": "Han 2015 LeNet-5 (ours)",
                 "params": f"{lenet5['params']:,} -> {lenet5['nonzero']:,}",
                 "ratio": round(lenet5["ratio"], 2),
                 "error %": f"{100 * lenet5['base_err']:.2f} -> {100 * lenet5['err']:.2f}",
                 "target met": lenet5["ratio"] >= 12
                 and lenet5["err"] <= lenet5["base_err"] + 0.001})

    # 3. Storage of the pruned LeNet-300-100 (Deep Compression's 40x)
    dense_bytes = measure.model_size_bytes(models.LeNet300100())
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
                 "error %": f"{100 * mlp['base_err']:.2f} -> {100 * stored_err:.2f}",
                 "target met": dense_bytes / file_bytes >= 30
                 and stored_err <= mlp["base_err"] + 0.002})

    # 4. Channel pruning SmallCNN by 50% (MIT 6.5940 lab: 1.7x at 30%)
    train.set_seed(0)
    cnn = models.SmallCNN()
    train.fit(cnn, cnn_loaders.train, epochs=3, lr=1e-3, progress=False, device="cpu")
    cnn_acc = train.evaluate(cnn, cnn_loaders.test)
    small = prune.prune_channels(cnn, 0.5)
    pruned_acc = train.evaluate(small, cnn_loaders.test)
    train.fit(small, cnn_loaders.train, epochs=2, lr=5e-4, progress=False, device="cpu")
    small_acc = train.evaluate(small, cnn_loaders.test)
    x = torch.randn(64, 1, 28, 28)
    lat = {}
    for name, m in (("dense", cnn), ("pruned", small)):
        lat[name] = measure.measure_latency(m, x, warmup=10, repeats=30, threads=THREADS)
    speedup = lat["dense"].median_ms / lat["pruned"].median_ms
    rows.append({"experiment": "channel pruning 30% (MIT 6.5940)", "ratio": 1.7})
    rows.append({"experiment": "channel pruning 50% SmallCNN (ours)",
                 "params": f"{measure.count_parameters(cnn).total:,} -> "
                           f"{measure.count_parameters(small).total:,}",
                 "ratio": round(speedup, 2),
                 "error %": f"{100 * (1 - cnn_acc):.2f} -> {100 * (1 - pruned_acc):.2f} (no FT)"
                            f" -> {100 * (1 - small_acc):.2f}",
                 "latency ms": f"{lat['dense'].median_ms:.2f} -> {lat['pruned'].median_ms:.2f}",
                 "target met": speedup >= 1.5 and small_acc >= cnn_acc - 0.01})

    seconds = time.perf_counter() - start
    table = measure.Table(rows, title=f"Pruning benchmark ({seconds:.0f} s; latency: batch 64, "
                                      f"{THREADS} thread, median of 30, CPU)")
    print(table)
    print(f"\nmachine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"python {sys.version.split()[0]}, total {seconds:.0f} s")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.rows.append({"experiment": "meta", "seconds": round(seconds, 1),
                       "threads": THREADS, "torch": torch.__version__})
    table.save_json(OUT)


if __name__ == "__main__":
    main()
