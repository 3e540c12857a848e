"""Training a :class:`TinyGPT` on the corpus, and the cached pretrained model."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import check_float, check_int, check_module
from .corpus import Corpus, lm_batches
from .model import LMConfig, TinyGPT

if TYPE_CHECKING:
    from ..train import History


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class LMTrainConfig:
    """How :func:`train_lm_` trains (part of the cache key of :func:`pretrained_lm`)."""

    steps: int = 1200
    batch_size: int = 8
    lr: float = 3e-3
    warmup_steps: int = 120
    schedule: str = "cosine"   # or "constant"
    weight_decay: float = 0.1
    seed: int = 0
    windows: int | None = None   # a fixed set of this many windows, not fresh ones

    def __post_init__(self) -> None:
        check_int(self.steps, "steps", min_value=1)
        check_int(self.batch_size, "batch_size", min_value=1)
        check_float(self.lr, "lr", min_value=0.0, min_inclusive=False)
        check_int(self.warmup_steps, "warmup_steps", min_value=0, max_value=self.steps - 1)
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        check_float(self.weight_decay, "weight_decay", min_value=0.0)
        check_int(self.seed, "seed", min_value=0)
        if self.windows is not None:
            check_int(self.windows, "windows", min_value=1)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats per token) of ``(B, T, V)`` logits."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, LayerNorms and embeddings (as GPT-2)."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() == 2
             and "emb" not in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not (
        p.dim() == 2 and "emb" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def train_lm_(model: nn.Module, tokens: torch.Tensor, config: LMTrainConfig | None = None, *,
              loss_fn: Callable[..., torch.Tensor] | None = None, progress: bool = True,
              epochs: int = 1, optimizer: torch.optim.Optimizer | None = None,
              batches: Iterable | None = None) -> History:
    """Train ``model`` in place on random windows of ``tokens``; return the ``History``.

    ``config.steps`` optimizer steps in total, split into ``epochs`` equal
    passes (one logged loss each), through :func:`companion.train.fit`.
    ``optimizer`` defaults to AdamW (``config.lr``, ``config.weight_decay``
    on matrices only) over the parameters that require gradients; the LR
    follows ``config.schedule`` with ``config.warmup_steps`` of warm-up.
    ``batches`` (an :class:`lm_batches` of ``config.steps // epochs`` steps)
    replaces the random windows of ``tokens``.
    """
    from ..lr import make_schedule
    from ..train import fit, set_seed

    check_module(model, "model")
    config = config if config is not None else LMTrainConfig()
    if not isinstance(config, LMTrainConfig):
        raise TypeError(f"config must be an LMTrainConfig, got {type(config).__name__}")
    epochs = check_int(epochs, "epochs", min_value=1, max_value=config.steps)
    if config.steps % epochs:
        raise ValueError(f"epochs ({epochs}) must divide config.steps ({config.steps})")
    block = getattr(getattr(model, "config", None), "block_size", None)
    if block is None:
        raise TypeError("model must have a .config.block_size (a TinyGPT)")
    set_seed(config.seed)
    if batches is None:
        batches = lm_batches(tokens, steps=config.steps // epochs,
                             batch_size=config.batch_size, block_size=block,
                             seed=config.seed, pool=config.windows)
    elif not isinstance(batches, lm_batches) or len(batches) * epochs != config.steps:
        raise ValueError("batches must be an lm_batches of config.steps // epochs steps")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    opt = optimizer or _optimizer(model, config.lr, config.weight_decay)
    sched = make_schedule(opt, config.schedule, total_steps=config.steps,
                          warmup_steps=config.warmup_steps)
    return fit(model, batches, epochs=epochs, optimizer=opt, scheduler=sched,
               loss_fn=loss_fn or lm_loss, device="cpu", progress=progress, desc="train LM")


def pretrained_lm(corpus: Corpus, config: LMConfig | None = None,
                  train: LMTrainConfig | None = None, *, cache_dir: str | Path | None = None,
                  progress: bool = True) -> TinyGPT:
    """A :class:`TinyGPT` trained on ``corpus.train``, from the cache when it is there.

    :func:`companion.train.cached_training` keeps the weights in
    ``<cache>/lm/tinygpt-<hash>.pt``, where the hash covers the model config,
    the training config and the corpus hash; so a change to any of them
    trains a new model. Returned in eval mode.
    """
    from ..data import default_cache_dir
    from ..train import cached_training

    if not isinstance(corpus, Corpus):
        raise TypeError(f"corpus must be a Corpus, got {type(corpus).__name__}")
    config = config if config is not None else LMConfig()
    train = train if train is not None else LMTrainConfig()
    if not isinstance(config, LMConfig) or not isinstance(train, LMTrainConfig):
        raise TypeError("config must be an LMConfig and train an LMTrainConfig")
    key = {"config": asdict(config), "train": asdict(train), "corpus": corpus.sha256}
    return cached_training(
        "tinygpt", key, lambda: TinyGPT(config),
        lambda m: train_lm_(m, corpus.train, train, progress=progress), seed=train.seed,
        cache_dir=cache_dir if cache_dir is not None else default_cache_dir() / "lm")
