"""Weight-only quantization of a language model's linear layers: RTN, GPTQ, AWQ.

A decoder spends its time at batch 1 reading weights, so the weights are what
to shrink; activations stay float. Every weight row is cut into groups of
``group_size`` input weights, and each group gets its own scale and zero point
(asymmetric, min-max)::

    s = (max - min) / (2**bits - 1),   z = round(-min / s),   q = clamp(round(w / s) + z)

* **Round-to-nearest** (:func:`quantize_groupwise`) rounds every weight on its own.
* **GPTQ** (:func:`gptq_quantize`, Frantar et al. 2023) quantizes one input
  column at a time and spreads its rounding error over the columns not yet
  quantized, weighted by the inverse Hessian ``H = 2 X^T X`` of the layer's
  calibration inputs, so the layer *output* error ``||XW^T - XQ^T||`` is what
  is minimised, not the weight error.
* **AWQ-style scaling** (:func:`awq_search`, Lin et al. 2024) multiplies the
  input channels that see large activations by ``s_j = mean|x_j|^alpha`` before
  quantizing (and divides the input by ``s``), choosing ``alpha`` per layer on
  the calibration output error.

:func:`quantize_lm` returns a copy whose ``nn.Linear`` layers are
:class:`QuantizedLinear`: 4-bit (and lower) codes packed two per byte, fp16
scales, uint8 zero points; the forward pass dequantizes and runs a float
matmul (a simulation of the arithmetic: the memory saving is real, the speed
needs a fused int4 kernel, which PyTorch has on CUDA but not here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import (
    check_choice,
    check_float,
    check_int,
    check_module,
    check_tensor,
    evaluating,
)
from .train import clone

__all__ = [
    "GroupQuantized",
    "quantize_groupwise",
    "dequantize_groupwise",
    "pack_int4",
    "unpack_int4",
    "gptq_quantize",
    "awq_search",
    "smooth_scales",
    "QuantizedLinear",
    "linear_inputs",
    "quantize_lm",
    "activation_absmax",
]


def _check_bits_group(bits: int, group_size: int, in_features: int) -> tuple[int, int]:
    bits = check_int(bits, "bits", min_value=2, max_value=8)
    group_size = check_int(group_size, "group_size", min_value=1)
    if in_features % group_size:
        raise ValueError(f"group_size ({group_size}) must divide the input features "
                         f"({in_features})")
    return bits, group_size


@dataclass
class GroupQuantized:
    """Integer codes ``q`` (uint8, one per weight), ``scale`` and ``zero`` per group."""

    q: torch.Tensor        # (out, in) uint8 in [0, 2**bits - 1]
    scale: torch.Tensor    # (out, in // group_size) float
    zero: torch.Tensor     # (out, in // group_size) uint8
    bits: int
    group_size: int


def _group_params(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scale and zero point of every row of ``w`` (..., group)."""
    qmax = 2 ** bits - 1
    lo = w.amin(dim=-1).clamp(max=0)
    hi = w.amax(dim=-1).clamp(min=0)
    # fp16 is how the scale is stored; 2**-24 is its smallest positive value
    scale = ((hi - lo) / qmax).half().float().clamp_min(2 ** -24)
    zero = torch.round(-lo / scale).clamp(0, qmax)
    return scale, zero


def _round(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.clamp(torch.round(w / scale) + zero, 0, 2 ** bits - 1)


def quantize_groupwise(weight: torch.Tensor, bits: int = 4, group_size: int = 32
                       ) -> GroupQuantized:
    """Round-to-nearest quantization of a ``(out, in)`` weight with per-group min-max."""
    weight = check_tensor(weight, "weight", floating=True)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
    bits, group_size = _check_bits_group(bits, group_size, weight.shape[1])
    w = weight.detach().float().reshape(weight.shape[0], -1, group_size)
    scale, zero = _group_params(w, bits)
    q = _round(w, scale[..., None], zero[..., None], bits)
    return GroupQuantized(q.reshape(weight.shape).to(torch.uint8), scale,
                          zero.to(torch.uint8), bits, group_size)


def dequantize_groupwise(g: GroupQuantized) -> torch.Tensor:
    """The float weight that ``g`` stands for: ``(q - z) * s`` per group."""
    out, inp = g.q.shape
    q = g.q.float().reshape(out, -1, g.group_size)
    return ((q - g.zero.float()[..., None]) * g.scale.float()[..., None]).reshape(out, inp)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte (low nibble first) along the last dimension."""
    q = check_tensor(q, "q")
    if q.dtype != torch.uint8 or q.shape[-1] % 2 or int(q.max()) > 15:
        raise ValueError("q must be uint8 codes in [0, 15] with an even last dimension")
    return q[..., 0::2] | (q[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`."""
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], dim=-1).reshape(*packed.shape[:-1], -1)


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int = 4,
                  group_size: int = 32, *, damp: float = 0.01, block_size: int = 128
                  ) -> GroupQuantized:
    """GPTQ: quantize columns in order, compensating each rounding error.

    Args:
        weight: ``(out, in)``.
        hessian: ``(in, in)``, ``X^T X`` of the layer's calibration inputs (any
            positive factor; see :func:`linear_inputs`).
        damp: fraction of the mean diagonal added to the diagonal (keeps the
            Cholesky factorisation stable).
        block_size: columns updated together (lazy batch updates; a multiple of
            ``group_size`` keeps every group inside one block).
    """
    weight = check_tensor(weight, "weight", floating=True)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
    hessian = check_tensor(hessian, "hessian", floating=True)
    cols = weight.shape[1]
    if hessian.shape != (cols, cols):
        raise ValueError(f"hessian must be ({cols}, {cols}), got {tuple(hessian.shape)}")
    bits, group_size = _check_bits_group(bits, group_size, cols)
    damp = check_float(damp, "damp", min_value=0.0, min_inclusive=False)
    block_size = check_int(block_size, "block_size", min_value=1)
    block_size = max(group_size, block_size // group_size * group_size)

    W = weight.detach().double().clone()
    H = hessian.detach().double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * torch.diag(H).mean() * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    Q = torch.zeros_like(W)
    scales = torch.zeros(W.shape[0], cols // group_size, dtype=torch.float32)
    zeros = torch.zeros_like(scales)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if col % group_size == 0:   # the group's range, from the error-updated weights
                s, z = _group_params(W1[:, i:i + group_size], bits)
                scales[:, col // group_size], zeros[:, col // group_size] = s, z
            g = col // group_size
            s, z = scales[:, g].double(), zeros[:, g].double()
            q = _round(W1[:, i], s, z, bits)
            Q[:, col] = q
            err = (W1[:, i] - (q - z) * s) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return GroupQuantized(Q.to(torch.uint8), scales, zeros.to(torch.uint8), bits, group_size)


def smooth_scales(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5
                  ) -> torch.Tensor:
    """SmoothQuant's per-input-channel scale ``s_j = max|x_j|^a / max|w_j|^(1-a)``.

    Dividing the activations by ``s`` and multiplying the weight columns by
    ``s`` leaves ``x W^T`` unchanged and moves the outliers into the weights.
    """
    act_absmax = check_tensor(act_absmax, "act_absmax", floating=True)
    weight = check_tensor(weight, "weight", floating=True)
    alpha = check_float(alpha, "alpha", min_value=0.0, max_value=1.0)
    if weight.dim() != 2 or act_absmax.shape != (weight.shape[1],):
        raise ValueError("act_absmax must have one entry per input column of weight")
    w_max = weight.detach().abs().amax(dim=0).clamp_min(1e-5)
    return (act_absmax.clamp_min(1e-5) ** alpha / w_max ** (1 - alpha)).float()


def awq_search(weight: torch.Tensor, inputs: torch.Tensor, bits: int = 4, group_size: int = 32,
               *, grid: int = 11) -> tuple[torch.Tensor, float]:
    """AWQ-style search: the input-channel scale ``s = mean|x|^alpha`` (alpha in
    ``[0, 1]`` on a grid) whose quantized layer best reproduces the float output.

    Returns ``(s, alpha)``; ``alpha = 0`` (``s = 1``) is plain round-to-nearest.
    """
    weight = check_tensor(weight, "weight", floating=True)
    inputs = check_tensor(inputs, "inputs", floating=True)
    if weight.dim() != 2 or inputs.dim() != 2 or inputs.shape[1] != weight.shape[1]:
        raise ValueError("inputs must be (n, in) with in = weight.shape[1]")
    grid = check_int(grid, "grid", min_value=2)
    x_mean = inputs.abs().mean(dim=0).clamp_min(1e-5)
    ref = inputs @ weight.T
    best = (float("inf"), torch.ones_like(x_mean), 0.0)
    for alpha in torch.linspace(0, 1, grid).tolist():
        s = x_mean ** alpha
        s = s / (s.max() * s.min()).sqrt()   # keep the scales around 1
        w = dequantize_groupwise(quantize_groupwise(weight * s, bits, group_size)) / s
        err = (inputs @ w.T - ref).pow(2).mean().item()
        if err < best[0]:
            best = (err, s, alpha)
    return best[1], best[2]


class QuantizedLinear(nn.Module):
    """A linear layer whose weight is stored as group-wise integer codes.

    Buffers: ``codes`` (two 4-bit codes per byte for ``bits <= 4``, else one
    per byte), ``scale`` (fp16), ``zero`` (uint8), optional ``input_scale``
    (AWQ: the input is divided by it) and ``bias``.
    """

    def __init__(self, g: GroupQuantized, bias: torch.Tensor | None,
                 input_scale: torch.Tensor | None = None) -> None:
        super().__init__()
        self.bits, self.group_size = g.bits, g.group_size
        self.out_features, self.in_features = g.q.shape
        packed = pack_int4(g.q) if g.bits <= 4 else g.q
        self.register_buffer("codes", packed)
        self.register_buffer("scale", g.scale.half())
        self.register_buffer("zero", g.zero)
        self.register_buffer("input_scale", None if input_scale is None else input_scale.float())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def weight_float(self) -> torch.Tensor:
        q = unpack_int4(self.codes) if self.bits <= 4 else self.codes
        g = GroupQuantized(q, self.scale, self.zero, self.bits, self.group_size)
        w = dequantize_groupwise(g)
        return w / self.input_scale if self.input_scale is not None else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_float().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, awq={self.input_scale is not None}")


def _linears(model: nn.Module, filter_fn: Callable[[nn.Module, str], bool] | None
             ) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)
            and (filter_fn is None or filter_fn(m, n))]


@torch.inference_mode()
def linear_inputs(model: nn.Module, layer: nn.Module, calibration: Iterable[torch.Tensor],
                  *, max_rows: int = 4096) -> torch.Tensor:
    """The rows that ``layer`` receives while ``model`` runs on ``calibration``
    (an iterable of token batches), flattened to ``(n, in_features)``; at most
    ``max_rows`` rows (evenly spaced)."""
    check_module(model, "model")
    check_module(layer, "layer")
    max_rows = check_int(max_rows, "max_rows", min_value=1)
    rows: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(
        lambda _m, args: rows.append(args[0].detach().reshape(-1, args[0].shape[-1]).float()))
    try:
        with evaluating(model):
            for batch in calibration:
                model(batch)
    finally:
        handle.remove()
    if not rows:
        raise ValueError("calibration must yield at least one batch")
    x = torch.cat(rows)
    if len(x) > max_rows:
        x = x[torch.linspace(0, len(x) - 1, max_rows).long()]
    return x


def activation_absmax(model: nn.Module, calibration: Iterable[torch.Tensor],
                      filter_fn: Callable[[nn.Module, str], bool] | None = None
                      ) -> dict[str, torch.Tensor]:
    """Per-input-channel ``max |x|`` that every chosen ``nn.Linear`` receives."""
    check_module(model, "model")
    calibration = list(calibration)
    return {name: linear_inputs(model, m, calibration).abs().amax(dim=0)
            for name, m in _linears(model, filter_fn)}


def quantize_lm(model: nn.Module, *, bits: int = 4, group_size: int = 32,
                method: str = "rtn", calibration: Iterable[torch.Tensor] | None = None,
                filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """A copy of ``model`` with its ``nn.Linear`` weights quantized group-wise.

    Args:
        bits: 2 to 8.
        group_size: input weights per scale; must divide every chosen layer's
            input features.
        method: ``"rtn"`` (round to nearest), ``"gptq"`` or ``"awq"``; the
            last two need ``calibration``.
        calibration: an iterable of token batches (``(batch, time)`` int64).
            GPTQ and AWQ see each layer's inputs with the layers before it
            already quantized (as the papers do).
        filter_fn: ``filter_fn(module, name) -> bool`` chooses the layers
            (default: every ``nn.Linear``, the LM head included).

    Raises:
        ValueError: bits outside 2-8, a group size that does not divide a
            layer, an unknown method, or an empty calibration set.
    """
    check_module(model, "model")
    check_choice(method, "method", ("rtn", "gptq", "awq"))
    layers = _linears(model, filter_fn)
    if not layers:
        raise ValueError("model has no nn.Linear chosen by filter_fn")
    for _, m in layers:
        _check_bits_group(bits, group_size, m.in_features)
    calib: list[torch.Tensor] = []
    if method != "rtn":
        if calibration is None:
            raise ValueError(f"method={method!r} needs calibration batches")
        calib = list(calibration)
        if not calib:
            raise ValueError("calibration must yield at least one batch")
    out = clone(model).eval()
    for name, _ in layers:
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        lin = getattr(parent, child)
        w, scale = lin.weight.detach().float(), None
        if method == "gptq":
            x = linear_inputs(out, lin, calib).double()
            g = gptq_quantize(w, x.T @ x, bits, group_size)
        elif method == "awq":
            scale, _ = awq_search(w, linear_inputs(out, lin, calib), bits, group_size)
            g = quantize_groupwise(w * scale, bits, group_size)
        else:
            g = quantize_groupwise(w, bits, group_size)
        setattr(parent, child, QuantizedLinear(g, lin.bias, scale))
    return out
