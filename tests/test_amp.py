"""Tests of companion.amp: autocast with fp32 master weights, loss scaling, underflow."""

from __future__ import annotations

import statistics
import time

import pytest
import torch
from state_check import assert_unchanged

from companion import amp, data, models, train


def _batch(n=16):
    return torch.rand(n, 784), torch.randint(0, 10, (n,))


def test_amp_step_keeps_fp32_master_weights():
    model = models.LeNet300100(hidden1=16, hidden2=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss, stepped = amp.amp_step_(model, opt, *_batch(), precision="bf16")
    assert stepped and loss > 0
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32
               for p in model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_scaler_skips_overflowing_step_and_halves_scale():
    model = models.LeNet300100(hidden1=16, hidden2=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)
    before = [p.detach().clone() for p in model.parameters()]
    _, stepped = amp.amp_step_(model, opt, *_batch(), precision="fp16", scaler=scaler)
    assert not stepped and scaler.get_scale() == 2.0 ** 39
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_underflow_report_scaling_recovers_and_does_not_mutate():
    torch.manual_seed(0)
    model = models.LeNet300100(hidden1=32, hidden2=16)
    x, y = _batch(64)
    x = x * 1e-3  # tiny inputs -> tiny weight gradients
    with assert_unchanged(model, x, y):     # weights, modes, no gradients left behind
        plain = amp.underflow_report(model, x, y, precision="fp16", loss_scale=1.0)
        scaled = amp.underflow_report(model, x, y, precision="fp16", loss_scale=2.0 ** 12)
        bf = amp.underflow_report(model, x, y, precision="bf16")
    assert plain.lost > 0.01
    assert scaled.lost < plain.lost and not scaled.overflow
    assert bf.lost < plain.lost


def test_fit_amp_trains(tiny_data):
    loaders = data.make_loaders(tiny_data, 32, flatten=True)
    model = models.LeNet300100(hidden1=32, hidden2=16)
    rep = amp.fit_amp_(model, loaders.train, precision="bf16", epochs=3, test_loader=loaders.test)
    assert rep.accuracy > 0.5 and rep.param_dtypes == ("float32",)
    assert rep.images == 3 * 256 and rep.cpu_seconds > 0
    rep16 = amp.fit_amp_(model, loaders.train, precision="fp16", max_steps=2)
    assert len(rep16.scales) == 2


def test_throughput_matches_a_timed_loop():
    # images per second of training steps, against the same steps timed here
    model = models.LeNet300100(hidden1=64, hidden2=32)
    x, y = _batch(64)
    copy = train.clone(model).train()
    opt = torch.optim.Adam(copy.parameters(), lr=1e-4)
    times = []
    for i in range(13):
        start = time.perf_counter()
        amp.amp_step_(copy, opt, x, y, precision="fp32")
        if i >= 3:
            times.append(time.perf_counter() - start)
    measured = len(x) / statistics.median(times)
    with assert_unchanged(model, x, y):
        rate = amp.throughput(model, x, y, precision="fp32", repeats=10, warmup=3)
    assert measured / 4 < rate < measured * 4, (rate, measured)


def test_bad_inputs():
    with pytest.raises(ValueError, match="precision"):
        train.resolve_precision("int8")
    model = models.LeNet300100(hidden1=8, hidden2=8)
    with pytest.raises(TypeError, match="optimizer"):
        amp.amp_step_(model, "sgd", *_batch())
    with pytest.raises(ValueError, match="loss_scale"):
        amp.underflow_report(model, *_batch(), loss_scale=0.0)
    with pytest.raises(TypeError, match="model"):
        amp.fit_amp_("model", [])
