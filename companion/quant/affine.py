"""The affine map of a tensor to integer codes and back (the chapter's math).

``quantize`` / ``dequantize`` and their helpers: ranges, scale and zero point,
codes bit-exact with PyTorch at 8 bits, error bounds, SQNR, 4-bit packing.
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
    ``zero_point`` hold one value per slice along that axis.

    Attributes:
        codes: integer tensor of ``shape`` (int8/uint8 up to 8 bits, int16 above; unsigned
            16-bit codes are int32 because ``torch.uint16`` lacks most operations).
        scale: float32, a scalar or one per channel.
        zero_point: int32, same shape as ``scale``.
        bits: bits per code.
        axis: the per-channel axis, or None for one range per tensor.
        shape: shape of the original tensor.
        signed: whether the codes are signed (None: infer from the codes).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    axis: int | None
    shape: tuple[int, ...]
    signed: bool | None = None

    @property
    def is_signed(self) -> bool:
        if self.signed is not None:
            return self.signed
        return bool(self.codes.numel() and self.codes.min() < 0)

    @property
    def nbytes(self) -> int:
        """Bytes of the codes when stored packed (two 4-bit codes per byte, etc.)."""
        packed = pack(self)
        return packed.numel() * packed.element_size()


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


def _as_range_end(value: torch.Tensor | float, name: str) -> torch.Tensor:
    if isinstance(value, bool) or not isinstance(value, (torch.Tensor, float, int)):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    t = torch.as_tensor(value, dtype=torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


def choose_qparams(lo: torch.Tensor | float, hi: torch.Tensor | float, bits: int = 8, *,
                   symmetric: bool = False, signed: bool | None = None
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

    Returns:
        ``(scale, zero_point)``: float32 and int32 tensors.
    """
    check_bool(symmetric, "symmetric")
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
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero_point = qmin - torch.round(lo / safe)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(torch.float32)
    zero_point = torch.clamp(zero_point, qmin, qmax).to(torch.int32)
    return scale, zero_point


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
             axis: int | None = None, signed: bool | None = None,
             qparams: tuple[torch.Tensor, torch.Tensor] | None = None) -> QTensor:
    """Quantize a float tensor to ``bits``-bit integer codes.

    Args:
        x: a finite, non-empty floating-point tensor.
        bits: 2 to 16.
        symmetric: symmetric range (zero point 0) instead of min/max (affine).
        axis: one range per slice along this axis (per-channel); None: per tensor.
        signed: signed codes; default True when symmetric, else False.
        qparams: a fixed ``(scale, zero_point)`` (e.g. from an observer) instead of
            the range of ``x``; values outside it are clamped. The scale must be
            finite and > 0, the zero point an integer inside the code range
            ``qrange(bits, signed)``; one value each, or one per slice along ``axis``.

    Returns:
        A :class:`QTensor`.

    Raises:
        TypeError: ``x`` is not a floating-point tensor, ``qparams`` not a pair of
            numbers/tensors, a flag not a bool.
        ValueError: ``x`` is empty or has NaN/inf, ``bits`` outside 2..16, bad ``axis``,
            bad ``qparams`` values or shapes.
    """
    check_tensor(x, "x", floating=True)
    bits = check_int(bits, "bits", min_value=2, max_value=16)
    axis = _check_axis(axis, x.dim())
    check_bool(symmetric, "symmetric")
    signed = symmetric if signed is None else signed
    qmin, qmax = qrange(bits, signed)
    if qparams is None:
        if axis is None:
            lo, hi = x.min(), x.max()
        else:
            flat = x.detach().movedim(axis, 0).reshape(x.shape[axis], -1)
            lo, hi = flat.min(1).values, flat.max(1).values
        scale, zero_point = choose_qparams(lo, hi, bits, symmetric=symmetric, signed=signed)
        if not bool(torch.isfinite(scale).all()):  # cannot happen since the float64 fallback
            raise ValueError("x: its range is too wide for a finite float32 scale")
    else:
        channels = None if axis is None else x.shape[axis]
        scale, zero_point = _check_qparams(qparams, qmin, qmax, channels)
    codes = _codes(x.detach(), _broadcast(scale, axis, x.dim()),
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
    ndim = q.codes.dim()
    zp = _broadcast(q.zero_point.to(torch.float32), q.axis, ndim)
    scale = _broadcast(q.scale.to(torch.float32), q.axis, ndim)
    return ((q.codes.to(torch.float32) - zp) * scale).reshape(q.shape)


def fake_quantize(x: torch.Tensor, bits: int = 8, **kwargs) -> torch.Tensor:
    """``dequantize(quantize(x, bits, **kwargs))``: the float values int codes stand for."""
    return dequantize(quantize(x, bits, **kwargs))


def error_bound(q: QTensor) -> torch.Tensor:
    """Largest rounding error inside the range: half a step, ``scale / 2`` (per channel)."""
    if not isinstance(q, QTensor):
        raise TypeError(f"q must be a QTensor, got {type(q).__name__}")
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


def pack(q: QTensor) -> torch.Tensor:
    """The codes as stored: uint8 with two codes per byte up to 4 bits, else the code dtype.

    Codes are offset to be non-negative (``codes - qmin``) before packing.
    """
    if not isinstance(q, QTensor):
        raise TypeError(f"q must be a QTensor, got {type(q).__name__}")
    if q.bits > 4:
        return q.codes.flatten()
    qmin, _ = qrange(q.bits, q.is_signed)
    u = (q.codes.flatten().to(torch.int16) - qmin).to(torch.uint8)
    if u.numel() % 2:
        u = torch.cat([u, u.new_zeros(1)])
    return u[0::2] | (u[1::2] << 4)


def unpack(packed: torch.Tensor, bits: int, signed: bool, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack`: the first ``numel`` codes, flat, in the code dtype.

    Args:
        packed: what :func:`pack` returned: uint8 up to 4 bits, else integer codes.
        bits: 2 to 16, as packed.
        signed: whether the codes are signed, as packed.
        numel: number of codes to return (at most the number ``packed`` holds).

    Raises:
        TypeError: ``packed`` not a tensor of the right dtype, ``signed`` not a bool.
        ValueError: ``bits`` outside 2..16, ``numel`` < 0 or more than ``packed`` holds.
    """
    bits = check_int(bits, "bits", min_value=2, max_value=16)
    check_bool(signed, "signed")
    check_tensor(packed, "packed", allow_empty=True)
    if bits <= 4 and packed.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8 for {bits}-bit codes (two per byte), got dtype "
                        f"{packed.dtype}")
    if bits > 4 and (packed.is_floating_point() or packed.is_complex()
                     or packed.dtype == torch.bool):
        raise TypeError(f"packed must hold integer codes for {bits} bits, got dtype "
                        f"{packed.dtype}")
    numel = check_int(numel, "numel", min_value=0)
    capacity = packed.numel() * (2 if bits <= 4 else 1)
    if numel > capacity:
        raise ValueError(f"numel must be <= {capacity} (the codes held by packed), got {numel}")
    if bits > 4:
        return packed.flatten()[:numel]
    qmin, _ = qrange(bits, signed)
    u = torch.stack([packed & 0x0F, packed >> 4], dim=1).flatten()[:numel]
    return (u.to(torch.int16) + qmin).to(_storage_dtype(bits, signed))
