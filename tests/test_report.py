import copy

import pytest
import torch
from state_check import assert_unchanged

from companion import data, models, quant, report, train


@pytest.fixture(scope="module")
def trained_cnn():
    train.set_seed(0)
    ds = data._synthetic_images(n_train=256, n_test=128, seed=1)
    loaders = data.make_loaders(ds, batch_size=32)
    model = models.SmallCNN(c1=4, c2=8, hidden=16)
    train.fit(model, loaders.train, epochs=2, progress=False, device="cpu")
    return model, loaders


@pytest.mark.slow
def test_report_rows_are_measured(trained_cnn):
    model, loaders = trained_cnn
    cfg = report.ReportConfig(sparsities=(0.5,), channel_ratio=0.5, onnx=False, repeats=2,
                              batch_size=16)
    with assert_unchanged(model):     # the caller's model
        table = report.optimization_report(model, loaders.test, calibration=loaders.train,
                                           config=cfg, progress=False)
    names = [r["variant"] for r in table.rows]
    # a second fp32 row only when a plain form beats the model as given ("eager")
    base = names[1] if names[1].startswith("fp32, ") else "fp32"
    assert names[0] == "fp32" and names.count("fp32, eager") == 0
    assert names[names.index(base) + 1:] == ["int8 dynamic", "int8 static", "pruned 50%",
                                             "channels -50%"]
    rows = {r["variant"]: r for r in table.rows}
    for r in table.rows:
        assert r["bytes"] > 0 and r["latency ms"] > 0 and 0 <= r["accuracy"] <= 1
    assert rows["fp32"]["size x"] == 1.0 and rows[base]["speed-up x"] == 1.0
    assert rows[base]["accuracy"] == rows["fp32"]["accuracy"]   # the same function
    assert rows["int8 static"]["size x"] > 2          # int8 weights
    assert rows["channels -50%"]["nonzero params"] < rows["fp32"]["nonzero params"]
    assert f"speed-up against {base}\n" in table.title and "PyTorch kernels" in table.title


def test_report_skips_static_without_calibration(trained_cnn):
    model, loaders = trained_cnn
    cfg = report.ReportConfig(int8=("static",), sparsities=(), channel_ratio=None, onnx=False,
                              repeats=1, batch_size=8)
    table = report.optimization_report(model, loaders.test, config=cfg, progress=False)
    rows = {r["variant"]: r for r in table.rows}
    assert "not applicable" in rows["int8 static"]["note"]


def test_report_config_rejects_bad_values():
    with pytest.raises(ValueError, match="int8"):
        report.ReportConfig(int8=("int4",))
    with pytest.raises(ValueError, match="sparsities"):
        report.ReportConfig(sparsities=(1.0,))
    with pytest.raises(ValueError, match="channel_ratio"):
        report.ReportConfig(channel_ratio=0.0)
    with pytest.raises(TypeError):
        report.optimization_report("model", [])


def test_report_rejects_empty_loader():
    with pytest.raises(ValueError, match="eval_loader"):
        report.optimization_report(models.LeNet300100(), [])


# --------------------------------------------------------------------------- structured outputs
class _Output:
    """Like a HuggingFace ``ModelOutput``: the logits are an attribute."""

    def __init__(self, logits):
        self.logits = logits


class _Wrapped(torch.nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.net = models.LeNet300100(hidden1=16, hidden2=8)

    def forward(self, x):
        out = self.net(x)
        if self.kind == "attr":
            return _Output(out)
        if self.kind == "dict":
            return {"loss": None, "logits": out}
        if self.kind == "tuple":
            return (out, x)
        return {"scores": out}


def test_logits_extraction():
    t = torch.rand(2, 3)
    assert report._logits(t) is t
    assert report._logits(_Output(t)) is t
    assert report._logits({"logits": t, "hidden": 0}) is t
    assert report._logits((t, None)) is t and report._logits([t]) is t
    with pytest.raises(TypeError, match="output_fn"):
        report._logits({"scores": t})


def _tiny_loader(n=32, batch=16, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


def _labelled_by(net: torch.nn.Module, n=32, batch=16, seed=0):
    """Inputs labelled with ``net``'s own predictions, every third one changed: the plain
    network scores exactly 21/32, and a wrong output or label order scores otherwise."""
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = net(x).argmax(1)
    y[::3] = (y[::3] + 1) % 10
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


def _accuracy(net: torch.nn.Module, loader) -> float:
    with torch.no_grad():
        return sum(int((net(x).argmax(1) == y).sum()) for x, y in loader) / len(loader.dataset)


@pytest.mark.parametrize("kind", ["attr", "dict", "tuple"])
def test_report_on_structured_outputs(kind):
    torch.manual_seed(0)
    model = _Wrapped(kind).eval()
    loader = _labelled_by(model.net)
    cfg = report.ReportConfig(int8=("dynamic",), sparsities=(0.5,), channel_ratio=None,
                              onnx=kind == "dict", repeats=2, batch_size=8)
    table = report.optimization_report(model, loader, calibration=_tiny_loader(seed=1),
                                       config=cfg, progress=False)
    rows = {r["variant"]: r for r in table.rows}
    # the rows score the logits inside the structured output, on the eval data
    assert rows["fp32"]["accuracy"] == pytest.approx(_accuracy(model.net, loader)) \
        == pytest.approx(21 / 32)
    int8 = quant.quantize_model(copy.deepcopy(model.net), quant.DynamicInt8Config())
    assert rows["int8 dynamic"]["accuracy"] == pytest.approx(_accuracy(int8, loader))
    assert rows["int8 dynamic"]["bytes"] < rows["fp32"]["bytes"] / 2
    assert rows["pruned 50%"]["nonzero params"] < 0.6 * rows["fp32"]["nonzero params"]
    assert 0 <= rows["pruned 50%"]["accuracy"] <= 1
    if kind == "dict":   # exported with the logits as its one output
        assert rows["ONNX Runtime fp32"]["accuracy"] == pytest.approx(rows["fp32"]["accuracy"])


def test_report_output_fn():
    torch.manual_seed(0)
    model = _Wrapped("other").eval()
    loader = _labelled_by(model.net)
    cfg = report.ReportConfig(int8=("dynamic",), sparsities=(), channel_ratio=None, onnx=False,
                              repeats=2, batch_size=8)
    with pytest.raises(TypeError, match="output_fn"):
        report.optimization_report(model, loader, config=cfg, progress=False)
    table = report.optimization_report(model, loader, config=cfg, progress=False,
                                       output_fn=lambda out: out["scores"])
    rows = {r["variant"]: r for r in table.rows}
    # output_fn reaches every row, the quantized copy's included
    assert rows["fp32"]["accuracy"] == pytest.approx(21 / 32)
    int8 = quant.quantize_model(copy.deepcopy(model.net), quant.DynamicInt8Config())
    assert rows["int8 dynamic"]["accuracy"] == pytest.approx(_accuracy(int8, loader))
    with pytest.raises(TypeError, match="output_fn"):
        report.optimization_report(model, loader, config=cfg, output_fn="scores")


# --------------------------------------------------------------------------- honest rows
def test_report_leaves_mode_and_weights_alone(trained_cnn):
    model, loaders = trained_cnn
    model.train()
    model.bn1.eval()                      # a mixed mode must come back exactly
    cfg = report.ReportConfig(int8=("dynamic",), sparsities=(0.5,), channel_ratio=None,
                              onnx=False, repeats=2, batch_size=8)
    with assert_unchanged(model):         # weights and every submodule's mode
        report.optimization_report(model, loaders.test, config=cfg, progress=False)
    model.eval()


@pytest.mark.slow
def test_report_notes_say_what_was_calibrated(trained_cnn):
    model, loaders = trained_cnn
    calib = _tiny_loader(n=40, batch=16)
    cfg = report.ReportConfig(sparsities=(), channel_ratio=None, onnx=True, repeats=2,
                              batch_size=8)
    table = report.optimization_report(model, loaders.test, calibration=calib, config=cfg,
                                       progress=False)
    rows = {r["variant"]: r for r in table.rows}
    assert "no calibration" in rows["int8 dynamic"]["note"]
    assert "calibrated on 40 calibration images" in rows["ONNX Runtime int8"]["note"]
    # static int8 works on this model: measured and calibrated, not "not applicable"
    assert rows["int8 static"]["note"].endswith("calibrated on 40 calibration images")
    assert rows["int8 static"]["latency ms"] > 0
    cfg = report.ReportConfig(sparsities=(), channel_ratio=None, onnx=True, repeats=2,
                              batch_size=8)
    table = report.optimization_report(model, loaders.test, config=cfg, progress=False)
    rows = {r["variant"]: r for r in table.rows}
    for name in ("int8 static", "ONNX Runtime int8"):
        assert rows[name]["note"].startswith("not applicable: needs calibration data")
    assert "\n" not in "".join(r["note"] for r in table.rows)


def test_report_rejects_bad_labels_and_inputs():
    model = models.LeNet300100(hidden1=8, hidden2=8)
    x = torch.rand(8, 1, 28, 28)
    loader = [(x, torch.tensor([0, 1, 2, 3, 4, 5, 6, 10]))]
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        report.optimization_report(model, loader, progress=False)
    with pytest.raises(ValueError, match=r"shape \(8, 3, 5\)"):
        report.optimization_report(model, [(torch.rand(8, 3, 5), torch.zeros(8).long())],
                                   progress=False)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        report.optimization_report(model, [(x, torch.zeros(8).long())], progress=False)


def test_report_on_token_ids():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(30, 8), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 5, 4))
    ids = torch.randint(0, 30, (32, 5))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(ids, torch.randint(0, 4, (32,))), batch_size=16)
    cfg = report.ReportConfig(int8=("dynamic",), sparsities=(0.5,), channel_ratio=None,
                              onnx=True, repeats=2, batch_size=8)
    table = report.optimization_report(model, loader, calibration=loader, config=cfg,
                                       progress=False)
    rows = {r["variant"]: r for r in table.rows}
    assert rows["ONNX Runtime fp32"]["accuracy"] == rows["fp32"]["accuracy"]
    assert "calibrated on 32 calibration samples" in rows["ONNX Runtime int8"]["note"]
