"""Static int8 for any exportable model: PT2E with torchao, lowered by ``torch.compile``.

PyTorch's current path for int8 on x86 (the torch.ao eager flow in
:mod:`companion.quant` needs an ``nn.Sequential``-like model with fusable
neighbours and is deprecated):

1. ``torch.export`` captures the model as a graph (any ``nn.Module`` that
   exports: residual adds, functional code, your own classes);
2. torchao's ``X86InductorQuantizer`` annotates it (int8 activations per
   tensor, int8 weights per output channel, BatchNorm folded into the conv),
   ``prepare_pt2e`` inserts observers, calibration batches run through it,
   ``convert_pt2e`` replaces observers by quantize / dequantize pairs;
3. ``torch.compile`` (Inductor, with freezing) fuses each
   dequantize -> conv -> quantize pattern into one oneDNN int8 kernel.

The arithmetic is the one section 2.1 derives (affine codes, per-channel
symmetric weights); only the engine differs. Without step 3 the converted
graph runs the quantize / dequantize pairs in float: a *simulation*.
``torchao`` is imported here only, so ``import companion`` stays light.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ._checks import (
    CALIBRATION_BATCHES,
    TORCHAO_IMPORT_LOGGERS,
    check_calibration,
    check_example_input,
    check_int,
    check_module,
    quiet_loggers,
    run_calibration,
)

__all__ = ["quantize_pt2e", "compile_int8"]



# torchao is imported when this module is, quietly: a reader's own torchao imports
# after ``from companion import pt2e`` then print nothing either.
try:
    with quiet_loggers(*TORCHAO_IMPORT_LOGGERS):
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
except ImportError:  # pragma: no cover - torchao is in the engines extra
    convert_pt2e = prepare_pt2e = xiq = None


def _one_partition_per_call(graph: torch.fx.Graph) -> None:
    """Name every call of a module reused in ``forward`` apart.

    Non-strict ``torch.export`` records both calls of a shared module (the
    single ``self.relu`` of a torchvision ``BasicBlock``) under one name; the
    quantizer's pattern matcher then sees one partition with two outputs and
    fails ("Input partition has more than one output node").
    """
    calls: Counter[str] = Counter()
    previous = None
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or not stack:
            continue
        key = list(stack)[-1]
        fqn, cls = stack[key]
        if fqn != previous:
            calls[fqn] += 1
        previous = fqn
        if calls[fqn] > 1:
            node.meta["nn_module_stack"] = {**stack, key: (f"{fqn}#{calls[fqn]}", cls)}


def _drop_unused_tensors(gm: torch.fx.GraphModule) -> None:
    """Delete the float weights ``convert_pt2e`` leaves behind once BatchNorm is folded and
    weights are int8 constants, so the state dict holds what the graph reads (its size is
    the artifact's size)."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in list(gm.state_dict()):
        if name not in used:
            owner, _, attr = name.rpartition(".")
            module = gm.get_submodule(owner) if owner else gm
            if attr in module._parameters:
                del module._parameters[attr]
            elif attr in module._buffers:
                del module._buffers[attr]


@torch.no_grad()
def quantize_pt2e(model: nn.Module, example_input: Any, calibration: Iterable, *,
                  num_batches: int = CALIBRATION_BATCHES) -> torch.fx.GraphModule:
    """Static int8 (per-channel weights, per-tensor activations) for any exportable model.

    Args:
        model: a float model in eval mode or not (a copy is exported in eval mode;
            the caller's model is unchanged).
        example_input: one input batch (a tensor or a tuple), of any batch size,
            one sample included; its first dimension is exported as dynamic, so
            any batch size runs afterwards.
        calibration: ``(inputs, labels)`` batches (or bare input tensors) from
            training or validation data: never the data you evaluate on.
        num_batches: how many calibration batches to observe (default
            ``CALIBRATION_BATCHES``, 8).

    Returns:
        The converted ``GraphModule``: int8 weights, quantize / dequantize
        around each int8 operation. Run it through :func:`compile_int8` for
        real int8 kernels; as it is, it simulates int8 in float.

    Raises:
        TypeError: ``model`` not a module, ``example_input`` not tensors,
            ``calibration`` not an iterable of batches (None, a string, a lone
            tensor) or its batches' inputs not tensors.
        ValueError: ``calibration`` yields no batch.
        ImportError: torchao is missing (``pip install torchao``).
    """
    check_module(model, "model")
    args = check_example_input(example_input)
    num_batches = check_int(num_batches, "num_batches", min_value=1)
    check_calibration(calibration)
    if xiq is None:  # pragma: no cover - torchao is in the engines extra
        raise ImportError("quantize_pt2e needs torchao (pip install torchao)")
    with warnings.catch_warnings():   # deep-copying an exported module warns about pytrees
        warnings.simplefilter("ignore", FutureWarning)
        float_model = copy.deepcopy(model).eval()
    dynamic = tuple({0: torch.export.Dim.DYNAMIC} if a.dim() else None for a in args)
    # a batch of one would be specialized to 1 ("hint of 1"): export on the sample twice
    traced = tuple(torch.cat([a, a]) if a.dim() and a.shape[0] == 1 else a for a in args)
    graph = torch.export.export(float_model, traced, dynamic_shapes=dynamic).module()
    _one_partition_per_call(graph.graph)
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    with warnings.catch_warnings():   # "The input of maxpool2d is not quantized, skip ..."
        warnings.filterwarnings("ignore", message="The input of .* is not quantized",
                                category=UserWarning)
        prepared = prepare_pt2e(graph, quantizer)
    run_calibration(prepared, calibration, num_batches)
    converted = convert_pt2e(prepared)
    _drop_unused_tensors(converted)
    return converted


def compile_int8(converted: torch.fx.GraphModule, example_input: Any) -> Callable[..., Any]:
    """Lower a :func:`quantize_pt2e` graph to oneDNN int8 kernels with ``torch.compile``.

    Compiles for the batch size of ``example_input`` with Inductor's
    *freezing* (weights become constants, which the int8 fusions need) and
    runs it once, so the compile happens here and not in the first timed
    call. The returned callable takes any batch size: it runs the compiled
    graph on chunks of that size, padding the last one with zeros (samples
    are independent in eval mode), so one compile serves timing and
    evaluation alike (at one thread count: a call at another one compiles
    once more). (Compiling with a dynamic batch instead trips a
    stride check in Inductor's int8 convolution for some models in torch 2.13.)
    """
    if not isinstance(converted, torch.fx.GraphModule):
        raise TypeError(f"converted must be the GraphModule quantize_pt2e returns, "
                        f"got {type(converted).__name__}")
    args = check_example_input(example_input)
    size = int(args[0].shape[0])
    compiled = torch.compile(converted, dynamic=False)

    def call(*inputs: torch.Tensor) -> Any:
        # one grad mode and one kind of input for every call: a call under another mode,
        # on an inference-mode tensor or on a view at another storage offset (the second
        # chunk of a batch) would fail the compiled graph's guards and compile it again
        with torch.inference_mode(False):
            inputs = tuple(
                t if t.is_contiguous() and t.storage_offset() == 0 and not t.is_inference()
                else t.clone(memory_format=torch.contiguous_format) for t in inputs)
        with torch._inductor.config.patch(freezing=True), torch.inference_mode(), \
                warnings.catch_warnings():
            # a compile (the first call, or another thread count) lowers the int8 ops with
            # code that warns about itself; about 2 us per call, under 1% of an int8 call
            warnings.filterwarnings("ignore", message="To copy construct from a tensor",
                                    category=UserWarning)
            return compiled(*inputs)

    call(*args)

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        n = int(inputs[0].shape[0])
        if n == size:
            return call(*inputs)
        outs = []
        for start in range(0, n, size):
            chunk = [t[start:start + size] for t in inputs]
            short = size - chunk[0].shape[0]
            if short:
                chunk = [torch.cat([t, t.new_zeros((short, *t.shape[1:]))]) for t in chunk]
            outs.append(call(*chunk)[: size - short])
        return torch.cat(outs)
    return run
