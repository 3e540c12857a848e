import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from companion import measure, models, train


# ---------------------------------------------------------------- parameters
def test_count_parameters_counts_nonzeros():
    m = nn.Linear(4, 3)
    with torch.no_grad():
        m.weight[0].zero_()
        m.bias.zero_()
    r = measure.count_parameters(m)
    assert r.total == 15 and r.nonzero == 8
    assert math.isclose(r.sparsity, 7 / 15)
    assert "sparsity" in str(r)


def test_count_parameters_sees_pruning_masks():
    m = nn.Linear(10, 10)
    prune.l1_unstructured(m, "weight", amount=0.5)
    r = measure.count_parameters(m)
    assert r.total == 110                       # weight_orig is not counted twice
    assert r.nonzero == 50 + 10


# ---------------------------------------------------------------- FLOPs
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 64), m=st.integers(1, 64), b=st.integers(1, 5))
def test_linear_macs(n, m, b):
    r = measure.count_flops(nn.Linear(n, m), torch.zeros(b, n))
    assert r.macs == b * n * m and r.flops == 2 * r.macs


@settings(max_examples=25, deadline=None)
@given(cin=st.integers(1, 4), cout=st.integers(1, 6), k=st.integers(1, 5),
       p=st.integers(0, 2), s=st.integers(1, 2), hw=st.integers(8, 16))
def test_conv_macs(cin, cout, k, p, s, hw):
    conv = nn.Conv2d(cin, cout, k, padding=p, stride=s)
    out = (hw + 2 * p - k) // s + 1
    r = measure.count_flops(conv, torch.zeros(1, cin, hw, hw))
    assert r.macs == out * out * cout * cin * k * k


def test_grouped_conv_macs():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)   # depthwise
    r = measure.count_flops(conv, torch.zeros(2, 8, 10, 10))
    assert r.macs == 2 * 10 * 10 * 8 * 1 * 9


def test_lstm_and_gru_macs():
    lstm = nn.LSTM(input_size=5, hidden_size=7, num_layers=2, batch_first=True)
    r = measure.count_flops(lstm, torch.zeros(3, 11, 5))
    assert r.macs == 3 * 11 * 4 * ((5 * 7 + 7 * 7) + (7 * 7 + 7 * 7))
    gru = nn.GRU(input_size=5, hidden_size=7)
    assert measure.count_flops(gru, torch.zeros(11, 3, 5)).macs == 3 * 11 * 3 * (5 * 7 + 7 * 7)


def test_attention_macs():
    e, length, b = 16, 9, 2
    mha = nn.MultiheadAttention(e, num_heads=4, batch_first=True)

    class SelfAttn(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    r = measure.count_flops(SelfAttn(), torch.zeros(b, length, e))
    assert r.macs == b * (3 * length * e * e + 2 * length * length * e + length * e * e)


def test_functional_attention_block_macs():
    """A pre-norm block written with F.scaled_dot_product_attention: the attention products
    are counted (FlopCounterMode alone misses the fused CPU kernel)."""
    b, t, e, h = 2, 16, 32, 4

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(e)
            self.qkv = nn.Linear(e, 3 * e)
            self.proj = nn.Linear(e, e)
            self.mlp = nn.Sequential(nn.Linear(e, 4 * e), nn.GELU(), nn.Linear(4 * e, e))

        def forward(self, x):
            q, k, v = self.qkv(self.norm(x)).view(b, t, 3, h, e // h).permute(2, 0, 3, 1, 4)
            a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, e))
            return x + self.mlp(x)

    r = measure.count_flops(Block(), torch.zeros(b, t, e))
    linear = b * t * (3 * e * e + e * e + 2 * 4 * e * e)
    attention = 2 * b * t * t * e          # Q K^T and the weighted sum of V
    assert r.macs == linear + attention
    own = {row["layer"]: row["macs"] for row in r.per_layer}
    assert own["(model)"] == attention      # the functional products sit on the block's row


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_transposed_conv_and_projected_lstm_macs():
    deconv = nn.ConvTranspose2d(8, 4, 2, stride=2)
    # each input element meets every kernel weight once: 8 x 25 inputs x 4 x 2 x 2
    assert measure.count_flops(deconv, torch.zeros(1, 8, 5, 5)).macs == 3200
    lstm = nn.LSTM(input_size=5, hidden_size=8, proj_size=3, num_layers=2)  # warns: no oneDNN
    steps, batch = 7, 2
    per_step = 4 * 8 * (5 + 3) + 8 * 3 + 4 * 8 * (3 + 3) + 8 * 3
    assert measure.count_flops(lstm, torch.zeros(steps, batch, 5)).macs == steps * batch * per_step


def test_transformer_fast_path_counted_like_the_plain_path():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    t = 8
    expected = t * 4 * 16 * 16 + 2 * t * t * 16 + 2 * t * 16 * 32
    assert measure.count_flops(layer, torch.zeros(1, t, 16)).macs == expected
    assert torch.backends.mha.get_fastpath_enabled()        # restored


@pytest.mark.parametrize("kind", ["dynamic", "static", "weight_only", "qat"])
def test_quantized_models_keep_their_macs(kind):
    from companion import quant

    x = torch.randn(2, 1, 28, 28)
    m = models.SmallCNN().eval()
    calib = [(torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long))]
    if kind == "dynamic":
        q = quant.quantize_model(m, quant.DynamicInt8Config())
    elif kind == "static":
        q = quant.quantize_model(m, quant.StaticInt8Config(), calibration=calib)
    elif kind == "weight_only":
        q = quant.quantize_model(m, quant.WeightOnlyConfig(bits=4))
    else:
        q = quant.quantize_model(m, quant.QATConfig(bits=8))
        quant.calibrate_fake_quant_(q, calib)
    assert measure.count_flops(q, x).macs == measure.count_flops(m, x).macs


def test_dynamic_quantized_lstm_macs():
    from companion import quant

    m = nn.Sequential(nn.LSTM(8, 4))
    q = quant.quantize_model(m, quant.DynamicInt8Config())
    x = torch.zeros(3, 1, 8)
    assert measure.count_flops(q, x).macs == measure.count_flops(m, x).macs == 3 * 4 * 4 * 12


def test_tied_parameters_counted_once():
    emb, head = nn.Embedding(10, 5), nn.Linear(5, 10, bias=False)
    head.weight = emb.weight
    assert measure.count_parameters(nn.ModuleDict({"emb": emb, "head": head})).total == 50


@pytest.mark.parametrize("name", ["LeNet300100", "LeNet5", "SmallCNN"])
def test_flops_agree_with_fvcore(name):
    fvcore = pytest.importorskip("fvcore.nn")
    m = getattr(models, name)().eval()
    x = torch.zeros(2, 1, 28, 28)
    analysis = fvcore.FlopCountAnalysis(m, x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    # fvcore counts one per MAC for products, and also counts batch norm, which we leave out
    products = {"conv", "linear", "addmm", "matmul", "bmm", "einsum"}
    expected = sum(v for op, v in analysis.by_operator().items() if op in products)
    assert measure.count_flops(m, x).macs == expected > 0


def test_flops_restores_mode_and_removes_hooks():
    m = models.SmallCNN().train()
    measure.count_flops(m, torch.zeros(1, 1, 28, 28))
    assert m.training
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())


def test_flops_rejects_bad_input():
    with pytest.raises(TypeError):
        measure.count_flops(nn.Linear(2, 2), [1, 2])
    with pytest.raises(TypeError):
        measure.count_flops("model", torch.zeros(1, 2))


# ---------------------------------------------------------------- size
def test_size_formats(tmp_path):
    m = models.LeNet300100()
    x = torch.zeros(1, 1, 28, 28)
    sd = measure.serialized_size(m)
    assert 0 <= sd.bytes - 266_610 * 4 < 8192
    assert sd.gzip_bytes < sd.bytes          # random floats compress a little
    assert measure.state_dict_bytes(m) == sd.bytes
    assert measure.state_dict_bytes(m.state_dict()) == sd.bytes
    ts = measure.serialized_size(m, fmt="torchscript", example_input=x)
    ex = measure.serialized_size(m, fmt="exported", example_input=x)
    assert ts.bytes > 266_610 * 4 and ex.bytes > 266_610 * 4
    p = tmp_path / "model.tflite"
    p.write_bytes(b"\0" * 1000)
    r = measure.serialized_size(p)
    assert r.bytes == 1000 and r.format == "tflite" and r.gzip_bytes < 100
    assert measure.serialized_size(b"abc").bytes == 3


def test_size_of_zeros_only_shrinks_when_compressed():
    m = nn.Linear(200, 200)
    with torch.no_grad():
        m.weight.zero_()
    dense = measure.serialized_size(nn.Linear(200, 200))
    zeros = measure.serialized_size(m)
    assert abs(zeros.bytes - dense.bytes) < 64        # same raw size
    assert zeros.gzip_bytes < dense.gzip_bytes / 10   # but compresses away


def test_size_bad_input(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        measure.serialized_size(nn.Linear(2, 2), fmt="onnx")
    with pytest.raises(ValueError, match="example_input"):
        measure.serialized_size(nn.Linear(2, 2), fmt="torchscript")
    with pytest.raises(FileNotFoundError):
        measure.serialized_size(tmp_path / "missing.tflite")
    with pytest.raises(TypeError):
        measure.serialized_size(3.0)


def test_bytes_per_value():
    assert measure.bytes_per_value(torch.float32) == 4
    assert measure.bytes_per_value(torch.bfloat16) == 2
    assert measure.bytes_per_value(torch.int8) == 1
    with pytest.raises(TypeError):
        measure.bytes_per_value("float32")


# ---------------------------------------------------------------- latency
def test_latency_report_and_thread_restore():
    before = torch.get_num_threads()
    r = measure.measure_latency(nn.Linear(8, 8), torch.zeros(4, 8), warmup=1, repeats=5,
                                threads=1)
    assert r.threads == 1 and r.runs == 5 and r.batch_size == 4 and r.device == "cpu"
    assert 0 < r.p10_ms <= r.median_ms <= r.p90_ms
    assert r.throughput > 0
    assert torch.get_num_threads() == before
    assert "median" in str(r)


def test_latency_of_plain_callable():
    calls = []
    r = measure.measure_latency(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and math.isnan(r.throughput)


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"warmup": -1}, {"threads": 0}])
def test_latency_bad_input(kwargs):
    with pytest.raises(ValueError):
        measure.measure_latency(nn.Linear(2, 2), torch.zeros(1, 2), **kwargs)


def test_latency_requires_input_for_module():
    with pytest.raises(ValueError, match="example_input"):
        measure.measure_latency(nn.Linear(2, 2))
    with pytest.raises(TypeError):
        measure.measure_latency(3)


def _busy(n: int) -> None:
    total = 0
    for i in range(n):   # pure Python work: no sleep, no I/O, no threads
        total += i * i


def test_compare_latency_gives_the_ratio_of_known_costs():
    before = torch.get_num_threads()
    cmp = measure.compare_latency({"n": lambda: _busy(20_000), "2n": lambda: _busy(40_000)},
                                  repeats=25, warmup=2)
    assert torch.get_num_threads() == before
    assert cmp.baseline == "n" and cmp.threads == 1 and cmp.names == ["n", "2n"]
    assert 0.5 / 1.25 <= cmp.speedup("2n") <= 0.5 * 1.25        # 2x the work: half the speed
    lo, hi = cmp.speedup_spread("2n")
    assert lo <= hi and cmp.speedup("n") == 1.0
    assert "x faster than n" in str(cmp) and "PyTorch kernels" in str(cmp)


def test_compare_latency_interleaves_and_rotates():
    order = []
    measure.compare_latency({k: (lambda k=k: order.append(k)) for k in "abc"}, repeats=3,
                            warmup=0)
    assert order == list("abc" + "bca" + "cab")


def test_compare_latency_modules_and_baseline():
    lin = nn.Linear(8, 8).train()
    cmp = measure.compare_latency({"big": nn.Linear(8, 8), "small": lin}, torch.zeros(4, 8),
                                  baseline="small", repeats=3)
    assert cmp.baseline == "small" and cmp.batch_size == 4 and lin.training
    assert len(cmp.rows()) == 2 and len(cmp.times_ms["big"]) == 3


@pytest.mark.parametrize("kwargs, err", [
    ({"variants": {}}, ValueError),
    ({"variants": {"a": 3}}, TypeError),
    ({"variants": {"a": nn.Linear(2, 2)}}, ValueError),            # no example_input
    ({"variants": {"a": lambda: None}, "baseline": "b"}, ValueError),
    ({"variants": {"a": lambda: None}, "repeats": 1}, ValueError),
    ({"variants": {"a": lambda: None}, "threads": 0}, ValueError),
])
def test_compare_latency_bad_input(kwargs, err):
    with pytest.raises(err):
        measure.compare_latency(**kwargs)


def test_assert_timing_remeasures_once_before_failing():
    runs = []

    def fn():
        runs.append(1)
    cmp = measure.compare_latency({"a": fn, "b": fn}, repeats=2, warmup=0)
    calls = []

    def flaky(c):
        calls.append(c)
        return len(calls) > 1              # false on the first measurement only
    kept = measure.assert_timing(cmp, flaky, "b is fast")
    assert kept is not cmp and len(calls) == 2 and len(runs) == 8
    with pytest.raises(AssertionError, match="never true.*2 measurement") as info:
        measure.assert_timing(cmp, lambda c: False, "never true")
    assert "speed-ups against a" in str(info.value)
    with pytest.raises(TypeError):
        measure.assert_timing("cmp", flaky, "x")


def test_cpu_info_reports_capability_and_caps(monkeypatch):
    info = measure.cpu_info()
    assert info.capability == torch.backends.cpu.get_cpu_capability()
    assert info.cores >= 1 and info.threads == torch.get_num_threads()
    assert "PyTorch kernels" in str(info) and info.as_row()["capability"] == info.capability
    for var in measure.ISA_LIMIT_VARIABLES:          # `make test-avx2` sets all of them
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FBGEMM_ENABLE_INSTRUCTIONS", "AVX2")
    capped = measure.cpu_info()
    assert not capped.vnni and not capped.int8_dot_product
    assert capped.limits == {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"} and "capped by" in str(capped)


def test_profile_operators_names_the_slow_operator():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.Flatten())
    table = measure.profile_operators(model, torch.randn(2, 1, 12, 12), runs=2, top=3)
    ops = [r["operator"] for r in table.rows]
    assert len(ops) <= 3 and any("conv" in o or "pool" in o for o in ops)
    assert abs(sum(r["share (%)"] for r in measure.profile_operators(
        model, torch.randn(2, 1, 12, 12), runs=2, top=100).rows) - 100) < 1e-6
    assert model.training                            # mode restored
    with pytest.raises(TypeError):
        measure.profile_operators(model, [1, 2])


# ---------------------------------------------------------------- tables
def test_table_prints_and_saves(tmp_path):
    t = measure.Table([{"model": "a", "bytes": 1234567, "acc": 0.98765},
                       {"model": "bb", "bytes": 12, "extra": "x"}], title="t")
    text = str(t)
    assert text.splitlines()[0] == "t" and "1,234,567" in text and "0.9877" in text
    assert t.columns == ["model", "bytes", "acc", "extra"]
    assert t.to_markdown().startswith("| model | bytes | acc | extra |")
    t.save_json(tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["rows"][1]["extra"] == "x"


def test_table_renders_as_html_in_jupyter():
    t = measure.Table([{"model": "<a>", "bytes": 1234567, "ok": True}], title="t & u")
    page = t._repr_html_()
    assert page.startswith('<table class="companion-table"><caption>t &amp; u</caption>')
    assert '<td style="text-align: left">&lt;a&gt;</td>' in page          # escaped text
    assert '<td style="text-align: right">1,234,567</td>' in page         # same format as str
    assert '<td style="text-align: left">True</td>' in page               # bools are not numbers
    assert page.count("<tr>") == 2 and "<caption>" not in measure.Table([{"a": 1}])._repr_html_()
    assert repr(t) == str(t)                                              # a terminal: text


def test_compare_one_table_for_modules_and_variants():
    torch.manual_seed(0)
    big = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 10))
    small = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    data = [(x[:16], y[:16]), (x[16:], y[16:])]
    table = measure.compare(
        {"big": big, "small": small,
         "numpy small": measure.Variant(run=lambda: small(x),
                                        predict=lambda b: small(b).detach().numpy(),
                                        size_bytes=100, note="a runner"),
         "absent": measure.Variant(note="not applicable: no kernel")},
        x, data, repeats=3, warmup=1, title="toy")
    rows = {r["variant"]: r for r in table.rows}
    assert list(rows) == ["big", "small", "numpy small", "absent"]
    assert table.columns == measure.COLUMNS
    assert rows["big"]["size x"] == 1.0 and rows["big"]["speed-up x"] == 1.0
    assert rows["small"]["bytes"] == measure.serialized_size(small).bytes
    assert rows["small"]["size x"] == pytest.approx(rows["big"]["bytes"] / rows["small"]["bytes"])
    assert rows["small"]["accuracy"] == train.evaluate(small, data)
    assert rows["numpy small"]["accuracy"] == rows["small"]["accuracy"]   # NumPy logits scored
    assert rows["small"]["acc drop (pts)"] == pytest.approx(
        100 * (rows["big"]["accuracy"] - rows["small"]["accuracy"]))
    assert rows["absent"]["note"].startswith("not applicable") and math.isnan(
        rows["absent"]["latency ms"])
    assert table.title.startswith("toy: latency at batch 32, 1 thread(s), cpu")
    with pytest.raises(ValueError, match="baseline"):
        measure.compare({"a": small, "b": measure.Variant()}, x, baseline="b")
    with pytest.raises(TypeError, match="variants\\['a'\\]"):
        measure.compare({"a": 3}, x)


def test_compare_variant_model_overrides_and_timing_reuse():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    variants = {"fp32": model,
                "same, other file": measure.Variant(model=model, size_bytes=10, note="n")}
    timing = measure.compare_latency({"fp32": model, "same, other file": model}, x, repeats=2)
    table = measure.compare(variants, x, [(x, y)], timing=timing)
    rows = {r["variant"]: r for r in table.rows}
    assert rows["same, other file"]["bytes"] == 10 and rows["same, other file"]["note"] == "n"
    assert rows["same, other file"]["latency ms"] == timing.median_ms("same, other file")
    assert rows["same, other file"]["nonzero params"] == rows["fp32"]["nonzero params"]
    with pytest.raises(ValueError, match="timing"):
        measure.compare({"a": model}, x, timing=timing)
    with pytest.raises(TypeError, match="model"):
        measure.compare({"a": measure.Variant(model="m")}, x)
