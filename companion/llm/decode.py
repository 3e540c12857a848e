"""Batch-1 decoding of a ``transformers`` causal LM: tokens/s, bytes per token, roofline.

Each new token runs the whole model on one position and reads every weight
once, so with memory bandwidth ``B`` a token costs at least
``weight bytes / B`` seconds: :func:`weight_bytes_per_token` counts those
bytes from the model's own tensors (packed codes and scales included; the
embedding table is looked up, one row a token, so it is not counted unless the
LM head is tied to it). :func:`decode_speed` times greedy decoding of all
variants interleaved with the book's one timing loop and reports each variant
next to that bound.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._checks import check_int, check_module, check_tensor, evaluating
from .._timing import time_calls

__all__ = ["weight_bytes_per_token", "kv_cache_bytes_per_token", "greedy_decode",
           "decode_speed"]


def weight_bytes_per_token(model: nn.Module) -> int:
    """Bytes of the parameters and buffers one decoding step reads: everything but
    embedding tables (a tied LM head counts its table once, as the head)."""
    check_module(model, "model")
    embed = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = {id(p) for m in model.modules() if not isinstance(m, nn.Embedding)
            for p in m.parameters(recurse=False)}
    seen, total = set(), 0
    for m in model.modules():
        for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]:
            if t is None or id(t) in seen or (id(t) in embed and id(t) not in head):
                continue
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def kv_cache_bytes_per_token(config: Any, dtype: torch.dtype = torch.float32) -> int:
    """Keys and values one token adds to the cache: ``2 x layers x kv_heads x head_dim``
    elements (grouped-query attention stores ``kv_heads`` heads, not all heads)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * kv_heads * head_dim * elem


@torch.inference_mode()
def greedy_decode(model: nn.Module, prompt: torch.Tensor, new_tokens: int, *,
                  eos_token_id: int | None = None) -> torch.Tensor:
    """Greedy continuation of ``prompt`` (``(1, T)`` int64) by up to ``new_tokens`` with
    a KV cache: the prompt runs once (prefill), then one position per step. With
    ``eos_token_id`` it stops after that token (timings leave it out, so that every
    run decodes the same number of tokens)."""
    from transformers import DynamicCache

    check_module(model, "model")
    prompt = check_tensor(prompt, "prompt")
    if prompt.dim() != 2 or prompt.shape[0] != 1 or prompt.dtype != torch.long:
        raise ValueError(f"prompt must be a (1, T) int64 tensor, got {tuple(prompt.shape)} "
                         f"{prompt.dtype}")
    new_tokens = check_int(new_tokens, "new_tokens", min_value=1)
    cache = DynamicCache()
    logits = model(input_ids=prompt, cache=cache, use_cache=True).logits
    out = [logits[:, -1].argmax(-1, keepdim=True)]
    for _ in range(new_tokens - 1):
        if eos_token_id is not None and int(out[-1]) == eos_token_id:
            break
        logits = model(input_ids=out[-1], cache=cache, use_cache=True).logits
        out.append(logits[:, -1].argmax(-1, keepdim=True))
    return torch.cat(out, dim=1)


def decode_speed(variants: Mapping[str, nn.Module], prompt: torch.Tensor, *,
                 new_tokens: int = 32, repeats: int = 5, threads: int = 1,
                 bandwidth: float | None = None) -> list[dict[str, Any]]:
    """Decode and prefill speed of every variant, interleaved, at batch 1.

    Each round times, per variant, the prefill of ``prompt`` alone and a
    greedy generation of ``new_tokens``; decode tokens/s is
    ``(new_tokens - 1) / (median generation - median prefill)``.

    Every variant runs in eval mode; the mode of each module is restored afterwards.

    Args:
        variants: name -> ``transformers`` causal LM; the first is the ``x fp32`` reference.
        prompt: ``(1, T)`` token ids.
        new_tokens: tokens generated per timed call (>= 2).
        repeats: interleaved timing rounds (each times every variant once).
        threads: PyTorch intra-op threads during the timing.
        bandwidth: memory bandwidth in bytes/s (e.g.
            :func:`companion.infer.measure_bandwidth` of a copy much larger than
            the last-level cache, at the same thread count); with it every row
            gets the roofline tokens/s and the share of it reached.

    Returns:
        One row per variant: ``variant``, ``weight MB/token``, ``prefill tok/s``,
        ``decode tok/s``, ``x fp32`` (against the first variant) and, with
        ``bandwidth``, ``roofline tok/s`` and ``% of roofline``.
    """
    if not isinstance(variants, Mapping) or not variants:
        raise ValueError("variants must be a non-empty mapping of name -> model")
    for name, model in variants.items():
        check_module(model, f"variants[{name!r}]")
    new_tokens = check_int(new_tokens, "new_tokens", min_value=2)
    repeats = check_int(repeats, "repeats", min_value=1)
    threads = check_int(threads, "threads", min_value=1)
    calls = {}
    for name, model in variants.items():
        calls[f"{name}|prefill"] = lambda i, m=model: greedy_decode(m, prompt, 1)
        calls[f"{name}|decode"] = lambda i, m=model: greedy_decode(m, prompt, new_tokens)
    with contextlib.ExitStack() as stack:
        for model in variants.values():
            stack.enter_context(evaluating(model))
        times, used = time_calls(calls, repeats=repeats, warmup=1, threads=threads)
    median = lambda xs: sorted(xs)[len(xs) // 2]   # noqa: E731
    rows = []
    for name, model in variants.items():
        pre, dec = median(times[f"{name}|prefill"]), median(times[f"{name}|decode"])
        nbytes = weight_bytes_per_token(model)
        row = {"variant": name, "weight MB/token": nbytes / 1e6,
               "prefill tok/s": prompt.shape[1] / (pre / 1000),
               "decode tok/s": (new_tokens - 1) / ((dec - pre) / 1000)}
        if bandwidth is not None:
            row["roofline tok/s"] = bandwidth / nbytes
            row["% of roofline"] = 100 * row["decode tok/s"] / row["roofline tok/s"]
        rows.append(row)
    for row in rows:
        row["x fp32"] = row["decode tok/s"] / rows[0]["decode tok/s"]
        row["threads"] = used
    return rows
