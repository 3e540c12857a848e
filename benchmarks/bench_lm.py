"""The small language model of sections 2.3 and 5.7, compressed: bytes, perplexity, tokens/s.

Run:  python benchmarks/bench_lm.py   (about 3-5 minutes on 2 CPU cores; 1.5 more when
the model is not cached yet). Writes benchmarks/results/lm.json and prints the tables.

The model is companion.lm.TinyGPT (1.9 M parameters, bytes as tokens) trained by
companion.lm.pretrained_lm on 24 files of the Python standard library (the corpus hash
is recorded). Every variant is measured on the *whole* validation split (117 K bytes
with Python 3.11); tokens/s is greedy generation of 32 bytes at batch 1 with the KV
cache, 1 thread, all variants interleaved. Quantized layers dequantize their weights at
every call (a simulation of the arithmetic): their tokens/s is not an int4 kernel's.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from _record import Record

from companion import lm, lm_prune, lm_quant, parallel

OUT = Path(__file__).resolve().parent / "results" / "lm.json"


def main() -> None:
    record = Record(threads=1, baselines={
        "size": "torch.save of the fp32 state dict",
        "perplexity": "the fp32 model on the whole validation split",
        "speed": "fp32 eager generation with the KV cache, batch 1, 1 thread, interleaved"})
    corpus = lm.stdlib_corpus()
    model = lm.pretrained_lm(corpus, progress=False)
    calib = [x for x, _ in lm.lm_batches(corpus.train, steps=4, batch_size=8,
                                         block_size=model.config.block_size, seed=1)]
    prompt = torch.tensor(list(b"def __init__(self"), dtype=torch.long)

    logging.getLogger("torchao").setLevel(logging.ERROR)
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    def torchao(config):
        m = copy.deepcopy(model)
        quantize_(m, config)
        return m

    variants = {"fp32": model, "bf16": copy.deepcopy(model).to(torch.bfloat16)}
    for bits, group in ((8, 32), (4, 32), (4, 64), (3, 32)):
        for method in ("rtn", "gptq", "awq"):
            if bits == 8 and method != "rtn":
                continue
            variants[f"int{bits} {method.upper()} g{group}"] = lm_quant.quantize_lm(
                model, bits=bits, group_size=group, method=method, calibration=calib)
    variants["int4 GPTQ g32, head fp32"] = lm_quant.quantize_lm(
        model, bits=4, group_size=32, method="gptq", calibration=calib,
        filter_fn=lambda _m, name: name != "head")
    variants["torchao int8"] = torchao(Int8WeightOnlyConfig())
    variants["torchao int4 g32 (intx)"] = torchao(
        IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32)))
    table = lm.compare_lms(variants, corpus.val, prompt, new_tokens=32, rounds=7)
    print(table)

    pruning = []
    for method in ("magnitude", "wanda"):
        for pattern, sparsity in [("unstructured", s) for s in (0.1, 0.3, 0.5, 0.6, 0.7)] + [
                ("2:4", 0.5)]:
            pruned = lm_prune.prune_lm(model, sparsity=sparsity, method=method,
                                       pattern=pattern, calibration=calib)
            pruning.append({"method": method, "pattern": pattern, "sparsity": sparsity,
                            "val ppl": lm.perplexity(pruned, corpus.val)})
    print(pruning)

    kv = {"fp32 ppl": lm.perplexity(model, corpus.val),
          "int8 KV ppl": lm.perplexity(model, corpus.val, int8_kv=True)}
    speed = lm.decode_latency({"with cache": model, "without": model}, prompt, 64,
                              use_cache={"with cache": True, "without": False}, rounds=7)
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
        "title": table.title, "rows": table.rows, "pruning": pruning, "kv_cache": kv,
        "fsdp2": {"max_abs_loss_diff": fsdp.max_abs_diff, "steps": 20, "world_size": 2,
                  "full_param_bytes": fsdp.full_param_bytes,
                  "rank_param_bytes": fsdp.rank_param_bytes}})


if __name__ == "__main__":
    main()
