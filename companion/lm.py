"""A small decoder-only language model that the book trains itself, offline.

* **Data.** :func:`stdlib_corpus` reads a fixed list of the Python standard
  library's own source files (always installed; PSF licence) as bytes, so the
  vocabulary is the 256 byte values and no tokenizer is needed. The first 90%
  of every file trains, the last 10% validates, and a SHA-256 of the text says
  which text was used (it changes with the Python version).
* **Model.** :class:`TinyGPT` is a pre-norm transformer decoder (learned
  positions, causal ``scaled_dot_product_attention``, GELU MLP, an untied LM
  head) with a key/value cache (:class:`KVCache`, optionally int8) for
  generation.
* **Training.** :func:`train_lm` runs :func:`companion.train.fit` (the one
  training loop) on random windows with warm-up + cosine; :func:`pretrained_lm`
  caches the trained weights under ``$COMPANION_CACHE`` keyed by a hash of the
  config, the training settings and the corpus, so every section reuses one
  model.
* **Measurements.** :func:`perplexity` (exp of the mean per-byte loss over the
  validation windows), :func:`generate` (greedy or sampled, with or without the
  cache), :func:`decode_latency` (tokens/s), :func:`compare_lms` (bytes,
  perplexity and tokens/s in one table) and :func:`peak_memory`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import check_bool, check_float, check_int, check_module, check_tensor, evaluating

__all__ = [
    "STDLIB_FILES",
    "PROSE_FILES",
    "Corpus",
    "stdlib_corpus",
    "LMConfig",
    "TinyGPT",
    "KVCache",
    "LMTrainConfig",
    "lm_batches",
    "lm_loss",
    "train_lm",
    "pretrained_lm",
    "perplexity",
    "generate",
    "decode_latency",
    "compare_lms",
    "peak_memory",
]

# Modules present (as pure Python) in every CPython from 3.9 to 3.13.
STDLIB_FILES: tuple[str, ...] = (
    "argparse.py", "ast.py", "calendar.py", "configparser.py", "csv.py", "dataclasses.py",
    "difflib.py", "enum.py", "fractions.py", "functools.py", "gettext.py", "heapq.py",
    "inspect.py", "json/decoder.py", "json/encoder.py", "locale.py", "logging/__init__.py",
    "random.py", "shlex.py", "statistics.py", "string.py", "textwrap.py", "tokenize.py",
    "typing.py",
)
# A second domain for fine-tuning: English prose (the help texts of ``pydoc``).
PROSE_FILES: tuple[str, ...] = ("pydoc_data/topics.py",)


@dataclass(frozen=True)
class Corpus:
    """Byte tokens of a text, split per file into train (first 90%) and validation."""

    train: torch.Tensor
    val: torch.Tensor
    files: tuple[str, ...]
    sha256: str

    def __str__(self) -> str:
        return (f"{len(self.files)} files, {len(self.train):,} train + {len(self.val):,} "
                f"validation bytes, sha256 {self.sha256[:12]}")


def stdlib_corpus(files: Iterable[str] = STDLIB_FILES, *, val_fraction: float = 0.1,
                  root: str | Path | None = None) -> Corpus:
    """Read ``files`` (paths relative to the standard library) as byte tokens.

    Args:
        files: relative paths; default :data:`STDLIB_FILES` (code);
            :data:`PROSE_FILES` is English prose.
        val_fraction: the last fraction of every file that validates.
        root: default: this interpreter's standard library.

    Raises:
        ValueError: no files, or a file is missing.
    """
    files = tuple(files)
    if not files or not all(isinstance(f, str) for f in files):
        raise ValueError("files must be a non-empty sequence of relative paths")
    val_fraction = check_float(val_fraction, "val_fraction", min_value=0.0, max_value=0.5,
                               min_inclusive=False)
    base = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    digest = hashlib.sha256()
    train, val = [], []
    for name in files:
        path = base / name
        if not path.is_file():
            raise ValueError(f"files: {name!r} is not in {base}")
        data = path.read_bytes()
        digest.update(name.encode() + b"\0" + data)
        cut = int(len(data) * (1 - val_fraction))
        train.append(torch.frombuffer(bytearray(data[:cut]), dtype=torch.uint8))
        val.append(torch.frombuffer(bytearray(data[cut:]), dtype=torch.uint8))
    return Corpus(torch.cat(train).long(), torch.cat(val).long(), files, digest.hexdigest())


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class LMConfig:
    """Shape of :class:`TinyGPT`."""

    vocab_size: int = 256
    block_size: int = 128   # longest context (learned positions)
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "d_model", "n_layers", "n_heads", "mlp_ratio"):
            check_int(getattr(self, name), name, min_value=1)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads "
                             f"({self.n_heads})")


class KVCache:
    """Keys and values of every layer seen so far, ``(batch, heads, time, head_dim)``.

    With ``int8=True`` each key/value vector is stored as int8 with one float
    scale (absmax / 127) per vector, which quarters the float32 cache.
    """

    def __init__(self, n_layers: int, *, int8: bool = False) -> None:
        self.n_layers = check_int(n_layers, "n_layers", min_value=1)
        self.int8 = check_bool(int8, "int8")
        self._k: list[Any] = [None] * self.n_layers
        self._v: list[Any] = [None] * self.n_layers

    @property
    def length(self) -> int:
        k = self._k[0]
        return 0 if k is None else (k[0] if self.int8 else k).shape[2]

    @staticmethod
    def _pack(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8) / 127
        return torch.round(x / scale).to(torch.int8), scale

    @staticmethod
    def _join(old: Any, new: Any) -> Any:
        if old is None:
            return new
        if isinstance(new, tuple):
            return tuple(torch.cat([a, b], dim=2) for a, b in zip(old, new, strict=True))
        return torch.cat([old, new], dim=2)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's ``k``, ``v`` for ``layer``; return all keys and values."""
        if self.int8:
            k, v = self._pack(k), self._pack(v)
        self._k[layer] = self._join(self._k[layer], k)
        self._v[layer] = self._join(self._v[layer], v)
        if self.int8:
            (qk, sk), (qv, sv) = self._k[layer], self._v[layer]
            return qk.float() * sk, qv.float() * sv
        return self._k[layer], self._v[layer]

    def nbytes(self) -> int:
        """Bytes held by the cache (int8 codes and their scales included)."""
        total = 0
        for item in self._k + self._v:
            parts = item if isinstance(item, tuple) else (item,)
            total += sum(t.numel() * t.element_size() for t in parts if t is not None)
        return total


class _Attention(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int,
                past: int) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif t == 1:
            y = F.scaled_dot_product_attention(q, k, v)   # one new query sees everything
        else:   # several new queries after a prefix: causal over the whole sequence
            mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = _Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        hidden = cfg.mlp_ratio * cfg.d_model
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, hidden), nn.GELU(),
                                 nn.Linear(hidden, cfg.d_model))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                past: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer, past)
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Pre-norm decoder-only transformer: ``model(tokens) -> logits (batch, time, vocab)``.

    ``model(tokens, cache)`` appends to a :class:`KVCache` and returns the
    logits of the new tokens only. ``checkpoint=True`` recomputes every block's
    activations in the backward pass (activation checkpointing).
    """

    def __init__(self, config: LMConfig | None = None, *, checkpoint: bool = False) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else LMConfig()
        if not isinstance(cfg, LMConfig):
            raise TypeError(f"config must be an LMConfig, got {type(cfg).__name__}")
        self.checkpoint = check_bool(checkpoint, "checkpoint")
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():   # GPT-2: scale the residual projections
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be a (batch, time) int64 tensor, got "
                             f"{tuple(tokens.shape)} {tokens.dtype}")
        past = cache.length if cache is not None else 0
        t = tokens.shape[1]
        if past + t > self.config.block_size:
            raise ValueError(f"sequence of {past + t} tokens exceeds block_size "
                             f"{self.config.block_size}")
        pos = torch.arange(past, past + t, device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(pos)
        for i, block in enumerate(self.blocks):
            if self.checkpoint and self.training and cache is None:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, cache, i, past)
        return self.head(self.ln_f(x))


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class LMTrainConfig:
    """How :func:`train_lm` trains (part of the cache key of :func:`pretrained_lm`)."""

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


class lm_batches:  # noqa: N801  (an iterable used like a function)
    """``steps`` random windows ``(x, y)`` of ``tokens``, ``y`` shifted by one byte.

    Has ``len()``, so :func:`companion.train.fit` shows progress; each pass
    draws fresh windows from a generator seeded with ``seed``. With ``pool``
    the windows come from a fixed set of ``pool`` windows drawn once (a small
    training set, the regime where distillation helps most; their first
    tokens are ``self.starts``), and ``indices=True`` yields ``(x, i)`` with
    ``i`` the positions of the batch's windows in the pool instead of ``y``.
    """

    def __init__(self, tokens: torch.Tensor, *, steps: int, batch_size: int, block_size: int,
                 seed: int = 0, pool: int | None = None, indices: bool = False) -> None:
        self.tokens = check_tensor(tokens, "tokens")
        self.steps = check_int(steps, "steps", min_value=1)
        self.batch_size = check_int(batch_size, "batch_size", min_value=1)
        self.block_size = check_int(block_size, "block_size", min_value=1)
        if len(tokens) <= block_size + 1:
            raise ValueError(f"tokens ({len(tokens)}) must be longer than block_size + 1")
        self.generator = torch.Generator().manual_seed(check_int(seed, "seed", min_value=0))
        self.starts = None
        self.indices = check_bool(indices, "indices")
        if indices and pool is None:
            raise ValueError("indices=True needs a pool")
        if pool is not None:
            pool = check_int(pool, "pool", min_value=1)
            self.starts = torch.randint(len(tokens) - block_size - 1, (pool,),
                                        generator=torch.Generator().manual_seed(seed + 10**6))

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        offsets = torch.arange(self.block_size + 1)
        for _ in range(self.steps):
            if self.starts is not None:
                pick = torch.randint(len(self.starts), (self.batch_size,), generator=self.generator)
                if self.indices:
                    yield self.tokens[self.starts[pick][:, None] + offsets[:-1]], pick
                    continue
                start = self.starts[pick][:, None]
            else:
                start = torch.randint(len(self.tokens) - self.block_size - 1,
                                      (self.batch_size, 1), generator=self.generator)
            window = self.tokens[start + offsets]
            yield window[:, :-1], window[:, 1:]


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


def train_lm(model: nn.Module, tokens: torch.Tensor, config: LMTrainConfig | None = None, *,
             loss_fn: Callable[..., torch.Tensor] | None = None, progress: bool = True,
             epochs: int = 1, optimizer: torch.optim.Optimizer | None = None,
             batches: Iterable | None = None) -> Any:
    """Train ``model`` in place on random windows of ``tokens``; return the ``History``.

    ``config.steps`` optimizer steps in total, split into ``epochs`` equal
    passes (one logged loss each), through :func:`companion.train.fit`.
    ``optimizer`` defaults to AdamW (``config.lr``, ``config.weight_decay``
    on matrices only) over the parameters that require gradients; the LR
    follows ``config.schedule`` with ``config.warmup_steps`` of warm-up.
    ``batches`` (an :class:`lm_batches` of ``config.steps // epochs`` steps)
    replaces the random windows of ``tokens``.
    """
    from .lr import make_schedule
    from .train import fit, set_seed

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
    from .data import default_cache_dir
    from .train import cached_training

    if not isinstance(corpus, Corpus):
        raise TypeError(f"corpus must be a Corpus, got {type(corpus).__name__}")
    config = config if config is not None else LMConfig()
    train = train if train is not None else LMTrainConfig()
    if not isinstance(config, LMConfig) or not isinstance(train, LMTrainConfig):
        raise TypeError("config must be an LMConfig and train an LMTrainConfig")
    key = {"config": asdict(config), "train": asdict(train), "corpus": corpus.sha256}
    return cached_training(
        "tinygpt", key, lambda: TinyGPT(config),
        lambda m: train_lm(m, corpus.train, train, progress=progress), seed=train.seed,
        cache_dir=cache_dir if cache_dir is not None else default_cache_dir() / "lm")


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
                   rounds: int = 5, threads: int = 1) -> Any:
    """Time greedy generation of ``new_tokens`` at batch 1 for every variant, interleaved
    (:func:`companion.measure.compare_latency`, the one timing routine); the first
    variant is the baseline. ``use_cache`` may differ per variant (a mapping).
    ``new_tokens / median seconds`` is the decoding speed in tokens/s."""
    from .measure import compare_latency

    if not isinstance(variants, Mapping) or not variants:
        raise ValueError("variants must be a non-empty mapping of name -> model")
    prompt = check_tensor(prompt, "prompt")
    new_tokens = check_int(new_tokens, "new_tokens", min_value=1)
    caches = use_cache if isinstance(use_cache, Mapping) else dict.fromkeys(variants, use_cache)
    for name, model in variants.items():
        check_module(model, f"variants[{name!r}]")
        check_bool(caches.get(name, True), "use_cache")
        generate(model, prompt, new_tokens, use_cache=caches.get(name, True))  # checks input
    calls = {name: functools.partial(generate, model, prompt, new_tokens,
                                     use_cache=caches.get(name, True))
             for name, model in variants.items()}
    return compare_latency(calls, rounds=rounds, warmup=1, threads=threads)


def compare_lms(variants: Mapping[str, nn.Module], tokens: torch.Tensor, prompt: torch.Tensor,
                *, new_tokens: int = 32, rounds: int = 5, max_windows: int | None = None) -> Any:
    """One table: file bytes (``torch.save`` of the state dict), validation
    perplexity on ``tokens`` and tokens/s at batch 1 (KV cache, interleaved
    timing) of each variant; the first is the baseline."""
    from .measure import Table, serialized_size

    timing = decode_latency(variants, prompt, new_tokens, rounds=rounds)
    names = list(variants)
    base_bytes = serialized_size(variants[names[0]]).bytes
    base_ppl = perplexity(variants[names[0]], tokens, max_windows=max_windows)
    rows = []
    for name, model in variants.items():
        size = serialized_size(model).bytes
        ppl = base_ppl if name == names[0] else perplexity(model, tokens,
                                                            max_windows=max_windows)
        rows.append({"variant": name, "file bytes": size, "x smaller": base_bytes / size,
                     "val ppl": ppl, "ppl +%": 100 * (ppl / base_ppl - 1),
                     "tokens/s": new_tokens / (timing.median_ms(name) / 1000)})
    return Table(rows, title=f"batch 1, {new_tokens} new tokens with a KV cache, "
                             f"{timing.threads} thread, median of {rounds} interleaved rounds")


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes that PyTorch allocated (above the start) while ``fn()`` ran.

    Measured with the profiler's CPU allocation events, summed in time order
    (tensors alive before ``fn`` started are not counted); allocations on a
    GPU are not included (use ``torch.cuda.max_memory_allocated`` there).
    """
    import torch.profiler as tp

    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    from .measure import _silenced_fd

    prof = tp.profile(activities=[tp.ProfilerActivity.CPU], profile_memory=True)
    with _silenced_fd(2):   # the profiler's start/stop lines on stderr, not fn's output
        prof.__enter__()
    try:
        fn()
    finally:
        with _silenced_fd(2):
            prof.__exit__(None, None, None)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
              and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    now = peak = 0
    for e in events:
        now += e.nbytes()
        peak = max(peak, now)
    return peak
