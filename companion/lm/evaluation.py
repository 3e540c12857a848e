"""Measurements of a language model: perplexity, generation, decoding speed, memory."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import check_bool, check_float, check_int, check_module, check_tensor, evaluating
from .model import KVCache

if TYPE_CHECKING:
    from ..measure import LatencyComparison, Table


# --------------------------------------------------------------------------- measurements
@torch.inference_mode()
def perplexity(model: nn.Module, tokens: torch.Tensor, *, block_size: int | None = None,
               batch_size: int = 16, max_windows: int | None = None,
               int8_kv: bool = False) -> float:
    """``exp`` of the mean next-byte loss over consecutive windows of ``tokens``.

    Windows do not overlap, so every token is predicted once (with the context
    of its own window); ``max_windows`` keeps the first ones only. With
    ``int8_kv`` the keys and values go through an int8 :class:`KVCache`, as
    they would during generation. The model's mode is restored afterwards.
    """
    check_module(model, "model")
    tokens = check_tensor(tokens, "tokens")
    block = block_size or model.config.block_size
    block = check_int(block, "block_size", min_value=1)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    check_bool(int8_kv, "int8_kv")
    n = (len(tokens) - 1) // block
    if n < 1:
        raise ValueError(f"tokens ({len(tokens)}) must hold at least one window of "
                         f"{block + 1}")
    if max_windows is not None:
        n = min(n, check_int(max_windows, "max_windows", min_value=1))
    x = tokens[: n * block].view(n, block)
    y = tokens[1: n * block + 1].view(n, block)
    total = 0.0
    with evaluating(model):
        for i in range(0, n, batch_size):
            cache = KVCache(model.config.n_layers, int8=True) if int8_kv else None
            logits = model(x[i:i + batch_size], cache).float()
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                     y[i:i + batch_size].reshape(-1), reduction="sum").item()
    return math.exp(total / (n * block))


@torch.inference_mode()
def generate(model: nn.Module, prompt: torch.Tensor, new_tokens: int, *,
             use_cache: bool = True, int8_cache: bool = False, temperature: float = 0.0,
             seed: int = 0) -> torch.Tensor:
    """Continue ``prompt`` (a 1-D or ``(batch, time)`` int64 tensor) by ``new_tokens``.

    ``temperature=0`` is greedy. With ``use_cache`` the prompt is run once and
    every new token costs one step over the cached keys/values; without it the
    whole sequence is recomputed for every token (what naive code does).
    """
    check_module(model, "model")
    prompt = check_tensor(prompt, "prompt")
    if prompt.dtype != torch.long or prompt.dim() not in (1, 2):
        raise ValueError("prompt must be a 1-D or 2-D int64 tensor")
    new_tokens = check_int(new_tokens, "new_tokens", min_value=1)
    check_bool(use_cache, "use_cache")
    temperature = check_float(temperature, "temperature", min_value=0.0)
    seq = prompt.unsqueeze(0) if prompt.dim() == 1 else prompt
    if seq.shape[1] + new_tokens > model.config.block_size:
        raise ValueError(f"prompt + new_tokens ({seq.shape[1] + new_tokens}) exceeds "
                         f"block_size {model.config.block_size}")
    gen = torch.Generator().manual_seed(check_int(seed, "seed", min_value=0))
    cache = KVCache(model.config.n_layers, int8=int8_cache) if use_cache else None
    with evaluating(model):
        logits = model(seq, cache)[:, -1]
        for _ in range(new_tokens):
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                probs = torch.softmax(logits.float() / temperature, -1)
                nxt = torch.multinomial(probs, 1, generator=gen)
            seq = torch.cat([seq, nxt], dim=1)
            logits = (model(nxt, cache) if cache is not None else model(seq))[:, -1]
    return seq[0] if prompt.dim() == 1 else seq


def decode_latency(variants: Mapping[str, nn.Module], prompt: torch.Tensor,
                   new_tokens: int = 32, *, use_cache: bool | Mapping[str, bool] = True,
                   repeats: int = 5, threads: int = 1) -> LatencyComparison:
    """Time greedy generation of ``new_tokens`` at batch 1 for every variant, interleaved
    (:func:`companion.measure.compare_latency`, the one timing routine); the first
    variant is the baseline. ``use_cache`` may differ per variant (a mapping).
    ``new_tokens / median seconds`` is the decoding speed in tokens/s.

    Args:
        variants: name -> model; the first is the baseline.
        prompt: token ids, ``(T,)`` or ``(1, T)``.
        new_tokens: tokens generated per timed call.
        use_cache: generate with a KV cache (one bool, or one per variant name).
        repeats: interleaved timing rounds, at least 2 (each times every variant once).
        threads: PyTorch intra-op threads during the timing.

    Raises:
        ValueError: ``variants`` empty, ``new_tokens`` < 1 or ``repeats`` < 2.
    """
    from ..measure import compare_latency

    if not isinstance(variants, Mapping) or not variants:
        raise ValueError("variants must be a non-empty mapping of name -> model")
    prompt = check_tensor(prompt, "prompt")
    new_tokens = check_int(new_tokens, "new_tokens", min_value=1)
    repeats = check_int(repeats, "repeats", min_value=2)
    caches = use_cache if isinstance(use_cache, Mapping) else dict.fromkeys(variants, use_cache)
    for name, model in variants.items():
        check_module(model, f"variants[{name!r}]")
        check_bool(caches.get(name, True), "use_cache")
        generate(model, prompt, new_tokens, use_cache=caches.get(name, True))  # checks input
    calls = {name: functools.partial(generate, model, prompt, new_tokens,
                                     use_cache=caches.get(name, True))
             for name, model in variants.items()}
    return compare_latency(calls, repeats=repeats, warmup=1, threads=threads)


def compare_lms(variants: Mapping[str, nn.Module], tokens: torch.Tensor, prompt: torch.Tensor,
                *, new_tokens: int = 32, repeats: int = 5,
                max_windows: int | None = None) -> Table:
    """One table: file bytes (``torch.save`` of the state dict), validation
    perplexity on ``tokens`` and tokens/s at batch 1 (KV cache, interleaved
    timing) of each variant; the first is the baseline."""
    from ..measure import Table, state_dict_bytes

    timing = decode_latency(variants, prompt, new_tokens, repeats=repeats)
    names = list(variants)
    base_bytes = state_dict_bytes(variants[names[0]])
    base_ppl = perplexity(variants[names[0]], tokens, max_windows=max_windows)
    rows = []
    for name, model in variants.items():
        size = state_dict_bytes(model)
        ppl = base_ppl if name == names[0] else perplexity(model, tokens,
                                                            max_windows=max_windows)
        rows.append({"variant": name, "file bytes": size, "x smaller": base_bytes / size,
                     "val ppl": ppl, "ppl +%": 100 * (ppl / base_ppl - 1),
                     "tokens/s": new_tokens / (timing.median_ms(name) / 1000)})
    return Table(rows, title=f"batch 1, {new_tokens} new tokens with a KV cache, "
                             f"{timing.threads} thread, median of {repeats} interleaved rounds")


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes that PyTorch allocated (above the start) while ``fn()`` ran.

    Measured with the profiler's CPU allocation events, summed in time order
    (tensors alive before ``fn`` started are not counted); allocations on a
    GPU are not included (use ``torch.cuda.max_memory_allocated`` there).
    """
    import torch.profiler as tp

    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    from .._checks import silenced_fd

    prof = tp.profile(activities=[tp.ProfilerActivity.CPU], profile_memory=True)
    with silenced_fd(2):   # the profiler's start/stop lines on stderr, not fn's output
        prof.__enter__()
    try:
        fn()
    finally:
        with silenced_fd(2):
            prof.__exit__(None, None, None)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
              and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    now = peak = 0
    for e in events:
        now += e.nbytes()
        peak = max(peak, now)
    return peak
