"""Tests of companion.parallel: gloo all-reduce equals large-batch gradients; pipeline."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from companion import models, parallel


def test_data_parallel_equals_single_process():
    torch.manual_seed(0)
    model = models.LeNet300100(hidden1=16, hidden2=8)
    x, y = torch.rand(32, 784), torch.randint(0, 10, (32,))
    dp = parallel.data_parallel_gradients(model, x, y, world_size=2, timeout=120)
    ref = parallel.single_process_gradients(model, x, y)
    assert dp.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(dp[k], ref[k], atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())  # caller's model untouched


def test_data_parallel_rejects_uneven_batch():
    with pytest.raises(ValueError, match="world_size"):
        parallel.data_parallel_gradients(nn.Linear(3, 2), torch.rand(5, 3),
                                         torch.zeros(5, dtype=torch.long))


def test_split_and_pipeline_forward_match_full_model():
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(4)]).eval()
    stages = parallel.split_stages(model, 4, torch.rand(1, 16))
    assert [len(s) for s in stages] == [1, 1, 1, 1]
    x = torch.rand(12, 16)
    torch.testing.assert_close(parallel.pipeline_forward(stages, x, 3), model(x))
    with pytest.raises(ValueError, match="stages"):
        parallel.split_stages(model, 5, torch.rand(1, 16))
    with pytest.raises(TypeError, match="model"):
        parallel.split_stages(nn.Linear(2, 2), 1, torch.rand(1, 2))


@pytest.mark.parametrize("p,m", [(1, 1), (2, 1), (4, 4), (4, 16), (3, 7)])
def test_simulated_bubble_matches_formula(p, m):
    sched = parallel.simulate_pipeline(p, m)
    assert sched.bubble == pytest.approx(parallel.bubble_fraction(p, m))
    assert sched.makespan == pytest.approx((m + p - 1) * 3.0)
    assert len(sched.slots) == 2 * p * m


def test_bubble_formula_bad_input():
    with pytest.raises(ValueError, match="micro_batches"):
        parallel.bubble_fraction(2, 0)


@pytest.mark.parametrize("stages,x,micro,exc,name", [
    (nn.Linear(3, 3), torch.randn(4, 3), 2, TypeError, "stages"),
    ([nn.Linear(3, 3), "relu"], torch.randn(4, 3), 2, TypeError, r"stages\[1\]"),
    ([], torch.randn(4, 3), 2, ValueError, "stages"),
    ([nn.Linear(3, 3)], [[1.0, 2.0, 3.0]], 1, TypeError, "x"),
    ([nn.Linear(3, 3)], torch.randn(0, 3), 1, ValueError, "x"),
    ([nn.Linear(3, 3)], torch.tensor(1.0), 1, ValueError, "x"),
    ([nn.Linear(3, 3)], torch.randn(4, 3), 5, ValueError, "micro_batches"),
    ([nn.Linear(3, 3)], torch.randn(4, 3), 0, ValueError, "micro_batches"),
    ([nn.Linear(3, 3), nn.Linear(4, 2)], torch.randn(4, 3), 2, ValueError, r"stages\[1\]"),
    ([nn.Linear(3, 3)], torch.randn(4, 3).double(), 2, ValueError, r"stages\[0\].*dtype"),
    ([nn.LSTM(3, 3)], torch.randn(4, 2, 3), 2, TypeError, r"stages\[0\] must return"),
])
def test_pipeline_forward_bad_input(stages, x, micro, exc, name):
    with pytest.raises(exc, match=name):
        parallel.pipeline_forward(stages, x, micro)


def test_split_stages_minimizes_the_largest_stage():
    # four big layers, each followed by a free one, then a small head: the best
    # 4-stage cut puts one big layer in each stage (a greedy running-sum cut
    # put two big layers in the first stage)
    model = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(64, 64), nn.ReLU())],
                          nn.Linear(64, 2)).eval()
    stages = parallel.split_stages(model, 4, torch.rand(1, 64))
    assert [sum(isinstance(m, nn.Linear) and m.out_features == 64 for m in s)
            for s in stages] == [1, 1, 1, 1]
    assert sum(len(s) for s in stages) == len(model)


def test_balanced_bounds_is_optimal_on_small_cases():
    import itertools

    from companion.parallel import _balanced_bounds

    rng = torch.Generator().manual_seed(0)
    for n, parts in [(5, 2), (6, 3), (7, 4), (4, 4), (3, 1)]:
        costs = torch.randint(1, 20, (n,), generator=rng).tolist()
        bounds = _balanced_bounds(costs, parts)
        got = max(sum(costs[a:b]) for a, b in itertools.pairwise(bounds))
        brute = min(max(sum(costs[a:b]) for a, b in itertools.pairwise((0, *cut, n)))
                    for cut in itertools.combinations(range(1, n), parts - 1))
        assert got == brute and len(bounds) == parts + 1 and bounds[0] == 0 and bounds[-1] == n
