"""Data and pipeline parallelism on one machine.

* **Data parallelism.** :func:`data_parallel_gradients` starts ``world_size``
  processes (``torch.multiprocessing``, spawn) that join a ``gloo`` process
  group on localhost; each computes the gradient of the mean loss on its
  shard of the batch, the gradients are summed with ``all_reduce`` and divided
  by the number of processes. With equal shards this is exactly the gradient
  of the whole batch in one process (:func:`single_process_gradients`).
  Every wait is bounded: the process group has a timeout and the parent
  kills workers that outlive ``timeout`` seconds.
* **Pipeline parallelism.** :func:`split_stages` cuts an ``nn.Sequential``
  into stages whose largest has the fewest MACs, :func:`pipeline_forward` runs micro-batches
  through them, and :func:`simulate_pipeline` draws the GPipe schedule of
  forward and backward passes on a *simulated* timeline, whose idle fraction
  (the "bubble") is ``(p - 1) / (m + p - 1)``.

The worker functions live here, not in a notebook, because spawned processes
import them by name.
"""

from __future__ import annotations

import datetime
import socket
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._checks import check_float, check_int, check_module, check_tensor, evaluating
from .train import clone

__all__ = [
    "single_process_gradients",
    "data_parallel_gradients",
    "split_stages",
    "pipeline_forward",
    "PipelineSlot",
    "PipelineSchedule",
    "simulate_pipeline",
    "bubble_fraction",
    "ShardedTrainingReport",
    "fsdp_training",
]


# --------------------------------------------------------------------------- data parallel
def single_process_gradients(model: nn.Module, x: torch.Tensor,
                             y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of the mean cross-entropy over the whole batch, on a copy of ``model``."""
    check_module(model, "model")
    x = check_tensor(x, "x", floating=True)
    y = check_tensor(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    m = clone(model)
    m.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(m(x), y).backward()
    return {n: p.grad.detach().clone() for n, p in m.named_parameters()}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dp_worker(rank: int, world_size: int, port: int, model: nn.Module, x: torch.Tensor,
               y: torch.Tensor, out_dir: str, timeout_s: float) -> None:
    """One data-parallel process: shard, local gradient, all-reduce, average (rank 0 saves)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        shard = len(x) // world_size
        xs, ys = x[rank * shard:(rank + 1) * shard], y[rank * shard:(rank + 1) * shard]
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(xs), ys).backward()
        grads = {}
        for name, p in model.named_parameters():
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            grads[name] = p.grad / world_size
        if rank == 0:
            torch.save({"grads": grads, "shard": shard}, Path(out_dir) / "result.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def data_parallel_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                            world_size: int = 2,
                            timeout: float = 120.0) -> dict[str, torch.Tensor]:
    """All-reduced gradients of ``world_size`` gloo processes, each on an equal shard.

    Args:
        model: copied into every process (not modified).
        x, y: the global batch; its length must be divisible by ``world_size``.
        world_size: number of processes (2 on a laptop is plenty).
        timeout: seconds after which the workers are killed and ``TimeoutError`` raised.

    Returns:
        ``{parameter name: averaged gradient}``.

    Raises:
        ValueError: the batch does not split evenly.
        TimeoutError: the workers did not finish in time.
        RuntimeError: a worker failed.
    """
    check_module(model, "model")
    x = check_tensor(x, "x", floating=True)
    y = check_tensor(y, "y")
    world_size = check_int(world_size, "world_size", min_value=1)
    check_float(timeout, "timeout", min_value=0.0, min_inclusive=False)
    if len(x) % world_size or len(x) != len(y):
        raise ValueError(f"x and y must have equal length divisible by world_size={world_size}, "
                         f"got {len(x)} and {len(y)}")
    result = _run_workers(_dp_worker, world_size, timeout, "data-parallel",
                          lambda r, port, out: (r, world_size, port, clone(model).cpu(), x.cpu(),
                                                y.cpu(), out, timeout))
    return result["grads"]


def _run_workers(target, world_size: int, timeout: float, what: str, make_args) -> dict:
    """Spawn ``world_size`` processes ``target(*make_args(rank, port, out_dir))``, wait at
    most ``timeout`` seconds, and return what rank 0 saved as ``out_dir/result.pt``."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    port = _free_port()
    with tempfile.TemporaryDirectory() as out_dir:
        procs = [ctx.Process(target=target, args=make_args(r, port, out_dir), daemon=True)
                 for r in range(world_size)]
        for p in procs:
            p.start()
        deadline = timeout
        for p in procs:
            start = time.monotonic()
            p.join(max(deadline, 0.1))
            deadline -= time.monotonic() - start
        alive = [p for p in procs if p.is_alive()]
        for p in alive:
            p.kill()
            p.join(5)
        if alive:
            raise TimeoutError(f"{what} workers did not finish within {timeout} s")
        codes = [p.exitcode for p in procs]
        if any(codes):
            raise RuntimeError(f"a {what} worker failed (exit codes {codes})")
        return torch.load(Path(out_dir) / "result.pt", weights_only=True)


# --------------------------------------------------------------------------- FSDP2
@dataclass(frozen=True)
class ShardedTrainingReport:
    """Losses of the same steps in one process and in ``world_size`` FSDP2 processes."""

    single_losses: list[float]
    sharded_losses: list[float]
    world_size: int
    full_param_bytes: int          # every parameter, one process
    rank_param_bytes: list[int]    # the shard each rank holds

    @property
    def max_abs_diff(self) -> float:
        return max(abs(a - b) for a, b in zip(self.single_losses, self.sharded_losses,
                                                  strict=True))

    def as_row(self) -> dict[str, Any]:
        """The scalars: steps, final losses of both runs, ``max_abs_diff`` and the
        bytes of all parameters and of the largest rank's shard."""
        return {"world_size": self.world_size, "steps": len(self.single_losses),
                "single_final_loss": self.single_losses[-1],
                "sharded_final_loss": self.sharded_losses[-1],
                "max_abs_diff": self.max_abs_diff, "full_param_bytes": self.full_param_bytes,
                "max_rank_param_bytes": max(self.rank_param_bytes)}


def _lm_step_batches(tokens: torch.Tensor, steps: int, batch_size: int, block: int,
                     seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from .lm import lm_batches

    return list(lm_batches(tokens, steps=steps, batch_size=batch_size, block_size=block,
                           seed=seed))


def _lm_train_steps(model: nn.Module, batches, lr: float, shard: slice,
                    reduce=None) -> list[float]:
    """AdamW steps of ``model`` on the ``shard`` rows of every batch; the mean loss of
    the whole batch is ``reduce(loss)`` (an all-reduce average across ranks)."""
    from .lm import lm_loss

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for x, y in batches:
        loss = lm_loss(model(x[shard]), y[shard])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.detach().clone()
        losses.append(float(reduce(value) if reduce is not None else value))
    return losses


def _fsdp_worker(rank: int, world_size: int, port: int, config, state: dict, batches,
                 lr: float, out_dir: str, timeout_s: float) -> None:
    """One FSDP2 process: shard every block and the root, train on its rows of each batch."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from .lm import TinyGPT

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        model = TinyGPT(config)
        model.load_state_dict(state)
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        local = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
        rows = len(batches[0][0]) // world_size

        def mean(loss: torch.Tensor) -> torch.Tensor:
            dist.all_reduce(loss, op=dist.ReduceOp.SUM)
            return loss / world_size

        losses = _lm_train_steps(model, batches, lr, slice(rank * rows, (rank + 1) * rows),
                                 mean)
        sizes = [torch.zeros((), dtype=torch.long) for _ in range(world_size)]
        dist.all_gather(sizes, torch.tensor(local))
        if rank == 0:
            torch.save({"losses": losses, "bytes": [int(b) for b in sizes]},
                       Path(out_dir) / "result.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def fsdp_training(model: nn.Module, tokens: torch.Tensor, *, steps: int = 20,
                  batch_size: int = 8, lr: float = 1e-3, world_size: int = 2, seed: int = 0,
                  timeout: float = 300.0) -> ShardedTrainingReport:
    """Train copies of a :class:`companion.lm.TinyGPT` for ``steps`` AdamW steps twice:
    in this process on whole batches, and with FSDP2 (``fully_shard`` on every
    block and the root) in ``world_size`` gloo processes that each take
    ``batch_size / world_size`` rows of the same batches.

    Each FSDP2 rank keeps ``1 / world_size`` of every parameter (a ``DTensor``
    shard), gathers a block's full weights just before using it and frees them
    after, and reduce-scatters (averages) the gradients; so the losses agree
    with one process up to float summation order.
    """
    from .lm import TinyGPT

    check_module(model, "model")
    if not isinstance(model, TinyGPT):
        raise TypeError(f"model must be a TinyGPT, got {type(model).__name__}")
    tokens = check_tensor(tokens, "tokens")
    steps = check_int(steps, "steps", min_value=1)
    world_size = check_int(world_size, "world_size", min_value=1)
    batch_size = check_int(batch_size, "batch_size", min_value=world_size)
    if batch_size % world_size:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by world_size "
                         f"({world_size})")
    lr = check_float(lr, "lr", min_value=0.0, min_inclusive=False)
    check_float(timeout, "timeout", min_value=0.0, min_inclusive=False)
    batches = _lm_step_batches(tokens, steps, batch_size, model.config.block_size, seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    single = clone(model).train()
    single_losses = _lm_train_steps(single, batches, lr, slice(None))
    full = sum(p.numel() * p.element_size() for p in model.parameters())
    result = _run_workers(_fsdp_worker, world_size, timeout, "FSDP2",
                          lambda r, port, out: (r, world_size, port, model.config, state,
                                                batches, lr, out, timeout))
    return ShardedTrainingReport(single_losses, result["losses"], world_size, full,
                                 result["bytes"])


# --------------------------------------------------------------------------- pipeline
def _balanced_bounds(costs: list[float], parts: int) -> list[int]:
    """Boundaries ``[0, ..., len(costs)]`` of ``parts`` non-empty consecutive
    groups of ``costs`` that minimize the largest group's sum."""
    n = len(costs)
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[k][j]: the smallest largest-group sum for the first j costs in k groups
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    start = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0.0
    for k in range(1, parts + 1):
        for j in range(k, n + 1):
            for i in range(k - 1, j):
                cost = max(best[k - 1][i], prefix[j] - prefix[i])
                if cost < best[k][j]:
                    best[k][j], start[k][j] = cost, i
    bounds, j = [n], n
    for k in range(parts, 0, -1):
        j = start[k][j]
        bounds.append(j)
    return bounds[::-1]


def split_stages(model: nn.Sequential, stages: int,
                 example_input: torch.Tensor) -> list[nn.Sequential]:
    """Cut ``model`` into ``stages`` consecutive pieces whose largest has the fewest MACs.

    The slowest stage sets a pipeline's pace, so the cut minimizes the MACs of
    the largest piece (a dynamic programme over the layer prefixes, exact for
    the given per-layer counts); every piece has at least one layer.

    Args:
        model: an ``nn.Sequential`` (the pieces share its layers: no copy).
        stages: number of pieces (at most the number of layers).
        example_input: used to count each layer's MACs.
    """
    from .measure import count_flops

    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential, got {type(model).__name__}")
    layers = list(model.named_children())
    stages = check_int(stages, "stages", min_value=1, max_value=len(layers))
    macs, h = [], check_tensor(example_input, "example_input", floating=True)
    with torch.no_grad(), evaluating(model):
        for _, layer in layers:
            mod = nn.Sequential(layer)
            macs.append(count_flops(mod, h).macs + 1)  # +1: every layer costs something
            h = mod(h)
    bounds = _balanced_bounds(macs, stages)
    return [nn.Sequential(OrderedDict(layers[a:b])) for a, b in zip(bounds[:-1], bounds[1:],
                                                                     strict=True)]


def pipeline_forward(stages: list[nn.Module], x: torch.Tensor,
                     micro_batches: int) -> torch.Tensor:
    """Run ``x`` through ``stages`` in ``micro_batches`` chunks (sequentially, in one process).

    Args:
        stages: a non-empty list (or tuple) of modules, e.g. from :func:`split_stages`.
        x: the batch, split along its first dimension.
        micro_batches: number of chunks, 1 to ``len(x)``.

    Returns:
        The outputs of the last stage, concatenated in batch order.

    Raises:
        TypeError: ``stages`` is not a list of modules, ``x`` not a tensor, or a
            stage does not return a tensor.
        ValueError: ``stages`` or ``x`` is empty, ``x`` has no batch dimension,
            ``micro_batches`` outside 1..``len(x)``, or a stage fails on its
            input (e.g. a shape or dtype that does not fit).
    """
    if isinstance(stages, nn.Module) or not isinstance(stages, (list, tuple)):
        raise TypeError(f"stages must be a list of modules (e.g. from split_stages), got "
                        f"{type(stages).__name__}")
    if not stages:
        raise ValueError("stages must not be empty")
    for i, stage in enumerate(stages):
        check_module(stage, f"stages[{i}]")
    x = check_tensor(x, "x", finite=False)
    if x.dim() == 0:
        raise ValueError("x must have a batch dimension, got a 0-d tensor")
    micro_batches = check_int(micro_batches, "micro_batches", min_value=1, max_value=len(x))
    outs = []
    for chunk in x.chunk(micro_batches):
        for i, stage in enumerate(stages):
            shape, dtype = tuple(chunk.shape), chunk.dtype
            try:
                chunk = stage(chunk)
            except RuntimeError as e:
                raise ValueError(f"stages[{i}] failed on a micro-batch of shape {shape} and "
                                 f"dtype {dtype}: {e}") from e
            if not isinstance(chunk, torch.Tensor):
                raise TypeError(f"stages[{i}] must return a torch.Tensor, got "
                                f"{type(chunk).__name__}")
        outs.append(chunk)
    return torch.cat(outs)


def bubble_fraction(stages: int, micro_batches: int) -> float:
    """GPipe's idle fraction ``(p - 1) / (m + p - 1)``."""
    p = check_int(stages, "stages", min_value=1)
    m = check_int(micro_batches, "micro_batches", min_value=1)
    return (p - 1) / (m + p - 1)


@dataclass
class PipelineSlot:
    """One unit of work on the simulated timeline."""

    stage: int
    micro_batch: int
    phase: str        # "forward" or "backward"
    start: float
    end: float


@dataclass
class PipelineSchedule:
    """A simulated GPipe schedule: all forwards, then all backwards."""

    stages: int
    micro_batches: int
    slots: list[PipelineSlot]

    @property
    def makespan(self) -> float:
        return max(s.end for s in self.slots)

    @property
    def busy(self) -> float:
        return sum(s.end - s.start for s in self.slots)

    @property
    def bubble(self) -> float:
        """Idle fraction of the ``stages x makespan`` device-time rectangle."""
        return 1 - self.busy / (self.stages * self.makespan)


def simulate_pipeline(stages: int, micro_batches: int, *, forward_time: float = 1.0,
                      backward_time: float = 2.0) -> PipelineSchedule:
    """The GPipe schedule of ``micro_batches`` on ``stages`` devices, on a *simulated* clock.

    Each stage takes ``forward_time`` per micro-batch forward and
    ``backward_time`` backward; a stage starts a micro-batch as soon as it is
    free and the previous stage has handed the micro-batch over. Nothing
    runs in parallel here: this computes the timeline that ``stages``
    devices would follow.
    """
    p = check_int(stages, "stages", min_value=1)
    m = check_int(micro_batches, "micro_batches", min_value=1)
    check_float(forward_time, "forward_time", min_value=0.0, min_inclusive=False)
    check_float(backward_time, "backward_time", min_value=0.0, min_inclusive=False)
    free = [0.0] * p
    done: dict[tuple[int, int], float] = {}
    slots = []
    for j in range(m):                      # forwards: stage s after stage s-1
        for s in range(p):
            start = max(free[s], done.get((s - 1, j), 0.0))
            end = start + forward_time
            slots.append(PipelineSlot(s, j, "forward", start, end))
            free[s], done[(s, j)] = end, end
    flush = max(free)                       # GPipe: backwards start after all forwards
    back: dict[tuple[int, int], float] = {}
    for j in range(m):                      # backwards: stage s after stage s+1
        for s in reversed(range(p)):
            ready = back.get((s + 1, j), done[(p - 1, j)] if s == p - 1 else 0.0)
            start = max(free[s], ready, flush if s == p - 1 else 0.0)
            end = start + backward_time
            slots.append(PipelineSlot(s, j, "backward", start, end))
            free[s], back[(s, j)] = end, end
    return PipelineSchedule(p, m, slots)

