"""Tests of companion.quant: the affine math, observers, int8 models and QAT."""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from state_check import assert_unchanged
from torch import nn

from companion import measure, models, quant, train

warnings.filterwarnings("ignore", category=DeprecationWarning)


# --------------------------------------------------------------------------- tensor level
@st.composite
def float_tensors(draw, max_dims: int = 3):
    ndim = draw(st.integers(1, max_dims))
    shape = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-3, 0.1, 1.0, 10.0, 300.0]))
    offset = draw(st.sampled_from([0.0, 0.5, -3.0]))
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale + offset * scale


@settings(max_examples=100, deadline=None)
@given(x=float_tensors(), symmetric=st.booleans(), signed=st.booleans())
def test_per_tensor_bit_exact_with_torch(x, symmetric, signed):
    q = quant.quantize(x, 8, symmetric=symmetric, signed=signed)
    dtype = torch.qint8 if signed else torch.quint8
    ref = torch.quantize_per_tensor(x, float(q.scale), int(q.zero_point), dtype)
    assert torch.equal(ref.int_repr(), q.codes)
    assert torch.equal(ref.dequantize(), quant.dequantize(q))


@settings(max_examples=100, deadline=None)
@given(x=float_tensors(), data=st.data(), symmetric=st.booleans(), signed=st.booleans())
def test_per_channel_bit_exact_with_torch(x, data, symmetric, signed):
    axis = data.draw(st.integers(0, x.dim() - 1))
    q = quant.quantize(x, 8, symmetric=symmetric, axis=axis, signed=signed)
    dtype = torch.qint8 if signed else torch.quint8
    ref = torch.quantize_per_channel(x, q.scale.double(), q.zero_point.long(), axis, dtype)
    assert torch.equal(ref.int_repr(), q.codes)
    assert torch.equal(ref.dequantize(), quant.dequantize(q))


@settings(max_examples=60, deadline=None)
@given(x=float_tensors(), bits=st.integers(2, 16), symmetric=st.booleans(),
       per_channel=st.booleans())
def test_error_bound_and_range(x, bits, symmetric, per_channel):
    axis = x.dim() - 1 if per_channel else None
    q = quant.quantize(x, bits, symmetric=symmetric, axis=axis)
    qmin, qmax = quant.qrange(bits, q.is_signed)
    assert int(q.codes.min()) >= qmin and int(q.codes.max()) <= qmax
    err = (quant.dequantize(q) - x).abs()
    # half a step, plus float32 rounding of x / scale
    bound = quant.error_bound(q) * (1 + 1e-4) + 1e-6 * x.abs().max()
    assert (err <= bound).all()


@pytest.mark.parametrize("bits,signed,dtype", [(8, True, torch.int8), (8, False, torch.uint8),
                                               (4, True, torch.int8), (12, True, torch.int16),
                                               (12, False, torch.int16),
                                               (16, False, torch.int32)])
def test_smallest_storage_dtype(bits, signed, dtype):
    q = quant.quantize(torch.randn(10), bits, signed=signed)
    assert q.codes.dtype == dtype


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 3, 11)])
def test_pack_bits_round_trip_and_size(bits, shape):
    codes = torch.randint(0, 2 ** bits, shape, generator=torch.Generator().manual_seed(bits),
                          dtype=torch.uint8)
    packed = quant.pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(codes.numel() * bits / 8)
    assert torch.equal(quant.unpack_bits(packed, bits, shape), codes)


@pytest.mark.parametrize("bits", [2, 3, 4, 7, 8, 12])
@pytest.mark.parametrize("n", [1, 7, 10])
def test_qtensor_nbytes_is_the_densely_packed_codes(bits, n):
    for signed in (True, False):
        q = quant.quantize(torch.randn(n), bits, signed=signed)
        assert q.nbytes == (math.ceil(n * bits / 8) if bits <= 8 else 2 * n)


def _blockwise_reference(x, bits, block):
    """Each block's own min/max quantizer, written out block by block in float64."""
    out = torch.empty_like(x, dtype=torch.float64)
    qmax = 2 ** bits - 1
    for idx in itertools.product(*(range(0, n, b) for n, b in zip(x.shape, block, strict=True))):
        sl = tuple(slice(i, i + b) for i, b in zip(idx, block, strict=True))
        v = x[sl].double()
        lo, hi = min(v.min().item(), 0.0), max(v.max().item(), 0.0)
        s = (hi - lo) / qmax
        z = min(max(-round(lo / s), 0), qmax)
        out[sl] = (torch.clamp(torch.round(v / s) + z, 0, qmax) - z) * s
    return out


@pytest.mark.parametrize("block", [(1, 8), (1, 24), (4, 24), (2, 6), (4, 1)])
@pytest.mark.parametrize("bits", [3, 4, 8])
def test_block_size_matches_a_quantizer_per_block(block, bits):
    x = torch.randn(4, 24, generator=torch.Generator().manual_seed(0))
    q = quant.quantize(x, bits, block_size=block)
    grid = (4 // block[0], 24 // block[1])
    assert q.scale.shape == grid and q.zero_point.shape == grid and q.block_size == block
    ref = _blockwise_reference(x, bits, block)
    step = quant.error_bound(q).double() * 2
    # the same grid up to float32 rounding: at most one step apart, and rarely that
    diff = (quant.dequantize(q).double() - ref).abs()
    assert bool((diff <= step * 1.0001).all()) and (diff > 1e-6).float().mean() < 0.01
    assert bool(((quant.dequantize(q) - x).abs() <= quant.error_bound(q) * 1.0001).all())


def test_block_size_per_row_and_per_tensor_equal_axis_and_tensor_codes():
    w = torch.randn(6, 10, generator=torch.Generator().manual_seed(1))
    for symmetric in (True, False):
        per_row = quant.quantize(w, 8, block_size=(1, 10), symmetric=symmetric)
        assert torch.equal(per_row.codes, quant.quantize(w, 8, axis=0, symmetric=symmetric).codes)
        whole = quant.quantize(w, 8, block_size=(6, 10), symmetric=symmetric)
        assert torch.equal(whole.codes, quant.quantize(w, 8, symmetric=symmetric).codes)
    ref = torch.quantize_per_channel(w, quant.quantize(w, 8, axis=0).scale.double(),
                                     quant.quantize(w, 8, axis=0).zero_point.long(), 0,
                                     torch.quint8)
    assert torch.equal(quant.quantize(w, 8, block_size=(1, 10)).codes,
                       ref.int_repr())


def test_block_size_scale_dtype_and_bad_input():
    w = torch.randn(4, 32)
    q = quant.quantize(w, 4, block_size=(1, 16), scale_dtype=torch.float16)
    assert q.scale.dtype == torch.float16 and q.codes.dtype == torch.uint8
    with pytest.raises(ValueError, match=r"block_size\[1\]"):
        quant.quantize(w, 4, block_size=(1, 5))
    with pytest.raises(ValueError, match="block_size"):
        quant.quantize(w, 4, block_size=(1,))
    with pytest.raises(TypeError, match="block_size"):
        quant.quantize(w, 4, block_size=16)
    with pytest.raises(ValueError, match="axis"):
        quant.quantize(w, 4, block_size=(1, 16), axis=0)
    with pytest.raises(TypeError, match="scale_dtype"):
        quant.quantize(w, 4, block_size=(1, 16), scale_dtype=torch.int8)


@pytest.mark.parametrize("value", [0.0, 2.5, -1.0])
def test_constant_tensor(value):
    x = torch.full((4, 3), value)
    for symmetric in (True, False):
        q = quant.quantize(x, symmetric=symmetric)
        assert torch.isfinite(q.scale).all() and float(q.scale) > 0
        assert torch.allclose(quant.dequantize(q), x, atol=float(q.scale) / 2 + 1e-7)
    assert torch.equal(quant.dequantize(quant.quantize(torch.zeros(5))), torch.zeros(5))


def test_zero_is_exact_and_symmetric_zero_point():
    x = torch.tensor([-0.3, 0.0, 0.7, 1.9])
    assert quant.dequantize(quant.quantize(x))[1] == 0.0
    q = quant.quantize(x, symmetric=True)
    assert int(q.zero_point) == 0 and q.codes.dtype == torch.int8
    qu = quant.quantize(x, symmetric=True, signed=False)
    assert int(qu.zero_point) == 128


def test_qparams_fixed_range_clamps():
    x = torch.tensor([-10.0, 0.0, 0.5, 10.0])
    scale, zp = quant.choose_qparams(-1.0, 1.0, 8)
    y = quant.dequantize(quant.quantize(x, qparams=(scale, zp)))
    # clamped to the grid, which (zero point rounded to an integer) is [-1, 1] +- half a step
    assert y.min() >= -1.0 - float(scale) / 2 and y.max() <= 1.0 + float(scale) / 2


def test_sqnr_about_six_db_per_bit():
    x = torch.rand(100_000) * 2 - 1
    s8 = quant.sqnr(x, quant.fake_quantize(x, 8))
    s4 = quant.sqnr(x, quant.fake_quantize(x, 4))
    assert 20 < s8 - s4 < 28
    assert quant.sqnr(x, x) == math.inf


@pytest.mark.parametrize("bad,exc", [
    (dict(x=torch.ones(3), bits=1), ValueError),
    (dict(x=torch.ones(3), bits=17), ValueError),
    (dict(x=torch.tensor([1.0, float("nan")])), ValueError),
    (dict(x=torch.tensor([1.0, float("inf")])), ValueError),
    (dict(x=torch.ones(0)), ValueError),
    (dict(x=torch.ones(3, dtype=torch.int32)), TypeError),
    (dict(x=[1.0, 2.0]), TypeError),
    (dict(x=torch.ones(2, 3), axis=2), ValueError),
    (dict(x=torch.ones(3), bits=8.0), TypeError),
])
def test_bad_input(bad, exc):
    name = "bits" if "bits" in bad else ("axis" if "axis" in bad else "x")
    with pytest.raises(exc, match=name):
        quant.quantize(**bad)


def test_dequantize_type_error():
    with pytest.raises(TypeError, match="q"):
        quant.dequantize(torch.ones(3))


# --------------------------------------------------------------------------- observers
def test_observers_ranges():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, generator=g)
    x[0] = 50.0  # one outlier
    mm = quant.MinMaxObserver()
    pc = quant.PercentileObserver(99.9)
    mse = quant.MSEObserver(bits=4)
    ma = quant.MovingAverageMinMaxObserver(momentum=0.5)
    for obs in (mm, pc, mse, ma):
        for chunk in x.split(10_000):
            obs.update(chunk)
    assert mm.range()[1] == 50.0
    assert pc.range()[1] < 5.0
    assert mse.range()[1] < 50.0
    lo, hi = ma.range()
    assert lo < 0 < hi < 50.0
    # the MSE range quantizes the data better than the min/max range at 4 bits
    def err(obs):
        y = quant.dequantize(quant.quantize(x, 4, qparams=obs.qparams(4)))
        return (y - x).pow(2).mean()
    assert err(mse) < err(mm)


def test_observer_without_data():
    with pytest.raises(ValueError, match="no data"):
        quant.MinMaxObserver().range()
    with pytest.raises(ValueError, match="kind"):
        quant.make_observer("median")


def test_minmax_observer_matches_torch():
    from torch.ao.quantization import MinMaxObserver
    x = torch.randn(1000) * 3 + 1
    ours = quant.MinMaxObserver()
    ours.update(x)
    ref = MinMaxObserver(dtype=torch.quint8)
    ref(x)
    s_ref, z_ref = ref.calculate_qparams()
    s, z = ours.qparams(8)
    assert torch.allclose(s, s_ref.float(), rtol=1e-6) and int(z) == int(z_ref)


def test_calibrate_observes_layers_without_changing_model():
    model = models.LeNet300100()
    loader = [(torch.rand(8, 784), torch.zeros(8)) for _ in range(3)]
    with assert_unchanged(model):
        obs = quant.calibrate(model, loader, ["relu1", "fc3"], observer="percentile")
    assert set(obs) == {"relu1", "fc3"}
    assert obs["relu1"].range()[0] >= 0.0
    with pytest.raises(ValueError, match="layers"):
        quant.calibrate(model, loader, ["nope"])


def test_calibrate_reads_calibration_batches_by_default():
    from companion._checks import CALIBRATION_BATCHES
    model = nn.Sequential(nn.Linear(3, 2))
    batches = [torch.zeros(4, 3) for _ in range(CALIBRATION_BATCHES)] + [torch.full((4, 3), 9.0)]
    default = quant.calibrate(model, batches, ["0"], inputs=True)["0"]
    assert default.range() == (0.0, 0.0)          # the batch past the default is not read
    every = quant.calibrate(model, batches, ["0"], inputs=True, num_batches=None)["0"]
    assert every.range() == (0.0, 9.0)
    assert quant.StaticInt8Config().num_batches == quant.PTQConfig().num_batches == \
        CALIBRATION_BATCHES
    with pytest.raises(TypeError, match="calibration"):
        quant.calibrate(model, "batches")


# --------------------------------------------------------------------------- model level
@pytest.fixture(scope="module")
def trained():
    from companion import data
    ds = data._synthetic_images(n_train=512, n_test=256, seed=0)
    loaders = data.make_loaders(ds, batch_size=64)
    train.set_seed(0)
    model = models.SmallCNN(c1=8, c2=16, hidden=32)
    train.fit(model, loaders.train, epochs=2, device="cpu", progress=False)
    return model, loaders


@pytest.mark.parametrize("config,calibrated", [
    (quant.WeightOnlyConfig(8), False),
    (quant.WeightOnlyConfig(4), False),
    (quant.DynamicInt8Config(), False),
    (quant.StaticInt8Config(num_batches=2), True),
    (quant.StaticInt8Config(observer="percentile", num_batches=2), True),
])
def test_quantize_model_accuracy_size_and_caller_unchanged(trained, config, calibrated):
    model, loaders = trained
    with assert_unchanged(model):        # weights, layers, modes
        qmodel = quant.quantize_model(model, config,
                                      calibration=loaders.train if calibrated else None)
    fp32 = train.evaluate(model, loaders.test)
    acc = train.evaluate(qmodel, loaders.test)
    assert acc >= fp32 - 0.05
    assert measure.serialized_size(qmodel).bytes < measure.serialized_size(model).bytes


def test_static_int8_uses_int8_kernels(trained):
    model, loaders = trained
    qmodel = quant.quantize_model(model, quant.StaticInt8Config(num_batches=2),
                                  calibration=loaders.train)
    kinds = {m._get_name() for m in qmodel.modules()}
    assert "QuantizedConvReLU2d" in kinds and "QuantizedLinearReLU" in kinds
    ratio = measure.serialized_size(model).bytes / measure.serialized_size(qmodel).bytes
    assert ratio > 3.0


def test_quantize_model_in_place(trained):
    model, _ = trained
    m = train.clone(model)
    out = quant.quantize_model_(m, quant.DynamicInt8Config())
    assert out is m
    assert any("Dynamic" in type(x).__module__ or "dynamic" in type(x).__module__
               for x in m.modules())


def test_model_bad_input():
    with pytest.raises(ValueError, match="no quantizable layer"):
        quant.quantize_model(nn.Sequential(nn.ReLU()), quant.WeightOnlyConfig())
    with pytest.raises(TypeError, match="model"):
        quant.quantize_model("model", quant.WeightOnlyConfig())
    with pytest.raises(TypeError, match="config"):
        quant.quantize_model(models.LeNet300100(), "int8")
    with pytest.raises(ValueError, match="bits"):
        quant.WeightOnlyConfig(bits=9)
    with pytest.raises(ValueError, match="observer"):
        quant.StaticInt8Config(observer="median")
    with pytest.raises(TypeError, match="Sequential"):
        quant.quantize_model(nn.ModuleDict({"a": nn.Linear(2, 2)}),
                             quant.StaticInt8Config(num_batches=1),
                             calibration=[torch.ones(1, 2)])
    with pytest.raises(ValueError, match="calibration: WeightOnlyConfig does not use"):
        quant.quantize_model(models.LeNet300100(), quant.WeightOnlyConfig(),
                             calibration=[torch.ones(1, 784)])
    with pytest.raises(ValueError, match="filter_fn"):
        quant.quantize_model(_static_net(), quant.StaticInt8Config(),
                             calibration=[torch.rand(4, 1, 6, 6)], filter_fn=lambda m, n: True)
    with pytest.raises(ValueError, match="that filter_fn selects"):
        quant.quantize_model(models.LeNet300100(), quant.WeightOnlyConfig(),
                             filter_fn=lambda m, n: False)
    with pytest.raises(TypeError, match="filter_fn"):
        quant.quantize_model(models.LeNet300100(), quant.WeightOnlyConfig(), filter_fn="fc1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        quant.WeightOnlyConfig().bits = 4                       # configs are frozen


@pytest.mark.parametrize("config", [quant.WeightOnlyConfig(8), quant.DynamicInt8Config(),
                                    quant.QATConfig(8), quant.PTQConfig(8, num_batches=1)])
def test_filter_fn_chooses_layers(config):
    model = models.LeNet300100()
    calibration = [torch.rand(4, 784)] if isinstance(config, quant.PTQConfig) else None
    q = quant.quantize_model(model, config, calibration=calibration,
                             filter_fn=lambda module, fqn: fqn != "fc3")
    assert type(q.fc3) is nn.Linear and type(q.fc1) is not nn.Linear


# --------------------------------------------------------------------------- QAT
def test_fake_quantize_straight_through_gradient():
    fq = quant.FakeQuantize(4, momentum=None)
    x = (torch.linspace(-1, 1, 11) + 0.013).requires_grad_()
    y = fq(x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # inside the range: identity gradient
    assert torch.allclose(y, quant.fake_quantize(x.detach(), 4), atol=1e-6)


def test_fake_quantize_clipped_values_get_no_gradient():
    fq = quant.FakeQuantize(8, momentum=0.5)
    fq.train()
    fq(torch.linspace(-1, 1, 5))
    fq.eval()
    x = torch.tensor([-5.0, 0.0, 5.0], requires_grad=True)
    fq(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("bits", [8, 4])
def test_qat_prepare_train_convert(trained, bits):
    model, loaders = trained
    qat = quant.quantize_model(model, quant.QATConfig(bits=bits))
    assert sum(isinstance(m, quant.QATLayer) for m in qat.modules()) == 4
    train.set_seed(0)
    train.fit(qat, loaders.train, epochs=1, lr=1e-4, device="cpu", progress=False)
    acc_qat = train.evaluate(qat, loaders.test)
    quant.convert_qat_(qat)
    assert not any(isinstance(m, quant.QATLayer) for m in qat.modules())
    assert abs(train.evaluate(qat, loaders.test) - acc_qat) <= 0.02
    assert measure.serialized_size(qat).bytes < measure.serialized_size(model).bytes / 2.5
    with pytest.raises(ValueError, match="prepare_qat_"):
        quant.convert_qat_(train.clone(model))


def test_calibrate_fake_quant_is_ptq_without_training(trained):
    model, loaders = trained
    batches = [b for _, b in zip(range(2), loaders.train, strict=False)]  # fixed, not reshuffled
    ptq = quant.quantize_model(model, quant.QATConfig(bits=8, momentum=1.0))
    weights = {k: v.clone() for k, v in ptq.state_dict().items() if "layer" in k}
    quant.calibrate_fake_quant_(ptq, batches, num_batches=2)
    assert all(torch.equal(weights[k], ptq.state_dict()[k]) for k in weights)
    # PTQConfig is the same two steps in one call
    same = quant.quantize_model(model, quant.PTQConfig(bits=8, num_batches=2),
                                calibration=batches)
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in ptq.state_dict().items())
    with pytest.raises(ValueError, match="calibration: PTQConfig needs"):
        quant.quantize_model(model, quant.PTQConfig())
    assert train.evaluate(ptq, loaders.test) >= train.evaluate(model, loaders.test) - 0.05
    with pytest.raises(ValueError, match="prepare_qat_"):
        quant.calibrate_fake_quant_(train.clone(model), loaders.train)


# --------------------------------------------------------------------------- regressions
@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
@pytest.mark.parametrize("conv", [nn.Conv1d, nn.Conv2d])
def test_weight_only_layer_keeps_padding_mode(mode, conv):
    layer = conv(3, 4, 3, padding=1, padding_mode=mode)
    x = torch.randn(2, 3, *([9] * (2 if conv is nn.Conv2d else 1)))
    stored = quant.QuantizedWeightLayer(layer, 8)
    assert (stored(x) - layer(x)).abs().max() < 0.03  # 8-bit weights; ignoring the mode: ~1
    assert mode in repr(stored)


@pytest.mark.parametrize("bits,block", [(3, (1, 64)), (4, (1, 128)), (8, None), (2, (1, 32))])
def test_quantized_weight_layer_bits_per_weight_is_what_is_stored(bits, block):
    layer = nn.Linear(1024, 1024)
    q = (quant.quantize(layer.weight.detach(), bits, block_size=block,
                        scale_dtype=torch.float16) if block else None)
    stored = quant.QuantizedWeightLayer(layer, bits, weight=q)
    buf = io.BytesIO()
    torch.save({k: v for k, v in stored.state_dict().items() if k != "bias"}, buf)
    serialized = 8 * len(buf.getvalue()) / layer.weight.numel()
    assert 0 <= serialized - stored.bits_per_weight() < 0.03   # the container's metadata
    if block:   # b-bit codes, an fp16 scale and a b-bit zero point per group
        assert stored.bits_per_weight() == pytest.approx(bits + (16 + bits) / block[1])
    else:       # symmetric: 8-bit codes and a float32 scale per row, no zero point
        assert stored.zero_point is None
        assert stored.bits_per_weight() == pytest.approx(8 + 32 / 1024)
    torch.testing.assert_close(stored.weight(), quant.dequantize(q) if block else
                               quant.fake_quantize(layer.weight.detach(), 8, symmetric=True,
                                                   axis=0))
    x = torch.randn(3, 1024)
    torch.testing.assert_close(stored(x), nn.functional.linear(x, stored.weight(), layer.bias))


def test_quantized_weight_layer_bad_input():
    with pytest.raises(TypeError, match="weight"):
        quant.QuantizedWeightLayer(nn.Linear(4, 2), weight=torch.randn(2, 4))
    with pytest.raises(ValueError, match="shape"):
        quant.QuantizedWeightLayer(nn.Linear(4, 2), weight=quant.quantize(torch.randn(3, 4)))
    with pytest.raises(TypeError, match="layer"):
        quant.QuantizedWeightLayer(nn.ReLU())


def _circular_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


@pytest.mark.parametrize("bits", [4, 8, 12, 16])
def test_convert_qat_keeps_the_qat_bits_and_padding_mode(bits):
    qat = quant.quantize_model(_circular_net(), quant.QATConfig(bits=bits))
    x = torch.randn(8, 3, 6, 6)
    qat.train()
    qat(x)  # one step sets the activation ranges
    qat.eval()
    before = qat(x)
    quant.convert_qat_(qat)
    stored = [m for m in qat.modules() if isinstance(m, quant.QuantizedWeightLayer)]
    assert [m.bits for m in stored] == [bits, bits]
    torch.testing.assert_close(qat(x), before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("qparams,exc", [
    ((torch.tensor(0.1), torch.tensor(1000)), ValueError),      # zero point off the code range
    ((torch.tensor(0.1), torch.tensor(-1)), ValueError),
    ((0.1, 2.5), ValueError),                                   # non-integer zero point
    ((0.0, 0), ValueError),
    ((-0.1, 0), ValueError),
    ((float("nan"), 0), ValueError),
    ((float("inf"), 0), ValueError),
    ((1e-50, 0), ValueError),                                   # 0 in float32
    ((torch.tensor([0.1, 0.2]), 0), ValueError),                # two scales, per tensor
    ((0.1, float("nan")), ValueError),
    ((0.1,), TypeError),
    ("0.1, 0", TypeError),
    ((0.1, True), TypeError),
    ((0.1, None), TypeError),
])
def test_quantize_rejects_bad_qparams(qparams, exc):
    with pytest.raises(exc, match="qparams"):
        quant.quantize(torch.randn(4), qparams=qparams)


def test_quantize_accepts_valid_qparams():
    x = torch.randn(3, 5)
    q = quant.quantize(x, qparams=(0.05, 128.0))  # an integer-valued float zero point is fine
    assert int(q.zero_point) == 128 and q.zero_point.dtype == torch.int32
    scale, zp = quant.choose_qparams(x.min(0).values, x.max(0).values)
    qc = quant.quantize(x, axis=1, qparams=(scale, zp))
    assert torch.equal(qc.codes, quant.quantize(x, axis=1).codes)
    with pytest.raises(ValueError, match="qparams"):
        quant.quantize(x, axis=1, qparams=(scale[:3], zp[:3]))


@pytest.mark.parametrize("bits", [2, 8, 16])
def test_quantize_range_near_float32_max_is_finite(bits):
    x = torch.tensor([3e38, -3e38, 1e38, 0.0])
    q = quant.quantize(x, bits)
    assert torch.isfinite(q.scale).all() and q.scale > 0
    x_hat = quant.dequantize(q)
    assert torch.isfinite(x_hat).all()
    assert ((x - x_hat).abs() <= quant.error_bound(q) * 1.001).all()
    # an ordinary range keeps its float32 scale bit for bit
    scale, _ = quant.choose_qparams(-1.3, 2.7, 8)
    assert float(scale) == float(torch.tensor(4.0) / 255)


def test_fake_quantize_warns_once_when_evaluated_without_a_range():
    model = quant.quantize_model(_circular_net(), quant.QATConfig(bits=8)).eval()
    x = torch.randn(2, 3, 6, 6)
    with pytest.warns(UserWarning, match=r"input_fq'.*calibrate_fake_quant_") as record:
        model(x)
        model(x)
    mine = sorted(str(w.message).split("'")[1] for w in record
                  if "FakeQuantize" in str(w.message))
    assert mine == ["0.input_fq", "3.input_fq"]  # once per quantizer, not once per call
    calibrated = quant.quantize_model(_circular_net(), quant.QATConfig(bits=8))
    quant.calibrate_fake_quant_(calibrated, [x], num_batches=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        calibrated.eval()(x)
    with pytest.raises(ValueError, match="calibration"):
        quant.calibrate_fake_quant_(calibrated, [])


def _static_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


@pytest.mark.parametrize("calibration,exc,match", [
    (None, ValueError, "calibration: StaticInt8Config needs"),
    ([], ValueError, "calibration"),
    (torch.ones(2, 1, 6, 6), TypeError, "calibration"),
])
def test_static_calibration_validated_up_front(calibration, exc, match):
    with pytest.raises(exc, match=match):
        quant.quantize_model(_static_net(), quant.StaticInt8Config(), calibration=calibration)


@pytest.mark.parametrize("calibration,exc", [
    (lambda: iter([]), ValueError),                             # no len(): seen only when run
    (lambda: [torch.ones(2, 1, 5, 5)], RuntimeError),          # wrong input size for Linear
    (lambda: [("not", "a tensor")], TypeError),
])
def test_quantize_model_in_place_is_atomic(calibration, exc):
    model = _static_net().train()
    with assert_unchanged(model), pytest.raises(exc):   # a failed call changes nothing
        quant.quantize_model_(model, quant.StaticInt8Config(num_batches=2),
                              calibration=calibration())
    # and a good calibration converts the very same object
    out = quant.quantize_model_(model, quant.StaticInt8Config(),
                                calibration=[torch.rand(4, 1, 6, 6)])
    assert out is model and "Quantized" in str(model) and model.training


def test_weight_only_is_atomic():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    structure = str(model)
    with pytest.raises(ValueError, match="'1'"):
        quant.quantize_model_(model, quant.WeightOnlyConfig(8))
    assert str(model) == structure


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(packed=torch.ones(4), bits=4), TypeError, "packed"),         # float, not bytes
    (dict(packed=torch.ones(4, dtype=torch.int8), bits=4), TypeError, "packed"),
    (dict(packed=[1, 2], bits=4), TypeError, "packed"),
    (dict(packed=torch.ones(4, dtype=torch.uint8), bits=4, shape=(9,)), ValueError, "packed"),
    (dict(packed=torch.ones(4, dtype=torch.uint8), bits=4, shape=(-1,)), ValueError, "shape"),
    (dict(packed=torch.ones(4, dtype=torch.uint8), bits=0), ValueError, "bits"),
    (dict(packed=torch.ones(4, dtype=torch.uint8), bits=9), ValueError, "bits"),
])
def test_unpack_bits_bad_input(kwargs, exc, name):
    args = dict(shape=(8,)) | kwargs
    with pytest.raises(exc, match=name):
        quant.unpack_bits(args["packed"], args["bits"], args["shape"])


def test_pack_bits_bad_input():
    with pytest.raises(ValueError, match="codes"):
        quant.pack_bits(torch.tensor([8], dtype=torch.uint8), 3)
    with pytest.raises(TypeError, match="codes"):
        quant.pack_bits(torch.tensor([1], dtype=torch.int8), 3)


def test_flags_must_be_bools():
    with pytest.raises(TypeError, match="symmetric"):
        quant.quantize(torch.randn(4), symmetric="yes")
    with pytest.raises(TypeError, match="symmetric"):
        quant.choose_qparams(-1.0, 1.0, symmetric=1)
    with pytest.raises(TypeError, match="symmetric"):
        quant.FakeQuantize(8, symmetric="no")
    with pytest.raises(ValueError, match="momentum"):
        quant.FakeQuantize(8, momentum=float("nan"))
    with pytest.raises(TypeError, match="quantize_input"):
        quant.QATConfig(quantize_input="no")
    with pytest.raises(TypeError, match="inputs"):
        quant.calibrate(_circular_net(), [torch.randn(2, 3, 6, 6)], inputs="yes")
    with pytest.raises(ValueError, match="calibration"):
        quant.calibrate(_circular_net(), [])
