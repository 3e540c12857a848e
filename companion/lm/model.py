"""The model: :class:`TinyGPT`, a pre-norm decoder-only transformer, and its
key/value cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import check_bool, check_int


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
