"""Bad inputs to the measuring, PT2E and report functions: each a TypeError or ValueError
that names the argument; and the report's output on a HuggingFace model."""

import logging
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from companion import _checks, measure, pt2e, report


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


@pytest.mark.parametrize("bad", ["x", object(), 3, (torch.rand(2, 12), "mask")])
def test_measure_latency_names_example_input(bad):
    with pytest.raises(TypeError, match="example_input must be a tensor or a tuple of tensors"):
        measure.measure_latency(_mlp(), bad, warmup=0, repeats=1)


@pytest.mark.parametrize("bad", ["x", object()])
def test_compare_latency_and_compare_name_example_input(bad):
    model = _mlp()
    with pytest.raises(TypeError, match="example_input"):
        measure.compare_latency({"a": model}, bad, repeats=2)
    with pytest.raises(TypeError, match="example_input"):
        measure.compare({"a": model}, bad, repeats=2)
    # checked even when every variant is a plain callable (which ignores it)
    with pytest.raises(TypeError, match="example_input"):
        measure.compare_latency({"a": lambda: None}, bad, repeats=2)


@pytest.mark.parametrize("bad", ["x", b"x", 3, torch.rand(4, 12)])
def test_compare_names_eval_data(bad):
    with pytest.raises(TypeError, match="eval_data must be an iterable of"):
        measure.compare({"a": _mlp()}, torch.rand(2, 12), bad, repeats=2)


def test_timing_functions_take_repeats():
    model, x = _mlp(), torch.rand(2, 12)
    cmp = measure.compare_latency({"a": model, "b": model}, x, repeats=3, warmup=0)
    assert all(len(t) == 3 for t in cmp.times_ms.values())
    with pytest.raises(ValueError, match="repeats"):
        measure.compare_latency({"a": model}, x, repeats=1)
    with pytest.raises(TypeError, match="rounds"):
        measure.compare_latency({"a": model}, x, rounds=3)   # the old name is gone


# --------------------------------------------------------------------------- calibration
def test_run_calibration_validates_and_stops():
    seen = []
    batches = [(torch.full((2, 3), float(i)), torch.zeros(2)) for i in range(5)]
    assert _checks.run_calibration(seen.append, batches, 3) == 6
    assert [int(b[0, 0]) for b in seen] == [0, 1, 2]          # stopped after 3 batches
    seen.clear()
    assert _checks.run_calibration(seen.append, iter(batches), None) == 10
    assert len(seen) == 5
    assert _checks.run_calibration(seen.append, [torch.rand(4, 3)], 8) == 4  # bare inputs
    for bad in (None, "x", 3, torch.rand(4, 3)):
        with pytest.raises(TypeError, match="calibration must be an iterable of batches"):
            _checks.run_calibration(seen.append, bad)
    with pytest.raises(ValueError, match="calibration yielded no batch"):
        _checks.run_calibration(seen.append, [])
    with pytest.raises(TypeError, match="calibration: each batch's inputs"):
        _checks.run_calibration(seen.append, [("a", "b")])
    assert _checks.CALIBRATION_BATCHES == 8


@pytest.mark.parametrize("bad", [None, "x", 5])
def test_quantize_pt2e_names_calibration(bad):
    pytest.importorskip("torchao")
    with pytest.raises(TypeError, match="calibration must be an iterable of batches"):
        pt2e.quantize_pt2e(_mlp(), torch.rand(4, 12), bad)


def test_quantize_pt2e_empty_calibration():
    pytest.importorskip("torchao")
    with pytest.raises(ValueError, match="calibration yielded no batch"):
        pt2e.quantize_pt2e(_mlp(), torch.rand(4, 12), [])


def test_quantize_pt2e_one_sample_example_input_then_any_batch():
    pytest.importorskip("torchao")
    model = _mlp()
    calib = [torch.rand(8, 12) for _ in range(3)]
    graph = pt2e.quantize_pt2e(model, torch.rand(1, 12), calib)
    for n in (1, 5):      # the batch dimension stayed dynamic
        x = torch.rand(n, 12)
        out = graph(x)
        assert out.shape == (n, 3)
        assert torch.allclose(out, model(x), atol=0.1)


# --------------------------------------------------------------------------- report
def test_report_names_calibration():
    x, y = torch.rand(8, 12), torch.randint(0, 3, (8,))
    with pytest.raises(TypeError, match="calibration must be an iterable of batches"):
        report.optimization_report(_mlp(), [(x, y)], calibration="x", progress=False)


def test_onnx_logs_are_silenced_and_restored():
    from companion.infer.onnx_engine import _quiet_onnx

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    def from_ort(level: int, msg: str) -> logging.LogRecord:   # logging.warning in ORT
        path = "/site-packages/onnxruntime/quantization/qdq_quantizer.py"
        return logging.LogRecord("root", level, path, 1, msg, None, None)

    root, keep = logging.getLogger(), Keep()
    level = logging.getLogger("onnxscript").level
    root.addHandler(keep)
    try:
        with _quiet_onnx():
            root.handle(from_ort(logging.WARNING, "Axis 1 is out-of-range"))
            root.handle(from_ort(logging.ERROR, "an ORT error"))
            logging.getLogger("onnxscript.optimizer").warning("Evaluation failed: noise")
            logging.getLogger("mine").warning("the user's own warning")
        root.handle(from_ort(logging.WARNING, "after the block"))
    finally:
        root.removeHandler(keep)
    assert keep.messages == ["an ORT error", "the user's own warning", "after the block"]
    assert not any(type(f).__name__ == "_DropOnnxRuntimeRecords" for f in root.filters)
    assert logging.getLogger("onnxscript").level == level


@pytest.mark.slow
def test_report_on_a_huggingface_model_prints_only_its_table(capfd):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=37,
                                     max_position_embeddings=64, num_labels=3)
    model = transformers.BertForSequenceClassification(config).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids, labels = torch.randint(0, 100, (16, 32)), torch.randint(0, 3, (16,))
    loader = DataLoader(TensorDataset(ids, labels), batch_size=8)
    cfg = report.ReportConfig(sparsities=(0.5,), channel_ratio=None, onnx=True,
                              batch_size=4, repeats=3)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:   # pytest would hide them
        warnings.simplefilter("always")
        table = report.optimization_report(model, loader, calibration=loader, config=cfg,
                                           progress=False)
    out = capfd.readouterr()
    assert not [w for w in caught if issubclass(w.category, UserWarning)
                and not issubclass(w.category, DeprecationWarning)]
    printed = out.out + out.err
    assert "WARNING" not in printed and "Evaluation failed" not in printed
    assert "out-of-range" not in printed and "UserWarning" not in printed
    rows = {r["variant"]: r for r in table.rows}
    assert "fp32, eager" not in rows                      # one row for the model as given
    assert "calibrated on 16 calibration samples" in rows["int8 static"]["note"]
    assert all(r["accuracy"] == r["accuracy"] for r in table.rows)       # all scored
    assert rows["ONNX Runtime fp32"]["accuracy"] == rows["fp32"]["accuracy"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_compile_int8_compiles_once_for_chunks_and_grad_modes():
    pytest.importorskip("torchao")
    from torch._dynamo.utils import counters

    model, x = _mlp(), torch.rand(4, 12)
    run = pt2e.compile_int8(pt2e.quantize_pt2e(model, x, [x]), x)
    graphs = counters["stats"]["unique_graphs"]
    big = torch.rand(10, 12)
    out = run(big)                        # chunks at storage offsets 48 and 96, padded
    with torch.inference_mode():
        out_inference = run(torch.cat([big, big])[3:13])
    assert counters["stats"]["unique_graphs"] == graphs    # no second compile
    assert out.shape == (10, 3) and torch.allclose(out, model(big), atol=0.1)
    assert torch.allclose(out_inference, run(torch.cat([big, big])[3:13].clone()))
