"""Calibration of a decoder, one block at a time: the inputs GPTQ, AWQ and Wanda see.

Post-training methods that use data (GPTQ, AWQ, Wanda, SmoothQuant) need the
inputs each linear layer receives on calibration text. Running the whole model
once per layer costs a forward pass per layer (210 for SmolLM2-135M); the
papers instead go block by block: capture what the first block receives, run
each block on it with hooks on its linears, let the caller change the block,
and feed the changed block's outputs to the next. :func:`block_inputs` is that
loop, for any decoder whose blocks sit in one ``nn.ModuleList``
(:class:`companion.lm.TinyGPT`, a ``transformers`` Llama). Its hooks are the
library's one collector of layer inputs, shared with
:func:`companion.quant.calibrate` (``quant.observers._layer_hooks``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._checks import check_int, check_module, evaluating
from .quant.observers import _layer_hooks

__all__ = ["decoder_blocks", "in_blocks", "BlockCalibration", "block_inputs", "linears"]


def linears(model: nn.Module, filter_fn: Callable[[nn.Module, str], bool] | None = None
            ) -> list[tuple[str, nn.Linear]]:
    """``(name, layer)`` of every ``nn.Linear`` that ``filter_fn(module, name)`` chooses
    (all of them without one)."""
    return [(n, m) for n, m in check_module(model, "model").named_modules()
            if isinstance(m, nn.Linear) and (filter_fn is None or filter_fn(m, n))]


def decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """``(name, blocks)``: the ``nn.ModuleList`` of a decoder's repeated blocks, found
    as the module list that holds the most linear layers (``blocks`` of
    :class:`companion.lm.TinyGPT`, ``model.layers`` of a ``transformers`` Llama).

    Raises:
        ValueError: the model has no ``nn.ModuleList`` of blocks with linears.
    """
    check_module(model, "model")
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    count = lambda m: sum(isinstance(x, nn.Linear) for x in m.modules())   # noqa: E731
    lists = [(n, m) for n, m in lists if count(m)]
    if not lists:
        raise ValueError("model has no nn.ModuleList of blocks holding nn.Linear layers")
    return max(lists, key=lambda nm: count(nm[1]))


def in_blocks(model: nn.Module) -> Callable[[nn.Module, str], bool]:
    """The default layer choice of :func:`companion.lm_quant.quantize_lm` and
    :func:`companion.lm_prune.prune_lm`: the linears inside the decoder blocks (not
    the LM head, whose rows are the vocabulary, nor anything outside the blocks)."""
    prefix = decoder_blocks(model)[0] + "."
    return lambda _m, name: name.startswith(prefix)


class _Stop(Exception):
    pass


@dataclass
class BlockCalibration:
    """What :func:`block_inputs` yields for one decoder block.

    ``inputs``: chosen linear name -> its input rows ``(n, in_features)``;
    ``block``: the block (``None`` for the final yield of linears outside the
    blocks); ``run(num_batches)``: the block's outputs on the first
    ``num_batches`` calibration batches (all by default), with its weights as
    they are now, for losses measured on the block's output (AWQ).
    """

    index: int
    block: nn.Module | None
    inputs: dict[str, torch.Tensor]
    run: Callable[..., list[torch.Tensor]]


def _first_block_inputs(model: nn.Module, block: nn.Module, calibration: list[torch.Tensor]
                        ) -> list[tuple[tuple, dict]]:
    """``(args, kwargs)`` of the first block's call, once per calibration batch."""
    seen: list[tuple[tuple, dict]] = []

    def catch(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        kwargs = dict(kwargs)
        for key in ("past_key_values", "past_key_value", "cache"):   # no cache to fill
            if key in kwargs:
                kwargs[key] = None
        if "use_cache" in kwargs:
            kwargs["use_cache"] = False
        seen.append((args, kwargs))
        raise _Stop

    handle = block.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for batch in calibration:
            try:
                model(batch)
            except _Stop:
                pass
    finally:
        handle.remove()
    if len(seen) != len(calibration):
        raise ValueError("the model did not call its first decoder block on every batch")
    return seen


def _block_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def block_inputs(model: nn.Module, calibration: Iterable[torch.Tensor],
                 filter_fn: Callable[[nn.Module, str], bool] | None = None, *,
                 max_rows: int | None = None) -> Iterator[BlockCalibration]:
    """The inputs of the chosen linears, one decoder block at a time, as GPTQ,
    AWQ and Wanda need them: each block sees the outputs of the blocks before
    it *as the caller has changed them*.

    For every block this generator runs the block on the calibration
    activations with hooks on its chosen linears and yields a
    :class:`BlockCalibration` whose ``inputs`` are ``{name: rows}``
    (``(n, in_features)`` float32; at most ``max_rows`` rows, evenly spaced).
    The caller then changes the block in place (quantizes or prunes its
    linears), and on the next step the block runs again to give the next
    block its inputs. Two block passes per block: about two forward passes of
    the model over the calibration set in all, instead of one per layer.

    Chosen linears outside the blocks (an LM head) come last, in one yield,
    from a pass of the whole (changed) model.

    Args:
        calibration: token batches, ``(batch, time)`` int64.
        filter_fn: ``filter_fn(module, name) -> bool`` (default: every linear
            inside the blocks, :func:`in_blocks`).
    """
    check_module(model, "model")
    calib = list(calibration)
    if not calib:
        raise ValueError("calibration must yield at least one batch")
    if max_rows is not None:
        max_rows = check_int(max_rows, "max_rows", min_value=1)
    blocks_name, blocks = decoder_blocks(model)
    chosen = linears(model, filter_fn or in_blocks(model))
    if not chosen:
        raise ValueError("model has no nn.Linear chosen by filter_fn")
    # the checks above run at the call; the blocks run as the caller iterates
    return _block_steps(model, calib, blocks_name, blocks, chosen, max_rows)


@torch.inference_mode()
def _block_steps(model: nn.Module, calib: list[torch.Tensor], blocks_name: str,
                 blocks: nn.ModuleList, chosen: list[tuple[str, nn.Linear]],
                 max_rows: int | None) -> Iterator[BlockCalibration]:
    def collect(layers: list[tuple[str, nn.Module]], run: Callable[[], None]
                ) -> dict[str, torch.Tensor]:
        rows: dict[str, list[torch.Tensor]] = {n: [] for n, _ in layers}
        with _layer_hooks(dict(layers), lambda n, x: rows[n].append(
                x.detach().reshape(-1, x.shape[-1]).float())):
            run()
        out = {}
        for n, r in rows.items():
            x = torch.cat(r)
            if max_rows is not None and len(x) > max_rows:
                x = x[torch.linspace(0, len(x) - 1, max_rows).long()]
            out[n] = x
        return out

    with evaluating(model):
        inputs = _first_block_inputs(model, blocks[0], calib)
        per_block = [[(n, m) for n, m in chosen if n.startswith(f"{blocks_name}.{i}.")]
                     for i in range(len(blocks))]
        last = max((i for i, layers in enumerate(per_block) if layers), default=-1)
        for i, block in enumerate(blocks[:last + 1]):   # the blocks after the last chosen
            if per_block[i]:                            # one need not run
                def run(num_batches: int | None = None, b: nn.Module = block,
                        ins: list = inputs) -> list[torch.Tensor]:
                    return [_block_output(b(*a, **k)) for a, k in ins[:num_batches]]

                yield BlockCalibration(i, block, collect(per_block[i], run), run)
            if i < last:
                inputs = [((_block_output(block(*a, **k)),) + tuple(a[1:]), k)
                          for a, k in inputs]
        outside = [(n, m) for n, m in chosen if not n.startswith(blocks_name + ".")]
        if outside:
            def run_model(num_batches: int | None = None) -> list[torch.Tensor]:
                return [model(b) for b in calib[:num_batches]]

            yield BlockCalibration(len(blocks), None, collect(outside, run_model), run_model)
