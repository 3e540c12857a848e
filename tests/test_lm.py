"""The small language model and what the book does to it (tiny configs: seconds)."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch
from state_check import assert_unchanged
from torch import nn

from companion import lm, lm_prune, lm_quant, lm_tune, parallel, prune, quant

CFG = lm.LMConfig(block_size=16, d_model=32, n_layers=2, n_heads=2)
TOKENS = torch.randint(0, 256, (4000,), generator=torch.Generator().manual_seed(0))


def _model(seed: int = 0) -> lm.TinyGPT:
    torch.manual_seed(seed)
    return lm.TinyGPT(CFG).eval()


def _calib() -> list[torch.Tensor]:
    return [x for x, _ in lm.lm_batches(TOKENS, steps=2, batch_size=4, block_size=16)]


def _bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


# ---------------------------------------------------------------- data and model
def test_stdlib_corpus_is_fixed_and_split():
    c = lm.stdlib_corpus(("string.py", "heapq.py"))
    again = lm.stdlib_corpus(("string.py", "heapq.py"))
    assert c.sha256 == again.sha256 and torch.equal(c.train, again.train)
    assert 0.08 < len(c.val) / (len(c.train) + len(c.val)) < 0.12
    assert int(c.train.max()) < 256 and c.train.dtype == torch.long
    with pytest.raises(ValueError, match="files"):
        lm.stdlib_corpus(("no_such_module.py",))
    with pytest.raises(ValueError, match="files"):
        lm.stdlib_corpus(())


def test_kv_cache_gives_the_same_logits_as_the_full_pass():
    m = _model()
    x = TOKENS[:16].unsqueeze(0)
    full = m(x)
    cache = lm.KVCache(CFG.n_layers)
    parts = [m(x[:, :7], cache), m(x[:, 7:12], cache), m(x[:, 12:13], cache),
             m(x[:, 13:], cache)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert torch.equal(lm.generate(m, x[0, :4], 8), lm.generate(m, x[0, :4], 8, use_cache=False))


def test_int8_kv_cache_is_a_quarter_and_close():
    m = _model()
    x = TOKENS[:16].unsqueeze(0)
    c32, c8 = lm.KVCache(2), lm.KVCache(2, int8=True)
    a, b = m(x, c32), m(x, c8)
    assert abs(c8.nbytes() / c32.nbytes() - (1 + 4 / 16) / 4) < 1e-6   # + a scale per vector
    assert (a - b).abs().max() < 0.05


def test_model_rejects_bad_input():
    m = _model()
    with pytest.raises(ValueError, match="tokens"):
        m(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="block_size"):
        m(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="d_model"):
        lm.LMConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="new_tokens"):
        lm.generate(m, TOKENS[:4], 0)


def test_training_lowers_the_loss_and_the_cache_is_reused(tmp_path):
    cycle = torch.arange(4000) % 7   # the next byte is always predictable
    corpus = lm.Corpus(cycle[:3000], cycle[3000:], ("x",), "abc")
    train = lm.LMTrainConfig(steps=30, batch_size=8, warmup_steps=3, lr=1e-2)
    m = lm.pretrained_lm(corpus, CFG, train, cache_dir=tmp_path, progress=False)
    assert lm.perplexity(m, corpus.val) < 3.0   # uniform over 7 symbols would be 7
    files = list(tmp_path.glob("tinygpt-*.pt"))
    assert len(files) == 1
    again = lm.pretrained_lm(corpus, CFG, train, cache_dir=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(),
                                                 again.state_dict().values(), strict=True))


def test_perplexity_of_a_uniform_model_is_the_vocabulary():
    m = _model()
    with torch.no_grad():
        m.head.weight.zero_()
    assert lm.perplexity(m, TOKENS[:200]) == pytest.approx(256, rel=1e-4)


def test_peak_memory_sees_a_large_allocation():
    peak = lm.peak_memory(lambda: torch.ones(1000, 1000).sum())
    assert peak >= 4_000_000


def test_train_config_checks():
    with pytest.raises(ValueError, match="warmup_steps"):
        lm.LMTrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="schedule"):
        lm.LMTrainConfig(schedule="linear")


# ---------------------------------------------------------------- quantization
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_groupwise_roundtrip_error_is_half_a_step(bits):
    w = torch.randn(8, 64)
    g = quant.quantize(w, bits, block_size=(1, 16), scale_dtype=torch.float16)
    err = (quant.dequantize(g) - w).abs().reshape(8, 4, 16)
    assert (err <= g.scale.float()[..., None] / 2 + 1e-6).all()


def test_gptq_lowers_the_output_error_of_correlated_inputs():
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    x = torch.randn(512, 8) @ torch.randn(8, 64) + 0.1 * torch.randn(512, 64)
    rtn = quant.dequantize(quant.quantize(w, 3, block_size=(1, 16), scale_dtype=torch.float16))
    gptq = quant.dequantize(lm_quant.gptq_quantize(w, x.T @ x, 3, 16))
    err = lambda q: (x @ (q - w).T).pow(2).mean()  # noqa: E731
    assert err(gptq) < 0.5 * err(rtn)


def test_smooth_scales_keep_the_product():
    w, x = torch.randn(8, 16), torch.randn(10, 16) * 10
    s = lm_quant.smooth_scales(x.abs().amax(0), w, 0.5)
    torch.testing.assert_close((x / s) @ (w * s).T, x @ w.T, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("config", [lm_quant.RTNConfig(bits=4, group_size=16),
                                    lm_quant.GPTQConfig(bits=4, group_size=16),
                                    lm_quant.AWQConfig(bits=4, group_size=16)])
def test_quantize_lm_shrinks_and_stays_close(config):
    m = _model()
    q = lm_quant.quantize_lm(m, config, calibration=_calib())
    # the default choice: the linears inside the blocks; the LM head stays float
    assert isinstance(q.blocks[0].attn.qkv, quant.QuantizedWeightLayer)
    assert isinstance(q.head, nn.Linear) and isinstance(m.blocks[0].attn.qkv, nn.Linear)
    linear_bytes = sum(x.weight.numel() * 4 for n, x in m.named_modules()
                       if isinstance(x, nn.Linear) and n.startswith("blocks."))
    q_bytes = sum(b.numel() * b.element_size() for n, b in q.named_buffers()
                  if n.endswith(("codes", "scale", "zero_point")))
    assert q_bytes / linear_bytes < 0.2
    assert _bytes(q) < _bytes(m)
    x = TOKENS[:16].unsqueeze(0)
    assert (q(x) - m(x)).abs().max() < 0.1


@pytest.mark.parametrize(("config", "kwargs", "match"), [
    (lm_quant.RTNConfig(group_size=7), {}, "group_size"),
    (lm_quant.GPTQConfig(), {"calibration": []}, "calibration"),
    (lm_quant.GPTQConfig(), {}, "calibration"), (lm_quant.AWQConfig(), {}, "calibration"),
])
def test_quantize_lm_bad_input(config, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lm_quant.quantize_lm(_model(), config, **kwargs)
    with pytest.raises(TypeError, match="config"):
        lm_quant.quantize_lm(_model(), "rtn")


@pytest.mark.parametrize(("make", "field", "value", "exc"), [
    (lm_quant.RTNConfig, "bits", 1, ValueError), (lm_quant.RTNConfig, "bits", 9, ValueError),
    (lm_quant.RTNConfig, "bits", 4.0, TypeError),
    (lm_quant.RTNConfig, "group_size", 0, ValueError),
    (lm_quant.GPTQConfig, "act_order", "yes", TypeError),
    (lm_quant.GPTQConfig, "damp", 0.0, ValueError),
    (lm_quant.GPTQConfig, "group_size", -32, ValueError),
    (lm_quant.AWQConfig, "grid", 1, ValueError), (lm_quant.AWQConfig, "batches", 0, ValueError),
    (lm_quant.AWQConfig, "bits", 16, ValueError),
])
def test_quantize_configs_reject_bad_values_by_name(make, field, value, exc):
    with pytest.raises(exc, match=field):
        make(**{field: value})
    config = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, field, value)


def test_activation_absmax_has_one_value_per_input_channel():
    stats = lm_quant.activation_absmax(_model(), _calib())
    assert stats["blocks.0.mlp.2"].shape == (4 * 32,)
    assert "blocks.1.attn.qkv" in stats and "head" not in stats
    with_head = lm_quant.activation_absmax(_model(), _calib(), lambda _m, n: True)
    assert with_head["head"].shape == (32,)


# ---------------------------------------------------------------- pruning
@pytest.mark.parametrize("config", [lm_prune.MagnitudeConfig, lm_prune.WandaConfig])
def test_prune_lm_unstructured_and_2_4(config):
    m = _model()
    p = lm_prune.prune_lm(m, config(sparsity=0.3), calibration=_calib())
    assert prune.sparsity(p, filter_fn=lambda _m, n: n != "head") == pytest.approx(0.3, abs=0.02)
    assert prune.sparsity(m) == 0.0
    p24 = lm_prune.prune_lm(m, config(pattern="2:4"), calibration=_calib())
    w = p24.blocks[0].mlp[0].weight.reshape(-1, 4)
    assert ((w != 0).sum(dim=1) == 2).all()


def test_wanda_keeps_weights_on_loud_channels():
    w = torch.ones(2, 4)
    keep = lm_prune.prune_mask(lm_prune.prune_scores(w, torch.tensor([1.0, 9, 1, 9])), 0.5)
    assert keep[:, [1, 3]].all() and not keep[:, [0, 2]].any()


def test_prune_lm_bad_input():
    with pytest.raises(ValueError, match="sparsity"):
        lm_prune.MagnitudeConfig(sparsity=1.0)
    with pytest.raises(ValueError, match="sparsity"):
        lm_prune.WandaConfig(sparsity=0.3, pattern="2:4")
    with pytest.raises(ValueError, match="calibration"):
        lm_prune.prune_lm(_model(), lm_prune.WandaConfig(), calibration=[])
    with pytest.raises(ValueError, match="calibration"):
        lm_prune.prune_lm(_model(), lm_prune.WandaConfig())
    with pytest.raises(ValueError, match="pattern"):
        lm_prune.MagnitudeConfig(pattern="4:8")
    with pytest.raises(TypeError, match="config"):
        lm_prune.prune_lm(_model(), "magnitude")


# ---------------------------------------------------------------- tuning
def test_lora_starts_at_the_base_model_and_merges_exactly():
    m = _model()
    lora = lm_tune.add_lora(m, rank=2)
    x = TOKENS[:16].unsqueeze(0)
    torch.testing.assert_close(lora(x), m(x))
    assert lm_tune.trainable_parameters(lora) < 0.2 * lm_tune.trainable_parameters(m)
    with torch.no_grad():
        for mod in lora.modules():
            if isinstance(mod, lm_tune.LoRALinear):
                mod.lora_B.normal_()
    merged = lm_tune.merge_lora(lora)
    assert not any(isinstance(mod, lm_tune.LoRALinear) for mod in merged.modules())
    torch.testing.assert_close(merged(x), lora(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="rank"):
        lm_tune.add_lora(m, rank=0)


def test_optimizer_state_is_two_moments_per_trainable_parameter():
    lora = lm_tune.add_lora(_model(), rank=2)
    opt = torch.optim.Adam([p for p in lora.parameters() if p.requires_grad])
    lm.lm_loss(lora(TOKENS[:16].unsqueeze(0)), TOKENS[1:17].unsqueeze(0)).backward()
    opt.step()
    assert lm_tune.optimizer_state_bytes(opt) == 8 * lm_tune.trainable_parameters(lora)


def test_distill_lm_trains_the_student_only():
    teacher, student = _model(0), _model(1)
    with assert_unchanged(teacher):
        h = lm_tune.distill_lm_(student, teacher, TOKENS,
                                lm.LMTrainConfig(steps=3, batch_size=2, warmup_steps=0))
    assert h.steps == 3
    with pytest.raises(ValueError, match="temperature"):
        lm_tune.distill_lm_(student, teacher, TOKENS, temperature=0.0)


@pytest.mark.parametrize(("batch", "seq", "width"), [(8, 64, 64), (4, 32, 32)])
def test_training_memory_formula_matches_a_measured_step(batch, seq, width):
    m = lm.TinyGPT(lm.LMConfig(block_size=seq, d_model=width, n_layers=2, n_heads=2))
    budget = lm_tune.training_memory(m, batch, seq)
    x = TOKENS[:batch * seq].view(batch, seq)
    y = TOKENS[1:batch * seq + 1].view(batch, seq)
    opt = torch.optim.Adam(m.parameters())

    def step():
        opt.zero_grad(set_to_none=False)
        lm.lm_loss(m(x), y).backward()
        opt.step()

    step()   # creates gradients and Adam's states: they are alive before the measured step
    params = list(m.parameters())
    assert budget.weights == sum(4 * p.numel() for p in params)
    assert budget.gradients == sum(p.grad.numel() * p.grad.element_size() for p in params)
    assert budget.optimizer == lm_tune.optimizer_state_bytes(opt)
    # what the step allocates above them: the activations. Measured: 0.96 and 1.04 of the
    # formula here (with four heads instead of two it overestimates: 0.83 at 8x64x64)
    assert 0.9 < lm.peak_memory(step) / budget.activations < 1.1
    assert lm_tune.training_memory(m, batch, seq, checkpoint=True).activations < \
        budget.activations


# ---------------------------------------------------------------- FSDP2
def test_fsdp2_matches_one_process():
    m = _model()
    r = parallel.fsdp_training(m, TOKENS, steps=3, batch_size=4, world_size=2, timeout=120)
    assert r.max_abs_diff < 1e-4
    assert max(r.rank_param_bytes) <= math.ceil(r.full_param_bytes / 2) + 4096
    with pytest.raises(ValueError, match="batch_size"):
        parallel.fsdp_training(m, TOKENS, batch_size=3, world_size=2)
