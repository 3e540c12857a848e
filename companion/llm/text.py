"""One evaluation protocol for the real language model: a fixed English text, offline.

**The text.** Python's own documentation topics (``pydoc_data.topics``, the
texts ``help("assert")`` prints): English prose about one subject, installed
with every CPython (PSF licence), so every reader has it without a download.
Its 79 topics are sorted by name; every fourth (names 3, 7, 11, ...) is
**held out** for evaluation, the others are the **calibration** pool, so no
calibration token is ever scored. The text changes a little between Python
versions: :func:`texts` reports its SHA-256. SmolLM2 may well have seen
Python's documentation during pretraining; that lowers the absolute
perplexity, not the comparison between compressions of the same model.

**Perplexity.** Token level: the held-out text is tokenized once, cut into
consecutive windows of ``window`` tokens (no overlap, each starting fresh), and
``exp`` of the mean next-token loss over every predicted token is returned.
The evaluation split is the first :data:`EVAL_TOKENS` tokens; a page that
scores fewer says so.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import CALIBRATION_BATCHES, check_int, check_module, check_tensor, evaluating

__all__ = ["EVAL_TOKENS", "LMTexts", "texts", "calibration_batches", "token_perplexity"]

EVAL_TOKENS = 4096   # the evaluation split: 8 windows of 512 tokens


@dataclass(frozen=True)
class LMTexts:
    """Token ids of the held-out (evaluation) and calibration texts."""

    heldout: torch.Tensor       # 1-D int64, the first EVAL_TOKENS of the held-out topics
    calibration: torch.Tensor   # 1-D int64, all of the calibration topics
    heldout_topics: tuple[str, ...]
    sha256: str

    def __str__(self) -> str:
        return (f"pydoc topics: {len(self.heldout):,} held-out tokens "
                f"({len(self.heldout_topics)} topics), {len(self.calibration):,} calibration "
                f"tokens, sha256 {self.sha256[:12]}")


def texts(tokenizer: Any, *, eval_tokens: int = EVAL_TOKENS) -> LMTexts:
    """Tokenize the held-out and calibration texts with ``tokenizer`` (a
    ``transformers`` tokenizer, or any callable ``str -> list[int]``).

    Raises:
        ValueError: the held-out text has fewer than ``eval_tokens`` tokens.
    """
    from pydoc_data.topics import topics

    eval_tokens = check_int(eval_tokens, "eval_tokens", min_value=2)
    names = sorted(topics)
    held = tuple(n for i, n in enumerate(names) if i % 4 == 3)
    calib = tuple(n for n in names if n not in held)
    join = lambda ns: "\n\n".join(topics[n].strip() for n in ns)   # noqa: E731
    encode = tokenizer.encode if hasattr(tokenizer, "encode") else tokenizer
    held_ids = torch.tensor(encode(join(held)), dtype=torch.long)
    if len(held_ids) < eval_tokens:
        raise ValueError(f"eval_tokens ({eval_tokens}) exceeds the held-out text "
                         f"({len(held_ids)} tokens)")
    calib_ids = torch.tensor(encode(join(calib)), dtype=torch.long)
    sha = hashlib.sha256("".join(topics[n] for n in names).encode()).hexdigest()
    return LMTexts(held_ids[:eval_tokens], calib_ids, held, sha)


def calibration_batches(tokens: torch.Tensor, *, num_batches: int = CALIBRATION_BATCHES,
                        seq_len: int = 512, seed: int = 0) -> list[torch.Tensor]:
    """``num_batches`` random windows ``(1, seq_len)`` of ``tokens``, drawn with ``seed``
    (the seed is what a method comparison varies); ``num_batches`` defaults to
    ``companion._checks.CALIBRATION_BATCHES``."""
    tokens = check_tensor(tokens, "tokens")
    num_batches = check_int(num_batches, "num_batches", min_value=1)
    seq_len = check_int(seq_len, "seq_len", min_value=2)
    seed = check_int(seed, "seed", min_value=0)
    if len(tokens) <= seq_len:
        raise ValueError(f"tokens ({len(tokens)}) must be longer than seq_len ({seq_len})")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(tokens) - seq_len, (num_batches,), generator=gen)
    return [tokens[s:s + seq_len].unsqueeze(0) for s in starts.tolist()]


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return out.logits if hasattr(out, "logits") else out


@torch.inference_mode()
def token_perplexity(model: nn.Module, tokens: torch.Tensor, *, window: int = 512,
                     batch_size: int = 4, max_tokens: int | None = None) -> float:
    """``exp`` of the mean next-token loss over consecutive windows of ``tokens``.

    Works on any causal LM that maps ``(batch, time)`` ids to logits (a
    ``transformers`` model, whose output has ``.logits``, or a plain module).
    ``max_tokens`` scores the first tokens only (a whole number of windows).
    The model's mode is restored afterwards.
    """
    check_module(model, "model")
    tokens = check_tensor(tokens, "tokens")
    if tokens.dim() != 1 or tokens.dtype != torch.long:
        raise ValueError("tokens must be a 1-D int64 tensor of token ids")
    window = check_int(window, "window", min_value=2)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    if max_tokens is not None:
        tokens = tokens[:check_int(max_tokens, "max_tokens", min_value=window)]
    n = len(tokens) // window
    if n < 1:
        raise ValueError(f"tokens ({len(tokens)}) must hold at least one window of {window}")
    x = tokens[: n * window].view(n, window)
    total, count = 0.0, 0
    with evaluating(model):
        for i in range(0, n, batch_size):
            ids = x[i:i + batch_size]
            logits = _logits(model, ids)[:, :-1].float()
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                     ids[:, 1:].reshape(-1), reduction="sum").item()
            count += ids[:, 1:].numel()
    return math.exp(total / count)
