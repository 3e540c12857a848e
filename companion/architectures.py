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

from ._checks import check_choice, check_float, check_int

__all__ = ["RowRNN", "EncoderBlock", "RowTransformer"]


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 28, 28)`` or ``(B, 784)`` images as ``(B, 28, 28)`` sequences of rows.

    A ``(B, T, F)`` tensor is already a batch of sequences and is returned as is.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: ``x`` has none of the shapes above.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 2 and x.shape[1] == 784:
        return x.reshape(-1, 28, 28)
    if x.dim() == 3:
        return x
    raise ValueError(f"expected (B, 1, 28, 28), (B, 784) or (B, T, F) input, got {tuple(x.shape)}")


class RowRNN(nn.Module):
    """LSTM or GRU over image rows, then a linear classifier on the last hidden state.

    With ``d = input_size`` and ``h = hidden`` (one layer), the recurrent layer
    has ``g * (h * (d + h) + 2 * h)`` parameters (``g = 4`` gates for the LSTM,
    3 for the GRU; PyTorch keeps two bias vectors per gate) and costs
    ``T * g * h * (d + h)`` multiply-accumulates for ``T`` steps.

    Args:
        hidden: size of the hidden state.
        cell: ``"lstm"`` or ``"gru"``.
        num_layers: stacked recurrent layers.
        input_size: features per step (28 pixels of a row).
        num_classes: outputs of the linear head (logits).
    """

    def __init__(self, hidden: int = 64, cell: str = "lstm", num_layers: int = 1,
                 input_size: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        hidden = check_int(hidden, "hidden", min_value=1)
        check_choice(cell, "cell", ("lstm", "gru"))
        num_layers = check_int(num_layers, "num_layers", min_value=1)
        input_size = check_int(input_size, "input_size", min_value=1)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(input_size, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, check_int(num_classes, "num_classes", min_value=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = _check_features(_as_rows(x), self.rnn.input_size)
        out, _ = self.rnn(seq)
        return self.head(out[:, -1])


def _check_features(seq: torch.Tensor, expected: int) -> torch.Tensor:
    if seq.shape[-1] != expected:
        raise ValueError(f"expected {expected} features per step (input_size), "
                         f"got input of shape {tuple(seq.shape)}")
    return seq


class EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``.

    Args:
        d_model: token width (divisible by ``heads``).
        heads: attention heads.
        ff: hidden width of the GELU MLP.
        dropout: dropout on the attention weights, in [0, 1).
    """

    def __init__(self, d_model: int, heads: int, ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        d_model = check_int(d_model, "d_model", min_value=1)
        heads = check_int(heads, "heads", min_value=1)
        ff = check_int(ff, "ff", min_value=1)
        dropout = check_float(dropout, "dropout", min_value=0.0, max_value=1.0,
                              max_inclusive=False)
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Linear(ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.norm2(x))


class RowTransformer(nn.Module):
    """A tiny Transformer encoder classifier with image rows as tokens.

    Each row of ``input_size`` pixels is embedded linearly into ``d_model``
    dimensions, a learned position embedding is added, ``layers`` pre-norm
    :class:`EncoderBlock` s follow, and the mean token goes through a final
    LayerNorm to the linear head (logits).

    Args:
        d_model: token width (divisible by ``heads``).
        heads: attention heads per block.
        layers: encoder blocks.
        ff: hidden width of each block's MLP.
        seq_len: longest sequence the position embedding covers.
        input_size: features per token (28 pixels of a row).
        num_classes: outputs of the linear head.
    """

    def __init__(self, d_model: int = 32, heads: int = 4, layers: int = 2, ff: int = 64,
                 seq_len: int = 28, input_size: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        d_model = check_int(d_model, "d_model", min_value=1)
        heads = check_int(heads, "heads", min_value=1)
        ff = check_int(ff, "ff", min_value=1)
        layers = check_int(layers, "layers", min_value=1)
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        self.embed = nn.Linear(check_int(input_size, "input_size", min_value=1), d_model)
        self.pos = nn.Parameter(torch.zeros(1, check_int(seq_len, "seq_len", min_value=1),
                                            d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(d_model, heads, ff) for _ in range(layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, check_int(num_classes, "num_classes", min_value=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _check_features(_as_rows(x), self.embed.in_features)
        if rows.shape[1] > self.pos.shape[1]:
            raise ValueError(f"sequence of {rows.shape[1]} tokens is longer than seq_len "
                             f"{self.pos.shape[1]}")
        h = self.embed(rows) + self.pos[:, : rows.shape[1]]
        return self.head(self.norm(self.blocks(h)).mean(dim=1))
