"""Tests of companion.apps: int8 row-wise tables, recall@k, budgets, calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion import apps, measure


def test_quantized_recommender_stores_int8_rows_within_half_a_step():
    model = apps.MatrixFactorization(30, 20, dim=16)
    with torch.no_grad():
        model.user.weight[3] = 0.0
    stored, scores = apps.quantized_recommender(model)
    codes, scales = stored["user_codes"], stored["user_scales"]
    assert codes.dtype == torch.int8 and scales.shape == (30,)
    rows = codes.float() * scales[:, None]   # symmetric: no zero point
    err = (rows - model.user.weight.detach()).abs()
    assert (err <= scales[:, None] / 2 + 1e-7).all()
    assert torch.equal(rows[3], torch.zeros(16))
    items = stored["item_codes"].float() * stored["item_scales"][:, None]
    torch.testing.assert_close(scores, rows @ items.T + stored["item_bias"])


def test_quantized_tables_are_smaller_and_rank_alike():
    data = apps.make_interactions(200, 100, per_user=10, test_per_user=3, seed=0)
    model = apps.MatrixFactorization(data.num_users, data.num_items, dim=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apps.fit_recommender_(model, data, epochs=3)
    with torch.no_grad():
        scores = model.all_scores()
    stored, qscores = apps.quantized_recommender(model)
    fp32 = {k: v.detach() for k, v in model.state_dict().items()}
    assert measure.state_dict_bytes(stored) < 0.5 * measure.state_dict_bytes(fp32)
    assert abs(apps.recall_at_k(qscores, data, 10) - apps.recall_at_k(scores, data, 10)) < 0.02
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_recall_at_k_perfect_and_excludes_training_items():
    data = apps.Interactions(1, 4, torch.tensor([[0, 0]]), torch.tensor([[1]]))
    scores = torch.tensor([[9.0, 5.0, 1.0, 0.0]])
    assert apps.recall_at_k(scores, data, 1) == 1.0   # item 0 is a training item: skipped
    with pytest.raises(ValueError, match="scores"):
        apps.recall_at_k(torch.zeros(2, 4), data, 1)


def test_budget_report():
    lat = apps.frame_latencies(lambda f: f * 2, np.arange(10.0), warmup=2)
    assert lat.shape == (10,) and (lat >= 0).all()
    calls = []
    both = apps.frame_latencies({"a": lambda f: calls.append(("a", f)),
                                 "b": lambda f: calls.append(("b", f))}, [0, 1, 2],
                                warmup=1, block=2)
    assert list(both) == ["a", "b"] and both["a"].shape == (3,)
    assert calls == [("a", 0), ("a", 0), ("a", 1), ("b", 0), ("b", 0), ("b", 1),
                     ("b", 2), ("a", 2)]          # turns over blocks of 2, order rotating
    with pytest.raises(TypeError, match="'b'"):
        apps.frame_latencies({"a": len, "b": 3}, [0])
    with pytest.raises(ValueError, match="empty mapping"):
        apps.frame_latencies({}, [0])
    rep = apps.budget_report("m", np.array([1.0, 2.0, 3.0, 4.0]), 2.5)
    assert rep.met == 0.5 and rep.median_ms == 2.5
    with pytest.raises(ValueError, match="budget_ms"):
        apps.budget_report("m", np.array([1.0]), 0.0)


def test_per_class_accuracy_and_ece():
    logits = torch.tensor([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    np.testing.assert_allclose(apps.per_class_accuracy(logits, labels), [1.0, 0.5])
    conf = torch.softmax(torch.tensor([5.0, 0.0]), 0)[0].item()
    assert apps.expected_calibration_error(logits, labels, bins=10) == pytest.approx(
        abs(0.75 - conf), abs=1e-6)
    perfect = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    assert apps.expected_calibration_error(perfect, torch.tensor([0, 1])) < 1e-6


def test_bad_inputs():
    with pytest.raises(TypeError, match="model"):
        apps.quantized_recommender(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="model"):
        apps.fit_recommender_(torch.nn.Linear(2, 2), None)
    with pytest.raises(ValueError, match="test_per_user"):
        apps.make_interactions(10, 10, per_user=3, test_per_user=3)
