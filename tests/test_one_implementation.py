"""Former twins, now one implementation each: the N:M mask behind lm_prune's 2:4, the
state-dict byte count, prune.prune's explicit signature beside prune_."""

from __future__ import annotations

import copy
import inspect
import io

import pytest
import torch

from companion import lm_prune, measure, models, prune


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_semi_structured_mask_keeps_exactly_the_n_largest_of_each_group(n, m):
    w = torch.randn(6, 4 * m, generator=torch.Generator().manual_seed(0))
    mask = prune.semi_structured_mask(w, n=n, m=m)
    groups, kept = w.abs().reshape(-1, m), mask.reshape(-1, m)
    expected = groups >= groups.sort(dim=1, descending=True).values[:, n - 1:n]
    assert torch.equal(kept, expected)  # random floats: no ties


def test_lm_prune_2_4_is_the_semi_structured_mask():
    scores = torch.rand(8, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(lm_prune.prune_mask(scores, pattern="2:4"),
                       prune.semi_structured_mask(scores))
    with pytest.raises(ValueError, match="scores"):
        lm_prune.prune_mask(torch.rand(4, 6), pattern="2:4")
    with pytest.raises(ValueError, match="n must be <= 4"):
        prune.semi_structured_mask(torch.rand(4, 8), n=5)


def test_prune_has_the_explicit_keywords_of_prune_():
    copy_params = inspect.signature(prune.prune).parameters
    inplace_params = inspect.signature(prune.prune_).parameters
    assert list(copy_params) == list(inplace_params)
    assert all(p.kind != inspect.Parameter.VAR_KEYWORD for p in copy_params.values())
    model = models.LeNet300100()
    got = prune.prune(model, 0.7, scope="global", filter_fn=lambda _m, name: name != "fc3")
    ref = prune.prune_(copy.deepcopy(model), 0.7, scope="global",
                       filter_fn=lambda _m, name: name != "fc3")
    assert not prune.is_pruned(model)
    for (k, a), b in zip(got.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_state_dict_bytes_counts_a_module_or_a_state_dict():
    model = models.LeNet300100()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    assert measure.state_dict_bytes(model) == len(buf.getvalue())
    assert measure.state_dict_bytes(model.state_dict()) == len(buf.getvalue())
    tables = {"w": torch.zeros(10, 4)}
    buf = io.BytesIO()
    torch.save(tables, buf)
    assert measure.state_dict_bytes(tables) == len(buf.getvalue())
    with pytest.raises(TypeError, match="model"):
        measure.state_dict_bytes("weights.pt")
    with pytest.raises(TypeError, match="model"):
        measure.state_dict_bytes({"w": [1.0]})
