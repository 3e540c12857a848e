"""Weight-only quantization of a language model's linear layers: RTN, GPTQ, AWQ.

A decoder spends its time at batch 1 reading weights, so the weights are what
to shrink; activations stay float. Every weight row is cut into groups of
``group_size`` input weights, and each group gets its own scale and zero point
(asymmetric, min-max)::

    s = (max - min) / (2**bits - 1),   z = round(-min / s),   q = clamp(round(w / s) + z)

* **Round-to-nearest** (:class:`RTNConfig`; :func:`companion.quant.quantize` with
  ``block_size=(1, group_size)``) rounds every weight on its own.
* **GPTQ** (:class:`GPTQConfig`, :func:`gptq_quantize`, Frantar et al. 2023) quantizes one input
  column at a time and spreads its rounding error over the columns not yet
  quantized, weighted by the inverse Hessian ``H = 2 X^T X`` of the layer's
  calibration inputs, so the layer *output* error ``||XW^T - XQ^T||`` is what
  is minimised, not the weight error. ``act_order`` takes the columns with
  the largest ``H_jj`` first.
* **AWQ** (:class:`AWQConfig`, Lin et al. 2024) multiplies the input channels that see large
  activations by ``s_j = mean|x_j|^alpha`` before rounding, choosing ``alpha``
  per group of linears that share an input on the *block's* output error,
  folds ``1/s`` into the preceding norm or linear (:func:`fold_scales_`, so no
  operation is added), then shrinks each group's range (:func:`awq_clip`).

:func:`quantize_lm` returns a copy whose chosen linears are
:class:`companion.quant.QuantizedWeightLayer`: the codes packed at their bit
width (:func:`companion.quant.pack_bits`: 3-bit codes take 3 bits), fp16
scales, zero points packed like the codes. Its forward pass dequantizes and
runs a float matmul: the reference of the arithmetic and of the file size.
The fast kernels that read 4- and 8-bit weights directly are in
:mod:`companion.llm`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import (
    check_bool,
    check_callable,
    check_float,
    check_int,
    check_module,
    check_tensor,
)
from .lm_calibrate import BlockCalibration, block_inputs, decoder_blocks, in_blocks, linears
from .quant.affine import QTensor, _codes, choose_qparams, dequantize, quantize
from .quant.modules import QuantizedWeightLayer
from .train import clone

__all__ = [
    "RTNConfig",
    "GPTQConfig",
    "AWQConfig",
    "gptq_quantize",
    "smooth_scales",
    "scale_groups",
    "fold_scales_",
    "smooth_lm",
    "awq_clip",
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


def _check_scheme(bits: object, group_size: object) -> None:
    check_int(bits, "bits", min_value=2, max_value=8)
    if group_size is not None:
        check_int(group_size, "group_size", min_value=1)


# --------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class RTNConfig:
    """Round-to-nearest, group-wise min-max (asymmetric); needs no calibration.

    Args:
        bits: 2 to 8; the codes are stored packed at that width.
        group_size: input weights per scale and zero point; must divide every
            chosen layer's input features. ``None``: one group per output row
            (per channel).

    Raises:
        TypeError: ``bits`` or ``group_size`` not an int.
        ValueError: ``bits`` outside 2..8, ``group_size`` < 1.
    """

    bits: int = 4
    group_size: int | None = 32

    def __post_init__(self) -> None:
        _check_scheme(self.bits, self.group_size)


@dataclass(frozen=True)
class GPTQConfig:
    """GPTQ (:func:`gptq_quantize`): each column's rounding error spread over the
    columns still to quantize, block by block on calibration data.

    Args:
        bits, group_size: as :class:`RTNConfig`.
        act_order: take the columns in order of decreasing ``H_jj`` (with static
            groups, so the stored layout is unchanged).
        damp: fraction of the Hessian's mean diagonal added to its diagonal.

    Raises:
        TypeError: a field of the wrong type.
        ValueError: ``bits`` outside 2..8, ``group_size`` < 1, ``damp`` <= 0.
    """

    bits: int = 4
    group_size: int | None = 32
    act_order: bool = True
    damp: float = 0.01

    def __post_init__(self) -> None:
        _check_scheme(self.bits, self.group_size)
        check_bool(self.act_order, "act_order")
        check_float(self.damp, "damp", min_value=0.0, min_inclusive=False)


@dataclass(frozen=True)
class AWQConfig:
    """AWQ: per-input-channel scales searched on each block's output, folded into
    the preceding norm or linear, then the clipping search (:func:`awq_clip`).

    Args:
        bits, group_size: as :class:`RTNConfig`.
        grid: exponents ``alpha`` tried for the scales ``mean|x_j|^alpha``
            (``0, 1/grid, ..., (grid - 1)/grid``), at least 2.
        batches: calibration batches the block's output error is measured on.

    Raises:
        TypeError: a field of the wrong type.
        ValueError: ``bits`` outside 2..8, ``group_size`` < 1, ``grid`` < 2,
            ``batches`` < 1.
    """

    bits: int = 4
    group_size: int | None = 32
    grid: int = 10
    batches: int = 1

    def __post_init__(self) -> None:
        _check_scheme(self.bits, self.group_size)
        check_int(self.grid, "grid", min_value=2)
        check_int(self.batches, "batches", min_value=1)


QuantizeConfig = RTNConfig | GPTQConfig | AWQConfig


def _rtn(weight: torch.Tensor, bits: int, group_size: int) -> QTensor:
    """Round-to-nearest codes of a ``(out, in)`` weight as every method here stores
    them: one min-max range per group of ``group_size`` inputs, fp16 scales."""
    return quantize(weight.detach().float(), bits, block_size=(1, group_size),
                    scale_dtype=torch.float16)


def _group_qparams(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp16-rounded min-max scale (as float) and zero point of every row of ``w``."""
    scale, zero = choose_qparams(w.amin(-1).float(), w.amax(-1).float(), bits,
                                 scale_dtype=torch.float16)
    return scale.float(), zero.float()


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int = 4,
                  group_size: int = 32, *, damp: float = 0.01, block_size: int = 128,
                  act_order: bool = False) -> QTensor:
    """GPTQ: quantize columns in order, compensating each rounding error.

    Returns the codes in the layout of :func:`companion.quant.quantize` with
    ``block_size=(1, group_size)`` and fp16 scales (min-max groups, unsigned
    codes), rounded by the same arithmetic.

    Args:
        weight: ``(out, in)``.
        hessian: ``(in, in)``, ``X^T X`` of the layer's calibration inputs (any
            positive factor; see :func:`companion.lm_calibrate.block_inputs`).
        damp: fraction of the mean diagonal added to the diagonal (keeps the
            Cholesky factorisation stable).
        block_size: columns updated together (lazy batch updates; without
            ``act_order`` rounded down to a multiple of ``group_size``, so that a
            group's range is taken from fully updated weights). The result is
            that of the column-by-column algorithm, up to float rounding.
        act_order: quantize the columns in order of decreasing ``H_jj`` (the
            loudest inputs first, while the most columns remain to absorb
            their error). The groups stay the consecutive columns of the
            original order, with their ranges taken from the weights before
            any update (*static groups*), so the stored layout is unchanged.
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
    check_bool(act_order, "act_order")
    if not act_order:
        block_size = max(group_size, block_size // group_size * group_size)

    W = weight.detach().double().clone()
    H = hessian.detach().double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    groups = cols // group_size
    scales = torch.zeros(W.shape[0], groups, dtype=torch.float32)
    zeros = torch.zeros_like(scales)
    if act_order:   # static groups: every range from the original weights
        scales, zeros = _group_qparams(W.reshape(W.shape[0], groups, group_size), bits)
        perm = torch.argsort(torch.diag(H), descending=True)
    else:
        perm = torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.diag(H).mean() * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    Q = torch.zeros_like(W)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = int(perm[i1 + i])       # the column's place in the original order
            g = col // group_size
            if not act_order and col % group_size == 0:
                # the group's range, from the error-updated weights still to quantize
                scales[:, g], zeros[:, g] = _group_qparams(W1[:, i:i + group_size], bits)
            q = _codes(W1[:, i], scales[:, g], zeros[:, g], 0, 2 ** bits - 1).double()
            s, z = scales[:, g].double(), zeros[:, g].double()
            Q[:, i1 + i] = q
            err = (W1[:, i] - (q - z) * s) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    Q = Q[:, torch.argsort(perm)]
    return QTensor(Q.to(torch.uint8), scales.half(), zeros.to(torch.int32), bits, None,
                   tuple(weight.shape), False, (1, group_size))


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


# --------------------------------------------------------------------------- AWQ
def scale_groups(block: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    """The input-channel scalings that can be folded away in one decoder block (AWQ's
    and SmoothQuant's).

    Each entry is ``(previous, linears)``: the module whose output is the
    linears' input (a norm, whose weight can absorb ``1/s``, or a linear, whose
    output rows can) and the names, inside the block, of the linears that
    share that input. Known blocks: a ``transformers`` Llama decoder layer and
    :class:`companion.lm.TinyGPT`'s block (whose MLP input follows a GELU, so
    only the two norms fold).

    Raises:
        ValueError: a block of another architecture (there is no general way to
            know which module feeds a linear).
    """
    names = {n for n, _ in block.named_modules()}
    if {"input_layernorm", "self_attn.q_proj", "mlp.down_proj"} <= names:
        groups = [("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                  ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
                  ("mlp.up_proj", ("mlp.down_proj",))]
        v, o = block.get_submodule("self_attn.v_proj"), block.get_submodule("self_attn.o_proj")
        if v.out_features == o.in_features:   # no grouped-query sharing of the values
            groups.append(("self_attn.v_proj", ("self_attn.o_proj",)))
        return groups
    if {"ln1", "attn.qkv", "ln2", "mlp.0"} <= names:
        return [("ln1", ("attn.qkv",)), ("ln2", ("mlp.0",))]
    raise ValueError(f"scale_groups does not know which module feeds each linear of a "
                     f"{type(block).__name__}; supported: transformers Llama, TinyGPT")


@torch.no_grad()
def fold_scales_(previous: nn.Module, layers: Iterable[nn.Linear], s: torch.Tensor) -> None:
    """Scale input channel ``j`` of ``layers`` by ``s_j`` and the output ``j`` of
    ``previous`` (a norm's weight and bias, or a linear's rows) by ``1/s_j``: the
    float model computes the same function, and no extra operation runs."""
    s = check_tensor(s, "s", floating=True)
    if isinstance(previous, nn.Linear):
        previous.weight.div_(s[:, None].to(previous.weight.dtype))
    else:
        if getattr(previous, "weight", None) is None:
            raise ValueError(f"previous ({type(previous).__name__}) has no weight to absorb 1/s")
        previous.weight.div_(s.to(previous.weight.dtype))
    if getattr(previous, "bias", None) is not None:
        previous.bias.div_(s.to(previous.bias.dtype))
    for lin in layers:
        lin.weight.mul_(s[None, :].to(lin.weight.dtype))


def awq_clip(weight: torch.Tensor, inputs: torch.Tensor, bits: int = 4, group_size: int = 32,
             *, grid: int = 11, max_shrink: float = 0.5) -> torch.Tensor:
    """AWQ's clipping search: shrink each group's range to ``r * [min, max]`` with
    ``r`` in ``[1 - max_shrink, 1]`` (``grid`` values), separately for every
    (output row, group), choosing the ``r`` whose rounding error changes the
    layer's output on ``inputs`` the least. Returns the clipped weight."""
    weight = check_tensor(weight, "weight", floating=True)
    inputs = check_tensor(inputs, "inputs", floating=True)
    if weight.dim() != 2 or inputs.dim() != 2 or inputs.shape[1] != weight.shape[1]:
        raise ValueError("inputs must be (n, in) with in = weight.shape[1]")
    bits, group_size = _check_bits_group(bits, group_size, weight.shape[1])
    grid = check_int(grid, "grid", min_value=2)
    max_shrink = check_float(max_shrink, "max_shrink", min_value=0.0, max_value=1.0,
                             max_inclusive=False)
    out, cols = weight.shape
    w = weight.detach().float().reshape(out, -1, group_size)
    x = inputs.float().reshape(len(inputs), -1, group_size)          # (n, groups, g)
    lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    best_err = torch.full(w.shape[:2], float("inf"))
    best = w.clone()
    for r in torch.linspace(1.0, 1.0 - max_shrink, grid).tolist():
        c = torch.clamp(w, r * lo, r * hi)
        q = dequantize(_rtn(c.reshape(out, cols), bits, group_size))
        d = q.reshape(out, -1, group_size) - w
        err = torch.einsum("ngj,ogj->nog", x, d).pow(2).sum(0)       # (out, groups)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better[..., None], c, best)
    return best.reshape(out, cols)


@torch.no_grad()
def _awq_block_(bc: BlockCalibration, chosen: set[str], prefix: str, bits: int,
                group: dict[str, int], grid: int, num_batches: int) -> dict[str, torch.Tensor]:
    """Search and fold AWQ's scales in one block; return the linears' new inputs."""
    block = bc.block
    assert block is not None
    inputs = dict(bc.inputs)
    ref = torch.cat(bc.run(num_batches))
    for prev_name, names in scale_groups(block):
        full = [prefix + n for n in names]
        if not all(f in chosen for f in full):   # fold only when every sharer is quantized
            continue
        lins = [block.get_submodule(n) for n in names]
        x_mean = inputs[full[0]].abs().mean(0).clamp_min(1e-5)
        originals = [lin.weight.detach().clone() for lin in lins]
        best = (float("inf"), None)
        for alpha in (i / grid for i in range(grid)):
            s = x_mean ** alpha
            s = s / (s.max() * s.min()).sqrt()
            for f, lin, w in zip(full, lins, originals, strict=True):
                lin.weight.copy_(dequantize(_rtn(w * s, bits, group[f])) / s)
            err = (torch.cat(bc.run(num_batches)) - ref).pow(2).mean().item()
            if err < best[0]:
                best = (err, s)
        for lin, w in zip(lins, originals, strict=True):
            lin.weight.copy_(w)
        s = best[1]
        fold_scales_(block.get_submodule(prev_name), lins, s)
        for f in full:
            inputs[f] = inputs[f] / s
    return inputs


def smooth_lm(model: nn.Module, calibration: Iterable[torch.Tensor], *, alpha: float = 0.5
              ) -> nn.Module:
    """SmoothQuant (Xiao et al. 2023): a float copy of ``model`` whose activation
    outliers have moved into the weights.

    For every group of linears sharing an input (:func:`scale_groups`), input
    channel ``j`` is divided by ``s_j = max|x_j|^alpha / max|w_j|^(1-alpha)``
    (``max|w_j|`` over the group's weights) and the weights' column ``j`` is
    multiplied by it, folded into the preceding norm or linear
    (:func:`fold_scales_`): the float model computes the same function, and
    per-tensor int8 activations lose less. ``max|x_j|`` comes from the
    calibration batches, block by block.
    """
    alpha = check_float(alpha, "alpha", min_value=0.0, max_value=1.0)
    out = clone(check_module(model, "model")).eval()
    blocks_name = decoder_blocks(out)[0]
    for bc in block_inputs(out, calibration):
        prefix = f"{blocks_name}.{bc.index}."
        for prev, names in scale_groups(bc.block):
            lins = [bc.block.get_submodule(n) for n in names]
            w = torch.cat([lin.weight.detach().float() for lin in lins])
            s = smooth_scales(bc.inputs[prefix + names[0]].abs().amax(0), w, alpha)
            fold_scales_(bc.block.get_submodule(prev), lins, s)
    return out


def activation_absmax(model: nn.Module, calibration: Iterable[torch.Tensor],
                      filter_fn: Callable[[nn.Module, str], bool] | None = None
                      ) -> dict[str, torch.Tensor]:
    """Per-input-channel ``max |x|`` that every chosen ``nn.Linear`` receives
    (default: the linears inside the decoder blocks)."""
    return {name: x.abs().amax(dim=0) for bc in block_inputs(model, calibration, filter_fn)
            for name, x in bc.inputs.items()}


def quantize_lm(model: nn.Module, config: QuantizeConfig, *,
                calibration: Iterable[torch.Tensor] | None = None,
                filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """A copy of ``model`` with its linear weights quantized group-wise.

    The chosen linears become :class:`companion.quant.QuantizedWeightLayer`
    (codes packed at ``config.bits``, fp16 scales, packed zero points).

    Args:
        model: a decoder language model (not modified).
        config: :class:`RTNConfig` (round to nearest), :class:`GPTQConfig` or
            :class:`AWQConfig`: the method, bits and group size. GPTQ and AWQ
            go block by block (:func:`companion.lm_calibrate.block_inputs`),
            each block seeing the outputs of the quantized blocks before it.
        calibration: an iterable of token batches (``(batch, time)`` int64);
            needed by :class:`GPTQConfig` and :class:`AWQConfig`, ignored by
            :class:`RTNConfig`.
        filter_fn: ``filter_fn(module, name) -> bool`` chooses the layers
            (default: the linears inside the decoder blocks,
            :func:`companion.lm_calibrate.in_blocks`; the LM head stays float).

    Returns:
        The quantized copy, in eval mode.

    Raises:
        TypeError: ``config`` not one of the three configs, ``model`` not a
            module, ``filter_fn`` not callable.
        ValueError: GPTQ or AWQ without ``calibration``, a group size that does
            not divide a chosen layer, a ``filter_fn`` that chooses no
            ``nn.Linear``, or an empty calibration set.
    """
    check_module(model, "model")
    if not isinstance(config, (RTNConfig, GPTQConfig, AWQConfig)):
        raise TypeError(f"config must be an RTNConfig, a GPTQConfig or an AWQConfig, "
                        f"got {type(config).__name__}")
    check_callable(filter_fn, "filter_fn", optional=True)
    if not isinstance(config, RTNConfig) and calibration is None:
        raise ValueError(f"calibration: {type(config).__name__} needs calibration batches "
                         "(token ids)")
    out = clone(model).eval()
    chosen_fn = filter_fn or in_blocks(out)
    layers = linears(out, chosen_fn)
    if not layers:
        raise ValueError("filter_fn: the model has no nn.Linear chosen by filter_fn")
    bits = config.bits
    group = {n: m.in_features if config.group_size is None else config.group_size
             for n, m in layers}
    for n, m in layers:
        try:
            _check_bits_group(bits, group[n], m.in_features)
        except ValueError as e:
            raise ValueError(f"config: layer {n!r}: {e}") from e

    def replace(name: str, q: QTensor) -> None:
        out.set_submodule(name, QuantizedWeightLayer(out.get_submodule(name), weight=q))

    if isinstance(config, RTNConfig):
        for name, lin in layers:
            replace(name, _rtn(lin.weight, bits, group[name]))
        return out
    chosen = {n for n, _ in layers}
    blocks_name = decoder_blocks(out)[0]
    for bc in block_inputs(out, calibration, chosen_fn):
        inputs = bc.inputs
        if isinstance(config, AWQConfig) and bc.block is not None:
            inputs = _awq_block_(bc, chosen, f"{blocks_name}.{bc.index}.", bits, group,
                                 config.grid, config.batches)
        for name, x in inputs.items():
            w = out.get_submodule(name).weight.detach().float()
            if isinstance(config, GPTQConfig):
                x = x.double()
                q = gptq_quantize(w, x.T @ x, bits, group[name], damp=config.damp,
                                  act_order=config.act_order)
            else:
                sample = x[torch.linspace(0, len(x) - 1, min(len(x), 512)).long()]
                q = _rtn(awq_clip(w, sample, bits, group[name]), bits, group[name])
            replace(name, q)
    return out
