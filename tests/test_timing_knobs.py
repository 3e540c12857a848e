"""One name per timing knob: interleaved timing rounds are ``repeats`` everywhere.

The old spellings (``rounds=`` of the LM decoders, ``steps=`` of
``amp.throughput``) are gone, a bad ``repeats`` is refused by that name, and a
timing function leaves the caller's model in the mode it had.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from companion import amp, lm


def _tiny_gpt() -> nn.Module:
    torch.manual_seed(0)
    return lm.TinyGPT(lm.LMConfig(vocab_size=16, block_size=16, d_model=16, n_layers=1,
                                  n_heads=2))


def test_lm_decode_latency_takes_repeats():
    model, prompt = _tiny_gpt(), torch.arange(4)
    timing = lm.decode_latency({"a": model, "b": model}, prompt, 2, repeats=3)
    assert len(timing.times_ms["a"]) == 3 and len(timing.times_ms["b"]) == 3
    with pytest.raises(ValueError, match="repeats"):
        lm.decode_latency({"a": model}, prompt, 2, repeats=1)
    with pytest.raises(TypeError, match="rounds"):
        lm.decode_latency({"a": model}, prompt, 2, rounds=3)


def test_lm_compare_lms_takes_repeats():
    model = _tiny_gpt()
    table = lm.compare_lms({"a": model}, torch.arange(16).repeat(4), torch.arange(4),
                           new_tokens=2, repeats=2, max_windows=1)
    assert "median of 2 interleaved rounds" in table.title
    with pytest.raises(TypeError, match="rounds"):
        lm.compare_lms({"a": model}, torch.arange(40), torch.arange(4), rounds=2)


def test_amp_throughput_takes_repeats():
    model = nn.Sequential(nn.Linear(16, 10))
    x, y = torch.randn(4, 16), torch.randint(0, 10, (4,))
    assert amp.throughput(model, x, y, repeats=2, warmup=0) > 0
    with pytest.raises(ValueError, match="repeats"):
        amp.throughput(model, x, y, repeats=0)
    with pytest.raises(TypeError, match="steps"):
        amp.throughput(model, x, y, steps=2)


def test_llm_decode_speed_takes_repeats_and_restores_the_mode():
    transformers = pytest.importorskip("transformers")
    from companion import llm

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=2)
    model = transformers.LlamaForCausalLM(cfg).train()
    prompt = torch.randint(0, 32, (1, 4), generator=torch.Generator().manual_seed(0))
    rows = llm.decode_speed({"fp32": model}, prompt, new_tokens=2, repeats=2)
    assert [r["variant"] for r in rows] == ["fp32"] and rows[0]["x fp32"] == 1.0
    assert all(m.training for m in model.modules())   # timed in eval mode, then restored
    with pytest.raises(ValueError, match="repeats"):
        llm.decode_speed({"fp32": model}, prompt, new_tokens=2, repeats=0)
    with pytest.raises(TypeError, match="rounds"):
        llm.decode_speed({"fp32": model}, prompt, new_tokens=2, rounds=2)
