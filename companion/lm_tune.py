"""Tuning a language model cheaply: LoRA, distillation, and the memory of a training step.

* :func:`add_lora` freezes a model and adds a low-rank update ``B A`` (rank
  ``r``, ``B`` starts at zero) beside every chosen ``nn.Linear`` (Hu et al.
  2022): ``y = x W^T + (alpha / r) x A^T B^T``. :func:`merge_lora` folds it back.
* :func:`distill_lm_` trains a student on the teacher's next-token
  distributions (token-level KD on every position of every window) through
  :func:`companion.lm.train_lm_`, i.e. the one training loop.
* :func:`training_memory` is the budget of one step: weights + gradients +
  optimizer states + saved activations, each in bytes, to check against
  :func:`companion.lm.peak_memory`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_float, check_int, check_module, evaluating
from .train import clone

__all__ = ["LoRALinear", "add_lora", "merge_lora", "trainable_parameters",
           "optimizer_state_bytes", "distill_lm_", "MemoryBudget", "training_memory"]


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * x A^T B^T`` with ``base`` frozen."""

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        self.rank = check_int(rank, "rank", min_value=1, max_value=min(base.in_features,
                                                                       base.out_features))
        self.scaling = check_float(alpha, "alpha", min_value=0.0, min_inclusive=False) / rank
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))   # as nn.Linear; B = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


def add_lora(model: nn.Module, *, rank: int = 8, alpha: float = 16.0,
             filter_fn: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """A frozen copy of ``model`` with :class:`LoRALinear` around the chosen linears
    (default: every ``nn.Linear``); only ``lora_A``/``lora_B`` train."""
    check_module(model, "model")
    out = clone(model).requires_grad_(False)
    chosen = [n for n, m in out.named_modules() if isinstance(m, nn.Linear)
              and (filter_fn is None or filter_fn(m, n))]
    if not chosen:
        raise ValueError("model has no nn.Linear chosen by filter_fn")
    for name in chosen:
        out.set_submodule(name, LoRALinear(out.get_submodule(name), rank, alpha))
    return out


def merge_lora(model: nn.Module) -> nn.Module:
    """A copy with every :class:`LoRALinear` folded into a plain ``nn.Linear``
    (``W + (alpha / r) B A``): no extra cost at inference."""
    check_module(model, "model")
    out = clone(model)
    names = [n for n, m in out.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        lora = out.get_submodule(name)
        lin = lora.base
        with torch.no_grad():
            lin.weight += lora.scaling * lora.lora_B @ lora.lora_A
        out.set_submodule(name, lin.requires_grad_(True))
    return out


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad``."""
    return sum(p.numel() for p in check_module(model, "model").parameters() if p.requires_grad)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the tensors an optimizer keeps (Adam: two per parameter, after a step)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    return sum(t.numel() * t.element_size() for state in optimizer.state.values()
               for t in state.values() if isinstance(t, torch.Tensor) and t.dim() > 0)


class _StudentTeacher(nn.Module):
    """Runs both models; the teacher without gradients and in eval mode."""

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.student, self.config = student, student.config
        self._teacher = [teacher]   # a list: not a submodule, so not trained or saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        teacher = self._teacher[0]
        with torch.no_grad(), evaluating(teacher):
            t = teacher(x)
        return torch.stack([self.student(x), t])


def distill_lm_(student: nn.Module, teacher: nn.Module, tokens: torch.Tensor, config=None, *,
               temperature: float = 2.0, alpha: float = 0.5, progress: bool = False):
    """Train ``student`` in place on ``alpha * T^2 KL(teacher_T || student_T) +
    (1 - alpha) * CE`` at every position; return the ``History``.

    ``config`` is a :class:`companion.lm.LMTrainConfig`. Student and teacher
    must share the vocabulary (here: bytes) and the block size. With
    ``config.windows`` (a fixed pool of windows) the teacher's logits are
    computed once for the pool and looked up; otherwise the teacher runs on
    every batch.
    """
    from .distill import kd_loss
    from .lm import LMTrainConfig, train_lm_

    check_module(student, "student")
    check_module(teacher, "teacher")
    temperature = check_float(temperature, "temperature", min_value=0.0, min_inclusive=False)
    alpha = check_float(alpha, "alpha", min_value=0.0, max_value=1.0)
    s_cfg, t_cfg = getattr(student, "config", None), getattr(teacher, "config", None)
    if s_cfg is None or t_cfg is None or s_cfg.vocab_size != t_cfg.vocab_size:
        raise ValueError("student and teacher must be language models with the same vocab_size")

    config = config if config is not None else LMTrainConfig()
    if config.windows is not None:
        return _distill_on_pool(student, teacher, tokens, config, temperature, alpha, progress)

    def loss(both: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s, t = both[0].flatten(0, 1), both[1].flatten(0, 1)
        return kd_loss(s, t, y.flatten(), temperature=temperature, alpha=alpha)

    return train_lm_(_StudentTeacher(student, teacher), tokens, config, loss_fn=loss,
                    progress=progress)


def _distill_on_pool(student, teacher, tokens, config, temperature, alpha, progress):
    """A fixed pool of windows: the teacher's logits are computed once, then looked up
    (the same windows, in the same order, as ``train_lm_`` on the same config)."""
    from .distill import kd_loss
    from .lm import lm_batches, train_lm_

    block = student.config.block_size
    batches = lm_batches(tokens, steps=config.steps, batch_size=config.batch_size,
                         block_size=block, seed=config.seed, pool=config.windows, indices=True)
    windows = tokens[batches.starts[:, None] + torch.arange(block + 1)]
    with torch.no_grad(), evaluating(teacher):
        cached = torch.cat([teacher(w[:, :-1]) for w in windows.split(64)])
    targets = windows[:, 1:]

    def loss(s: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
        return kd_loss(s.flatten(0, 1), cached[pick].flatten(0, 1), targets[pick].flatten(),
                       temperature=temperature, alpha=alpha)

    return train_lm_(student, tokens, config, loss_fn=loss, progress=progress, batches=batches)


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes of one training step, by kind (fp32 everywhere)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def __str__(self) -> str:
        mb = 2 ** 20
        return (f"weights {self.weights / mb:.1f} MiB + gradients {self.gradients / mb:.1f} + "
                f"Adam {self.optimizer / mb:.1f} + activations {self.activations / mb:.1f} "
                f"= {self.total / mb:.1f} MiB")


def training_memory(model: nn.Module, batch_size: int, seq_len: int, *,
                    checkpoint: bool = False) -> MemoryBudget:
    """The memory formula of one AdamW step of a :class:`companion.lm.TinyGPT`.

    Weights ``4P``, gradients ``4P``, Adam's two moments ``8P`` (``P``
    trainable parameters), and the activations autograd saves per layer for
    ``B*T`` tokens of width ``d`` with ``h`` heads (fp32, math attention):
    about ``4 * B*T * (16 d + 2 h T)`` bytes per block (layer norms, q/k/v,
    the attention matrix and its softmax, the MLP's 4d hidden before and after
    GELU) plus the logits (``2 * B*T*V``: logits and their softmax). With
    activation checkpointing only every block's input (``B*T*d``) is kept, plus
    one block's activations during its recomputation.
    """
    check_module(model, "model")
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    seq_len = check_int(seq_len, "seq_len", min_value=1)
    cfg = model.config
    p = trainable_parameters(model)
    n, d, h = batch_size * seq_len, cfg.d_model, cfg.n_heads
    per_block = 4 * n * (16 * d + 2 * h * seq_len)
    logits = 4 * 2 * n * cfg.vocab_size
    if checkpoint:
        acts = 4 * n * d * cfg.n_layers + per_block + logits
    else:
        acts = per_block * cfg.n_layers + logits
    return MemoryBudget(4 * p, 4 * p, 8 * p, acts)
