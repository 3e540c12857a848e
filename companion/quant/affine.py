"""The affine map of a tensor to integer codes and back (the chapter's math).

``quantize`` / ``dequantize`` and their helpers: ranges, scale and zero point,
codes bit-exact with PyTorch at 8 bits, error bounds, SQNR, dense bit packing.

The granularity of a range is a *block size*, as in torchao's
``quantize_affine``: every block of ``block_size`` consecutive elements gets its
own scale and zero point. For a ``(out, in)`` weight, ``block_size=(1, 32)`` is
group-wise (groups of 32 input weights), ``(1, in)`` one range per row (as
``axis=0``) and ``(out, in)`` one range for the tensor (as ``axis=None``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import check_bool, check_int, check_tensor


# =========================================================================== tensor level
def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """The integer range ``(qmin, qmax)`` of ``bits``-bit codes.

    Args:
        bits: 2 to 16.
        signed: two's complement ``[-2^(b-1), 2^(b-1) - 1]`` or unsigned ``[0, 2^b - 1]``.

    Raises:
        ValueError: ``bits`` outside 2..16.
    """
    bits = check_int(bits, "bits", min_value=2, max_value=16)
    if not isinstance(signed, bool):
        raise TypeError(f"signed must be a bool, got {type(signed).__name__}")
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def _storage_dtype(bits: int, signed: bool) -> torch.dtype:
    # torch.uint16 exists but lacks most ops: unsigned 16-bit codes go to int32
    if bits <= 8:
        return torch.int8 if signed else torch.uint8
    return torch.int16 if signed or bits <= 15 else torch.int32


@dataclass
class QTensor:
    """A quantized tensor: integer ``codes`` and the affine map back to floats.

    ``x_hat = (codes - zero_point) * scale``; with ``axis`` set, ``scale`` and
    ``zero_point`` hold one value per slice along that axis; with ``block_size``
    set, one value per block, in a tensor of shape ``shape[i] // block_size[i]``.

    Attributes:
        codes: integer tensor of ``shape`` (int8/uint8 up to 8 bits, int16 above; unsigned
            16-bit codes are int32 because ``torch.uint16`` lacks most operations).
        scale: float32 (or the ``scale_dtype`` asked of :func:`quantize`), a scalar,
            one per channel or one per block.
        zero_point: int32, same shape as ``scale``.
        bits: bits per code.
        axis: the per-channel axis, or None for one range per tensor.
        shape: shape of the original tensor.
        signed: whether the codes are signed (None: infer from the codes).
        block_size: the elements that share one scale and zero point, one size per
            dimension (None: per tensor or per ``axis``).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    axis: int | None
    shape: tuple[int, ...]
    signed: bool | None = None
    block_size: tuple[int, ...] | None = None

    @property
    def is_signed(self) -> bool:
        if self.signed is not None:
            return self.signed
        return bool(self.codes.numel() and self.codes.min() < 0)

    @property
    def nbytes(self) -> int:
        """Bytes of the codes when stored packed (:func:`pack_bits`: a ``b``-bit code
        takes ``b`` bits up to 8 bits; wider codes one int16/int32 each)."""
        packed = _stored_codes(self)
        return packed.numel() * packed.element_size()


def _stored_codes(q: QTensor) -> torch.Tensor:
    """The codes as stored: offset to ``[0, 2**bits)`` and packed densely up to 8 bits
    (:func:`pack_bits`), else flat in the code dtype."""
    if q.bits > 8:
        return q.codes.flatten()
    qmin, _ = qrange(q.bits, q.is_signed)
    return pack_bits((q.codes.flatten().to(torch.int16) - qmin).to(torch.uint8), q.bits)


def _codes_from_stored(stored: torch.Tensor, bits: int, signed: bool,
                       shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`_stored_codes`: the codes of ``shape`` in their dtype."""
    if bits > 8:
        return stored.reshape(shape)
    qmin, _ = qrange(bits, signed)
    u = unpack_bits(stored, bits, shape)
    return (u.to(torch.int16) + qmin).to(_storage_dtype(bits, signed))


def _broadcast(t: torch.Tensor, axis: int | None, ndim: int) -> torch.Tensor:
    if axis is None:
        return t
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


def _check_axis(axis: int | None, ndim: int) -> int | None:
    if axis is None:
        return None
    axis = check_int(axis, "axis")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis must be in [{-ndim}, {ndim - 1}] for a {ndim}-d tensor, "
                         f"got {axis}")
    return axis % ndim


def _check_block_size(block_size: object, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``block_size`` as a tuple of ints, one per dimension, each dividing the size."""
    if not isinstance(block_size, (tuple, list)):
        raise TypeError(f"block_size must be a tuple of ints, one per dimension, got "
                        f"{type(block_size).__name__}")
    if len(block_size) != len(shape):
        raise ValueError(f"block_size must have one entry per dimension of x "
                         f"({len(shape)}), got {tuple(block_size)}")
    sizes = tuple(check_int(b, "block_size", min_value=1) for b in block_size)
    for d, (n, b) in enumerate(zip(shape, sizes, strict=True)):
        if n % b:
            raise ValueError(f"block_size[{d}] ({b}) must divide x's size {n} in "
                             f"dimension {d} (shape {tuple(shape)})")
    return sizes


def _grid(shape: tuple[int, ...], block_size: tuple[int, ...]) -> tuple[int, ...]:
    """The number of blocks along each dimension."""
    return tuple(n // b for n, b in zip(shape, block_size, strict=True))


def _split(shape: tuple[int, ...], block_size: tuple[int, ...]) -> tuple[int, ...]:
    """``(grid_0, block_0, grid_1, block_1, ...)``: the view in which blocks are axes."""
    return tuple(v for g, b in zip(_grid(shape, block_size), block_size, strict=True)
                 for v in (g, b))


def _per_block(t: torch.Tensor, block_size: tuple[int, ...], shape: tuple[int, ...]
               ) -> torch.Tensor:
    """A grid-shaped ``t`` (one value per block) viewed to broadcast against ``_split``."""
    return t.reshape(tuple(v for g in _grid(shape, block_size) for v in (g, 1)))


def _as_range_end(value: torch.Tensor | float, name: str) -> torch.Tensor:
    if isinstance(value, bool) or not isinstance(value, (torch.Tensor, float, int)):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    t = torch.as_tensor(value, dtype=torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


_SCALE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def choose_qparams(lo: torch.Tensor | float, hi: torch.Tensor | float, bits: int = 8, *,
                   symmetric: bool = False, signed: bool | None = None,
                   scale_dtype: torch.dtype = torch.float32
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map ``[lo, hi]`` onto the ``bits``-bit grid.

    The range is first widened to contain 0, so that 0 (padding, ReLU
    zeros) is represented exactly. A zero-width range (a constant or
    all-zero tensor) gets scale 1 instead of a division by zero.

    Args:
        lo, hi: range ends (scalars or one per channel).
        bits: 2 to 16.
        symmetric: range ``[-a, a]`` with ``a = max(|lo|, |hi|)``; zero point 0
            for signed codes (the middle of the grid for unsigned).
        signed: signed codes; default: True when symmetric, else False.
        scale_dtype: the dtype the scale is stored in (float32, float16 or
            bfloat16); the scale is rounded to it *before* the zero point is
            computed, so that the codes are those of the stored scale.

    Returns:
        ``(scale, zero_point)``: ``scale_dtype`` and int32 tensors.

    Raises:
        TypeError: ``scale_dtype`` not one of the three.
        ValueError: ``lo > hi``, NaN/inf ends, or a range too wide for ``scale_dtype``.
    """
    check_bool(symmetric, "symmetric")
    if scale_dtype not in _SCALE_DTYPES:
        raise TypeError(f"scale_dtype must be one of {_SCALE_DTYPES}, got {scale_dtype!r}")
    signed = symmetric if signed is None else signed
    qmin, qmax = qrange(bits, signed)
    lo, hi = (_as_range_end(v, n) for v, n in ((lo, "lo"), (hi, "hi")))
    if lo.shape != hi.shape:
        raise ValueError(f"lo and hi must have the same shape, got {tuple(lo.shape)} and "
                         f"{tuple(hi.shape)}")
    if bool((lo > hi).any()):
        raise ValueError("lo must be <= hi")
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = amax / ((qmax - qmin) / 2)
        zero_point = torch.full_like(scale, 0 if signed else (qmin + qmax + 1) // 2)
    else:
        scale = (hi - lo) / (qmax - qmin)
        if not bool(torch.isfinite(scale).all()):
            # hi - lo overflows float32 (a range near +-3.4e38): the step itself fits
            wide = ((hi.double() - lo.double()) / (qmax - qmin)).float()
            scale = torch.where(torch.isfinite(scale), scale, wide)
        scale = _stored_scale(scale, scale_dtype)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero_point = qmin - torch.round(lo / safe)
    scale = _stored_scale(scale, scale_dtype)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(torch.float32)
    zero_point = torch.clamp(zero_point, qmin, qmax).to(torch.int32)
    return scale.to(scale_dtype), zero_point


def _stored_scale(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``scale`` rounded to ``dtype`` (float32 values); a positive scale that underflows
    becomes the dtype's smallest positive value, not 0."""
    if dtype == torch.float32:
        return scale
    rounded = scale.to(dtype)
    if not bool(torch.isfinite(rounded).all()):
        raise ValueError(f"scale_dtype: the range is too wide for a finite {dtype} scale")
    tiny = torch.finfo(dtype).tiny * torch.finfo(dtype).eps
    return torch.where(scale > 0, rounded.float().clamp_min(tiny), rounded.float())


def _codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
           qmin: int, qmax: int, fused: bool = False) -> torch.Tensor:
    """``clamp(round(x * (1/scale) + zero_point))`` in float32, ties to even.

    This is PyTorch's arithmetic to the last bit: it multiplies by the
    float32 reciprocal of the scale (not divides), and its per-tensor kernel
    adds the zero point in a fused multiply-add (one rounding, emulated here
    in float64) while its per-channel kernel rounds the product first.
    """
    inv = 1.0 / scale
    if fused:
        t = (x.double() * inv.double() + zero_point.double()).float()
    else:
        t = x.float() * inv + zero_point.float()
    return torch.clamp(torch.round(t), qmin, qmax)


def quantize(x: torch.Tensor, bits: int = 8, *, symmetric: bool = False,
             axis: int | None = None, block_size: tuple[int, ...] | None = None,
             signed: bool | None = None,
             qparams: tuple[torch.Tensor, torch.Tensor] | None = None,
             scale_dtype: torch.dtype = torch.float32) -> QTensor:
    """Quantize a float tensor to ``bits``-bit integer codes.

    The granularity is one of: one range for the tensor (the default), one per
    slice along ``axis`` (per channel), or one per block of ``block_size``
    elements (torchao's ``block_size``; ``(1, group_size)`` is group-wise along
    the input dimension of a ``(out, in)`` weight, ``(1, in)`` per row,
    ``x.shape`` per tensor). Per tensor and per channel, the codes are
    bit-exact with ``torch.quantize_per_tensor`` / ``torch.quantize_per_channel``
    at 8 bits; a block size gives the per-channel arithmetic, and the
    per-tensor one when the block is the whole tensor.

    Args:
        x: a finite, non-empty floating-point tensor.
        bits: 2 to 16.
        symmetric: symmetric range (zero point 0) instead of min/max (affine).
        axis: one range per slice along this axis (per-channel); None: per tensor.
        block_size: one range per block of these sizes, one per dimension of
            ``x``, each dividing ``x``'s size; not together with ``axis``.
        signed: signed codes; default True when symmetric, else False.
        qparams: a fixed ``(scale, zero_point)`` (e.g. from an observer) instead of
            the range of ``x``; values outside it are clamped. The scale must be
            finite and > 0, the zero point an integer inside the code range
            ``qrange(bits, signed)``; one value each, or one per slice along ``axis``
            (one per block with ``block_size``).
        scale_dtype: the dtype of the stored scale (float32, float16, bfloat16);
            the codes are computed with the scale rounded to it.

    Returns:
        A :class:`QTensor`.

    Raises:
        TypeError: ``x`` is not a floating-point tensor, ``qparams`` not a pair of
            numbers/tensors, a flag not a bool, ``block_size`` not a tuple.
        ValueError: ``x`` is empty or has NaN/inf, ``bits`` outside 2..16, bad ``axis``,
            a ``block_size`` that does not divide ``x`` (or given with ``axis``),
            bad ``qparams`` values or shapes.
    """
    check_tensor(x, "x", floating=True)
    bits = check_int(bits, "bits", min_value=2, max_value=16)
    axis = _check_axis(axis, x.dim())
    if block_size is not None:
        if axis is not None:
            raise ValueError("block_size and axis are two ways to give the granularity: "
                             "pass one of them")
        block_size = _check_block_size(block_size, tuple(x.shape))
    check_bool(symmetric, "symmetric")
    signed = symmetric if signed is None else signed
    qmin, qmax = qrange(bits, signed)
    x = x.detach()
    if block_size is not None:
        grid = _grid(tuple(x.shape), block_size)
        xs = x.reshape(_split(tuple(x.shape), block_size))
        if qparams is None:
            n = len(grid)
            flat = xs.permute(*range(0, 2 * n, 2), *range(1, 2 * n, 2)).reshape(*grid, -1)
            scale, zero_point = choose_qparams(flat.amin(-1), flat.amax(-1), bits,
                                               symmetric=symmetric, signed=signed,
                                               scale_dtype=scale_dtype)
        else:
            scale, zero_point = _check_qparams(qparams, qmin, qmax, math.prod(grid))
            count = math.prod(grid)
            scale = scale.reshape(-1).expand(count).reshape(grid).to(scale_dtype)
            zero_point = zero_point.reshape(-1).expand(count).reshape(grid)
        whole = all(g == 1 for g in grid)       # one block: the per-tensor arithmetic
        codes = _codes(xs, _per_block(scale.float(), block_size, tuple(x.shape)),
                       _per_block(zero_point, block_size, tuple(x.shape)), qmin, qmax,
                       fused=whole).reshape(x.shape)
        return QTensor(codes.to(_storage_dtype(bits, signed)), scale, zero_point, bits, None,
                       tuple(x.shape), signed, block_size)
    if qparams is None:
        if axis is None:
            lo, hi = x.min(), x.max()
        else:
            flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)
            lo, hi = flat.min(1).values, flat.max(1).values
        scale, zero_point = choose_qparams(lo, hi, bits, symmetric=symmetric, signed=signed,
                                           scale_dtype=scale_dtype)
        if not bool(torch.isfinite(scale).all()):  # cannot happen since the float64 fallback
            raise ValueError("x: its range is too wide for a finite float32 scale")
    else:
        channels = None if axis is None else x.shape[axis]
        scale, zero_point = _check_qparams(qparams, qmin, qmax, channels)
        scale = scale.to(scale_dtype)
    codes = _codes(x, _broadcast(scale.float(), axis, x.dim()),
                   _broadcast(zero_point, axis, x.dim()), qmin, qmax, fused=axis is None)
    return QTensor(codes.to(_storage_dtype(bits, signed)), scale, zero_point, bits, axis,
                   tuple(x.shape), signed)


def _check_qparams(qparams: object, qmin: int, qmax: int, channels: int | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``qparams`` as ``(float32 scale, int32 zero point)``, or a ValueError/TypeError naming it."""
    if not isinstance(qparams, (tuple, list)) or len(qparams) != 2:
        raise TypeError(f"qparams must be a pair (scale, zero_point), got "
                        f"{type(qparams).__name__}")
    for value, what in zip(qparams, ("scale", "zero point"), strict=True):
        if isinstance(value, bool) or not isinstance(value, (torch.Tensor, int, float)):
            raise TypeError(f"qparams: the {what} must be a number or a tensor, got "
                            f"{type(value).__name__}")
        if isinstance(value, torch.Tensor) and (value.dtype == torch.bool or value.is_complex()):
            raise TypeError(f"qparams: the {what} must be a real tensor, got dtype {value.dtype}")
    scale = torch.as_tensor(qparams[0], dtype=torch.float32)
    zp = torch.as_tensor(qparams[1])
    allowed = (1,) if channels is None else (1, channels)
    for t, what in ((scale, "scale"), (zp, "zero point")):
        if t.numel() not in allowed:
            per = "per tensor" if channels is None else f"along axis ({channels} channels)"
            raise ValueError(f"qparams: the {what} must hold one value, or one per channel "
                             f"{per}; got {t.numel()} values")
    if not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
        raise ValueError(f"qparams: the scale must be finite and > 0 (in float32), got "
                         f"{scale.flatten()[:4].tolist()}")
    if zp.is_floating_point():
        if not bool(torch.isfinite(zp).all()) or not bool((zp == torch.round(zp)).all()):
            raise ValueError(f"qparams: the zero point must be an integer, got "
                             f"{zp.flatten()[:4].tolist()}")
    if bool((zp < qmin).any()) or bool((zp > qmax).any()):
        raise ValueError(f"qparams: the zero point must lie in the code range [{qmin}, {qmax}], "
                         f"got values in [{zp.min().item():g}, {zp.max().item():g}]")
    return scale, zp.to(torch.int32)


def dequantize(q: QTensor) -> torch.Tensor:
    """Map codes back to float32: ``(codes - zero_point) * scale``.

    Raises:
        TypeError: ``q`` is not a :class:`QTensor`.
    """
    if not isinstance(q, QTensor):
        raise TypeError(f"q must be a QTensor, got {type(q).__name__}")
    if q.block_size is not None:
        codes = q.codes.to(torch.float32).reshape(_split(q.shape, q.block_size))
        zp = _per_block(q.zero_point.to(torch.float32), q.block_size, q.shape)
        scale = _per_block(q.scale.to(torch.float32), q.block_size, q.shape)
        return ((codes - zp) * scale).reshape(q.shape)
    ndim = q.codes.dim()
    zp = _broadcast(q.zero_point.to(torch.float32), q.axis, ndim)
    scale = _broadcast(q.scale.to(torch.float32), q.axis, ndim)
    return ((q.codes.to(torch.float32) - zp) * scale).reshape(q.shape)


def fake_quantize(x: torch.Tensor, bits: int = 8, **kwargs) -> torch.Tensor:
    """``dequantize(quantize(x, bits, **kwargs))``: the float values int codes stand for."""
    return dequantize(quantize(x, bits, **kwargs))


def error_bound(q: QTensor) -> torch.Tensor:
    """Largest rounding error inside the range: half a step, ``scale / 2`` (per channel;
    per element with a ``block_size``)."""
    if not isinstance(q, QTensor):
        raise TypeError(f"q must be a QTensor, got {type(q).__name__}")
    if q.block_size is not None:
        half = _per_block(q.scale.float() / 2, q.block_size, q.shape)
        return half.expand(_split(q.shape, q.block_size)).reshape(q.shape)
    return _broadcast(q.scale / 2, q.axis, len(q.shape))


def sqnr(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(sum x^2 / sum (x - x_hat)^2)``.

    Returns ``inf`` when ``x_hat`` equals ``x``. About 6 dB per bit for a
    uniform signal.

    Raises:
        ValueError: the shapes differ.
    """
    check_tensor(x, "x", floating=True)
    check_tensor(x_hat, "x_hat", floating=True)
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat differ in shape: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    noise = (x.double() - x_hat.double()).pow(2).sum().item()
    signal = x.double().pow(2).sum().item()
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes in ``[0, 2**bits)`` packed densely, ``bits`` bits each, into a
    1-D uint8 tensor (little-endian bit order; the last byte is zero-padded).

    A 3-bit code takes 3/8 of a byte, so the sizes computed from it are real.
    Every 8 codes fill exactly ``bits`` bytes: they are summed into one 64-bit
    integer (``code_i << bits * i``) whose low ``bits`` bytes are stored.

    Args:
        codes: uint8 codes of any shape (signed codes: subtract ``qmin`` first).
        bits: 1 to 8.

    Raises:
        TypeError: ``codes`` not a uint8 tensor.
        ValueError: ``bits`` outside 1..8, a code ``>= 2**bits``.
    """
    codes = check_tensor(codes, "codes", allow_empty=True)
    bits = check_int(bits, "bits", min_value=1, max_value=8)
    if codes.dtype != torch.uint8:
        raise TypeError(f"codes must be uint8 (signed codes: subtract qmin first), got dtype "
                        f"{codes.dtype}")
    if codes.numel() and int(codes.max()) >= 2 ** bits:
        raise ValueError(f"codes must lie in [0, {2 ** bits - 1}] for {bits} bits, got a "
                         f"code {int(codes.max())}")
    n = codes.numel()
    if bits == 8:
        return codes.reshape(-1).clone()
    flat = torch.cat([codes.reshape(-1), codes.new_zeros(-n % 8)]).to(torch.int64).reshape(-1, 8)
    v = (flat << (bits * torch.arange(8))).sum(1)                      # 8 codes, 8*bits bits
    out = ((v[:, None] >> (8 * torch.arange(bits))) & 0xFF).to(torch.uint8).reshape(-1)
    return out[: math.ceil(n * bits / 8)]


def unpack_bits(packed: torch.Tensor, bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the codes, as uint8 of ``shape``.

    Raises:
        TypeError: ``packed`` not a uint8 tensor.
        ValueError: ``bits`` outside 1..8, ``packed`` not the bytes of
            ``prod(shape)`` codes of ``bits`` bits.
    """
    packed = check_tensor(packed, "packed", allow_empty=True)
    bits = check_int(bits, "bits", min_value=1, max_value=8)
    shape = tuple(check_int(d, "shape", min_value=0) for d in shape)
    n = math.prod(shape)
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8 bytes, got dtype {packed.dtype}")
    if packed.numel() != math.ceil(n * bits / 8):
        raise ValueError(f"packed must be the {math.ceil(n * bits / 8)} bytes of {n} "
                         f"{bits}-bit codes (shape {shape}), got {packed.numel()} bytes")
    if bits == 8:
        return packed.reshape(shape).clone()
    b = torch.cat([packed.reshape(-1), packed.new_zeros(-packed.numel() % bits)]
                  ).to(torch.int64)
    v = (b.reshape(-1, bits) << (8 * torch.arange(bits))).sum(1)
    codes = (v[:, None] >> (bits * torch.arange(8))) & (2 ** bits - 1)
    return codes.reshape(-1)[:n].to(torch.uint8).reshape(shape)
