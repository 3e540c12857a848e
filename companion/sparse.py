"""Sparse storage that really shrinks the file (the storage half of Deep Compression).

A pruned model saved with ``torch.save`` is as large as the dense one: a zero
takes four bytes like any other float. Zeros only save bytes when the file
stores *where* the non-zeros are and *what* they are, compactly:

1. **positions**: a bitmap (one bit per weight) or the gaps between
   consecutive non-zeros (``index="delta"``, Han et al.'s relative index);
2. **values**: float32 (exact; float64 tensors keep float64), float16, affine codes from
   :mod:`companion.quant` (``values="quant"``), or indices into a small
   codebook found by k-means (``values="kmeans"``, weight sharing);
3. an ordinary entropy coder over the result (``lzma``, ``zlib`` or ``gzip``
   from the Python standard library) in place of Huffman coding.

:func:`save` writes the file and returns its size in bytes on disk;
:func:`load` reads it back into a dense state dict. The round trip is exact
for what was stored (the quantized values, not the original floats).
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._checks import check_choice, check_int, check_tensor

__all__ = ["SparseConfig", "encode", "decode", "save", "load"]

MAGIC = b"CNNSPZ1\n"
_CODECS = {
    "lzma": (lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME), lzma.decompress),
    "zlib": (lambda b: zlib.compress(b, 9), zlib.decompress),
    "gzip": (lambda b: gzip.compress(b, 9, mtime=0), gzip.decompress),
    "none": (bytes, bytes),
}


@dataclass(frozen=True)
class SparseConfig:
    """How :func:`encode` stores a state dict.

    Attributes:
        index: ``"bitmap"`` or ``"delta"`` (gaps between non-zeros).
        values: ``"float32"`` (exact: float64 tensors keep their float64 values,
            the other float dtypes fit in float32), ``"float16"``, ``"quant"`` (affine codes,
            :func:`companion.quant.quantize`) or ``"kmeans"`` (shared weights).
        bits: bits per value: 2..8 for ``"quant"`` (the affine quantizer's range),
            1..8 for ``"kmeans"`` (1 bit = a two-value codebook).
        codec: ``"lzma"``, ``"zlib"``, ``"gzip"`` or ``"none"``.
        min_dim: tensors with at least this many dimensions are stored sparsely
            (default 2: Linear and Conv weights); others are stored dense, float32.
    """

    index: str = "delta"
    values: str = "kmeans"
    bits: int = 5
    codec: str = "lzma"
    min_dim: int = 2

    def __post_init__(self) -> None:
        check_choice(self.index, "index", ("bitmap", "delta"))
        check_choice(self.values, "values", ("float32", "float16", "quant", "kmeans"))
        check_int(self.bits, "bits", min_value=2 if self.values == "quant" else 1, max_value=8)
        check_choice(self.codec, "codec", tuple(_CODECS))
        check_int(self.min_dim, "min_dim", min_value=0)


# --------------------------------------------------------------------------- k-means
@torch.no_grad()
def _kmeans_1d(values: torch.Tensor, k: int, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster scalars into ``k`` shared values (Lloyd's algorithm, linear initialization).

    Centroids start evenly spaced between min and max, as in Deep Compression
    (it keeps a few large weights, which matter, their own centroids).

    Args:
        values: a non-empty, finite floating-point tensor (flattened).
        k: number of centroids, 1 to 256.
        iters: at most this many Lloyd iterations (0: the evenly spaced
            initial centroids).

    Returns:
        ``(codebook, codes)``: sorted float32 centroids and a uint8 code per value.

    Raises:
        TypeError: ``values`` not a floating-point tensor, ``k`` or ``iters`` not an int.
        ValueError: ``values`` empty or not finite, ``k`` outside 1..256, ``iters`` < 0.
    """
    values = check_tensor(values, "values", floating=True).detach().float().flatten().cpu()
    k = check_int(k, "k", min_value=1, max_value=256)
    iters = check_int(iters, "iters", min_value=0)
    centroids = torch.linspace(float(values.min()), float(values.max()), k)
    for _ in range(iters):
        codes = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros(k).index_add_(0, codes, values)
        counts = torch.bincount(codes, minlength=k).float()
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        new, _ = torch.sort(new)
        if torch.equal(new, centroids):
            break
        centroids = new
    codes = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
    return centroids, codes.to(torch.uint8)


# --------------------------------------------------------------------------- parts
def _uint(max_value: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def _encode_values(vals: torch.Tensor, cfg: SparseConfig) -> tuple[dict, list[np.ndarray]]:
    if cfg.values == "float32":  # exact: float64 stays float64, the rest fits in float32
        return {}, [vals.numpy().astype(np.float64 if vals.dtype == torch.float64
                                        else np.float32)]
    vals = vals.float()
    if cfg.values == "float16":
        return {}, [vals.numpy().astype(np.float16)]
    if cfg.values == "kmeans":
        book, codes = _kmeans_1d(vals, 2 ** cfg.bits)
        return {}, [book.numpy(), codes.numpy()]
    from . import quant  # affine codes from the quantization module
    q = quant.quantize(vals, bits=cfg.bits)
    codes = q.codes.to(torch.int64)
    low = int(codes.min())
    meta = {"low": low, "scale": float(q.scale), "zero_point": float(q.zero_point),
            "qbits": q.bits}
    return meta, [(codes - low).numpy().astype(_uint(int(codes.max()) - low))]


def _decode_values(meta: dict, parts: list[np.ndarray], n: int) -> torch.Tensor:
    kind = meta["values"]
    if kind in ("float32", "float16"):
        dtype = np.float64 if parts[0].dtype == np.float64 else np.float32
        return torch.from_numpy(parts[0].astype(dtype))  # astype copies
    if kind == "kmeans":
        book, codes = torch.from_numpy(parts[0].copy()), torch.from_numpy(parts[1].astype(np.int64))
        return book[codes]
    from . import quant
    codes = torch.from_numpy(parts[0].astype(np.int64)) + meta["low"]
    q = quant.QTensor(codes=codes, scale=torch.tensor(meta["scale"]),
                      zero_point=torch.tensor(meta["zero_point"]), bits=meta["qbits"],
                      axis=None, shape=(n,))
    return quant.dequantize(q).float().flatten()


def _encode_tensor(t: torch.Tensor, cfg: SparseConfig) -> tuple[dict, list[np.ndarray]]:
    meta: dict[str, Any] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
    if not t.is_floating_point() or t.dim() < cfg.min_dim:
        meta["kind"] = "dense"
        return meta, [t.detach().cpu().numpy()]
    flat = t.detach().flatten().cpu()
    if flat.dtype != torch.float64:  # float64 keeps its precision (and its tiny non-zeros)
        flat = flat.float()
    nz = torch.nonzero(flat).flatten()
    meta.update(kind="sparse", index=cfg.index, values=cfg.values, nnz=len(nz))
    if cfg.index == "bitmap":
        pos = np.packbits((flat != 0).numpy())
    else:
        gaps = torch.diff(nz, prepend=torch.tensor([-1])) - 1  # zeros skipped before each
        pos = gaps.numpy().astype(_uint(int(gaps.max()) if len(gaps) else 0))
    if len(nz) == 0:
        return meta, [pos]
    vmeta, vparts = _encode_values(flat[nz], cfg)
    meta.update(vmeta)
    return meta, [pos, *vparts]


def _decode_tensor(meta: dict, parts: list[np.ndarray]) -> torch.Tensor:
    dtype = getattr(torch, meta["dtype"])
    shape = tuple(meta["shape"])
    if meta["kind"] == "dense":
        return torch.from_numpy(parts[0].copy()).reshape(shape).to(dtype)
    n = int(np.prod(shape)) if shape else 1
    flat = torch.zeros(n, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    if meta["nnz"]:
        if meta["index"] == "bitmap":
            bits = np.unpackbits(parts[0], count=n).astype(bool)
            nz = torch.from_numpy(np.flatnonzero(bits))
        else:
            nz = torch.cumsum(torch.from_numpy(parts[0].astype(np.int64)) + 1, 0) - 1
        flat[nz] = _decode_values(meta, parts[1:], meta["nnz"]).to(flat.dtype)
    return flat.reshape(shape).to(dtype)


# --------------------------------------------------------------------------- container
def _state_dict(obj: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        from .prune import effective_state_dict
        return effective_state_dict(obj)
    if not isinstance(obj, dict):
        raise TypeError(f"state_dict must be an nn.Module or a dict of tensors, "
                        f"got {type(obj).__name__}")
    if any(k.endswith("_mask") for k in obj):
        raise ValueError("state_dict: holds pruning masks; pass the model, or "
                         "companion.prune.effective_state_dict(model)")
    return obj


def encode(state_dict: nn.Module | dict[str, torch.Tensor],
           config: SparseConfig | None = None) -> bytes:
    """The bytes of the sparse file for ``state_dict`` (or a possibly pruned model).

    Raises:
        TypeError: not a module or a dict of tensors.
        ValueError: a state dict that still holds pruning masks.
    """
    cfg = config or SparseConfig()
    if not isinstance(cfg, SparseConfig):
        raise TypeError(f"config must be a SparseConfig, got {type(cfg).__name__}")
    entries, blobs = [], []
    for name, tensor in _state_dict(state_dict).items():
        check_tensor(tensor, f"state_dict[{name!r}]", allow_empty=True)
        meta, parts = _encode_tensor(tensor, cfg)
        meta["name"] = name
        meta["parts"] = [[p.dtype.str, p.size] for p in parts]
        entries.append(meta)
        blobs += [np.ascontiguousarray(p).tobytes() for p in parts]
    header = json.dumps({"config": asdict(cfg), "tensors": entries}).encode()
    payload = struct.pack("<I", len(header)) + header + b"".join(blobs)
    return MAGIC + cfg.codec.encode().ljust(8) + _CODECS[cfg.codec][0](payload)


def decode(data: bytes) -> dict[str, torch.Tensor]:
    """A dense state dict from the bytes written by :func:`encode`.

    Raises:
        TypeError: ``data`` is not bytes.
        ValueError: ``data`` is not such a file, or it is truncated or corrupt.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(MAGIC):
        raise ValueError("data: not a companion.sparse file (no CNNSPZ1 header)")
    codec = data[len(MAGIC):len(MAGIC) + 8].decode("ascii", errors="replace").strip()
    if codec not in _CODECS:
        raise ValueError(f"data: unknown codec {codec!r}")
    try:
        return _decode_payload(_CODECS[codec][1](data[len(MAGIC) + 8:]))
    except (lzma.LZMAError, zlib.error, OSError, EOFError, struct.error, ValueError, KeyError,
            TypeError, IndexError, AttributeError, RuntimeError) as e:
        raise ValueError(f"data: not a valid companion.sparse file (truncated or corrupt: "
                         f"{type(e).__name__}: {e})") from e


def _decode_payload(payload: bytes) -> dict[str, torch.Tensor]:
    (hlen,) = struct.unpack("<I", payload[:4])
    header = json.loads(payload[4:4 + hlen])
    buf, out = io.BytesIO(payload[4 + hlen:]), {}
    for meta in header["tensors"]:
        if not isinstance(getattr(torch, meta["dtype"], None), torch.dtype):
            raise ValueError(f"unknown dtype {meta['dtype']!r}")
        parts = []
        for dt, count in meta["parts"]:
            dtype = np.dtype(dt)
            if dtype.hasobject or count < 0:
                raise ValueError(f"bad part {dt!r} x {count}")
            raw = buf.read(dtype.itemsize * count)
            if len(raw) != dtype.itemsize * count:
                raise ValueError(f"tensor {meta['name']!r} is cut short")
            parts.append(np.frombuffer(raw, dtype=dtype))
        out[meta["name"]] = _decode_tensor(meta, parts)
    if buf.read(1):
        raise ValueError("bytes left over after the last tensor")
    return out


def save(state_dict: nn.Module | dict[str, torch.Tensor], path: str | os.PathLike,
         config: SparseConfig | None = None) -> int:
    """Write the sparse file and return its size in bytes on disk."""
    path = Path(path)
    path.write_bytes(encode(state_dict, config))
    return path.stat().st_size


def load(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save` into a dense state dict."""
    return decode(Path(path).read_bytes())
