"""Every ``*Report`` gives a table row: ``as_row()`` holds the report's own values.

Each report is built by hand with distinct values, so a row that drops a
field, swaps two of them or computes a derived value wrongly fails.
"""

from __future__ import annotations

import math

import pytest

from companion import amp, dynamic, lr, measure, parallel, regularize
from companion.train import History


def _check_table(row: dict) -> None:
    """The row goes into a ``measure.Table`` and every key becomes a column."""
    text = str(measure.Table([row, row], title="t"))
    header = text.splitlines()[1]
    for key in row:
        assert key in header


def test_amp_report_row():
    rep = amp.AmpReport("bf16", losses=[2.0, 1.5, 1.25], skipped_steps=2,
                        scales=[65536.0, 32768.0], accuracy=0.75, seconds=4.0,
                        cpu_seconds=7.0, param_dtypes=("float32",), images=200)
    row = rep.as_row()
    assert row == {"precision": "bf16", "skipped_steps": 2, "accuracy": 0.75, "seconds": 4.0,
                   "cpu_seconds": 7.0, "param_dtypes": "float32", "images": 200,
                   "steps": 3, "final_loss": 1.25, "final_scale": 32768.0,
                   "images_per_s": 50.0}
    _check_table(row)
    empty = amp.AmpReport("fp32").as_row()
    assert empty["steps"] == 0
    assert math.isnan(empty["final_loss"]) and math.isnan(empty["final_scale"])


def test_underflow_report_row():
    rep = amp.UnderflowReport("float16", 1024.0, 0.125, 0.01, False)
    row = rep.as_row()
    assert row == {"dtype": "float16", "loss_scale": 1024.0, "lost": 0.125,
                   "relative_error": 0.01, "overflow": False}
    _check_table(row)


def test_exit_report_row():
    rep = dynamic.ExitReport(threshold=0.9, accuracy=0.95, avg_macs=1000.0,
                             exit_fractions=[0.5, 0.25, 0.25])
    row = rep.as_row()
    assert row == {"threshold": 0.9, "accuracy": 0.95, "avg_macs": 1000.0,
                   "exit_fractions": [0.5, 0.25, 0.25], "avg_flops": 2000.0}
    row["exit_fractions"].append(1.0)  # a copy: the report is not changed through its row
    assert rep.exit_fractions == [0.5, 0.25, 0.25]
    _check_table(row)


def test_early_exit_report_row():
    rep = dynamic.EarlyExitReport(full_ms=4.0, early_exit_ms=3.0, agreement=0.98, threads=2)
    row = rep.as_row()
    assert row == {"full_ms": 4.0, "early_exit_ms": 3.0, "agreement": 0.98, "threads": 2,
                   "saving": 0.25}
    _check_table(row)


def test_range_test_report_row():
    rep = lr.RangeTestReport(lrs=[1e-4, 1e-3, 1e-2, 1e-1], losses=[2.0, 1.0, 0.5, 3.0],
                             raw_losses=[2.0, 1.0, 0.5, 3.0], stop_reason="diverged",
                             suggested_lr=1e-3)
    row = rep.as_row()
    assert row == {"steps": 4, "first_lr": 1e-4, "last_lr": 1e-1, "stop_reason": "diverged",
                   "suggested_lr": 1e-3, "min_loss_lr": 1e-2, "min_loss": 0.5}
    _check_table(row)
    empty = lr.RangeTestReport().as_row()
    assert empty["steps"] == 0 and empty["suggested_lr"] is None
    assert math.isnan(empty["min_loss_lr"]) and math.isnan(empty["min_loss"])


def test_sweep_report_row():
    runs = [History(val_acc=[0.5, 0.75, 0.5], steps=30, seconds=2.0),
            History(val_acc=[0.5, 0.25, 0.75], steps=30, seconds=4.0)]
    rep = lr.SweepReport("adam", [0, 1], runs)
    row = rep.as_row()
    assert row["recipe"] == "adam" and row["seeds"] == 2
    assert row["steps"] == 30 and row["seconds"] == 3.0
    # final accuracies 0.5 and 0.75, best 0.75 and 0.75
    assert row["final acc"] == f"{rep.final_acc[0]:.4f} ± {rep.final_acc[1]:.4f}"
    assert row["final acc"].startswith("0.6250")
    assert row["best acc"].startswith("0.7500 ± 0.0000")
    _check_table(row)


def test_sharded_training_report_row():
    rep = parallel.ShardedTrainingReport(single_losses=[3.0, 2.5, 2.0],
                                         sharded_losses=[3.0, 2.25, 2.125], world_size=2,
                                         full_param_bytes=4000, rank_param_bytes=[2100, 1900])
    row = rep.as_row()
    assert row == {"world_size": 2, "steps": 3, "single_final_loss": 2.0,
                   "sharded_final_loss": 2.125, "max_abs_diff": 0.25,
                   "full_param_bytes": 4000, "max_rank_param_bytes": 2100}
    _check_table(row)


def test_gap_report_row():
    row = regularize.GapReport(train_acc=0.75, test_acc=0.5).as_row()
    assert row == {"train_acc": 0.75, "test_acc": 0.5, "gap": 0.25}
    _check_table(row)


def test_keras_sparsity_report_row():
    pytest.importorskip("keras")
    from companion.keras import prune as kprune

    rep = kprune.SparsityReport([kprune.LayerSparsity("dense1", (4, 5), 20, 5),
                                 kprune.LayerSparsity("dense2", (5, 2), 10, 7)])
    row = rep.as_row()
    assert row == {"layers": 2, "size": 30, "zeros": 12, "sparsity": 0.4}
    _check_table(row)
