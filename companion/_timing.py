"""The library's one timing loop: variants take turns, each call timed on its own.

Every latency and throughput figure of the book comes from :func:`time_calls`
(through :func:`companion.measure.measure_latency`,
:func:`companion.measure.compare_latency`, :func:`companion.apps.frame_latencies`,
:func:`companion.dynamic.time_early_exit`, :func:`companion.amp.throughput` and
the roofline's peak measurements). Callers turn its raw milliseconds into
medians; it sets the thread count for the measurement and says which it used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["time_calls"]


def time_calls(calls: Mapping[str, Callable[[int], Any]], *, repeats: int, warmup: int = 0,
               block: int = 1, threads: int | None = 1,
               device: torch.device | str = "cpu") -> tuple[dict[str, list[float]], int]:
    """Milliseconds of ``repeats`` timed calls of each variant, the variants taking turns.

    Each variant runs ``block`` calls in a row per turn (1: A, B, C, A, B, C,
    ...), and the order of the variants rotates every round so that none
    always runs first; a burst of load on the machine then falls on all of
    them alike. A variant's ``warmup`` untimed calls run just before its
    first turn. Each call receives its index (0, 1, ... for the warm-up calls,
    then 0 to ``repeats - 1`` for the timed ones), so that it can pick its
    input (a video frame, say). On CUDA the device is synchronized after
    every call.

    Arguments are trusted: the public functions that call this one check them.

    Args:
        calls: name -> ``call(index)``.
        repeats: timed calls of each variant.
        warmup: untimed calls of each variant first.
        block: calls of one variant per turn.
        threads: PyTorch intra-op threads during the measurement (restored
            afterwards); ``None`` keeps the current count.
        device: where the calls run (for synchronization).

    Returns:
        ``(times, threads)``: name -> the milliseconds of its timed calls in
        call order, and the thread count used.
    """
    names = list(calls)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in names}
    warm = set()
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used = torch.get_num_threads()
        for r, start in enumerate(range(0, repeats, block)):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                call = calls[name]
                if name not in warm:
                    for i in range(warmup):
                        call(i)
                    sync()
                    warm.add(name)
                for i in range(start, min(start + block, repeats)):
                    t0 = time.perf_counter()
                    call(i)
                    sync()
                    times[name].append((time.perf_counter() - t0) * 1000)
    finally:
        torch.set_num_threads(old)
    return times, used
