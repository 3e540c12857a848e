"""Weight-only quantized linears on PyTorch's real CPU kernels, for decoding.

At batch 1 a decoder reads every weight once per token, so its speed is set by
bytes, and fewer bytes per weight is faster *only if a kernel reads the packed
weights directly*. PyTorch's CPU build has two such kernels:

* ``aten._weight_int4pack_mm_for_cpu``: 4-bit codes packed two per byte, one
  bf16 scale and one bf16 *float* offset per group of 32-256 input weights
  (``w = (q - 8) * scale + offset``, the tinygemm layout);
* ``aten._weight_int8pack_mm``: int8 weights, one scale per output channel.

Both are fast only with **bf16 activations**; with fp32 activations they take
a slow fallback (measured in section 2.3). :func:`to_weight_only_` therefore
also turns the rest of the model to bf16. The codes may come from any method
(round-to-nearest, GPTQ, AWQ): :class:`Int4WeightOnlyLinear` is built from a
group-wise :class:`companion.quant.QTensor`, so the kernel runs exactly the
codes whose perplexity was measured (the scale is rounded to bf16 on the way).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._checks import check_choice, check_int, check_module
from ..lm_calibrate import in_blocks, linears
from ..measure.cpu import cpu_info
from ..quant.affine import QTensor, quantize

__all__ = ["Int4WeightOnlyLinear", "Int8WeightOnlyLinear", "W8A8Linear", "to_weight_only_",
           "to_w8a8_"]

_INT4_GROUPS = (32, 64, 128, 256)


def _rows(x: torch.Tensor, out_features: int, bias: torch.Tensor | None,
          matmul: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Run a 2-D kernel on ``x`` of any leading shape: flatten to rows, add the bias,
    restore the shape and the caller's dtype."""
    y = matmul(x.reshape(-1, x.shape[-1]))
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], out_features).to(x.dtype)


class Int4WeightOnlyLinear(nn.Module):
    """A linear layer stored as packed 4-bit codes, run by ``_weight_int4pack_mm_for_cpu``.

    Args:
        g: 4-bit unsigned group-wise codes of a ``(out, in)`` weight (``g.bits == 4``,
            ``g.block_size == (1, group_size)`` with ``group_size`` in 32, 64, 128,
            256), e.g. from ``companion.quant.quantize(w, 4, block_size=(1, 64),
            scale_dtype=torch.float16)`` or :func:`companion.lm_quant.gptq_quantize`.
        bias: optional float bias.

    Raises:
        TypeError: ``g`` not a QTensor.
        ValueError: ``g`` not 4-bit, unsigned codes in groups of 32-256 along the rows.
    """

    def __init__(self, g: QTensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(g, QTensor):
            raise TypeError(f"g must be a QTensor, got {type(g).__name__}")
        if g.bits != 4 or g.is_signed:
            raise ValueError(f"g must hold unsigned 4-bit codes for the int4 kernel, got "
                             f"{g.bits}-bit {'signed' if g.is_signed else 'unsigned'} codes")
        block = g.block_size
        if len(g.shape) != 2 or block is None or block[0] != 1 or block[1] not in _INT4_GROUPS:
            raise ValueError(f"g.block_size must be (1, group_size) with group_size in "
                             f"{_INT4_GROUPS} for the int4 kernel, got {block}")
        self.out_features, self.in_features = g.shape
        self.group_size = block[1]
        scale = g.scale.float()
        # (q - z) * s = (q - 8) * s + (8 - z) * s: the integer zero point becomes a float offset
        offset = (8 - g.zero_point.float()) * scale
        sz = torch.stack([scale, offset], dim=-1).transpose(0, 1).contiguous()
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            g.codes.to(torch.int32).contiguous(), 1))
        self.register_buffer("scale_offset", sz.to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rows(x, self.out_features, self.bias, lambda x2: torch.ops.aten.
                     _weight_int4pack_mm_for_cpu(x2.to(torch.bfloat16), self.packed,
                                                 self.group_size, self.scale_offset))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, group_size={self.group_size}"


class Int8WeightOnlyLinear(nn.Module):
    """A linear layer stored as int8 with one scale per output channel (symmetric,
    ``scale = max|w_row| / 127``), run by ``_weight_int8pack_mm``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        check_module(linear, "linear")
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp_min(1e-12)
        self.out_features, self.in_features = w.shape
        self.register_buffer("weight_int8", torch.round(w / scale[:, None]).clamp(-127, 127)
                             .to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None
                             else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rows(x, self.out_features, self.bias, lambda x2: torch.ops.aten.
                     _weight_int8pack_mm(x2.to(torch.bfloat16), self.weight_int8, self.scale))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}"


class W8A8Linear(nn.Module):
    """Weights *and* activations in int8, multiplied by a real int8 GEMM (``torch._int_mm``,
    int8 x int8 summed in int32), then rescaled to float.

    Weights: symmetric per output channel. Activations: symmetric, quantized at run
    time with one scale per tensor (``act="per-tensor"``, what SmoothQuant's
    smoothing is for) or one per token (``act="per-token"``)::

        y = (q_x @ q_w^T) * s_x * s_w      (q_x, q_w int8, the product in int32)

    ``weight_qmax`` bounds the weight codes to ``[-weight_qmax, weight_qmax]``. By
    default it is 127 on CPUs with an int8 dot-product instruction (VNNI, AMX) and
    63 (7-bit weights) elsewhere: without VNNI, the CPU int8 GEMM multiplies
    ``x + 128`` (uint8) by the weights with ``vpmaddubsw``, which adds pairs of
    products into a *saturating* int16, so ``2 x 255 x 127`` overflows and the
    result is silently wrong (measured: off by up to 113,376 with AVX2 only); with
    ``|q_w| <= 63`` the pairs fit. This is fbgemm's ``reduce_range`` on the weights.
    """

    def __init__(self, linear: nn.Linear, act: str = "per-tensor",
                 weight_qmax: int | None = None) -> None:
        super().__init__()
        check_module(linear, "linear")
        self.act = check_choice(act, "act", ("per-tensor", "per-token"))
        if weight_qmax is None:
            weight_qmax = 127 if cpu_info().int8_dot_product else 63
        self.weight_qmax = check_int(weight_qmax, "weight_qmax", min_value=1, max_value=127)
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / self.weight_qmax).clamp_min(1e-12)
        self.out_features, self.in_features = w.shape
        q = torch.round(w / scale[:, None]).clamp(-self.weight_qmax, self.weight_qmax
                                                  ).to(torch.int8)
        self.register_buffer("weight_int8_t", q.t().contiguous())     # (in, out) for _int_mm
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def bits_per_weight(self) -> float:
        """Stored bits per weight: the int8 codes and the per-channel scales (not the
        bias), as :meth:`companion.quant.QuantizedWeightLayer.bits_per_weight`."""
        stored = self.weight_int8_t.nbytes + self.weight_scale.nbytes
        return 8 * stored / (self.out_features * self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def int8_gemm(x2: torch.Tensor) -> torch.Tensor:
            x2 = x2.float()
            absmax = (x2.abs().amax(dim=1, keepdim=True) if self.act == "per-token"
                      else x2.abs().max())
            s_x = (absmax / 127).clamp_min(1e-12)
            q_x = torch.round(x2 / s_x).clamp(-127, 127).to(torch.int8)
            acc = torch._int_mm(q_x, self.weight_int8_t)             # int32
            return acc.float() * s_x * self.weight_scale

        return _rows(x, self.out_features, self.bias, int8_gemm)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, act={self.act}, "
                f"weight_qmax={self.weight_qmax}")


def to_w8a8_(model: nn.Module, *, act: str = "per-tensor",
             filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """Swap the chosen linears of ``model`` (in place; default: those inside the decoder
    blocks, :func:`companion.lm_calibrate.in_blocks`) for :class:`W8A8Linear`. The rest
    stays float32. Smooth the model first (:func:`companion.lm_quant.smooth_lm`) to
    move activation outliers into the weights."""
    check_module(model, "model")
    check_choice(act, "act", ("per-tensor", "per-token"))
    for name, lin in linears(model, filter_fn or in_blocks(model)):
        model.set_submodule(name, W8A8Linear(lin, act))
    return model


def to_weight_only_(model: nn.Module, kind: str, *, group_size: int = 64,
                    codes: dict[str, QTensor] | None = None,
                    filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """Turn ``model`` (in place) into a bf16 model whose chosen linears run a real kernel.

    Args:
        kind: ``"bf16"`` (no quantization), ``"int8"`` (per-channel int8) or
            ``"int4"`` (4-bit groups of ``group_size``).
        codes: for ``"int4"``, the codes to use per layer name (from GPTQ, AWQ,
            ...); layers without an entry are rounded to nearest.
        filter_fn: ``filter_fn(module, name) -> bool`` chooses the linears
            (default: all, the LM head included).

    The rest of the model (embeddings, norms) becomes bf16: the kernels want
    bf16 activations. A tied LM head gets its own quantized copy; the
    embedding table stays bf16.
    """
    check_module(model, "model")
    check_choice(kind, "kind", ("bf16", "int8", "int4"))
    group_size = check_int(group_size, "group_size", min_value=1)
    if kind == "int4" and group_size not in _INT4_GROUPS:
        raise ValueError(f"group_size must be one of {_INT4_GROUPS} for int4, got {group_size}")
    codes = dict(codes or {})
    chosen = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)
              and (filter_fn is None or filter_fn(m, n))]
    unknown = set(codes) - {n for n, _ in chosen}
    if unknown:
        raise ValueError(f"codes: no chosen linear named {sorted(unknown)[0]!r}")
    if kind != "bf16":
        for name, lin in chosen:
            if kind == "int8":
                new: nn.Module = Int8WeightOnlyLinear(lin)
            else:
                g = codes.get(name) or quantize(lin.weight.detach().float(), 4,
                                                block_size=(1, group_size),
                                                scale_dtype=torch.float16)
                new = Int4WeightOnlyLinear(g, lin.bias)
            model.set_submodule(name, new)
    return model.to(torch.bfloat16)
