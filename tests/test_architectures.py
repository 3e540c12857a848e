import pytest
import torch

from companion import architectures as A
from companion import data, measure, train


@pytest.mark.parametrize("model", [A.RowRNN(16), A.RowRNN(16, cell="gru"),
                                   A.RowTransformer(16, 2, 1, 32)])
def test_shapes_and_inputs(model):
    x = torch.rand(3, 1, 28, 28)
    out = model(x)
    assert out.shape == (3, 10)
    assert torch.allclose(out, model(x.reshape(3, 784)), atol=1e-6)
    assert torch.allclose(out, model(x[:, 0]), atol=1e-6)


def test_flop_counts_match_formulas():
    x = torch.rand(1, 1, 28, 28)
    lstm = A.RowRNN(hidden=32)
    assert measure.count_flops(lstm, x).macs == 28 * 4 * (28 * 32 + 32 * 32) + 32 * 10
    gru = A.RowRNN(hidden=32, cell="gru")
    assert measure.count_flops(gru, x).macs == 28 * 3 * (28 * 32 + 32 * 32) + 32 * 10
    d, ff, T = 16, 32, 28
    tr = A.RowTransformer(d_model=d, heads=2, layers=1, ff=ff)
    block = 4 * T * d * d + 2 * T * T * d + 2 * T * d * ff
    assert measure.count_flops(tr, x).macs == T * 28 * d + block + d * 10


def test_parameter_counts_match_formulas():
    d, h = 28, 24
    for cell, g in (("lstm", 4), ("gru", 3)):
        model = A.RowRNN(hidden=h, cell=cell)
        assert measure.count_parameters(model).total == g * (h * (d + h) + 2 * h) + 10 * h + 10
    dm, ff, layers = 16, 32, 2
    block = 2 * dm + (3 * dm * dm + 3 * dm) + (dm * dm + dm) + 2 * dm + (2 * dm * ff + ff + dm)
    want = (28 * dm + dm) + 28 * dm + layers * block + 2 * dm + (10 * dm + 10)
    tr = A.RowTransformer(d_model=dm, heads=4, layers=layers, ff=ff)
    assert measure.count_parameters(tr).total == want


def test_models_learn(tiny_data):
    loaders = data.make_loaders(tiny_data, 32)
    for model in (A.RowRNN(32, cell="gru"), A.RowTransformer(32, 4, 1, 64)):
        train.set_seed(0)
        train.fit(model, loaders.train, epochs=8, lr=3e-3, progress=False, device="cpu")
        assert train.evaluate(model, loaders.val) > 0.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="cell"):
        A.RowRNN(cell="rnn")
    with pytest.raises(TypeError, match="hidden"):
        A.RowRNN(hidden=2.5)
    with pytest.raises(ValueError, match="divisible"):
        A.RowTransformer(d_model=30, heads=4)
    with pytest.raises(ValueError, match="divisible"):
        A.EncoderBlock(30, 4, 8)
    with pytest.raises(ValueError, match="dropout"):
        A.EncoderBlock(32, 4, 8, dropout=1.0)
    with pytest.raises(ValueError, match="expected"):
        A._as_rows(torch.rand(2, 3, 28, 28))
    with pytest.raises(TypeError, match="x must be"):
        A._as_rows([[0.0] * 784])
    with pytest.raises(ValueError, match="input_size"):
        A.RowRNN(8)(torch.rand(2, 28, 20))
    with pytest.raises(ValueError, match="input_size"):
        A.RowTransformer(8, 2, 1, 16)(torch.rand(2, 10, 20))
    with pytest.raises(ValueError, match="seq_len"):
        A.RowTransformer(8, 2, 1, 16, seq_len=10)(torch.rand(2, 1, 28, 28))
