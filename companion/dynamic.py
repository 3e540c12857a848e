"""Dynamic neural networks: computation that adapts to each input.

Three small, runnable kinds:

* **early exits** (BranchyNet, Teerapittayanon et al. 2016):
  :class:`EarlyExitNet` has a classifier after each stage; at inference an
  input leaves at the first exit whose softmax confidence reaches a
  threshold (:func:`early_exit_predict`), so easy inputs cost fewer FLOPs.
  :func:`exit_curve` sweeps the threshold (accuracy vs average FLOPs);
* **mixture of experts** (Shazeer et al. 2017): :class:`MixtureOfExperts`
  routes each input to its top-k experts, so the parameters grow with the
  number of experts while the per-input arithmetic does not;
* **layer skipping**: :class:`SkipMLP` has residual blocks with a per-input
  gate that decides whether the block runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ._checks import check_float, check_int, check_module, check_tensor, evaluating
from ._timing import time_calls
from .train import History, fit

__all__ = [
    "EarlyExitNet",
    "ExitReport",
    "exit_macs",
    "joint_exit_loss",
    "fit_early_exit_",
    "exit_logits",
    "early_exit_predict",
    "exit_curve",
    "EarlyExitReport",
    "time_early_exit",
    "MixtureOfExperts",
    "SkipMLP",
    "fit_dynamic_",
]


# --------------------------------------------------------------------------- early exits
class EarlyExitNet(nn.Module):
    """A three-stage CNN for 28x28 images with a classifier after each stage.

    Stage 1 (conv 1->c1, pool) and stage 2 (conv c1->c2, pool) are cheap and
    each followed by a small exit (max-pooling to 7x7 + a linear layer);
    stage 3 (conv c2->c3 and a 128-unit classifier) holds most of the
    arithmetic. In the pooled stages the max-pooling comes right after the
    convolution, before batch norm and ReLU, so those element-wise passes
    touch a quarter of the values (on a CPU they are memory-bound and cost
    far more time than their FLOPs suggest).
    """

    def __init__(self, c1: int = 16, c2: int = 32, c3: int = 64, hidden: int = 128,
                 num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3 = (check_int(v, n, min_value=1) for v, n in ((c1, "c1"), (c2, "c2"),
                                                              (c3, "c3")))
        hidden = check_int(hidden, "hidden", min_value=1)
        num_classes = check_int(num_classes, "num_classes", min_value=2)

        def block(cin: int, cout: int, pool: bool) -> nn.Sequential:
            conv = [nn.Conv2d(cin, cout, 3, padding=1), *([nn.MaxPool2d(2)] if pool else [])]
            return nn.Sequential(*conv, nn.BatchNorm2d(cout), nn.ReLU())

        def exit_head(c: int) -> nn.Sequential:
            return nn.Sequential(nn.AdaptiveMaxPool2d(7), nn.Flatten(),
                                 nn.Linear(c * 49, num_classes))

        self.stages = nn.ModuleList([block(1, c1, True), block(c1, c2, True),
                                     nn.Sequential(block(c2, c3, False), nn.Flatten(),
                                                   nn.Linear(c3 * 49, hidden), nn.ReLU())])
        self.exits = nn.ModuleList([exit_head(c1), exit_head(c2), nn.Linear(hidden, num_classes)])

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, for the whole batch (used in training)."""
        outs = []
        for stage, head in zip(self.stages, self.exits, strict=True):
            x = stage(x)
            outs.append(head(x))
        return outs


def _check_net(model: nn.Module) -> EarlyExitNet:
    if not isinstance(model, EarlyExitNet):
        raise TypeError(f"model must be an EarlyExitNet, got {type(model).__name__}")
    return model


def exit_macs(model: EarlyExitNet) -> list[int]:
    """MACs per image to reach and evaluate each exit (stages so far + that exit's head).

    Computed with :func:`companion.measure.count_flops` on the submodules.
    """
    from .measure import count_flops

    model = _check_net(model)
    x = torch.zeros(1, 1, 28, 28)
    total, out = 0, []
    with torch.no_grad(), evaluating(model):
        for stage, head in zip(model.stages, model.exits, strict=True):
            total += count_flops(stage, x).macs
            x = stage(x)
            out.append(total + count_flops(head, x).macs)
    return out


def joint_exit_loss(outputs: Sequence[torch.Tensor], y: torch.Tensor,
                    weights: Sequence[float] | None = None) -> torch.Tensor:
    """Weighted sum of the cross-entropies of all exits (BranchyNet's joint loss)."""
    if not outputs:
        raise ValueError("outputs must not be empty")
    weights = list(weights) if weights is not None else [1.0] * len(outputs)
    if len(weights) != len(outputs):
        raise ValueError(f"weights has {len(weights)} entries for {len(outputs)} exits")
    return sum(w * nn.functional.cross_entropy(o, y) for w, o in zip(weights, outputs,
                                                                      strict=True))


def fit_early_exit_(model: EarlyExitNet, loader: Iterable, *, epochs: int = 1,
                    lr: float = 1e-3, weights: Sequence[float] | None = None) -> History:
    """Train all exits jointly in place with :func:`companion.train.fit` (Adam) on
    :func:`joint_exit_loss`, and leave the model in eval mode.

    Returns:
        The :class:`~companion.train.History` of the run (``train_loss``: the
        mean joint loss per epoch).
    """
    model = _check_net(model)

    def batch_loss(m: nn.Module, batch: tuple) -> torch.Tensor:
        return joint_exit_loss(m(batch[0]), batch[1], weights)

    history = fit(model, loader, epochs=epochs, lr=lr, batch_loss=batch_loss, progress=False,
                  desc="train exits")
    model.eval()
    return history


@torch.no_grad()
def exit_logits(model: EarlyExitNet, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits of every exit for every input: shape ``(exits, N, classes)`` (eval mode)."""
    model = _check_net(model)
    x = check_tensor(x, "x", floating=True)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    with evaluating(model):
        parts = [torch.stack(model(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(parts, dim=1)


@dataclass
class ExitReport:
    """Where inputs left the network at one threshold, and what it cost."""

    threshold: float
    accuracy: float
    avg_macs: float
    exit_fractions: list[float]

    @property
    def avg_flops(self) -> float:
        return 2 * self.avg_macs

    def as_row(self) -> dict[str, Any]:
        return {**asdict(self), "avg_flops": self.avg_flops}


def _exit_index(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    conf = logits.softmax(-1).amax(-1)            # (exits, N)
    confident = conf >= threshold
    confident[-1] = True                          # the last exit takes everything left
    return confident.float().argmax(0)            # first confident exit per input


def early_exit_predict(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and exit index per input from precomputed :func:`exit_logits`.

    An input leaves at the first exit whose maximum softmax probability is
    at least ``threshold`` (the last exit if none is).
    """
    logits = check_tensor(logits, "logits", floating=True)
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (exits, N, classes), got {tuple(logits.shape)}")
    check_float(threshold, "threshold", min_value=0.0, max_value=1.0)
    idx = _exit_index(logits, threshold)
    preds = logits.argmax(-1).gather(0, idx[None]).squeeze(0)
    return preds, idx


def exit_curve(logits: torch.Tensor, y: torch.Tensor, macs: Sequence[int],
               thresholds: Sequence[float]) -> list[ExitReport]:
    """Accuracy and average MACs per image for each confidence threshold."""
    y = check_tensor(y, "y")
    if len(macs) != logits.shape[0]:
        raise ValueError(f"macs has {len(macs)} entries for {logits.shape[0]} exits")
    cost = torch.tensor([float(m) for m in macs])
    out = []
    for t in thresholds:
        preds, idx = early_exit_predict(logits, t)
        fractions = torch.bincount(idx, minlength=len(macs)).float() / len(idx)
        out.append(ExitReport(float(t), float((preds == y).float().mean()),
                              float(cost[idx].mean()), fractions.tolist()))
    return out


@torch.no_grad()
def _run_dynamic(model: EarlyExitNet, x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Really skip work: only inputs that did not exit go on to the next stage."""
    preds = torch.empty(len(x), dtype=torch.long)
    alive = torch.arange(len(x))
    h = x
    last = model.num_exits - 1
    for k, (stage, head) in enumerate(zip(model.stages, model.exits, strict=True)):
        h = stage(h)
        logits = head(h)
        if k == last:
            preds[alive] = logits.argmax(-1)
            break
        conf, pred = logits.softmax(-1).max(-1)
        done = conf >= threshold
        preds[alive[done]] = pred[done]
        alive, h = alive[~done], h[~done]
        if len(alive) == 0:
            break
    return preds


@torch.no_grad()
def _run_full(model: EarlyExitNet, x: torch.Tensor) -> torch.Tensor:
    h = x
    for stage in model.stages:
        h = stage(h)
    return model.exits[-1](h).argmax(-1)


@torch.no_grad()
def stage_latency(model: EarlyExitNet, x: torch.Tensor, *, warmup: int = 2, repeats: int = 9,
                  threads: int | None = None) -> list[float]:
    """Median time (ms) of each stage plus its exit head, run on the whole batch ``x``.

    Shows where the time goes, which need not be where the FLOPs go: an
    early exit can save at most the time of the stages it skips.
    """
    from .measure import measure_latency

    model = _check_net(model)
    x = check_tensor(x, "x", floating=True)
    out, h = [], x
    with evaluating(model):
        for stage, head in zip(model.stages, model.exits, strict=True):
            rep = measure_latency(lambda s=stage, h=h, e=head: e(s(h)), warmup=warmup,
                                  repeats=repeats, threads=threads)
            out.append(rep.median_ms)
            h = stage(h)
    return out


@dataclass
class EarlyExitReport:
    """Full network vs early-exit inference on one batch, timed in turns.

    Attributes:
        full_ms: median latency of the full network.
        early_exit_ms: median latency of early-exit inference.
        agreement: fraction of inputs whose prediction equals the final exit's.
        threads: PyTorch intra-op threads of the measurement.
    """

    full_ms: float
    early_exit_ms: float
    agreement: float
    threads: int

    @property
    def saving(self) -> float:
        """``1 - early_exit_ms / full_ms``: the fraction of time saved."""
        return 1 - self.early_exit_ms / self.full_ms

    def as_row(self) -> dict[str, Any]:
        return {**asdict(self), "saving": self.saving}


def time_early_exit(model: EarlyExitNet, x: torch.Tensor, threshold: float, *,
                    warmup: int = 3, repeats: int = 20,
                    threads: int | None = None) -> EarlyExitReport:
    """Median latency (ms) of the full network vs early-exit inference on the batch ``x``.

    The early-exit run really removes exited inputs from the batch before
    the next stage, so the saving is measured, not computed. The two runs
    take turns (the library's one timing loop) so that a change in the
    machine's load affects both alike. ``threads=None`` keeps the current
    thread count.
    """
    model = _check_net(model)
    x = check_tensor(x, "x", floating=True)
    check_float(threshold, "threshold", min_value=0.0, max_value=1.0)
    warmup = check_int(warmup, "warmup", min_value=0)
    repeats = check_int(repeats, "repeats", min_value=1)
    if threads is not None:
        threads = check_int(threads, "threads", min_value=1)
    with evaluating(model):
        runs = {"full": lambda i: _run_full(model, x),
                "early": lambda i: _run_dynamic(model, x, threshold)}
        times, used = time_calls(runs, repeats=repeats, warmup=warmup, threads=threads,
                                 device=x.device)
        agree = float((runs["full"](0) == runs["early"](0)).float().mean())
    return EarlyExitReport(statistics.median(times["full"]), statistics.median(times["early"]),
                           agree, used)


# --------------------------------------------------------------------------- mixture of experts
class MixtureOfExperts(nn.Module):
    """A top-k gated mixture of MLP experts followed by a linear classifier.

    Each input is sent to the ``k`` experts with the largest gate scores; the
    outputs are combined with the renormalized gate probabilities. Only the
    chosen experts run (inputs are grouped per expert), so per-input MACs are
    ``gate + k experts`` however many experts there are. ``aux_loss`` (after a
    forward pass in training) is the load-balancing term of Switch
    Transformers: ``E * sum_i f_i * P_i``.
    """

    def __init__(self, in_features: int = 784, hidden: int = 64, num_experts: int = 4,
                 k: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.in_features = check_int(in_features, "in_features", min_value=1)
        hidden = check_int(hidden, "hidden", min_value=1)
        self.num_experts = check_int(num_experts, "num_experts", min_value=1)
        self.k = check_int(k, "k", min_value=1, max_value=num_experts)
        self.gate = nn.Linear(in_features, num_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU()) for _ in range(num_experts))
        self.head = nn.Linear(hidden, check_int(num_classes, "num_classes", min_value=2))
        self.aux_loss = torch.zeros(())
        self.last_counts = torch.zeros(num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        probs = self.gate(x).softmax(-1)
        top_p, top_i = probs.topk(self.k, dim=-1)
        if self.k > 1:  # with k = 1 keep the raw probability, so the gate gets a gradient
            top_p = top_p / top_p.sum(-1, keepdim=True)
        hidden = x.new_zeros(len(x), self.experts[0][0].out_features)
        counts = torch.zeros(self.num_experts)
        for e, expert in enumerate(self.experts):
            rows, slot = (top_i == e).nonzero(as_tuple=True)
            counts[e] = len(rows)
            if len(rows):
                hidden = hidden.index_add(0, rows, top_p[rows, slot, None] * expert(x[rows]))
        frac = counts / counts.sum()
        self.aux_loss = self.num_experts * (frac.to(probs.device) * probs.mean(0)).sum()
        self.last_counts = counts
        return self.head(hidden)

    def macs_per_input(self) -> int:
        """Gate + ``k`` experts + head: the arithmetic one input really needs."""
        hidden = self.experts[0][0].out_features
        return (self.in_features * self.num_experts + self.k * self.in_features * hidden
                + hidden * self.head.out_features)


# --------------------------------------------------------------------------- layer skipping
class SkipMLP(nn.Module):
    """An MLP with residual blocks that each input may skip.

    Block ``i`` computes ``h + [g_i(h) >= 0.5] * f_i(h)`` with a gate
    ``g_i(h) = sigmoid(w_i . h + b_i)``. In training the 0/1 decision is
    used forward and the sigmoid's gradient backward (straight-through), and
    :attr:`gate_mean` is available for a compute penalty; in eval mode a
    block really runs only for the inputs whose gate is open, and
    :attr:`executed` records the fraction of (input, block) pairs that ran.
    """

    def __init__(self, in_features: int = 784, width: int = 128, blocks: int = 4,
                 num_classes: int = 10) -> None:
        super().__init__()
        width = check_int(width, "width", min_value=1)
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(check_int(in_features, "in_features",
                                                                    min_value=1), width),
                                  nn.ReLU())
        n = check_int(blocks, "blocks", min_value=1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.ReLU(),
                                                  nn.Linear(width, width)) for _ in range(n))
        self.gates = nn.ModuleList(nn.Linear(width, 1) for _ in range(n))
        self.head = nn.Linear(width, check_int(num_classes, "num_classes", min_value=2))
        self.gate_mean = torch.zeros(())
        self.executed = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        gate_sum, ran = h.new_zeros(()), 0
        for block, gate in zip(self.blocks, self.gates, strict=True):
            g = torch.sigmoid(gate(h))
            gate_sum = gate_sum + g.mean()
            if self.training:
                # hard 0/1 gate forward, sigmoid gradient backward (straight-through),
                # so training computes exactly what inference will
                hard = (g >= 0.5).float() + g - g.detach()
                h = h + hard * block(h)
            else:
                run = (g.squeeze(-1) >= 0.5).nonzero(as_tuple=True)[0]
                ran += len(run)
                if len(run):
                    h = h.index_add(0, run, block(h[run]))
        self.gate_mean = gate_sum / len(self.blocks)
        if not self.training:
            self.executed = ran / (len(x) * len(self.blocks))
        return self.head(h)


def fit_dynamic_(model: nn.Module, loader: Iterable, *, epochs: int = 1, lr: float = 1e-3,
                 penalty: float = 0.0) -> History:
    """Train a :class:`MixtureOfExperts` (loss + penalty x aux_loss) or :class:`SkipMLP`
    (loss + penalty x gate_mean) in place with :func:`companion.train.fit` (Adam),
    and leave the model in eval mode.

    Returns:
        The :class:`~companion.train.History` of the run (``train_loss``: the
        mean penalized loss per epoch).

    Raises:
        TypeError: ``model`` is not a :class:`MixtureOfExperts` or :class:`SkipMLP`.
        ValueError: ``penalty`` < 0.
    """
    check_module(model, "model")
    if not isinstance(model, (MixtureOfExperts, SkipMLP)):
        raise TypeError(f"model must be a MixtureOfExperts or SkipMLP, got "
                        f"{type(model).__name__}")
    check_float(penalty, "penalty", min_value=0.0)

    def batch_loss(m: nn.Module, batch: tuple) -> torch.Tensor:
        loss = nn.functional.cross_entropy(m(batch[0]), batch[1])
        return loss + penalty * (m.aux_loss if isinstance(m, MixtureOfExperts) else m.gate_mean)

    history = fit(model, loader, epochs=epochs, lr=lr, batch_loss=batch_loss, progress=False,
                  desc="train")
    model.eval()
    return history
