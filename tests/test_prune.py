"""Tests of companion.prune: masks, schedules, structured pruning, 2:4."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from state_check import assert_unchanged
from torch import nn
from torch.nn.utils import prune as tprune

from companion import measure, models, prune
from companion.prune.structured import _mask_channels_


# --------------------------------------------------------------------------- masks
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), s=st.floats(0.0, 0.999), ties=st.booleans())
def test_mask_from_scores_exact_count(n, s, ties):
    scores = torch.zeros(n) if ties else torch.rand(n)
    mask = prune.mask_from_scores(scores, s)
    assert int((mask == 0).sum()) == round(s * n)
    assert mask.shape == scores.shape


def test_mask_prunes_the_smallest():
    w = torch.tensor([[0.1, -3.0], [2.0, -0.05]])
    mask = prune.mask_from_scores(prune.magnitude(w), 0.5)
    assert mask.tolist() == [[0.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("scope", ["local", "global"])
def test_prune_reaches_exact_sparsity(scope):
    m = models.LeNet300100()
    prune.prune_(m, 0.9, scope=scope)
    assert prune.sparsity(m) == pytest.approx(0.9, abs=1e-5)
    if scope == "local":
        for mod, _ in prune.prunable(m):
            zeros = int((mod.weight == 0).sum())
            assert zeros == round(0.9 * mod.weight.numel())


def test_global_scope_prunes_layers_unevenly():
    m = models.LeNet300100()
    with torch.no_grad():
        m.fc3.weight.mul_(100)  # the output layer's weights become the largest
    prune.prune_(m, 0.5, scope="global")
    assert (m.fc3.weight == 0).float().mean() < 0.05
    assert (m.fc1.weight == 0).float().mean() > 0.5


def test_matches_torch_l1_unstructured():
    a, b = models.LeNet300100(), models.LeNet300100()
    b.load_state_dict(a.state_dict())
    prune.prune_(a, 0.7)
    for mod, _ in prune.prunable(b):
        tprune.l1_unstructured(mod, "weight", amount=0.7)
    for (ma, _), (mb, _) in zip(prune.prunable(a), prune.prunable(b), strict=True):
        assert torch.equal(ma.weight_mask, mb.weight_mask)
        assert torch.equal(ma.weight, mb.weight)
    assert set(a.state_dict()) == set(b.state_dict())  # weight_orig + weight_mask


def test_zeros_stay_zero_after_optimizer_steps():
    torch.manual_seed(0)
    m = models.LeNet300100()
    prune.prune_(m, 0.8)
    zero_before = [mod.weight == 0 for mod, _ in prune.prunable(m)]
    opt = torch.optim.Adam(m.parameters(), lr=1e-2, weight_decay=1e-4)
    x, y = torch.randn(32, 784), torch.randint(0, 10, (32,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    m(x)  # forward recomputes weight = weight_orig * weight_mask
    for (mod, _), z in zip(prune.prunable(m), zero_before, strict=True):
        assert bool((mod.weight[z] == 0).all())
    assert prune.sparsity(m) >= 0.8


def test_iterative_pruning_keeps_earlier_zeros():
    m = models.LeNet300100()
    prune.prune_(m, 0.5)
    first = m.fc1.weight_mask.clone()
    with torch.no_grad():
        m.fc1.weight_orig.add_(torch.randn_like(m.fc1.weight_orig))  # pruned ones could grow
    prune.prune_(m, 0.8)
    assert bool((m.fc1.weight_mask[first == 0] == 0).all())
    assert prune.sparsity(m) == pytest.approx(0.8, abs=1e-5)


def test_taylor_importance_uses_gradients():
    m = models.LeNet300100()
    x, y = torch.randn(16, 784), torch.randint(0, 10, (16,))
    with pytest.raises(ValueError, match="grad"):
        prune.prune(m, 0.5, importance="taylor")
    nn.functional.cross_entropy(m(x), y).backward()
    p = prune.prune(m, 0.5, importance="taylor")
    expected = prune.mask_from_scores((m.fc1.weight * m.fc1.weight.grad).abs(), 0.5)
    assert torch.equal(p.fc1.weight_mask, expected)


def test_non_mutating_prune_and_remove():
    m = models.LeNet300100()
    with assert_unchanged(m):
        p = prune.prune(m, 0.9)
    assert not prune.is_pruned(m)
    r = prune.remove(p)
    assert prune.is_pruned(p) and not prune.is_pruned(r)
    assert set(r.state_dict()) == set(m.state_dict())
    assert measure.count_parameters(r).nonzero == measure.count_parameters(p).nonzero
    x = torch.randn(4, 784)
    torch.testing.assert_close(r(x), p(x), rtol=0, atol=0)


def test_threshold_prune_uses_original_magnitudes():
    m = nn.Sequential(nn.Linear(4, 2))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[0.5, 0.01, -0.02, 3.0], [-1.0, 0.0, 0.03, 0.04]]))
    prune.threshold_prune_(m, 0.05)
    assert m[0].weight_mask.tolist() == [[1, 0, 0, 1], [1, 0, 0, 0]]


def test_masks_stay_on_the_weight_device():
    m = models.LeNet300100()
    prune.prune_(m, 0.5, scope="global")
    assert m.fc1.weight_mask.device == m.fc1.weight_orig.device


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_masks_on_cuda():
    m = models.LeNet300100().cuda()
    prune.prune_(m, 0.5, scope="global")
    assert m.fc1.weight_mask.is_cuda


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("s", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_sparsity(s):
    with pytest.raises(ValueError, match="sparsity"):
        prune.prune(models.LeNet300100(), s)


def test_bad_importance_scope_and_param():
    m = models.LeNet300100()
    with pytest.raises(ValueError, match="importance"):
        prune.prune(m, 0.5, importance="random")
    with pytest.raises(ValueError, match="scope"):
        prune.prune(m, 0.5, scope="layerwise")
    with pytest.raises(ValueError, match="has a parameter named 'kernel'"):
        prune.prunable(m, "kernel")
    with pytest.raises(ValueError, match="filter_fn: nothing to prune"):
        prune.prune_(m, 0.5, filter_fn=lambda module, fqn: False)
    only_fc1 = prune.prune(m, 0.5, filter_fn=lambda module, fqn: fqn == "fc1")
    assert prune.is_pruned(only_fc1) and not hasattr(only_fc1.fc2, "weight_mask")
    assert prune.sparsity(only_fc1, filter_fn=lambda module, fqn: fqn == "fc1") == 0.5
    with pytest.raises(TypeError, match="model"):
        prune.prune_("not a model", 0.5)


# --------------------------------------------------------------------------- schedules
def test_polynomial_decay_formula():
    s = prune.PolynomialDecay(0.1, 0.9, begin_step=100, end_step=1100, frequency=50)
    assert s(0) == pytest.approx(0.1) and s(100) == pytest.approx(0.1)
    assert s(1100) == pytest.approx(0.9) and s(5000) == pytest.approx(0.9)
    t = 600
    assert s(t) == pytest.approx(0.9 + (0.1 - 0.9) * (1 - (t - 100) / 1000) ** 3)
    assert s.should_prune(150) and not s.should_prune(151) and s.should_prune(1100)
    assert not s.should_prune(1150)


@settings(max_examples=30, deadline=None)
@given(si=st.floats(0, 0.5), sf=st.floats(0.5, 0.99), t0=st.integers(0, 100),
       n=st.integers(1, 1000))
def test_polynomial_decay_is_monotone(si, sf, t0, n):
    s = prune.PolynomialDecay(si, sf, t0, t0 + n)
    values = [s(t) for t in range(0, t0 + n + 2, max(1, n // 20))]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:], strict=False))


def test_schedule_bad_input():
    with pytest.raises(ValueError, match="end_step"):
        prune.PolynomialDecay(0.0, 0.9, begin_step=100, end_step=50)
    with pytest.raises(ValueError, match="final_sparsity"):
        prune.PolynomialDecay(0.0, 1.0, 0, 10)
    with pytest.raises(ValueError, match="target_sparsity"):
        prune.ConstantSparsity(-0.5)
    with pytest.raises(TypeError, match="schedule"):
        prune.PruningCallback(models.LeNet300100(), 0.5)


def test_pruning_callback_with_fit(tiny_data):
    from companion import data, train
    loaders = data.make_loaders(tiny_data, batch_size=32, flatten=True)
    m = models.LeNet300100()
    sched = prune.PolynomialDecay(0.0, 0.8, begin_step=1, end_step=8, frequency=2)
    cb = prune.PruningCallback(m, sched)
    train.fit(m, loaders.train, epochs=1, after_step=cb, progress=False, device="cpu")
    assert [step for step, _ in cb.log] == [1, 3, 5, 7, 8]
    assert prune.sparsity(m) == pytest.approx(0.8, abs=1e-5)
    sparsities = [s for _, s in cb.log]
    assert sparsities == sorted(sparsities)


def test_iterative_prune_calls_fine_tune():
    calls = []
    m = prune.iterative_prune_(models.LeNet300100(), [0.5, 0.75],
                               lambda mod: calls.append(prune.sparsity(mod)))
    assert calls == pytest.approx([0.5, 0.75], abs=1e-5)
    assert prune.sparsity(m) == pytest.approx(0.75, abs=1e-5)


# --------------------------------------------------------------------------- structured
def _trained_bn(model: nn.Module) -> nn.Module:
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 1, 28, 28))  # non-trivial running statistics
    return model.eval()


@pytest.mark.parametrize("factory", [models.SmallCNN, models.LeNet5, models.LeNet300100])
def test_structured_equals_masked(factory):
    m = _trained_bn(factory())
    with assert_unchanged(m):
        plan = prune.select_channels(m, 0.5)
        small = prune.prune_channels(m, plan).eval()
    masked = _mask_channels_(copy.deepcopy(m), plan).eval()
    x = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)
    assert type(small) is type(m)
    assert measure.count_parameters(small).total < 0.5 * measure.count_parameters(m).total


def test_structured_small_cnn_is_a_smaller_small_cnn():
    m = _trained_bn(models.SmallCNN())
    small = prune.prune_channels(m, 0.5)
    ref = models.SmallCNN(16, 32, 64)
    assert [p.shape for p in small.parameters()] == [p.shape for p in ref.parameters()]


def test_select_channels_keeps_largest_l1():
    # 30 "wide" rows (every |w| = 0.01: L1 7.84, L2 0.28) beside 270 "peaked" rows (one
    # |w| in [1, 5): L1 and L2 up to 5). The L1 ranking keeps exactly the wide rows; an L2,
    # max-|w| or smallest-first ranking keeps others.
    m = models.LeNet300100()
    g = torch.Generator().manual_seed(0)
    wide = torch.randperm(300, generator=g)[:30]
    signs = torch.randint(0, 2, (300, 784), generator=g).float() * 2 - 1
    w = torch.zeros(300, 784)
    w[torch.arange(300), torch.randint(0, 784, (300,), generator=g)] = 1 + 4 * torch.rand(
        300, generator=g)
    w[wide] = 0.01
    with torch.no_grad():
        m.fc1.weight.copy_(w * signs)
    plan = prune.select_channels(m, 0.9, layers=["fc1"])
    assert plan["fc1"].tolist() == sorted(wide.tolist())


def test_structured_bad_pairs():
    with pytest.raises(ValueError, match="output layer"):
        prune.select_channels(models.SmallCNN(), 0.5, layers=["fc2"])
    with pytest.raises(ValueError, match="cannot follow"):
        prune.select_channels(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(4, 2)), 0.5,
                              layers=["0"])
    with pytest.raises(ValueError, match="cannot follow"):
        prune.select_channels(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)),
                              0.5, layers=["0"])
    with pytest.raises(ValueError, match="not a Linear or Conv2d"):
        prune.select_channels(models.SmallCNN(), 0.5, layers=["bn1"])
    with pytest.raises(ValueError, match="ratio"):
        prune.select_channels(models.SmallCNN(), 1.0)
    with pytest.raises(TypeError, match="Sequential"):
        prune.select_channels(nn.Linear(3, 3), 0.5)


def test_prune_channels_of_a_pruned_model_strips_masks():
    m = prune.prune(_trained_bn(models.SmallCNN()), 0.5)
    small = prune.prune_channels(m, 0.25)
    assert not prune.is_pruned(small)


def _random_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.normal_()
                mod.bias.normal_()
    return model.eval()


@pytest.mark.parametrize("factory", ["ResNet18", "TinyMobileNet"])
def test_graph_structured_equals_masked(factory):
    """Any graph (residual adds, depthwise convs, a Sigmoid gate): the pruned model is
    smaller and computes what the masked one does; the caller's model is unchanged."""
    import user_models

    m = _random_bn(getattr(user_models, factory)(**({"width": 8} if factory == "ResNet18"
                                                      else {})))
    x = torch.randn(4, 3, 32, 32)
    with assert_unchanged(m):
        plan = prune.select_channels(m, 0.5, example_input=x)
        small = prune.prune_channels(m, plan, example_input=x)
    masked = _mask_channels_(copy.deepcopy(m), plan, example_input=x)
    torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)
    assert type(small) is type(m) and not small.training
    assert measure.count_parameters(small).total < 0.4 * measure.count_parameters(m).total
    assert small(x).shape == m(x).shape                      # output layer never pruned
    ratio_path = prune.prune_channels(m, 0.5, example_input=x)
    assert [p.shape for p in ratio_path.parameters()] == [p.shape for p in small.parameters()]


def test_resnet_residual_channels_pruned_together():
    import user_models

    m = _random_bn(user_models.ResNet18(width=8))
    x = torch.randn(2, 3, 32, 32)
    small = prune.prune_channels(m, {"conv1": torch.arange(4)}, example_input=x)
    # the stem feeds layer1's residual adds: every block of the stage keeps the same 4 channels
    assert small.conv1.out_channels == small.layer1[0].conv2.out_channels == 4
    assert small.layer1[1].conv1.in_channels == small.layer2[0].downsample[0].in_channels == 4
    with pytest.raises(ValueError, match="share channels"):
        prune.prune_channels(m, {"conv1": torch.arange(4), "layer1.0.conv2": torch.arange(4)},
                             example_input=x)
    with pytest.raises(TypeError, match="example_input"):
        prune.prune_channels(m, 0.5)


def test_mask_through_sigmoid_equals_pruned():
    m = nn.Sequential(nn.Linear(4, 6), nn.Sigmoid(), nn.Linear(6, 2)).eval()
    plan = {"0": torch.tensor([0, 2, 5])}
    x = torch.randn(5, 4)
    small = prune.prune_channels(m, plan)
    masked = _mask_channels_(copy.deepcopy(m), plan)
    torch.testing.assert_close(small(x), masked(x))   # sigmoid(0) = 0.5 reaches no one


@pytest.mark.parametrize("keep, match", [
    ([0, 0, 1], "repeat"), ([-1, 2], "subset"), ([0.0, 1.0], "integers"),
    ([0, 32], "subset"), ([], "subset")])
def test_bad_channel_plans(keep, match):
    m = models.SmallCNN()
    with pytest.raises(ValueError, match=match):
        prune.prune_channels(m, {"conv1": keep})
    with pytest.raises(ValueError, match=match):
        _mask_channels_(m, {"conv1": keep})
    with pytest.raises(ValueError, match="empty"):
        prune.prune_channels(m, {})
    with pytest.raises(ValueError, match="not a Linear or Conv"):
        prune.prune_channels(m, {"nope": [0]})


def test_pruning_callback_checks_scope_at_once():
    with pytest.raises(ValueError, match="scope"):
        prune.PruningCallback(models.LeNet300100(), prune.ConstantSparsity(0.5), scope="bogus")
    with pytest.raises(ValueError, match="importance"):
        prune.PruningCallback(models.LeNet300100(), prune.ConstantSparsity(0.5),
                              importance="bogus")


# --------------------------------------------------------------------------- L1 helper
def test_l1_prune_finetune(tiny_data):
    from companion import data
    loaders = data.make_loaders(tiny_data, batch_size=32, flatten=True)
    m = models.LeNet300100(64, 32)
    rep = prune.l1_prune_finetune_(m, loaders.train, loaders.val, l1=1e-4, sparsity_target=0.8,
                                   epochs=1, finetune_epochs=1)
    assert rep.exact_zeros_after_l1 < 0.01
    assert rep.sparsity_after_prune == pytest.approx(0.8, abs=1e-3)
    with pytest.raises(ValueError, match="l1"):
        prune.l1_prune_finetune_(m, loaders.train, loaders.val, l1=0.0, sparsity_target=0.5)


# --------------------------------------------------------------------------- 2:4
def test_semi_structured_mask_pattern():
    w = torch.randn(8, 16)
    mask = prune.semi_structured_mask(w)
    assert mask.shape == w.shape and mask.dtype == torch.bool
    # the exact kept set: in each row, each group of 4 consecutive columns keeps its 2
    # largest |w| (randn: no ties)
    for r in range(w.shape[0]):
        for c in range(0, w.shape[1], 4):
            group = w[r, c:c + 4].abs().tolist()
            largest = sorted(range(4), key=lambda i: group[i])[2:]
            assert mask[r, c:c + 4].tolist() == [i in largest for i in range(4)], (r, c)
    with pytest.raises(ValueError, match="multiple of 4"):
        prune.semi_structured_mask(torch.randn(4, 6))


def test_to_semi_structured_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: covered by the gpu test")
    with pytest.raises(RuntimeError, match="CUDA"):
        prune.to_semi_structured_(nn.Linear(64, 64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_semi_structured_on_cuda():
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("needs an Ampere or newer GPU")
    lin = nn.Linear(256, 256).half().cuda()
    dense = lin.weight.detach() * prune.semi_structured_mask(lin.weight)
    x = torch.randn(64, 256, dtype=torch.half, device="cuda")
    ref = nn.functional.linear(x, dense, lin.bias)
    prune.to_semi_structured_(lin)
    torch.testing.assert_close(lin(x), ref, rtol=1e-2, atol=1e-2)
