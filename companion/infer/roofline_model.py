"""The roofline model: attainable FLOP/s and bandwidth measured here, and the lower
bound on latency they imply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._checks import check_float, check_int, check_module, evaluating
from .._timing import time_calls
from .engines import _check_input


# --------------------------------------------------------------------------- roofline
@dataclass
class Roofline:
    """A roofline estimate: ``max(compute time, memory time)`` for one call."""

    flops: float
    bytes_moved: float
    peak_flops: float
    bandwidth: float

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved."""
        return self.flops / self.bytes_moved

    @property
    def ridge(self) -> float:
        """The intensity at which compute and memory time are equal."""
        return self.peak_flops / self.bandwidth

    @property
    def bound(self) -> str:
        return "compute" if self.intensity >= self.ridge else "memory"

    @property
    def lower_bound_ms(self) -> float:
        """No implementation can be faster than this on the measured machine."""
        return 1000 * max(self.flops / self.peak_flops, self.bytes_moved / self.bandwidth)


def measure_peak_flops(n: int = 512, *, threads: int = 1, repeats: int = 10,
                       dtype: torch.dtype = torch.float32, device: str = "cpu") -> float:
    """Attainable FLOP/s: the best of ``repeats`` timed ``n x n`` matrix products."""
    n = check_int(n, "n", min_value=16)
    threads = check_int(threads, "threads", min_value=1)
    repeats = check_int(repeats, "repeats", min_value=1)
    a = torch.rand(n, n, dtype=dtype, device=device)
    b = torch.rand(n, n, dtype=dtype, device=device)
    best = _best_time(lambda: a @ b, threads, repeats, device)
    return 2 * n ** 3 / best


def measure_bandwidth(mbytes: int = 64, *, threads: int = 1, repeats: int = 10,
                      device: str = "cpu") -> float:
    """Attainable memory bandwidth in bytes/s: best of ``repeats`` copies of ``mbytes`` MiB.

    A copy reads and writes each byte, so it moves ``2 x mbytes`` MiB.
    """
    mbytes = check_int(mbytes, "mbytes", min_value=1)
    threads = check_int(threads, "threads", min_value=1)
    src = torch.rand(mbytes * 2 ** 20 // 4, device=device)
    dst = torch.empty_like(src)
    best = _best_time(lambda: dst.copy_(src), threads, check_int(repeats, "repeats", min_value=1),
                      device)
    return 2 * src.numel() * 4 / best


def _best_time(fn: Callable[[], Any], threads: int, repeats: int, device: str) -> float:
    """Seconds of the fastest of ``repeats`` calls after one warm-up (a peak, not a median)."""
    times, _ = time_calls({"fn": lambda i: fn()}, repeats=repeats, warmup=1, threads=threads,
                          device=device)
    return min(times["fn"]) / 1000


def roofline(flops: float, bytes_moved: float, peak_flops: float, bandwidth: float) -> Roofline:
    """Build a :class:`Roofline` (all arguments must be positive).

    Args:
        flops: floating-point operations of one call (2 x MACs).
        bytes_moved: bytes read and written by the call (weights + activations).
        peak_flops: attainable FLOP/s (:func:`measure_peak_flops`).
        bandwidth: attainable bytes/s (:func:`measure_bandwidth`).
    """
    for value, name in ((flops, "flops"), (bytes_moved, "bytes_moved"),
                        (peak_flops, "peak_flops"), (bandwidth, "bandwidth")):
        check_float(value, name, min_value=0.0, min_inclusive=False)
    return Roofline(float(flops), float(bytes_moved), float(peak_flops), float(bandwidth))


def model_bytes_moved(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes a forward pass must at least move: parameters + buffers + input + output, once.

    Intermediate activations are assumed to stay in cache (true for the small
    models here); this is a lower bound on memory traffic.
    """
    check_module(model, "model")
    x = _check_input(x)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    with torch.no_grad(), evaluating(model):
        out = model(x)
    return int(state + x.numel() * x.element_size() + out.numel() * out.element_size())
