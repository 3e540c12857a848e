"""Tests of companion.infer: engines agree with eager PyTorch, rows and the roofline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from state_check import assert_unchanged

from companion import infer, models


@pytest.fixture(scope="module")
def mlp_onnx():
    torch.manual_seed(0)
    model = models.LeNet300100(hidden1=32, hidden2=16).eval()
    return model, infer.export_onnx(model, torch.rand(4, 1, 28, 28))


def test_onnx_matches_eager_at_any_batch(mlp_onnx):
    model, onnx_bytes = mlp_onnx
    session = infer.ort_session(onnx_bytes, threads=1)
    for batch in (1, 7):
        x = torch.rand(batch, 1, 28, 28)
        got = infer.ort_runner(session, x)()
        np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-5)


def test_int8_is_smaller_and_close(mlp_onnx):
    model, onnx_bytes = mlp_onnx
    calib = torch.rand(64, 1, 28, 28)
    q = infer.quantize_onnx_int8(onnx_bytes, [calib])
    assert len(q) < 0.5 * len(onnx_bytes)
    # the same inputs as (inputs, labels) batches: the same calibration, the same file
    batches = [(calib[:32], torch.zeros(32)), (calib[32:], torch.zeros(32)), (calib, None)]
    assert infer.quantize_onnx_int8(onnx_bytes, batches, num_batches=2) == q
    with pytest.raises(TypeError, match="wrap one tensor"):
        infer.quantize_onnx_int8(onnx_bytes, calib)
    x = torch.rand(32, 1, 28, 28)
    ref = model(x).detach().numpy()
    got = infer.ort_predict(infer.ort_session(q), x)
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max() + 1e-3


def test_export_does_not_mutate(mlp_onnx):
    model = models.LeNet300100(hidden1=8, hidden2=8).train()
    with assert_unchanged(model):        # weights and train mode
        infer.export_onnx(model, torch.rand(2, 784))


def test_eager_runner():
    model = models.LeNet300100(hidden1=8, hidden2=8)
    run = infer.eager_runner(model, torch.rand(3, 784))
    assert run().shape == (3, 10)


def test_accuracy_of():
    x = np.eye(4, dtype=np.float32)
    assert infer.accuracy_of(lambda b: b, x, np.arange(4)) == 1.0
    assert infer.accuracy_of(lambda b: b, x, np.zeros(4, dtype=int), batch_size=3) == 0.25
    with pytest.raises(ValueError, match="x and y"):
        infer.accuracy_of(lambda b: b, x, np.arange(3))


def test_roofline_formula():
    r = infer.roofline(flops=2e6, bytes_moved=1e6, peak_flops=1e9, bandwidth=1e8)
    assert r.intensity == 2 and r.ridge == 10 and r.bound == "memory"
    assert r.lower_bound_ms == pytest.approx(10.0)
    assert infer.roofline(1e9, 1e3, 1e9, 1e8).bound == "compute"
    with pytest.raises(ValueError, match="bandwidth"):
        infer.roofline(1, 1, 1, 0)


def test_peak_and_bandwidth_are_positive():
    assert infer.measure_peak_flops(64, repeats=2) > 1e6
    assert infer.measure_bandwidth(1, repeats=2) > 1e6


def test_model_bytes_moved_counts_weights():
    model = models.LeNet300100(hidden1=8, hidden2=8)
    params = sum(p.numel() for p in model.parameters()) * 4
    assert infer.model_bytes_moved(model, torch.rand(2, 784)) == params + 2 * 784 * 4 + 2 * 10 * 4


def test_bad_inputs():
    with pytest.raises(TypeError, match="model"):
        infer.eager_runner("nope", torch.rand(2, 3))
    with pytest.raises(ValueError, match="x"):
        infer.eager_runner(torch.nn.Linear(3, 2), torch.rand(3))
    with pytest.raises(TypeError, match="onnx_bytes"):
        infer.ort_session("model.onnx")
    with pytest.raises(ValueError, match="mode"):
        infer.compile_model(torch.nn.Linear(2, 2), mode="fast")
    with pytest.raises(TypeError, match="session"):
        infer.ort_runner(object(), torch.rand(1, 2))


def test_compile_model_is_a_copy():
    model = torch.nn.Linear(2, 2)
    compiled = infer.compile_model(model)
    assert compiled is not model
    assert model.training  # the original keeps its mode


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_gpu_record_refuses_without_cuda(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = root / "tools" / "gpu_record.py"
    if not script.exists():
        pytest.skip("tools/ belongs to the repository, not to the installed wheel")
    before = sorted((root / "benchmarks" / "results" / "gpu").glob("*.json"))
    proc = subprocess.run([sys.executable, str(script)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
    assert sorted((root / "benchmarks" / "results" / "gpu").glob("*.json")) == before


def test_fold_batchnorm_is_the_same_function():
    torch.manual_seed(0)
    model = models.SmallCNN(4, 8, 16)
    for bn in (model.bn1, model.bn2):          # non-trivial running statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 1, 28, 28)
    folded = infer.fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())   # untouched
    with torch.no_grad():
        assert torch.allclose(folded(x), model.eval()(x), atol=1e-5)


def test_fold_batchnorm_refuses_untraceable_model():
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x     # data-dependent control flow
    with pytest.raises(ValueError, match="model"):
        infer.fold_batchnorm(Branchy())


def test_fastest_fp32_picks_a_candidate_that_computes_the_same():
    torch.manual_seed(0)
    model = models.SmallCNN(4, 8, 16).eval()
    x = torch.randn(8, 1, 28, 28)
    base = infer.fastest_fp32(model, x, repeats=3)
    assert set(base.comparison.names) == {"eager", "BN folded", "channels-last",
                                          "BN folded + channels-last"}
    assert base.name in base.comparison.names and base.name in str(base)
    with torch.no_grad():
        assert torch.allclose(base.model(x), model(x), atol=1e-5)
    mlp = infer.fastest_fp32(models.LeNet300100(), torch.randn(4, 784), repeats=2)
    assert mlp.comparison.names == ["eager"]          # nothing to fold, not 4-D


# --------------------------------------------------------------------------- integer inputs
class _TokenModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(1))


def test_onnx_export_of_token_ids():
    torch.manual_seed(0)
    model = _TokenModel().eval()
    data = infer.export_onnx(model, torch.randint(0, 50, (4, 6)))
    session = infer.ort_session(data)
    assert session.get_inputs()[0].type == "tensor(int64)"
    for batch in (1, 7):
        ids = torch.randint(0, 50, (batch, 6))
        with torch.no_grad():
            ref = model(ids).numpy()
        np.testing.assert_allclose(infer.ort_runner(session, ids)(), ref, atol=1e-5)
        np.testing.assert_allclose(infer.ort_predict(session, ids.numpy().astype(np.int32)),
                                   ref, atol=1e-5)
    q = infer.quantize_onnx_int8(data, [torch.randint(0, 50, (64, 6))])
    assert infer.ort_predict(infer.ort_session(q), torch.randint(0, 50, (5, 6))).shape == (5, 3)


def test_latency_helpers_take_token_ids():
    model = _TokenModel()
    ids = torch.randint(0, 50, (4, 6))
    assert infer.eager_runner(model, ids)().shape == (4, 3)
    best = infer.fastest_fp32(model, ids, repeats=2)
    assert best.name == "eager"
    assert infer.model_bytes_moved(model, ids) > 0
    with pytest.raises(TypeError, match="example_input"):
        infer.export_onnx(model, torch.zeros(4, 6, dtype=torch.bool))


def test_exported_modules_are_not_switched_to_eval():
    model = models.LeNet300100(hidden1=8, hidden2=8).eval()
    gm = torch.export.export(model, (torch.rand(2, 784),),
                             dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    assert infer.is_exported(gm) and not infer.is_exported(model)
    with pytest.raises(NotImplementedError):
        gm.eval()                                         # why the helpers must not call it
    copy = infer.eval_copy(gm)
    x = torch.rand(3, 784)
    torch.testing.assert_close(copy(x), model(x))
    assert infer.eager_runner(gm, x)().shape == (3, 10)
    assert infer.fastest_fp32(gm, x, repeats=2).name == "eager"
    session = infer.ort_session(infer.export_onnx(gm, x))
    np.testing.assert_allclose(infer.ort_runner(session, x)(), model(x).detach().numpy(),
                               atol=1e-5)
    train_copy = infer.eval_copy(models.LeNet300100(hidden1=8, hidden2=8).train())
    assert not train_copy.training
