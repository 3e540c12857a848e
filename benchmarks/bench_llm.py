"""SmolLM2-135M-Instruct compressed: perplexity per method and bit width, pruning, and
batch-1 decoding on real CPU kernels against the memory roofline and llama.cpp.

Run:  python benchmarks/bench_llm.py   (about 30 minutes on 2 CPU cores; needs
`make llm`; the llama.cpp row needs `make llama-cpp`, and records why when it is not
there). Writes benchmarks/results/llm.json; section 2.3 shows its tables and figure.

Protocol (companion.llm.text): perplexity on the whole evaluation split (the first
EVAL_TOKENS tokens of the held-out pydoc topics, windows of 512); calibration from the
disjoint calibration topics, 8 windows of 512 tokens drawn with a seed; the methods that
use calibration run with seeds 0, 1, 2 at 4 and 3 bits, groups of 64; SmoothQuant W8A8
(alpha 0.5, per-tensor int8 activations, torch._int_mm) with 3 seeds. Quantization and
perplexity use both cores; decoding is timed on 1 thread, variants interleaved.
"""

from __future__ import annotations

import copy
import importlib.util
import statistics
import time
from pathlib import Path

import torch
from _record import Record

from companion import infer, lm_prune, lm_quant
from companion.llm import (
    EVAL_TOKENS,
    W8A8Linear,
    calibration_batches,
    decode_speed,
    kv_cache_bytes_per_token,
    load_smollm2,
    smollm2_path,
    texts,
    to_w8a8_,
    to_weight_only_,
    token_perplexity,
)
from companion.quant import QuantizedWeightLayer

OUT = Path(__file__).resolve().parent / "results" / "llm.json"
SEEDS = (0, 1, 2)
PROMPT = "Explain in two sentences why the sky is blue."
NAMES = {"w8a8": "W8A8", "w8a8 per-token": "W8A8 per-token act.", "smoothquant": "SmoothQuant W8A8"}


def bits_per_weight(model: torch.nn.Module) -> float:
    """Stored bits per quantized weight over the model's quantized linears: each layer's
    own ``bits_per_weight()`` (scales and zero points included), weighted by its size."""
    qs = [m for m in model.modules() if isinstance(m, QuantizedWeightLayer | W8A8Linear)]
    sizes = [m.out_features * m.in_features for m in qs]
    return sum(m.bits_per_weight() * n for m, n in zip(qs, sizes, strict=True)) / sum(sizes)


def quantization(model, tx, ref_ppl) -> list[dict]:
    rows = []
    grid = [(8, None), (4, 32), (4, 64), (4, None), (3, 32), (3, 64), (3, None), (2, 32),
            (2, 64)]
    plan = [("rtn", b, g, (0,)) for b, g in grid]
    plan += [(m, b, 64, SEEDS) for m in ("gptq", "awq") for b in (4, 3)]
    plan += [("gptq", 4, 32, (0,)), ("gptq", 4, None, (0,)), ("gptq", 2, 64, (0,))]
    plan += [("w8a8", 8, None, (0,)), ("w8a8 per-token", 8, None, (0,)),
             ("smoothquant", 8, None, SEEDS)]
    for method, bits, group, seeds in plan:
        for seed in seeds:
            calib = calibration_batches(tx.calibration, seed=seed)
            t = time.perf_counter()
            if method.startswith("w8a8"):      # int8 weights and activations, int8 GEMM
                act = "per-token" if method.endswith("per-token") else "per-tensor"
                q = to_w8a8_(copy.deepcopy(model), act=act)
            elif method == "smoothquant":     # alpha 0.5, then per-tensor W8A8
                q = to_w8a8_(lm_quant.smooth_lm(model, calib, alpha=0.5))
            else:
                config = {"rtn": lm_quant.RTNConfig, "gptq": lm_quant.GPTQConfig,
                          "awq": lm_quant.AWQConfig}[method](bits=bits, group_size=group)
                q = lm_quant.quantize_lm(model, config,
                                         calibration=None if method == "rtn" else calib)
            seconds = time.perf_counter() - t
            ppl = token_perplexity(q, tx.heldout)
            row = {"method": NAMES.get(method, method.upper()), "bits": bits,
                   "group": "per-channel" if group is None else group, "seed": seed,
                   "bits/weight": bits_per_weight(q), "ppl": ppl,
                   "ppl +%": 100 * (ppl / ref_ppl - 1), "quantize s": seconds}
            rows.append(row)
            print(row, flush=True)
    return rows


def pruning(model, tx, ref_ppl) -> list[dict]:
    rows = []
    for method in ("magnitude", "wanda"):
        for pattern in ("unstructured", "2:4"):
            for seed in SEEDS if method == "wanda" else (0,):
                config = {"magnitude": lm_prune.MagnitudeConfig,
                          "wanda": lm_prune.WandaConfig}[method](0.5, pattern)
                p = lm_prune.prune_lm(model, config,
                                      calibration=calibration_batches(tx.calibration,
                                                                      seed=seed))
                ppl = token_perplexity(p, tx.heldout)
                rows.append({"method": method, "pattern": pattern, "sparsity": 0.5,
                             "seed": seed, "ppl": ppl, "ppl +%": 100 * (ppl / ref_ppl - 1)})
                print(rows[-1], flush=True)
    return rows


def llama_cpp_row(tok, ids, model, new_tokens: int, rounds: int) -> dict:
    """llama.cpp on the same GGUF file, same thread count; logits checked against PyTorch."""
    if importlib.util.find_spec("llama_cpp") is None:
        return {"skipped": "llama-cpp-python is not installed (make llama-cpp builds it)"}
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=str(smollm2_path()), n_threads=1, n_threads_batch=1, n_ctx=1024,
                logits_all=True, verbose=False)
    text = texts(tok).heldout[:256]
    llm.reset()
    llm.eval(text.tolist())
    with torch.inference_mode():
        ours = model(text[None]).logits[0].float().numpy()
    theirs = np.array(llm.scores[: len(text)], dtype=np.float32)
    agree = float((ours.argmax(-1) == theirs.argmax(-1)).mean())
    diff = float(np.abs(ours - theirs).max())
    del llm   # timing: a context that keeps only the last position's logits, as in serving
    llm = Llama(model_path=str(smollm2_path()), n_threads=1, n_threads_batch=1, n_ctx=1024,
                verbose=False)
    times = []
    for _ in range(rounds):
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids[0].tolist())
        t_pre = time.perf_counter() - t
        for _ in range(new_tokens - 1):
            tok_id = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([tok_id])
        times.append((t_pre, time.perf_counter() - t))
    pre = statistics.median(t for t, _ in times)
    dec = statistics.median(t for _, t in times)
    return {"variant": "llama.cpp Q4_1 (same GGUF)", "prefill tok/s": ids.shape[1] / pre,
            "decode tok/s": (new_tokens - 1) / (dec - pre),
            "top1 agreement": agree, "max |logit diff|": diff, "tokens compared": len(text),
            "version": importlib.import_module("llama_cpp").__version__}


def decoding(model, tok) -> dict:
    torch.set_num_threads(1)
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}],
                                  add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    bandwidth = infer.measure_bandwidth(512, threads=1)
    variants = {"fp32": model,
                "bf16": to_weight_only_(copy.deepcopy(model), "bf16"),
                "int8 weight-only (bf16 act.)": to_weight_only_(copy.deepcopy(model), "int8"),
                "int4 g64 weight-only (bf16 act.)": to_weight_only_(copy.deepcopy(model), "int4",
                                                                    group_size=64),
                "W8A8 SmoothQuant (int8 GEMM, head fp32)": to_w8a8_(lm_quant.smooth_lm(
                    model, calibration_batches(texts(tok).calibration, seed=0)))}
    rows = decode_speed(variants, ids, new_tokens=64, repeats=5, bandwidth=bandwidth)
    for r in rows:
        print(r, flush=True)
    peer = llama_cpp_row(tok, ids, model, 64, 5)
    print(peer, flush=True)
    return {"bandwidth GB/s (512 MiB copy, 1 thread)": bandwidth / 1e9, "prompt tokens":
            ids.shape[1], "new tokens": 64, "rows": rows, "llama.cpp": peer}


def model_sizes() -> list[dict]:
    """Random-weight Llama configs from 135 M to ~1 B parameters: decode speed is set by
    bytes, not by the values of the weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shapes = {"135M (SmolLM2-135M)": (576, 1536, 30, 9, 3),
              "360M (SmolLM2-360M)": (960, 2560, 32, 15, 5),
              "1.1B (hidden 2048, 22 layers)": (2048, 5632, 22, 32, 4)}
    rows = []
    bandwidth = infer.measure_bandwidth(512, threads=1)
    for name, (h, inter, layers, heads, kv) in shapes.items():
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=49152, hidden_size=h, intermediate_size=inter,
                          num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=kv, tie_word_embeddings=True)
        m = LlamaForCausalLM(cfg).eval()
        params = sum(p.numel() for p in m.parameters())
        variants = {"fp32": m, "int4 g64": to_weight_only_(copy.deepcopy(m), "int4")}
        ids = torch.randint(0, 49152, (1, 16))
        for r in decode_speed(variants, ids, new_tokens=16, repeats=3, bandwidth=bandwidth):
            rows.append({"model": name, "parameters": params, **r})
            print(rows[-1], flush=True)
        del m, variants
    return rows


def main() -> None:
    record = Record(threads=1, baselines={
        "perplexity": f"the float32 model dequantized from the GGUF file, first {EVAL_TOKENS} "
                      "tokens of the held-out pydoc topics",
        "speed": "float32 eager PyTorch, greedy decoding with a KV cache, batch 1, 1 thread"})
    model, tok = load_smollm2()
    tx = texts(tok)
    torch.set_num_threads(2)
    ref_ppl = token_perplexity(model, tx.heldout)
    print(tx, f"reference perplexity {ref_ppl:.3f}", flush=True)
    quant_rows = quantization(model, tx, ref_ppl)
    prune_rows = pruning(model, tx, ref_ppl)
    decode = decoding(model, tok)
    kv = {"bytes/token fp32": kv_cache_bytes_per_token(model.config),
          "bytes/token bf16": kv_cache_bytes_per_token(model.config, torch.bfloat16)}
    sizes = model_sizes()
    record.write(OUT, {
        "model": {"file": smollm2_path().name,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "text": {"description": str(tx), "sha256": tx.sha256, "eval_tokens": len(tx.heldout),
                 "calibration": "8 windows of 512 tokens, seeds " + ", ".join(map(str, SEEDS))},
        "reference_ppl": ref_ppl, "quantization": quant_rows, "pruning": prune_rows,
        "decoding": decode, "kv_cache": kv, "model_sizes": sizes})


if __name__ == "__main__":
    main()
