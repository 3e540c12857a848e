"""Tests of companion.sparse: the file really shrinks and round-trips exactly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from state_check import assert_unchanged

from companion import measure, models, prune, sparse


@pytest.fixture(scope="module")
def pruned():
    torch.manual_seed(0)
    return prune.prune(models.LeNet300100(), 0.92)


@pytest.mark.parametrize("index", ["bitmap", "delta"])
@pytest.mark.parametrize("codec", ["lzma", "zlib", "gzip", "none"])
def test_float32_roundtrip_is_exact(pruned, index, codec, tmp_path):
    cfg = sparse.SparseConfig(index=index, values="float32", codec=codec)
    size = sparse.save(pruned, tmp_path / "m.spz", cfg)
    assert size == (tmp_path / "m.spz").stat().st_size
    got, ref = sparse.load(tmp_path / "m.spz"), prune.effective_state_dict(pruned)
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k].dtype == ref[k].dtype and torch.equal(got[k], ref[k])


def test_kmeans_file_is_small_and_keeps_positions(pruned, tmp_path):
    dense = measure.state_dict_bytes(models.LeNet300100())
    size = sparse.save(pruned, tmp_path / "m.spz", sparse.SparseConfig(values="kmeans", bits=5))
    assert dense / size > 30
    got, ref = sparse.load(tmp_path / "m.spz"), prune.effective_state_dict(pruned)
    for k in ref:
        assert torch.equal(got[k] != 0, ref[k] != 0)
        if ref[k].dim() == 2:
            assert len(torch.unique(got[k][got[k] != 0])) <= 32
            err = (got[k] - ref[k]).abs().max()
            assert err <= ref[k].abs().max() / 16  # within a cluster's width


def test_saved_bytes_equal_in_memory_bytes(pruned, tmp_path):
    cfg = sparse.SparseConfig()
    data = sparse.encode(pruned, cfg)
    sparse.save(pruned, tmp_path / "a.spz", cfg)
    assert (tmp_path / "a.spz").read_bytes() == data
    again = sparse.decode(data)
    assert all(torch.equal(again[k], v) for k, v in sparse.load(tmp_path / "a.spz").items())


def test_encode_leaves_model_unchanged(pruned):
    with assert_unchanged(pruned):
        sparse.encode(pruned)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 40), density=st.floats(0.0, 1.0),
       index=st.sampled_from(["bitmap", "delta"]), seed=st.integers(0, 1000))
def test_roundtrip_property(rows, cols, density, index, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * (torch.rand(rows, cols, generator=g) < density)
    sd = {"w": w, "b": torch.randn(cols, generator=g), "n": torch.tensor(3)}
    got = sparse.decode(sparse.encode(sd, sparse.SparseConfig(index=index, values="float32")))
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    km = sparse.decode(sparse.encode(sd, sparse.SparseConfig(index=index, values="kmeans",
                                                              bits=3)))
    assert torch.equal(km["w"] != 0, w != 0) or bool((w == 0).all())


def test_kmeans_1d():
    v = torch.tensor([1.0, 1.1, 5.0, 5.2, -3.0, -3.1])
    book, codes = sparse._kmeans_1d(v, 3)
    torch.testing.assert_close(book, torch.tensor([-3.05, 1.05, 5.1]))
    assert codes.tolist() == [1, 1, 2, 2, 0, 0] and codes.dtype == torch.uint8


def test_quant_values_roundtrip():
    pytest.importorskip("companion.quant")
    from companion import quant
    w = torch.randn(20, 30) * (torch.rand(20, 30) < 0.2)
    got = sparse.decode(sparse.encode({"w": w}, sparse.SparseConfig(values="quant", bits=8)))
    vals = w[w != 0]
    expected = quant.dequantize(quant.quantize(vals, bits=8)).float()
    torch.testing.assert_close(got["w"][w != 0], expected, rtol=0, atol=1e-6)


def test_bad_input(pruned):
    with pytest.raises(ValueError, match="index"):
        sparse.SparseConfig(index="coo")
    with pytest.raises(ValueError, match="bits"):
        sparse.SparseConfig(bits=12)
    with pytest.raises(ValueError, match="codec"):
        sparse.SparseConfig(codec="zip")
    with pytest.raises(ValueError, match="masks"):
        sparse.encode(pruned.state_dict())
    with pytest.raises(TypeError, match="state_dict"):
        sparse.encode([1, 2])
    with pytest.raises(ValueError, match="data"):
        sparse.decode(b"not a file")


def test_quant_values_need_at_least_two_bits():
    with pytest.raises(ValueError, match="bits"):
        sparse.SparseConfig(values="quant", bits=1)
    sparse.SparseConfig(values="kmeans", bits=1)  # a two-value codebook is fine


# --------------------------------------------------------------------------- regressions
def _file() -> bytes:
    w = torch.randn(6, 8) * (torch.rand(6, 8) < 0.5)
    return sparse.encode({"w": w, "b": torch.randn(8)}, sparse.SparseConfig(values="float32"))


@pytest.mark.parametrize("corrupt", [
    lambda d: d[:-5],                                        # truncated compressed stream
    lambda d: d[:16] + bytes(len(d) - 16),                   # zeroed payload
    lambda d: d[:16] + bytes(b ^ 0x5A for b in d[16:]),      # garbled payload
    lambda d: d[:8] + b"zlib    " + d[16:],                  # wrong codec name
    lambda d: d[:8] + b"nope    " + d[16:],
    lambda d: sparse.MAGIC + b"none    " + b"\xff\xff\xff\xff{}",
    lambda d: sparse.MAGIC + b"none    " + b"\x02\x00\x00\x00{}",  # header without tensors
    lambda d: sparse.MAGIC,
])
def test_decode_of_a_corrupt_file_raises_value_error(corrupt):
    with pytest.raises(ValueError, match="data"):
        sparse.decode(corrupt(_file()))


def test_decode_of_a_cut_short_uncompressed_file():
    w = torch.randn(4, 4)
    data = sparse.encode({"w": w}, sparse.SparseConfig(values="float32", codec="none"))
    for cut in (1, 7, 30):
        with pytest.raises(ValueError, match="data"):
            sparse.decode(data[:-cut])
    with pytest.raises(ValueError, match="data"):
        sparse.decode(data + b"\x00")
    with pytest.raises(TypeError, match="data"):
        sparse.decode("CNNSPZ1")


@pytest.mark.parametrize("index", ["bitmap", "delta"])
def test_float32_values_keep_float64_tensors_exact(index):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(7, 9, generator=g, dtype=torch.float64) * (torch.rand(7, 9, generator=g) < .4)
    w[0, 0] = 1e-300                                   # zero in float32: must stay a non-zero
    w[0, 1] = 1.0 + 2.0 ** -40                          # needs float64's mantissa
    sd = {"w": w, "h": torch.randn(3, 3).half(), "f": torch.randn(3, 3)}
    got = sparse.decode(sparse.encode(sd, sparse.SparseConfig(index=index, values="float32")))
    for k, v in sd.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


def test_lossy_values_of_float64_tensors_keep_dtype_and_positions():
    w = torch.randn(10, 10, dtype=torch.float64) * (torch.rand(10, 10) < 0.5)
    for values in ("float16", "kmeans", "quant"):
        got = sparse.decode(sparse.encode({"w": w}, sparse.SparseConfig(values=values)))["w"]
        assert got.dtype == torch.float64
        assert not (got[w == 0] != 0).any()        # zeros stay zeros (lossy values may round
        assert (got - w).abs().max() < 0.1         # a small one to 0, not the other way)


def test_kmeans_1d_rejects_bad_iters():
    v = torch.randn(20)
    with pytest.raises(ValueError, match="iters"):
        sparse._kmeans_1d(v, 3, iters=-1)
    with pytest.raises(TypeError, match="iters"):
        sparse._kmeans_1d(v, 3, iters=2.0)
    book, _ = sparse._kmeans_1d(v, 3, iters=0)  # 0: the evenly spaced initial codebook
    torch.testing.assert_close(book, torch.linspace(float(v.min()), float(v.max()), 3))
