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
* **Training.** :func:`train_lm_` runs :func:`companion.train.fit` (the one
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

from .._checks import own_public_names
from .corpus import PROSE_FILES, STDLIB_FILES, Corpus, lm_batches, stdlib_corpus
from .evaluation import compare_lms, decode_latency, generate, peak_memory, perplexity
from .model import KVCache, LMConfig, TinyGPT
from .training import LMTrainConfig, lm_loss, pretrained_lm, train_lm_

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
    "train_lm_",
    "pretrained_lm",
    "perplexity",
    "generate",
    "decode_latency",
    "compare_lms",
    "peak_memory",
]

own_public_names(globals(), __name__)
