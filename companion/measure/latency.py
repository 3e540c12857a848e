"""Latency of repeated calls, and interleaved comparisons of several variants."""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .._checks import check_example_input, check_int, evaluating, in_ipython
from .._timing import time_calls
from .cpu import CPUInfo, cpu_info
from .table import Table


# --------------------------------------------------------------------------- latency
@dataclass
class LatencyReport:
    """Timing of repeated calls: median and spread in milliseconds, and the setting."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    warmup: int
    threads: int
    device: str
    batch_size: int | None = None

    @property
    def throughput(self) -> float:
        """Items per second at the median latency (needs ``batch_size``)."""
        if not self.batch_size:
            return float("nan")
        return self.batch_size / (self.median_ms / 1000)

    def as_row(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        batch = f", batch {self.batch_size}" if self.batch_size else ""
        return (f"median {self.median_ms:.3f} ms (p10 {self.p10_ms:.3f}, p90 {self.p90_ms:.3f}) "
                f"over {self.runs} runs after {self.warmup} warm-up, {self.device}, "
                f"{self.threads} thread(s){batch}")


def _quantile(sorted_vals: list[float], q: float) -> float:
    idx = q * (len(sorted_vals) - 1)
    lo, hi = int(idx), min(int(idx) + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (idx - lo)


def measure_latency(model: nn.Module | Callable[[], Any], example_input: Any = None, *,
                    warmup: int = 10, repeats: int = 50, threads: int | None = 1,
                    device: torch.device | str | None = None) -> LatencyReport:
    """Median wall-clock latency of ``model(example_input)`` (or of ``model()``).

    The model runs in eval mode under ``torch.inference_mode`` (the mode of
    each submodule is restored afterwards); on CUDA the
    device is synchronized around each run. ``threads`` sets PyTorch's
    intra-op thread count for the measurement only (restored afterwards).

    Args:
        model: an ``nn.Module`` called on ``example_input``, or any zero-argument
            callable (an ONNX Runtime or LiteRT run, say) when ``example_input``
            is None.
        example_input: a tensor or a tuple of tensors, moved to ``device``.
        warmup: untimed calls first (caches, lazy initialisation, JIT).
        repeats: timed calls; the report gives their median and 10/90 percentiles.
        threads: PyTorch intra-op threads during the measurement (default 1, for the
            reason given in :func:`compare_latency`; ``None`` keeps the current count).
            To compare variants, use :func:`compare_latency`, which interleaves them.
        device: where a module and its input run (default: the module's device).

    Raises:
        TypeError: ``model`` is not callable, or ``example_input`` is not a tensor
            or a tuple of tensors.
        ValueError: a module without ``example_input``, or ``example_input``
            with a plain callable.
    """
    warmup = check_int(warmup, "warmup", min_value=0)
    repeats = check_int(repeats, "repeats", min_value=1)
    if threads is not None:
        threads = check_int(threads, "threads", min_value=1)
    if not callable(model):
        raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}")
    batch = None
    if isinstance(model, nn.Module):
        if example_input is None:
            raise ValueError("example_input is required when model is an nn.Module")
        dev = torch.device(device) if device is not None else next(
            (p.device for p in model.parameters()), torch.device("cpu"))
        args = tuple(a.to(dev) for a in check_example_input(example_input))
        batch = int(args[0].shape[0]) if args[0].dim() else None
        mode = evaluating(model)

        def call() -> Any:
            with torch.inference_mode():
                return model(*args)
    else:
        if example_input is not None:
            raise ValueError("pass example_input only with an nn.Module; wrap other "
                             "callables in a zero-argument function")
        dev = torch.device(device) if device is not None else torch.device("cpu")
        call, mode = model, contextlib.nullcontext()
    with mode:
        raw, used_threads = time_calls({"model": lambda i: call()}, repeats=repeats,
                                       warmup=warmup, threads=threads, device=dev)
    times = raw["model"]
    times.sort()
    return LatencyReport(statistics.median(times), _quantile(times, 0.1), _quantile(times, 0.9),
                         repeats, warmup, used_threads, str(dev), batch)


# --------------------------------------------------------------------------- comparisons
@dataclass
class LatencyComparison:
    """Several variants timed in interleaved rounds, and their speed against a baseline.

    ``times_ms[name][r]`` is the time of one call of variant ``name`` in round
    ``r``. Because every round runs every variant once, a burst of load from
    another process slows all of them alike, and the per-round ratio
    ``baseline / variant`` is steadier than either time alone.
    """

    baseline: str
    times_ms: dict[str, list[float]]
    threads: int
    device: str
    batch_size: int | None
    cpu: CPUInfo
    _rerun: Callable[[], LatencyComparison] | None = field(default=None, repr=False,
                                                          compare=False)

    @property
    def names(self) -> list[str]:
        return list(self.times_ms)

    def _check_name(self, name: str) -> str:
        if name not in self.times_ms:
            raise ValueError(f"name must be one of {self.names}, got {name!r}")
        return name

    def median_ms(self, name: str) -> float:
        """Median time of one call of ``name``."""
        return statistics.median(self.times_ms[self._check_name(name)])

    def speedup(self, name: str) -> float:
        """``median(baseline) / median(name)``: above 1 means ``name`` is faster."""
        return self.median_ms(self.baseline) / self.median_ms(name)

    def speedup_spread(self, name: str) -> tuple[float, float]:
        """10th and 90th percentiles of the per-round ratios ``baseline / name``."""
        ratios = sorted(b / v for b, v in zip(self.times_ms[self.baseline],
                                              self.times_ms[self._check_name(name)],
                                              strict=True))
        return _quantile(ratios, 0.1), _quantile(ratios, 0.9)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for name, times in self.times_ms.items():
            s = sorted(times)
            lo, hi = self.speedup_spread(name)
            out.append({"variant": name, "median ms": statistics.median(s),
                        "p10 ms": _quantile(s, 0.1), "p90 ms": _quantile(s, 0.9),
                        f"x faster than {self.baseline}": self.speedup(name),
                        "ratio p10-p90": f"{lo:.2f}-{hi:.2f}"})
        return out

    def table(self, title: str | None = None) -> Table:
        batch = f", batch {self.batch_size}" if self.batch_size else ""
        rounds = len(self.times_ms[self.baseline])
        return Table(self.rows(), title=title or (
            f"latency, {self.device}, {self.threads} thread(s){batch}, median of {rounds} "
            f"interleaved rounds"))

    def remeasure(self) -> LatencyComparison:
        """Run the same comparison again (same variants, inputs and settings)."""
        if self._rerun is None:
            raise ValueError("this comparison was not made by compare_latency; cannot remeasure")
        return self._rerun()

    def __str__(self) -> str:
        return f"{self.table()}\n{self.cpu}"

    __repr__ = __str__


def compare_latency(variants: Mapping[str, nn.Module | Callable[[], Any]],
                    example_input: Any = None, *, baseline: str | None = None,
                    repeats: int = 30, warmup: int = 3, threads: int = 1,
                    device: torch.device | str | None = None) -> LatencyComparison:
    """Time several variants of a model in interleaved rounds: A, B, C, A, B, C, ...

    This is the one routine for "x faster" claims. Timing the variants one
    after another lets a burst of load (another job, a thermal change) fall on
    one of them; interleaving spreads it over all, and the order of the
    variants rotates every round so that none always runs first.

    Args:
        variants: name -> an ``nn.Module`` (run in eval mode under
            ``torch.inference_mode`` on ``example_input``) or a zero-argument
            callable (an ONNX Runtime or LiteRT runner, say).
        example_input: a tensor or tuple of tensors for the module variants.
        baseline: the name the speed-ups are relative to (default: the first).
        repeats: interleaved rounds: timed calls of each variant.
        warmup: untimed calls of each variant first.
        threads: PyTorch intra-op threads during the measurement (restored
            afterwards). The default is 1: on a machine with few cores, a
            second OpenMP thread competes with every other process for the
            same cores and one slow thread stalls the whole operator, which
            made 2-thread timings on a 2-core machine up to 65x slower than
            1-thread ones while anything else ran.
        device: where module variants run (default: each module's device).

    Returns:
        A :class:`LatencyComparison`; ``print`` it for a table with the CPU line.

    Raises:
        ValueError: no variants, an unknown ``baseline``, or a module without
            ``example_input``.
        TypeError: a variant is not callable, or ``example_input`` is not a
            tensor or a tuple of tensors.
    """
    if not isinstance(variants, Mapping) or not variants:
        raise ValueError("variants must be a non-empty mapping of name -> model or callable")
    names = list(variants)
    for name, v in variants.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"variants: names must be non-empty strings, got {name!r}")
        if not callable(v):
            raise TypeError(f"variants[{name!r}] must be an nn.Module or a callable, "
                            f"got {type(v).__name__}")
    base = names[0] if baseline is None else baseline
    if base not in variants:
        raise ValueError(f"baseline must be one of {names}, got {baseline!r}")
    repeats = check_int(repeats, "repeats", min_value=2)
    warmup = check_int(warmup, "warmup", min_value=0)
    threads = check_int(threads, "threads", min_value=1)
    if example_input is not None:
        check_example_input(example_input)
    calls, modes, batch, dev_name = {}, [], None, str(device or "cpu")
    for name, v in variants.items():
        if isinstance(v, nn.Module):
            if example_input is None:
                raise ValueError(f"example_input is required: variants[{name!r}] is a module")
            dev = torch.device(device) if device is not None else next(
                (p.device for p in v.parameters()), torch.device("cpu"))
            dev_name = str(dev)
            args = tuple(a.to(dev) for a in check_example_input(example_input))
            if args[0].dim():
                batch = int(args[0].shape[0])
            modes.append(evaluating(v))
            calls[name] = functools.partial(_call_inference, v, args)
        else:
            calls[name] = v
    with contextlib.ExitStack() as stack:
        for mode in modes:
            stack.enter_context(mode)
        times, _ = time_calls({name: (lambda i, c=calls[name]: c()) for name in names},
                              repeats=repeats, warmup=warmup, threads=threads, device=dev_name)

    def rerun() -> LatencyComparison:
        return compare_latency(variants, example_input, baseline=base, repeats=repeats,
                               warmup=warmup, threads=threads, device=device)
    info = cpu_info()
    info.threads = threads
    return LatencyComparison(base, times, threads, dev_name, batch, info, rerun)


def _call_inference(model: nn.Module, args: tuple) -> Any:
    with torch.inference_mode():
        return model(*args)


def assert_timing(comparison: LatencyComparison,
                  condition: Callable[[LatencyComparison], bool], message: str, *,
                  retries: int = 1) -> LatencyComparison:
    """Assert a claim about timings, re-measuring before failing.

    A single slow round of another process can push one measurement across a
    threshold; a claim that is true of the machine survives a second,
    independent measurement. ``condition`` is tried on ``comparison``, then on
    up to ``retries`` fresh re-measurements.

    Where the claim still fails, what happens depends on who runs it. Under
    the book's builds and tests (``COMPANION_STRICT_TIMING=1``, which
    ``make test``, ``make book`` and ``make notebooks`` set) and in any
    script, it raises. In an interactive Jupyter or IPython session without
    that variable (a reader running a page on their own, perhaps slower or
    busier, machine) it prints one line to stderr, which Jupyter highlights,
    naming the claim, what was measured and the CPU, and returns, so "Run
    All" goes on.

    Returns:
        The comparison on which the condition held (print it if it changed),
        or the last measurement when an interactive session only warned.

    Raises:
        AssertionError: ``message`` and the speed-ups of every attempt.
    """
    if not isinstance(comparison, LatencyComparison):
        raise TypeError(f"comparison must be a LatencyComparison, got "
                        f"{type(comparison).__name__}")
    if not callable(condition):
        raise TypeError(f"condition must be callable, got {type(condition).__name__}")
    retries = check_int(retries, "retries", min_value=0)
    seen = []
    for attempt in range(retries + 1):
        if attempt:
            comparison = comparison.remeasure()
        if condition(comparison):
            return comparison
        seen.append({n: round(comparison.speedup(n), 3) for n in comparison.names})
    failure = (f"{message} (not true in {retries + 1} measurement(s); speed-ups "
               f"against {comparison.baseline}: {seen}; {comparison.cpu})")
    if os.environ.get("COMPANION_STRICT_TIMING") != "1" and in_ipython():
        print(f"TIMING CLAIM NOT MET ON THIS MACHINE: {failure}", file=sys.stderr, flush=True)
        return comparison
    raise AssertionError(failure)

