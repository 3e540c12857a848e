"""Tests of ``companion report``: every user error is one line on stderr and exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from companion import cli, models
from companion.cli_load import load_model

TINY = '{"c1": 4, "c2": 8, "hidden": 16}'   # SmallCNN widths of the test model


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.SmallCNN(c1=4, c2=8, hidden=16).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny SmallCNN's state dict, its .pt2 export and an eval .npz."""
    d = tmp_path_factory.mktemp("cli")
    model = _tiny()
    torch.save(model.state_dict(), d / "w.pt")
    rng = np.random.default_rng(0)
    x = rng.random((48, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 48)
    np.savez(d / "eval.npz", x=x, y=y, x_calib=x[:16])
    program = torch.export.export(model, (torch.rand(2, 1, 28, 28),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, d / "m.pt2")
    return {"dir": d, "w": str(d / "w.pt"), "npz": str(d / "eval.npz"), "pt2": str(d / "m.pt2"),
            "x": x, "y": y}


FAST = ["--repeats", "2", "--batch-size", "8", "--quiet", "--sparsity", "0.5"]


def _fails(capsys, argv: list[str]) -> str:
    """Run the CLI, check exit code 2 and one clean line on stderr; return that line."""
    rc = cli.main(argv)
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert rc == 2, cap.err
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("companion report: ")
    assert "Traceback" not in cap.err + cap.out
    return lines[0]


def _npz(files, name: str, **arrays) -> str:
    path = files["dir"] / f"{name}.npz"
    np.savez(path, **arrays)
    return str(path)


def _report(files, data: str) -> list[str]:
    return ["report", files["w"], "--arch", "SmallCNN", "--arch-kwargs", TINY, "--data", data]


# --------------------------------------------------------------------------- the model file
def test_missing_model_file(files, capsys):
    line = _fails(capsys, ["report", str(files["dir"] / "missing.pt"), "--arch", "SmallCNN",
                           "--data", files["npz"]])
    assert "no file at" in line and "missing.pt" in line


def test_corrupt_pt_file(files, capsys):
    bad = files["dir"] / "corrupt.pt"
    bad.write_bytes(open(files["w"], "rb").read()[:200])     # truncated
    line = _fails(capsys, ["report", str(bad), "--arch", "SmallCNN", "--data", files["npz"]])
    assert "not a readable PyTorch file" in line and "state_dict()" in line


def test_state_dict_of_another_architecture(files, capsys):
    other = files["dir"] / "lenet.pt"
    torch.save(models.LeNet300100(hidden1=8, hidden2=8).state_dict(), other)
    line = _fails(capsys, ["report", str(other), "--arch", "SmallCNN", "--data", files["npz"]])
    assert "does not fit --arch SmallCNN" in line and "missing keys" in line


def test_state_dict_of_other_widths(files, capsys):
    # the default SmallCNN is wider than the saved one: a size mismatch, and the fix
    line = _fails(capsys, ["report", files["w"], "--arch", "SmallCNN", "--data", files["npz"]])
    assert "size mismatch for conv1.weight" in line and "--arch-kwargs" in line


def test_pickled_code_is_refused(files, capsys):
    full = files["dir"] / "full.pt"
    torch.save(_tiny(), full)                       # a whole pickled module, not a state dict
    line = _fails(capsys, ["report", str(full), "--arch", "SmallCNN", "--data", files["npz"]])
    assert "torch.save(model.state_dict(), path)" in line and "torch.export.save" in line
    assert "weights_only=False" not in line


def test_corrupt_pt2_archive(files, capsys):
    bad = files["dir"] / "bad.pt2"
    bad.write_bytes(b"not a zip archive")
    line = _fails(capsys, ["report", str(bad), "--data", files["npz"]])
    assert "torch.export archive" in line


def test_missing_arch(files, capsys):
    assert "--arch is required" in _fails(capsys, ["report", files["w"], "--data", files["npz"]])


def test_unknown_arch_class(files, capsys):
    line = _fails(capsys, ["report", files["w"], "--arch", "SmallCNNN", "--data", files["npz"]])
    assert "not a class of companion.models" in line and "SmallCNN" in line


def test_unknown_arch_module(files, capsys):
    line = _fails(capsys, ["report", files["w"], "--arch", "no_such_module_x:Net",
                           "--data", files["npz"]])
    assert "no module named 'no_such_module_x'" in line and "current directory" in line


def test_unknown_class_in_own_module(files, capsys, tmp_path, monkeypatch):
    (tmp_path / "clinets_a.py").write_text("from torch import nn\nclass Net(nn.Module):\n"
                                           "    pass\n")
    monkeypatch.chdir(tmp_path)
    line = _fails(capsys, ["report", files["w"], "--arch", "clinets_a:Nett",
                           "--data", files["npz"]])
    assert "has no 'Nett'" in line and "Net" in line


def test_bad_arch_kwargs(files, capsys):
    line = _fails(capsys, ["report", files["w"], "--arch", "SmallCNN", "--arch-kwargs",
                           "{c1: 4}", "--data", files["npz"]])
    assert "not valid JSON" in line
    line = _fails(capsys, ["report", files["w"], "--arch", "SmallCNN", "--arch-kwargs",
                           '{"width": 4}', "--data", files["npz"]])
    assert "SmallCNN(**" in line and "failed" in line


# --------------------------------------------------------------------------- the data file
def test_data_neither_a_dataset_nor_an_npz(files, capsys):
    line = _fails(capsys, _report(files, "x.csv"))
    assert "--data must be mnist, fashion-mnist or an existing .npz file" in line


def test_npz_without_x(files, capsys):
    line = _fails(capsys, _report(files, _npz(files, "nox", inputs=files["x"], y=files["y"])))
    assert "no array 'x'" in line and "np.savez" in line


def test_npz_without_y(files, capsys):
    line = _fails(capsys, _report(files, _npz(files, "noy", x=files["x"], labels=files["y"])))
    assert "no array 'y'" in line


def test_x_and_y_of_different_lengths(files, capsys):
    line = _fails(capsys, _report(files, _npz(files, "len", x=files["x"], y=files["y"][:40])))
    assert "48 samples but y has 40" in line


def test_nhwc_uint8_images(files, capsys):
    x = (255 * files["x"]).astype(np.uint8).transpose(0, 2, 3, 1)      # N,H,W,C bytes
    line = _fails(capsys, _report(files, _npz(files, "nhwc8", x=x, y=files["y"])))
    assert "N,C,H,W float32" in line and "transpose(0, 3, 1, 2)" in line
    assert "astype('float32') / 255" in line


def test_nhwc_float_images(files, capsys):
    x = np.repeat(files["x"], 3, axis=1).transpose(0, 2, 3, 1)          # N,H,W,3 float
    line = _fails(capsys, _report(files, _npz(files, "nhwc", x=x, y=files["y"])))
    assert "channels last" in line and "transpose(0, 3, 1, 2)" in line


def test_nan_inputs(files, capsys):
    x = files["x"].copy()
    x[3, 0, 5, 5] = np.nan
    x[4, 0, 5, 5] = np.inf
    line = _fails(capsys, _report(files, _npz(files, "nan", x=x, y=files["y"])))
    assert "2 NaN or inf" in line


def test_labels_out_of_range(files, capsys):
    y = files["y"].copy()
    y[0] = 12
    line = _fails(capsys, _report(files, _npz(files, "y12", x=files["x"], y=y)))
    assert "10 outputs" in line and "0..9" in line


def test_negative_labels(files, capsys):
    y = files["y"].copy()
    y[0] = -1
    assert "negative" in _fails(capsys, _report(files, _npz(files, "yneg", x=files["x"], y=y)))


def test_forward_fails_on_data_shape(files, capsys):
    x = files["x"][:, :, :20, :20].copy()                               # 20x20, not 28x28
    line = _fails(capsys, _report(files, _npz(files, "small", x=x, y=files["y"])))
    assert "shape (48, 1, 20, 20)" in line and "model fails" in line


def test_pt2_with_a_fixed_batch(files, capsys):
    fixed = files["dir"] / "fixed.pt2"
    torch.export.save(torch.export.export(_tiny(), (torch.rand(2, 1, 28, 28),)), fixed)
    line = _fails(capsys, ["report", str(fixed), "--data", files["npz"]])
    assert "dynamic_shapes" in line


# --------------------------------------------------------------------------- it works
@pytest.mark.slow
def test_state_dict_with_companion_arch(files, capsys, tmp_path):
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    rc = cli.main(_report(files, files["npz"]) + FAST + ["--no-onnx", "--json", str(out),
                                                        "--plot", str(plot)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "int8 static" in cap.out and "channels -50%" in cap.out    # the table is printed
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    model = _tiny()
    with torch.no_grad():
        correct = (model(torch.from_numpy(files["x"])).argmax(1).numpy() == files["y"]).mean()
    assert rows["fp32"]["accuracy"] == pytest.approx(correct)
    assert rows["pruned 50%"]["bytes"] > 0
    # static int8 works on this model: measured, calibrated on x_calib (16 images)
    assert rows["int8 static"]["note"].endswith("calibrated on 16 calibration images")
    assert rows["int8 static"]["latency ms"] > 0 and rows["int8 static"]["size x"] > 2
    assert plot.stat().st_size > 1000


def test_own_module_from_the_current_directory(files, tmp_path, monkeypatch):
    (tmp_path / "clinets_b.py").write_text(
        "from companion.models import SmallCNN\n\n"
        "class Net(SmallCNN):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__(c1=4, c2=8, hidden=16, num_classes=num_classes)\n\n"
        "def make(hidden):\n"
        "    return SmallCNN(c1=4, c2=8, hidden=hidden)\n")
    monkeypatch.chdir(tmp_path)
    saved = torch.load(files["w"], weights_only=True)
    # what --arch clinets_b:Net and --arch clinets_b:make --arch-kwargs '{"hidden": 16}' load
    for arch, kwargs, cls in (("clinets_b:Net", None, "clinets_b.Net"),
                              ("clinets_b:make", {"hidden": 16}, "companion.models.SmallCNN")):
        model = load_model(files["w"], arch, kwargs)
        assert f"{type(model).__module__}.{type(model).__name__}" == cls
        assert not model.training
        state = model.state_dict()
        assert state.keys() == saved.keys()
        assert all(torch.equal(state[k], saved[k]) for k in saved)


@pytest.mark.slow
def test_pt2_archive(files, capsys, tmp_path):
    out = tmp_path / "r.json"
    rc = cli.main(["report", files["pt2"], "--data", files["npz"], "--json", str(out)] + FAST)
    assert rc == 0, capsys.readouterr().err
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    # "...; the fastest plain fp32 here: speed-up baseline" follows when no plain form beat it
    assert rows["fp32"]["note"].startswith("the torch.export program as given")
    assert rows["pruned 50%"]["note"].startswith("not applicable: a torch.export program")
    assert rows["ONNX Runtime fp32"]["accuracy"] == pytest.approx(rows["fp32"]["accuracy"])
    assert rows["ONNX Runtime int8"]["note"].endswith("calibrated on 16 calibration images")


def test_help_documents_npz_and_arch(capsys):
    with pytest.raises(SystemExit):
        cli.main(["report", "--help"])
    out = capsys.readouterr().out
    assert "x_calib" in out and "(N, C, H, W)" in out and "--arch-kwargs" in out
    assert "module:Name" in out and "function that returns the model" in out


@pytest.mark.slow
def test_report_on_a_users_resnet18(tmp_path, capsys):
    """A torchvision-style ResNet-18 from the reader's own class (3x32x32 images): static
    int8 (PT2E) and channel pruning (traced graph) are measured, not "not applicable"."""
    import user_models

    torch.manual_seed(0)
    model = user_models.ResNet18(width=8).eval()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    rng = np.random.default_rng(0)
    x = rng.random((32, 3, 32, 32), dtype=np.float32)
    np.savez(tmp_path / "eval.npz", x=x, y=rng.integers(0, 10, 32), x_calib=x[:16])
    out = tmp_path / "r.json"
    rc = cli.main(["report", str(tmp_path / "weights.pt"), "--arch", "user_models:ResNet18",
                   "--arch-kwargs", '{"width": 8}', "--data", str(tmp_path / "eval.npz"),
                   "--no-onnx", "--json", str(out)] + FAST)
    assert rc == 0, capsys.readouterr().err
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    for name in ("int8 static", "channels -50%"):
        assert rows[name]["latency ms"] > 0, rows[name]["note"]
        assert rows[name]["size x"] > 3.0
    assert rows["int8 static"]["note"].startswith("PT2E")
