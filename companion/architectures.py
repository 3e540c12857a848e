"""Small sequence and attention models for MNIST read row by row (chapter 4).

An MNIST image ``(B, 1, 28, 28)`` is read as a sequence of 28 rows of 28
pixels. :class:`RowRNN` runs an LSTM or GRU over the rows and classifies from
the last hidden state; :class:`RowTransformer` embeds each row as a token,
adds a learned position embedding, applies pre-norm self-attention blocks and
classifies the mean token. Both return logits (no softmax): use them with
``cross_entropy``. The CNN of the chapter is :class:`companion.models.SmallCNN`.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_choice, check_int

__all__ = ["RowRNN", "EncoderBlock", "RowTransformer", "as_rows"]


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 28, 28)`` or ``(B, 784)`` images as ``(B, 28, 28)`` sequences of rows."""
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 2 and x.shape[1] == 784:
        return x.reshape(-1, 28, 28)
    if x.dim() == 3:
        return x
    raise ValueError(f"expected (B, 1, 28, 28), (B, 784) or (B, T, F) input, got {tuple(x.shape)}")


class RowRNN(nn.Module):
    """LSTM or GRU over image rows, then a linear classifier on the last hidden state."""

    def __init__(self, hidden: int = 64, cell: str = "lstm", num_layers: int = 1,
                 input_size: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        hidden = check_int(hidden, "hidden", min_value=1)
        check_choice(cell, "cell", ("lstm", "gru"))
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(input_size, hidden, num_layers=check_int(num_layers, "num_layers",
                                                                min_value=1), batch_first=True)
        self.head = nn.Linear(hidden, check_int(num_classes, "num_classes", min_value=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(as_rows(x))
        return self.head(out[:, -1])


class EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, d_model: int, heads: int, ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Linear(ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.norm2(x))


class RowTransformer(nn.Module):
    """A tiny Transformer encoder classifier with image rows as tokens."""

    def __init__(self, d_model: int = 32, heads: int = 4, layers: int = 2, ff: int = 64,
                 seq_len: int = 28, input_size: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        d_model = check_int(d_model, "d_model", min_value=1)
        heads = check_int(heads, "heads", min_value=1)
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        self.embed = nn.Linear(check_int(input_size, "input_size", min_value=1), d_model)
        self.pos = nn.Parameter(torch.zeros(1, check_int(seq_len, "seq_len", min_value=1),
                                            d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(d_model, heads, check_int(ff, "ff", min_value=1))
                                      for _ in range(check_int(layers, "layers", min_value=1))])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, check_int(num_classes, "num_classes", min_value=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = as_rows(x)
        if rows.shape[1] > self.pos.shape[1]:
            raise ValueError(f"sequence of {rows.shape[1]} tokens is longer than seq_len "
                             f"{self.pos.shape[1]}")
        h = self.embed(rows) + self.pos[:, : rows.shape[1]]
        return self.head(self.norm(self.blocks(h)).mean(dim=1))
