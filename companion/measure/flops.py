"""Multiply-accumulates of one forward pass, counted operator by operator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._checks import check_example_input, check_module, evaluating
from .table import Table


# --------------------------------------------------------------------------- FLOPs
@dataclass
class FlopReport:
    """Multiply-accumulates of one forward pass; FLOPs = 2 x MACs."""

    macs: int
    per_layer: list[dict[str, Any]] = field(default_factory=list)
    batch_size: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def table(self) -> Table:
        return Table(self.per_layer, title=f"MACs per layer (batch {self.batch_size})")

    def __str__(self) -> str:
        return (f"{self.table()}\ntotal {self.macs:,} MACs = {self.flops:,} FLOPs "
                f"for a batch of {self.batch_size}")


def _rnn_macs(mod: nn.Module, inputs: tuple) -> int:
    """Analytic MACs of a (possibly quantized) RNN/LSTM/GRU: gates x (input + hidden) per step,
    plus the projection of an LSTM with ``proj_size``."""
    x = inputs[0]
    if isinstance(x, nn.utils.rnn.PackedSequence):
        steps = int(x.data.shape[0])  # total time steps summed over the batch
        batch = 1
    else:
        seq_dim = 1 if mod.batch_first else 0
        steps = x.shape[seq_dim] if x.dim() == 3 else x.shape[0]
        batch = x.shape[1 - seq_dim] if x.dim() == 3 else 1
    gates = {"LSTM": 4, "GRU": 3}.get(mod.mode, 1)
    dirs = 2 if mod.bidirectional else 1
    h = mod.hidden_size
    proj = getattr(mod, "proj_size", 0) or 0
    out = proj or h                      # what the next step and the next layer see
    macs = 0
    for layer in range(mod.num_layers):
        in_size = mod.input_size if layer == 0 else out * dirs
        macs += dirs * (gates * h * (in_size + out) + h * proj)
    return macs * steps * batch


def _is_recurrent(mod: nn.Module) -> bool:
    # nn.RNN/LSTM/GRU and torch.ao's dynamically quantized copies (not nn.RNNBase subclasses)
    from torch.ao.nn.quantized.dynamic.modules.rnn import RNNBase as DynamicRNNBase

    return isinstance(mod, (nn.RNNBase, DynamicRNNBase))


def _quantized_formulas() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for torch.ao's int8 kernels, which FlopCounterMode does not know.

    Each gets the raw arguments and the output; weights come from the packed parameters.
    """
    def linear(x, packed, *args, out_val=None, **kwargs) -> int:
        w = packed.unpack()[0]
        return 2 * (out_val.numel() // w.shape[0]) * w.shape[0] * w.shape[1]

    def conv(x, packed, *args, out_val=None, **kwargs) -> int:
        w = packed.weight() if hasattr(packed, "weight") else packed.unpack()[0]
        per_output = w[0].numel()        # (in_channels / groups) x kernel elements
        return 2 * out_val.numel() * per_output

    for f in (linear, conv):
        f._get_raw = True
    ops: dict[Any, Callable[..., int]] = {}
    q = torch.ops.quantized
    for name in ("linear", "linear_relu", "linear_dynamic", "linear_relu_dynamic",
                 "linear_dynamic_fp16"):
        if hasattr(q, name):
            ops[getattr(q, name)] = linear
    for name in ("conv1d", "conv2d", "conv3d", "conv1d_relu", "conv2d_relu", "conv3d_relu"):
        if hasattr(q, name):
            ops[getattr(q, name)] = conv
    return ops


def _sdpa_cpu_formula() -> dict[Any, Callable[..., int]]:
    """The fused CPU attention kernel, which FlopCounterMode misses (its formula covers the
    CUDA kernels only): Q K^T and the weighted sum of V, 2 x B x H x Lq x Lk x d each."""
    from torch.utils.flop_counter import sdpa_flop_count

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        return {}

    def flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(q_shape, k_shape, v_shape)
    return {op: flops}


def count_flops(model: nn.Module, example_input: torch.Tensor | tuple) -> FlopReport:
    """Count the multiply-accumulates of one forward pass, operator by operator.

    Built on :class:`torch.utils.flop_counter.FlopCounterMode`, which sees
    every matrix product PyTorch runs: layers, functional code such as
    ``scaled_dot_product_attention`` or ``x @ w`` in ``forward``, transposed
    convolutions, and (with formulas added here) torch.ao's int8 kernels and
    the fused CPU attention kernel. Recurrent layers (RNN/LSTM/GRU, float or
    dynamically quantized) run fused kernels that hide their products, so
    they are counted analytically (``proj_size`` included). Elementwise work
    (activations, normalization, pooling, softmax) is not counted: it is
    small next to the matrix products for the models of this book.

    Args:
        model: run once in eval mode on ``example_input`` (mode restored after).
        example_input: a tensor, or a tuple of positional inputs.

    Returns:
        A :class:`FlopReport`: the total and one row per module that runs
        products itself; products written in a module's own ``forward``
        (functional attention, say) appear on that module's row.
    """
    from torch.utils.flop_counter import FlopCounterMode

    check_module(model, "model")
    args = check_example_input(example_input)
    names = {mod: name for name, mod in model.named_modules(remove_duplicate=True)}
    recurrent = {m for m in names if _is_recurrent(m)}
    inside_rnn = {id(sub) for m in recurrent for sub in m.modules() if sub is not m}
    shapes: dict[str, Any] = {}
    rnn_macs: dict[str, int] = {}

    def hook(mod, inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        name = names[mod]
        shapes[name] = tuple(out.shape) if isinstance(out, torch.Tensor) else "-"
        if mod in recurrent:
            rnn_macs[name] = rnn_macs.get(name, 0) + _rnn_macs(mod, inputs)

    handles = [m.register_forward_hook(hook) for m in names]
    counter = FlopCounterMode(display=False,
                              custom_mapping={**_quantized_formulas(), **_sdpa_cpu_formula()})
    # nn.MultiheadAttention / TransformerEncoderLayer take a fused "fast path" in inference
    # whose kernel has no formula; the plain path does the same products, op by op.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), evaluating(model), counter:
            model(*args)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in handles:
            h.remove()
    # FlopCounterMode names modules "<RootClass>.<fqn>" and adds each op to every ancestor:
    # a module's own products are its count minus its children's.
    root = type(model).__name__
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}

    def total(name: str) -> int:
        return counts.get(f"{root}.{name}" if name else root, 0)

    rows: list[dict[str, Any]] = []
    for mod, name in names.items():
        if id(mod) in inside_rnn:
            continue
        if mod in recurrent:
            macs = rnn_macs.get(name, 0)
        else:
            own = total(name) - sum(total(f"{name}.{c}" if name else c)
                                    for c, _ in mod.named_children())
            macs = own // 2
        if macs > 0:
            rows.append({"layer": name or "(model)", "type": type(mod).__name__,
                         "macs": int(macs), "output": shapes.get(name, "-")})
    batch = int(args[0].shape[0]) if args[0].dim() > 1 else 1
    return FlopReport(sum(r["macs"] for r in rows), rows, batch)
