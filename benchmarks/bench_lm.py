"""A byte-level language model like section 5.7's: perplexity, KV cache, FSDP2.

Run:  python benchmarks/bench_lm.py   (about 1-2 minutes on 2 CPU cores; 2 more when
the model is not cached yet). Writes benchmarks/results/lm.json.

The model is companion.lm.TinyGPT in the library's default configuration (1.9 M
parameters, bytes as tokens) trained by companion.lm.pretrained_lm on 24 files of the
Python standard library (the corpus hash is recorded), measured on the *whole*
validation split. Section 5.7 trains a smaller one (d_model 128, 1,000 steps) to fit
the book's build time, so its numbers are not this record's. Compression of a language
model (quantization, pruning, decoding kernels) is measured on a real pretrained
model, SmolLM2-135M, by bench_llm.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
from _record import Record

from companion import lm, parallel

OUT = Path(__file__).resolve().parent / "results" / "lm.json"


def main() -> None:
    record = Record(threads=1, baselines={
        "perplexity": "the fp32 model on the whole validation split",
        "speed": "fp32 eager generation with the KV cache, batch 1, 1 thread, interleaved"})
    corpus = lm.stdlib_corpus()
    model = lm.pretrained_lm(corpus, progress=False)
    prompt = torch.tensor(list(b"def __init__(self"), dtype=torch.long)
    kv = {"fp32 ppl": lm.perplexity(model, corpus.val),
          "int8 KV ppl": lm.perplexity(model, corpus.val, int8_kv=True)}
    speed = lm.decode_latency({"with cache": model, "without": model}, prompt, 64,
                              use_cache={"with cache": True, "without": False}, repeats=7)
    kv.update({f"tokens/s {k}": 64 / (speed.median_ms(k) / 1000) for k in speed.names})
    print(kv)

    fsdp = parallel.fsdp_training(model, corpus.train, steps=20, batch_size=8, world_size=2,
                                  lr=1e-4)
    print(f"FSDP2: max |loss difference| {fsdp.max_abs_diff:.2e} over 20 steps, "
          f"parameter bytes {fsdp.full_param_bytes} -> {fsdp.rank_param_bytes}")

    record.write(OUT, {
        "corpus": {"files": list(corpus.files), "sha256": corpus.sha256,
                   "train_bytes": len(corpus.train), "val_bytes": len(corpus.val)},
        "model": {"config": vars(model.config) if hasattr(model.config, "__dict__") else
                  str(model.config), "parameters": sum(p.numel() for p in model.parameters())},
        "val_ppl": kv["fp32 ppl"], "kv_cache": kv,
        "fsdp2": {"max_abs_loss_diff": fsdp.max_abs_diff, "steps": 20, "world_size": 2,
                  "full_param_bytes": fsdp.full_param_bytes,
                  "rank_param_bytes": fsdp.rank_param_bytes}})


if __name__ == "__main__":
    main()
