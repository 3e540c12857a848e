"""Static int8 through PT2E (torch.export + torchao X86InductorQuantizer + torch.compile)."""


import pytest
import torch
from state_check import assert_unchanged

from companion import measure, models

pytest.importorskip("torchao")
pt2e = pytest.importorskip("companion.pt2e")


def _calibration(shape, n=4):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(shape, generator=g), torch.zeros(shape[0], dtype=torch.long))
            for _ in range(n)]


@pytest.fixture(scope="module")
def resnet():
    import user_models

    torch.manual_seed(0)
    return user_models.ResNet18(width=8).eval()


def test_resnet_quantizes_and_stays_close(resnet):
    x = torch.randn(16, 3, 32, 32)
    with assert_unchanged(resnet):
        q = pt2e.quantize_pt2e(resnet, x[:2], _calibration((16, 3, 32, 32)))
    ref = resnet(x)
    out = q(x)                                   # any batch size: the batch is dynamic
    err = (out - ref).norm() / ref.norm()
    assert err < 0.1
    int8 = [v for v in q.state_dict().values() if v.dtype == torch.int8]
    assert len(int8) == 21                       # every conv (20) and the fc hold int8 weights


@pytest.mark.slow
def test_small_cnn_artifact_is_a_quarter_and_compiled_matches():
    torch.manual_seed(0)
    m = models.SmallCNN().eval()
    x = torch.randn(8, 1, 28, 28)
    q = pt2e.quantize_pt2e(m, x, _calibration((16, 1, 28, 28)))
    ratio = measure.serialized_size(m).bytes / measure.serialized_size(q).bytes
    assert ratio > 3.5                          # int8 weights; no float copies left behind
    run = pt2e.compile_int8(q, x)
    torch.testing.assert_close(run(x), q(x), atol=0.05, rtol=0.05)
    assert run(x[:3]).shape == (3, 10)
    torch.testing.assert_close(run(torch.cat([x, x[:3]]))[8:], run(x)[:3])


def test_pt2e_bad_input(resnet):
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="calibration"):
        pt2e.quantize_pt2e(resnet, x, [])
    with pytest.raises(TypeError, match="example_input"):
        pt2e.quantize_pt2e(resnet, [1, 2], _calibration((2, 3, 32, 32)))
    with pytest.raises(TypeError, match="model"):
        pt2e.quantize_pt2e("model", x, _calibration((2, 3, 32, 32)))
    with pytest.raises(ValueError, match="num_batches"):
        pt2e.quantize_pt2e(resnet, x, _calibration((2, 3, 32, 32)), num_batches=0)
    with pytest.raises(TypeError, match="converted"):
        pt2e.compile_int8(resnet, x)
