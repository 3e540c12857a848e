import json

import numpy as np
import pytest
import torch

from companion import cli, data, models, report, train


@pytest.fixture(scope="module")
def trained_cnn():
    train.set_seed(0)
    ds = data._synthetic_images(n_train=256, n_test=128, seed=1)
    loaders = data.make_loaders(ds, batch_size=32)
    model = models.SmallCNN(c1=4, c2=8, hidden=16)
    train.fit(model, loaders.train, epochs=2, progress=False, device="cpu")
    return model, loaders


def test_report_rows_are_measured(trained_cnn):
    model, loaders = trained_cnn
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = report.ReportConfig(sparsities=(0.5,), channel_ratio=0.5, onnx=False, repeats=2,
                              batch_size=16)
    table = report.optimization_report(model, loaders.test, calibration=loaders.train,
                                       config=cfg, progress=False)
    names = [r["variant"] for r in table.rows]
    assert names[0] == "fp32" and names[1].startswith("fp32, ")
    assert names[2:] == ["int8 dynamic", "int8 static", "pruned 50%", "channels -50%"]
    for r in table.rows:
        assert r["bytes"] > 0 and r["latency ms"] > 0 and 0 <= r["accuracy"] <= 1
    assert table.rows[0]["size x"] == 1.0 and table.rows[1]["speed-up x"] == 1.0
    assert table.rows[1]["accuracy"] == table.rows[0]["accuracy"]   # the same function
    assert table.rows[3]["size x"] > 2          # int8 weights
    assert table.rows[5]["nonzero params"] < table.rows[0]["nonzero params"]
    assert "speed-up against fp32, " in table.title and "PyTorch kernels" in table.title
    # the caller's model is unchanged
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_report_skips_static_without_calibration(trained_cnn):
    model, loaders = trained_cnn
    cfg = report.ReportConfig(int8=("static",), sparsities=(), channel_ratio=None, onnx=False,
                              repeats=1, batch_size=8)
    table = report.optimization_report(model, loaders.test, config=cfg, progress=False)
    assert table.rows[2]["variant"] == "int8 static"
    assert "not applicable" in table.rows[2]["note"]


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


def test_cli_on_a_saved_state_dict(tmp_path, trained_cnn, capsys):
    model, loaders = trained_cnn
    x = torch.cat([b[0] for b in loaders.test]).numpy()
    y = torch.cat([b[1] for b in loaders.test]).numpy()
    np.savez(tmp_path / "eval.npz", x=x, y=y, x_calib=x[:32])
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    # the architecture needs its widths: a module:function spec builds it
    (tmp_path / "tinyarch.py").write_text(
        "from companion.models import SmallCNN\n"
        "def Tiny():\n    return SmallCNN(c1=4, c2=8, hidden=16)\n")
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        rc = cli.main(["report", str(weights), "--arch", "tinyarch:Tiny", "--data",
                       str(tmp_path / "eval.npz"), "--sparsity", "0.5", "--no-onnx",
                       "--repeats", "2", "--batch-size", "8", "--quiet",
                       "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")])
    finally:
        sys.path.remove(str(tmp_path))
    assert rc == 0
    out = capsys.readouterr().out
    assert "int8 static" in out and "channels -50%" in out
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert rows[0]["variant"] == "fp32" and (tmp_path / "r.png").stat().st_size > 1000


def test_cli_errors_are_clear(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "missing.pt"), "--arch", "SmallCNN"]) == 2
    assert "no file" in capsys.readouterr().err
    w = tmp_path / "w.pt"
    torch.save(models.LeNet300100().state_dict(), w)
    assert cli.main(["report", str(w)]) == 2
    assert "--arch is required" in capsys.readouterr().err
    assert cli.main(["report", str(w), "--arch", "NoSuchNet"]) == 2
    assert cli.main(["report", str(w), "--arch", "LeNet300100", "--data", "x.csv"]) == 2


def test_load_model_uses_weights_only(tmp_path):
    # a pickled module (not a state dict) must be refused, not unpickled
    path = tmp_path / "full.pt"
    torch.save(models.LeNet300100(), path)
    with pytest.raises(ValueError, match="pickled Python objects") as err:
        cli.load_model(path, "LeNet300100")
    assert "weights_only=False" not in str(err.value)


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


@pytest.mark.parametrize("kind", ["attr", "dict", "tuple"])
def test_report_on_structured_outputs(kind):
    torch.manual_seed(0)
    model = _Wrapped(kind)
    cfg = report.ReportConfig(int8=("dynamic",), sparsities=(0.5,), channel_ratio=None,
                              onnx=kind == "dict", repeats=2, batch_size=8)
    table = report.optimization_report(model, _tiny_loader(), calibration=_tiny_loader(seed=1),
                                       config=cfg, progress=False)
    rows = {r["variant"]: r for r in table.rows}
    assert 0 <= rows["fp32"]["accuracy"] <= 1 and rows["int8 dynamic"]["bytes"] > 0
    assert rows["pruned 50%"]["accuracy"] >= 0
    if kind == "dict":   # exported with the logits as its one output
        assert rows["ONNX Runtime fp32"]["accuracy"] == pytest.approx(rows["fp32"]["accuracy"])


def test_report_output_fn():
    model = _Wrapped("other")
    cfg = report.ReportConfig(int8=(), sparsities=(), channel_ratio=None, onnx=False,
                              repeats=2, batch_size=8)
    with pytest.raises(TypeError, match="output_fn"):
        report.optimization_report(model, _tiny_loader(), config=cfg, progress=False)
    table = report.optimization_report(model, _tiny_loader(), config=cfg, progress=False,
                                       output_fn=lambda out: out["scores"])
    assert 0 <= table.rows[0]["accuracy"] <= 1
    with pytest.raises(TypeError, match="output_fn"):
        report.optimization_report(model, _tiny_loader(), config=cfg, output_fn="scores")


# --------------------------------------------------------------------------- honest rows
def test_report_leaves_mode_and_weights_alone(trained_cnn):
    model, loaders = trained_cnn
    model.train()
    model.bn1.eval()                      # a mixed mode must come back exactly
    modes = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = report.ReportConfig(int8=("dynamic",), sparsities=(0.5,), channel_ratio=None,
                              onnx=False, repeats=2, batch_size=8)
    report.optimization_report(model, loaders.test, config=cfg, progress=False)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()


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
    static = rows["int8 static"]["note"]
    assert "calibrated on 40 calibration images" in static or static.startswith("not applicable")
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
