"""The schematic figures in companion.plot: what each one draws and which arguments it refuses."""

import matplotlib.pyplot as plt
import pytest

from companion import plot

plt.switch_backend("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _gids(ax) -> list[str]:
    return [p.get_gid() for p in ax.patches if p.get_gid() is not None]


def _joined(ax) -> str:
    return "\n".join(_texts(ax))


def test_lora_shows_frozen_w_and_trainable_b_a():
    ax = plot.diagram_lora()
    text = _joined(ax)
    for word in ("frozen", "W  (d × k)", "A  (r × k)", "B  (d × r)", "(α / r) B A x"):
        assert word in text
    assert _gids(ax).count("frozen") == 1 and _gids(ax).count("trainable") == 2
    assert not ax.axison


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_fsdp_has_one_column_per_rank_and_both_collectives(world_size):
    ax = plot.diagram_fsdp(world_size)
    labels = _texts(ax)
    assert sorted(t for t in labels if t.startswith("rank ")) == \
        [f"rank {i}" for i in range(world_size)]
    assert labels.count("all-gather") == 2
    assert sum("reduce-scatter" in t for t in labels) == 1
    for i in range(world_size):
        assert f"P_{i}" in labels and f"G_{i}" in labels


def test_gptq_colours_columns_by_state():
    ax = plot.diagram_gptq()
    gids = _gids(ax)
    rows = 5
    assert gids.count("current") == rows  # exactly one column is being quantized
    assert gids.count("quantized") > 0 and gids.count("pending") > 0
    quantized_x = max(p.get_x() for p in ax.patches if p.get_gid() == "quantized")
    current_x = min(p.get_x() for p in ax.patches if p.get_gid() == "current")
    pending_x = min(p.get_x() for p in ax.patches if p.get_gid() == "pending")
    assert quantized_x < current_x < pending_x  # frozen left, pending right
    assert "H⁻¹" in _joined(ax) and "frozen" in _joined(ax)


@pytest.mark.parametrize("stages", [2, 3, 5])
def test_early_exit_has_a_test_per_exit_and_an_output_per_stage(stages):
    labels = _texts(ax := plot.diagram_early_exit(stages))
    assert sum(t.startswith("stage ") for t in labels) == stages
    assert sum("≥ threshold?" in t for t in labels) == stages - 1
    assert sum(t.startswith("output") for t in labels) == stages
    assert labels.count("yes") == labels.count("no") == stages - 1
    assert "max softmax" in _joined(ax)


@pytest.mark.parametrize(("num_experts", "k"), [(4, 1), (4, 2), (8, 3), (2, 2)])
def test_moe_highlights_exactly_k_experts_with_the_highest_scores(num_experts, k):
    ax = plot.diagram_moe(num_experts, k)
    gids = _gids(ax)
    assert gids.count("expert-active") == k
    assert gids.count("expert-idle") == num_experts - k
    labels = [t for t in _texts(ax) if t.startswith("expert ")]
    assert len(labels) == num_experts
    score = {t.split("\n")[0]: float(t.split("= ")[1]) for t in labels}
    active = [p for p in ax.patches if p.get_gid() == "expert-active"]
    idle = [p for p in ax.patches if p.get_gid() == "expert-idle"]

    def name(patch):  # the label drawn at the patch's centre
        cx, cy = patch.get_x() + patch.get_width() / 2, patch.get_y() + patch.get_height() / 2
        return next(t.get_text().split("\n")[0] for t in ax.texts
                    if t.get_position() == pytest.approx((cx, cy)))

    if idle:
        assert min(score[name(p)] for p in active) >= max(score[name(p)] for p in idle)
    assert f"top-{k}" in _joined(ax)


@pytest.mark.parametrize("steps", [1, 4, 8])
def test_kv_cache_grows_by_one_key_and_value_per_step(steps):
    ax = plot.diagram_kv_cache(steps)
    gids = _gids(ax)
    assert gids.count("new") == 2 * steps  # one key and one value appended each step
    assert gids.count("cached") == steps * (steps - 1)  # 2 * (0 + 1 + ... + steps-1)
    labels = _texts(ax)
    assert [t for t in labels if t.startswith("cache: ")][-1].startswith(f"cache: {steps} token")
    assert "2 × layers × kv_heads × head_dim × bytes" in _joined(ax)


def test_int8_gemm_names_each_stage_of_the_data_path():
    text = _joined(ax := plot.diagram_int8_gemm())
    for word in ("quantize", "uint8", "int8 × int8", "int32", "bias", "requantize",
                 "M = s_x s_w / s_y", "dequantize", "per-channel"):
        assert word in text
    assert [t.get_text() for t in ax.get_legend().get_texts()] == \
        ["float32", "uint8 / int8", "int32"]


@pytest.mark.parametrize(("call", "name"), [
    (lambda: plot.diagram_fsdp(0), "world_size"),
    (lambda: plot.diagram_fsdp(9), "world_size"),
    (lambda: plot.diagram_early_exit(1), "stages"),
    (lambda: plot.diagram_moe(1), "num_experts"),
    (lambda: plot.diagram_moe(4, 5), "k"),
    (lambda: plot.diagram_moe(4, 0), "k"),
    (lambda: plot.diagram_kv_cache(0), "steps"),
])
def test_bad_counts_raise_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must be between"):
        call()


@pytest.mark.parametrize("call", [lambda: plot.diagram_fsdp(2.0),
                                  lambda: plot.diagram_moe(4, True),
                                  lambda: plot.diagram_kv_cache("4")])
def test_non_int_counts_raise_type_error(call):
    with pytest.raises(TypeError, match="must be an int"):
        call()


def test_draws_on_a_given_axes():
    _, ax = plt.subplots()
    assert plot.diagram_moe(ax=ax) is ax
    assert plot.diagram_lora(figsize=(4, 2)).figure.get_size_inches().tolist() == [4, 2]
