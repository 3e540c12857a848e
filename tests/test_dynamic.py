"""Tests of companion.dynamic: early exits, mixture of experts, layer skipping."""

from __future__ import annotations

import pytest
import torch

from companion import data, dynamic


@pytest.fixture(scope="module")
def trained_exit_net():
    torch.manual_seed(0)
    ds = data._synthetic_images(n_train=256, n_test=128, seed=0)
    loaders = data.make_loaders(ds, 32)
    net = dynamic.EarlyExitNet(c1=4, c2=8, c3=8, hidden=16)
    dynamic.fit_early_exit_(net, loaders.train, epochs=2)
    x = torch.from_numpy(ds.test.x).unsqueeze(1)
    return net, x, torch.from_numpy(ds.test.y)


def test_exit_macs_increase_and_match_full_model(trained_exit_net):
    from companion import measure

    net, x, _ = trained_exit_net
    macs = dynamic.exit_macs(net)
    assert macs[0] < macs[1] < macs[2]
    h1 = net.stages[0](x[:1])
    inputs = [x[:1], h1, net.stages[1](h1)]
    full = sum(measure.count_flops(s, t).macs for s, t in zip(net.stages, inputs, strict=True))
    assert macs[2] == full + 16 * 10


def test_thresholds_trade_accuracy_for_flops(trained_exit_net):
    net, x, y = trained_exit_net
    logits = dynamic.exit_logits(net, x)
    assert logits.shape == (3, len(x), 10)
    macs = dynamic.exit_macs(net)
    lo, hi = dynamic.exit_curve(logits, y, macs, [0.0, 1.0])
    assert lo.exit_fractions[0] == 1.0 and lo.avg_macs == macs[0]
    assert hi.exit_fractions[2] == 1.0 and hi.avg_macs == macs[2]
    assert hi.accuracy == pytest.approx(float((logits[2].argmax(-1) == y).float().mean()))


def test_dynamic_run_matches_precomputed_exits(trained_exit_net):
    net, x, _ = trained_exit_net
    logits = dynamic.exit_logits(net, x)
    for t in (0.5, 0.9):
        preds, _ = dynamic.early_exit_predict(logits, t)
        assert torch.equal(preds, dynamic._run_dynamic(net, x, t))
    timing = dynamic.time_early_exit(net, x, 0.0, warmup=1, repeats=3)
    assert timing.full_ms > 0 and timing.early_exit_ms > 0 and timing.threads >= 1
    assert timing.as_row()["saving"] == pytest.approx(timing.saving)


def test_stage_latency_one_time_per_stage(trained_exit_net):
    net, x, _ = trained_exit_net
    threads = torch.get_num_threads()
    times = dynamic.stage_latency(net, x, warmup=0, repeats=2, threads=1)
    assert len(times) == net.num_exits and all(t > 0 for t in times)
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="repeats"):
        dynamic.stage_latency(net, x, repeats=0)
    with pytest.raises(TypeError, match="EarlyExitNet"):
        dynamic.stage_latency(torch.nn.Linear(2, 2), x)


def test_mixture_of_experts_routes_and_counts(tiny_data):
    moe = dynamic.MixtureOfExperts(hidden=16, num_experts=4, k=1)
    loaders = data.make_loaders(tiny_data, 32, flatten=True)
    dynamic.fit_dynamic_(moe, loaders.train, epochs=1, penalty=0.01)
    out = moe(torch.rand(20, 784))
    assert out.shape == (20, 10) and int(moe.last_counts.sum()) == 20
    assert moe.macs_per_input() == 784 * 4 + 784 * 16 + 16 * 10
    with pytest.raises(ValueError, match="k"):
        dynamic.MixtureOfExperts(num_experts=2, k=3)


def test_skip_mlp_hard_gates_in_eval():
    net = dynamic.SkipMLP(width=16, blocks=2).eval()
    x = torch.rand(40, 784)
    rows: list[int] = []
    for block in net.blocks:
        block.register_forward_hook(lambda _m, inputs, _out: rows.append(len(inputs[0])))
    opened = []
    with torch.no_grad():
        # each gate's bias puts its threshold between the 20th and 21st of the 40 inputs,
        # and the reference applies the hard gates by hand
        h = net.stem(x)
        for block, gate in zip(net.blocks, net.gates, strict=True):
            pre = (h @ gate.weight.T).squeeze(-1)
            gate.bias.fill_(-float(pre.sort().values[19:21].mean()))
            is_open = torch.sigmoid(gate(h)).squeeze(-1) >= 0.5
            opened.append(int(is_open.sum()))
            h = h + is_open[:, None].float() * block(h)
        expected = net.head(h)
        rows.clear()
        out = net(x)
        assert opened == [20, 20]
        assert rows == [20, 20]          # a block runs only on the inputs whose gate is open
        assert net.executed == 0.5
        torch.testing.assert_close(out, expected)
        net.train()                      # training computes what inference does
        torch.testing.assert_close(net(x), expected)


def test_bad_inputs():
    with pytest.raises(TypeError, match="model"):
        dynamic.exit_macs(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="threshold"):
        dynamic.early_exit_predict(torch.rand(3, 4, 10), 1.5)
    with pytest.raises(ValueError, match="logits"):
        dynamic.early_exit_predict(torch.rand(4, 10), 0.5)
    with pytest.raises(ValueError, match="weights"):
        dynamic.joint_exit_loss([torch.rand(2, 3)], torch.zeros(2, dtype=torch.long), [1, 2])
