"""A bad-input sweep over the public API of ``companion``.

Every public function is either listed in ``CASES`` with one valid call, or
in ``NOT_SWEPT`` with the reason. From each valid call the sweep derives bad
calls, one argument at a time, from the type of its valid value:

* a floating tensor becomes a NaN tensor, an inf tensor, an empty tensor and
  a Python list;
* a module becomes a string;
* a float becomes NaN; an int becomes a string; a choice string becomes an
  unknown name;

plus the explicit out-of-range values of each case. Each bad call must raise
``ValueError`` or ``TypeError`` whose message names the argument (as a whole
word: ``lo`` is not named by "float"). Finally the valid call itself must leave
every module and tensor argument unchanged (state dict, submodule classes,
train/eval modes, gradients, tensor values; inside dicts and lists too), except
the first argument of a function whose name ends in ``_`` and the arguments
listed in ``CHANGES``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from state_check import changes, snapshot
from torch import nn

import companion
from companion import (
    amp,
    apps,
    data,
    distill,
    dynamic,
    infer,
    llm,
    lm,
    lm_calibrate,
    lm_prune,
    lm_quant,
    lm_tune,
    lr,
    measure,
    models,
    optim,
    page,
    parallel,
    prune,
    pt2e,
    quant,
    reference,
    regularize,
    sparse,
    train,
)

_DS = data._synthetic_images(n_train=64, n_test=32, seed=0)
_LOADERS = data.make_loaders(_DS, 16)
_FLAT = data.make_loaders(_DS, 16, flatten=True)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))


def _x() -> torch.Tensor:
    return torch.randn(4, 1, 28, 28)


def _y() -> torch.Tensor:
    return torch.randint(0, 10, (4,))


@functools.cache
def _onnx() -> bytes:
    return infer.export_onnx(_mlp(), _x())


# a fresh cache directory per call, all removed when the test session ends
_SCRATCH = tempfile.TemporaryDirectory(prefix="companion-sweep-")
_LM_CFG = lm.LMConfig(block_size=16, d_model=32, n_layers=1, n_heads=2)
_TOKENS = torch.arange(600) % 50


def _lm() -> nn.Module:
    torch.manual_seed(0)
    return lm.TinyGPT(_LM_CFG)


def _lm_calib() -> list[torch.Tensor]:
    return [_TOKENS[:32].view(2, 16)]


def _curve_call() -> dict[str, Any]:
    model = _mlp()
    return {"model": model, "train_loader": _LOADERS.train, "val_loader": _LOADERS.val,
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.1), "epochs": 1,
            "eval_every": 2, "device": "cpu"}


@dataclass
class Case:
    """One public function, a valid call, and what to vary."""

    name: str
    fn: Callable[..., Any]
    make: Callable[[], dict[str, Any]]
    bad: dict[str, list[Any]] = field(default_factory=dict)  # explicit out-of-range values
    choices: tuple[str, ...] = ()  # string arguments that name an option
    no_auto: tuple[str, ...] = ()  # arguments the automatic mutations skip
    run_valid: bool = True  # run the valid call for the no-mutation check


CASES: list[Case] = [
    # ---------------------------------------------------------------- train / measure
    Case("train.set_seed", train.set_seed, lambda: {"seed": 0}, bad={"seed": [-1]}),
    Case("train.evaluate", train.evaluate, lambda: {"model": _mlp(), "loader": _LOADERS.test}),
    Case("train.predict_logits", train.predict_logits,
         lambda: {"model": _mlp(), "loader": _LOADERS.test}),
    Case("train.fit", train.fit, lambda: {"model": _mlp(), "train_loader": _LOADERS.train,
                                          "epochs": 1, "lr": 1e-3, "progress": False},
         bad={"epochs": [0], "lr": [0.0, -1.0]}),
    Case("train.clone", train.clone, lambda: {"model": _mlp()}),
    Case("measure.state_dict_bytes", measure.state_dict_bytes, lambda: {"model": _mlp()}),
    Case("measure.count_parameters", measure.count_parameters, lambda: {"model": _mlp()}),
    Case("measure.count_flops", measure.count_flops,
         lambda: {"model": _mlp(), "example_input": _x()}, no_auto=("example_input",)),
    Case("measure.measure_latency", measure.measure_latency,
         lambda: {"model": _mlp(), "example_input": _x(), "warmup": 1, "repeats": 2},
         bad={"repeats": [0], "warmup": [-1], "threads": [0]},
         no_auto=("model", "example_input")),
    Case("measure.compare_latency", measure.compare_latency,
         lambda: {"variants": {"a": _mlp(), "b": _mlp()}, "example_input": _x(), "repeats": 2,
                  "warmup": 1},
         bad={"repeats": [1], "warmup": [-1], "threads": [0], "baseline": ["c"]},
         no_auto=("variants", "example_input")),
    Case("reference.reference_model", reference.reference_model,
         lambda: {"name": "smallcnn-1ep"}, choices=("name",), run_valid=False),
    Case("reference.load_record", reference.load_record, lambda: {"name": "llm"}),
    Case("page.glue", page.glue, lambda: {"name": "acc", "value": 0.5},
         bad={"name": ["", "two words", 3]}),
    Case("page.x86_only", page.x86_only, lambda: {"what": "static int8"},
         bad={"what": ["", None]}),
    Case("reference.load_records", reference.load_records, lambda: {"folder": "gpu"}),
    Case("measure.compare", measure.compare,
         lambda: {"variants": {"a": _mlp(), "b": _mlp()}, "example_input": _x(),
                  "eval_data": [(_x(), _y())], "repeats": 2, "warmup": 1},
         bad={"repeats": [1], "warmup": [-1], "threads": [0], "baseline": ["c"],
              "variants": [{}, {"a": 3}]},
         no_auto=("variants", "example_input", "eval_data")),
    Case("measure.profile_operators", measure.profile_operators,
         lambda: {"model": _mlp(), "example_input": _x(), "runs": 1, "warmup": 0},
         bad={"runs": [0], "warmup": [-1], "threads": [0], "top": [0]},
         no_auto=("example_input",)),
    Case("infer.is_exported", infer.is_exported, lambda: {"model": _mlp()}),
    Case("infer.eval_copy", infer.eval_copy, lambda: {"model": _mlp()}),
    Case("pt2e.quantize_pt2e", pt2e.quantize_pt2e,
         lambda: {"model": models.SmallCNN(4, 8, 8), "example_input": _x(),
                  "calibration": [(_x(), _y())], "num_batches": 1},
         bad={"num_batches": [0], "calibration": [[]]}, no_auto=("example_input",)),
    Case("infer.fold_batchnorm", infer.fold_batchnorm, lambda: {"model": models.SmallCNN(4, 8, 8)}),
    Case("infer.fastest_fp32", infer.fastest_fp32,
         lambda: {"model": models.SmallCNN(4, 8, 8), "example_input": _x(), "repeats": 2},
         bad={"repeats": [1], "threads": [0]}),
    Case("measure.serialized_size", measure.serialized_size,
         lambda: {"obj": _mlp(), "fmt": "state_dict"}, choices=("fmt",), no_auto=("obj",)),
    # ---------------------------------------------------------------- quantization
    Case("quant.qrange", quant.qrange, lambda: {"bits": 8, "signed": True}, bad={"bits": [1, 17]}),
    Case("quant.quantize", quant.quantize, lambda: {"x": torch.randn(8, 4), "bits": 8},
         bad={"bits": [1, 17], "axis": [2], "block_size": [(1, 3), (1,)]}),
    Case("quant.fake_quantize", quant.fake_quantize, lambda: {"x": torch.randn(8, 4), "bits": 4},
         bad={"bits": [0]}),
    Case("quant.choose_qparams", quant.choose_qparams, lambda: {"lo": -1.0, "hi": 1.0, "bits": 8},
         bad={"bits": [1]}),
    Case("quant.sqnr", quant.sqnr, lambda: {"x": torch.randn(8), "x_hat": torch.randn(8)}),
    Case("quant.pack_bits", quant.pack_bits,
         lambda: {"codes": torch.randint(0, 8, (2, 5), dtype=torch.uint8), "bits": 3},
         bad={"codes": [torch.full((2, 4), 8, dtype=torch.uint8)], "bits": [0, 9]}),
    Case("quant.unpack_bits", quant.unpack_bits,
         lambda: {"packed": torch.zeros(2, dtype=torch.uint8), "bits": 4, "shape": (4,)},
         bad={"bits": [0, 9], "shape": [(5,)]}, no_auto=("packed", "shape")),
    Case("quant.make_observer", quant.make_observer, lambda: {"kind": "minmax"},
         choices=("kind",)),
    Case("quant.calibrate", quant.calibrate,
         lambda: {"model": _mlp(), "calibration": _LOADERS.train, "num_batches": 1},
         bad={"num_batches": [0]}),
    Case("quant.quantizable_layers", quant.quantizable_layers, lambda: {"model": _mlp()}),
    Case("quant.quantize_model", quant.quantize_model,
         lambda: {"model": _mlp(), "config": quant.DynamicInt8Config()},
         bad={"config": ["int8"], "calibration": [[torch.ones(1, 784)]], "filter_fn": ["fc1"]},
         no_auto=("calibration", "filter_fn")),
    # ---------------------------------------------------------------- pruning
    Case("prune.magnitude", prune.magnitude, lambda: {"weight": torch.randn(4, 4)}),
    Case("prune.taylor", prune.taylor,
         lambda: {"weight": torch.randn(4, 4), "grad": torch.randn(4, 4)},
         bad={"grad": [None, torch.randn(3, 3)]}),
    Case("prune.channel_l1", prune.channel_l1, lambda: {"weight": torch.randn(4, 3, 3, 3)}),
    Case("prune.check_sparsity", prune.check_sparsity, lambda: {"value": 0.5, "name": "value"},
         bad={"value": [-0.1, 1.0, 1.5]}, no_auto=("name",)),
    Case("prune.mask_from_scores", prune.mask_from_scores,
         lambda: {"scores": torch.rand(4, 4), "sparsity": 0.5}, bad={"sparsity": [1.0, -0.5]}),
    Case("prune.prune", prune.prune, lambda: {"model": _mlp(), "sparsity": 0.5},
         bad={"sparsity": [1.0, -0.1]}),
    Case("prune.remove", prune.remove, lambda: {"model": prune.prune(_mlp(), 0.5)}),
    Case("prune.sparsity", prune.sparsity, lambda: {"model": prune.prune(_mlp(), 0.5)}),
    Case("prune.effective_state_dict", prune.effective_state_dict,
         lambda: {"model": prune.prune(_mlp(), 0.5)}),
    Case("prune.is_pruned", prune.is_pruned, lambda: {"model": _mlp()}),
    Case("prune.prunable", prune.prunable, lambda: {"model": _mlp()}, bad={"name": ["nope"]}),
    Case("prune.select_channels", prune.select_channels,
         lambda: {"model": models.SmallCNN(), "ratio": 0.5}, bad={"ratio": [1.0, -0.1]}),
    Case("prune.prune_channels", prune.prune_channels,
         lambda: {"model": models.SmallCNN(), "plan": 0.5}, bad={"plan": [1.0, "half"]}),
    Case("prune.semi_structured_mask", prune.semi_structured_mask,
         lambda: {"weight": torch.randn(8, 8)}, bad={"weight": [torch.randn(8, 6)]}),
    Case("prune.PolynomialDecay", prune.PolynomialDecay,
         lambda: {"initial_sparsity": 0.0, "final_sparsity": 0.8, "begin_step": 0,
                  "end_step": 10},
         bad={"final_sparsity": [1.0], "end_step": [0]}),
    Case("sparse.encode", sparse.encode, lambda: {"state_dict": _mlp()},
         bad={"state_dict": [3], "config": ["lzma"]}),
    Case("sparse.decode", sparse.decode, lambda: {"data": sparse.encode(_mlp())},
         bad={"data": [b"not a companion file", "text"]}),
    # ---------------------------------------------------------------- training techniques
    Case("distill.kd_loss", distill.kd_loss,
         lambda: {"student_logits": torch.randn(4, 10), "teacher_logits": torch.randn(4, 10),
                  "labels": _y(), "temperature": 4.0, "alpha": 0.5},
         bad={"temperature": [0.0], "alpha": [-0.1, 1.5], "teacher_logits": [torch.randn(4, 9)]},
         no_auto=("labels",)),
    Case("distill.cache_teacher_logits", distill.cache_teacher_logits,
         lambda: {"teacher": _mlp(), "loader": _LOADERS.train},
         bad={"batch_size": [0], "loader": [[(torch.zeros(1, 784), torch.zeros(1))]]}),
    Case("distill.KDConfig", distill.KDConfig, lambda: {"temperature": 4.0, "alpha": 0.9},
         bad={"temperature": [0.0], "alpha": [2.0]}),
    Case("lr.lr_range_test", lr.lr_range_test,
         lambda: {"model": _mlp(), "train_loader": _LOADERS.train, "min_lr": 1e-5, "max_lr": 1.0,
                  "steps": 4},
         bad={"min_lr": [2.0, 0.0], "steps": [1]}, run_valid=True),
    Case("lr.make_schedule", lr.make_schedule,
         lambda: {"optimizer": torch.optim.SGD(_mlp().parameters(), lr=0.1), "kind": "cosine",
                  "total_steps": 10},
         choices=("kind",), bad={"total_steps": [0], "optimizer": ["sgd"]}, run_valid=False),
    Case("lr.training_curve_", lr.training_curve_, lambda: _curve_call(),
         bad={"optimizer": ["sgd"], "epochs": [0], "eval_every": [0]}),
    Case("lr.scaled_lr", lr.scaled_lr,
         lambda: {"base_lr": 0.01, "base_batch": 32, "batch": 128, "rule": "linear"},
         choices=("rule",), bad={"base_lr": [0.0], "base_batch": [0], "batch": [0]}),
    Case("optim.trajectory", optim.trajectory,
         lambda: {"loss_fn": lambda p: (p**2).sum(), "start": (1.0, 1.0),
                  "make_optimizer": lambda ps: optim.GD(ps, lr=0.1), "steps": 3},
         bad={"steps": [0], "loss_fn": ["x**2"]}),
    Case("regularize.l1_penalty", regularize.l1_penalty, lambda: {"model": _mlp()}),
    Case("regularize.l2_penalty", regularize.l2_penalty, lambda: {"model": _mlp()}),
    Case("regularize.penalized_loss", regularize.penalized_loss,
         lambda: {"model": _mlp(), "l1": 1e-4, "l2": 1e-4}, bad={"l1": [-1.0], "l2": [-1.0]}),
    Case("regularize.near_zero_fraction", regularize.near_zero_fraction,
         lambda: {"model": _mlp(), "threshold": 1e-3}, bad={"threshold": [-1.0]}),
    Case("regularize.soft_threshold_", regularize.soft_threshold_,
         lambda: {"model": _mlp(), "threshold": 1e-3}, bad={"threshold": [-1.0]}),
    Case("regularize.decay_param_groups", regularize.decay_param_groups,
         lambda: {"model": _mlp(), "weight_decay": 0.01}, bad={"weight_decay": [-1.0]}),
    Case("regularize.measure_gap", regularize.measure_gap,
         lambda: {"model": _mlp(), "train_loader": _LOADERS.train, "test_loader": _LOADERS.test}),
    Case("regularize.corrupt_labels", regularize.corrupt_labels,
         lambda: {"labels": torch.randint(0, 10, (20,)), "fraction": 0.2},
         bad={"fraction": [1.5, -0.1], "num_classes": [1], "labels": [torch.randn(20)]}),
    # ---------------------------------------------------------------- inference, amp, dynamic
    Case("infer.export_onnx", infer.export_onnx, lambda: {"model": _mlp(), "example_input": _x()},
         run_valid=False),
    Case("infer.ort_session", infer.ort_session, lambda: {"onnx_bytes": _onnx(), "threads": 1},
         bad={"onnx_bytes": ["model.onnx", b""], "threads": [0]}, run_valid=False),
    Case("infer.roofline", infer.roofline,
         lambda: {"flops": 1e6, "bytes_moved": 1e5, "peak_flops": 1e9, "bandwidth": 1e9},
         bad={"flops": [-1.0], "peak_flops": [0.0], "bandwidth": [0.0]}),
    Case("infer.model_bytes_moved", infer.model_bytes_moved, lambda: {"model": _mlp(), "x": _x()}),
    Case("train.resolve_precision", train.resolve_precision, lambda: {"precision": "bf16"},
         choices=("precision",), bad={"precision": [torch.int8]}),
    Case("amp.underflow_report", amp.underflow_report,
         lambda: {"model": _mlp(), "x": _x(), "y": _y(), "precision": "fp16", "loss_scale": 1.0},
         choices=("precision",), bad={"loss_scale": [0.0, -1.0]}, no_auto=("y",)),
    Case("amp.fit_amp_", amp.fit_amp_,
         lambda: {"model": _mlp(), "loader": _LOADERS.train, "precision": "bf16", "epochs": 1},
         choices=("precision",), bad={"epochs": [0], "lr": [0.0]}, run_valid=False),
    Case("dynamic.exit_macs", dynamic.exit_macs,
         lambda: {"model": dynamic.EarlyExitNet(4, 8, 8, 16)}),
    Case("dynamic.exit_logits", dynamic.exit_logits,
         lambda: {"model": dynamic.EarlyExitNet(4, 8, 8, 16), "x": _x()}, bad={"batch_size": [0]}),
    Case("dynamic.early_exit_predict", dynamic.early_exit_predict,
         lambda: {"logits": torch.randn(3, 4, 10), "threshold": 0.9},
         bad={"threshold": [1.5, -0.1], "logits": [torch.randn(4, 10)]}),
    Case("dynamic.stage_latency", dynamic.stage_latency,
         lambda: {"model": dynamic.EarlyExitNet(4, 8, 8, 16), "x": _x(), "warmup": 0, "repeats": 1},
         bad={"repeats": [0], "threads": [0]}),
    Case("dynamic.time_early_exit", dynamic.time_early_exit,
         lambda: {"model": dynamic.EarlyExitNet(4, 8, 8, 16), "x": _x(), "threshold": 0.9,
                  "warmup": 0, "repeats": 1}, bad={"threshold": [2.0], "repeats": [0]}),
    Case("dynamic.MixtureOfExperts", dynamic.MixtureOfExperts,
         lambda: {"hidden": 8, "num_experts": 4, "k": 1}, bad={"k": [0, 5], "num_experts": [0]}),
    # ---------------------------------------------------------------- parallel, apps
    Case("parallel.single_process_gradients", parallel.single_process_gradients,
         lambda: {"model": _mlp(), "x": _x(), "y": _y()}, no_auto=("y",)),
    Case("parallel.data_parallel_gradients", parallel.data_parallel_gradients,
         lambda: {"model": _mlp(), "x": _x(), "y": _y(), "world_size": 2},
         bad={"world_size": [0, 3]}, no_auto=("y",), run_valid=False),
    Case("parallel.bubble_fraction", parallel.bubble_fraction,
         lambda: {"stages": 4, "micro_batches": 8}, bad={"stages": [0], "micro_batches": [0]}),
    Case("parallel.simulate_pipeline", parallel.simulate_pipeline,
         lambda: {"stages": 2, "micro_batches": 4},
         bad={"forward_time": [0.0, -1.0], "stages": [0]}),
    Case("parallel.split_stages", parallel.split_stages,
         lambda: {"model": _mlp(), "stages": 2, "example_input": _x()}, bad={"stages": [0, 99]},
         no_auto=("example_input",)),
    Case("apps.make_interactions", apps.make_interactions,
         lambda: {"num_users": 20, "num_items": 30, "per_user": 5, "test_per_user": 2},
         bad={"num_users": [0], "test_per_user": [-1]}),
    Case("apps.per_class_accuracy", apps.per_class_accuracy,
         lambda: {"logits": torch.randn(8, 3), "labels": torch.randint(0, 3, (8,))},
         bad={"labels": [torch.randint(0, 3, (7,))]}, no_auto=("labels",)),
    Case("apps.expected_calibration_error", apps.expected_calibration_error,
         lambda: {"logits": torch.randn(8, 3), "labels": torch.randint(0, 3, (8,))},
         bad={"bins": [0]}, no_auto=("labels",)),
    Case("apps.budget_report", apps.budget_report,
         lambda: {"name": "cnn", "latencies_ms": __import__("numpy").array([1.0, 2.0]),
                  "budget_ms": 5.0}, bad={"budget_ms": [0.0, -1.0]}, no_auto=("name",)),
    # ---------------------------------------------------------------- language model
    Case("lm.perplexity", lm.perplexity, lambda: {"model": _lm(), "tokens": _TOKENS[:100]},
         bad={"batch_size": [0], "max_windows": [0], "tokens": [_TOKENS[:10]]}),
    Case("lm.generate", lm.generate,
         lambda: {"model": _lm(), "prompt": _TOKENS[:4], "new_tokens": 3},
         bad={"new_tokens": [0, 100], "temperature": [-1.0], "prompt": [torch.zeros(3)]}),
    Case("lm.lm_loss", lm.lm_loss,
         lambda: {"logits": torch.randn(2, 4, 50), "targets": _TOKENS[:8].view(2, 4)},
         no_auto=("logits",)),
    Case("lm.stdlib_corpus", lm.stdlib_corpus, lambda: {"files": ("heapq.py",)},
         bad={"files": [(), ("no_such.py",)], "val_fraction": [0.0, 0.9]}),
    Case("lm.decode_latency", lm.decode_latency,
         lambda: {"variants": {"a": _lm()}, "prompt": _TOKENS[:4], "new_tokens": 2,
                  "repeats": 2},
         bad={"variants": [{}], "new_tokens": [0], "repeats": [1]}, no_auto=("variants",)),
    Case("lm.compare_lms", lm.compare_lms,
         lambda: {"variants": {"a": _lm()}, "tokens": _TOKENS[:100], "prompt": _TOKENS[:4],
                  "new_tokens": 2, "repeats": 2},
         bad={"variants": [{}], "new_tokens": [0]}, no_auto=("variants",)),
    Case("lm.train_lm_", lm.train_lm_,
         lambda: {"model": _lm(), "tokens": _TOKENS,
                  "config": lm.LMTrainConfig(steps=2, batch_size=2, warmup_steps=0),
                  "progress": False},
         bad={"epochs": [0, 3], "config": ["fast"], "model": [nn.Linear(2, 2)]}),
    Case("lm.pretrained_lm", lm.pretrained_lm,
         lambda: {"corpus": lm.Corpus(_TOKENS[:500], _TOKENS[500:], ("x",), "sweep"),
                  "config": _LM_CFG, "progress": False,
                  "train": lm.LMTrainConfig(steps=1, batch_size=2, warmup_steps=0),
                  "cache_dir": tempfile.mkdtemp(dir=_SCRATCH.name)},
         bad={"corpus": ["stdlib"]}, no_auto=("cache_dir",)),
    Case("lm.peak_memory", lm.peak_memory, lambda: {"fn": lambda: torch.ones(3)},
         bad={"fn": [3]}),
    Case("lm_quant.gptq_quantize", lm_quant.gptq_quantize,
         lambda: {"weight": torch.randn(4, 32), "hessian": torch.eye(32), "bits": 4,
                  "group_size": 16},
         bad={"bits": [1, 9], "group_size": [7], "hessian": [torch.eye(31)],
              "damp": [0.0]}),
    Case("lm_quant.smooth_scales", lm_quant.smooth_scales,
         lambda: {"act_absmax": torch.rand(32) + 0.1, "weight": torch.randn(4, 32)},
         bad={"alpha": [-0.1, 1.5], "act_absmax": [torch.rand(31)]}),
    Case("lm_quant.smooth_lm", lm_quant.smooth_lm,
         lambda: {"model": _lm(), "calibration": _lm_calib(), "alpha": 0.5},
         bad={"alpha": [-0.1, 1.5], "calibration": [[]]}),
    Case("lm_quant.awq_clip", lm_quant.awq_clip,
         lambda: {"weight": torch.randn(4, 32), "inputs": torch.randn(8, 32), "bits": 4,
                  "group_size": 16},
         bad={"bits": [1], "grid": [1], "max_shrink": [1.0], "inputs": [torch.randn(8, 31)]}),
    Case("lm_quant.quantize_lm", lm_quant.quantize_lm,
         lambda: {"model": _lm(), "config": lm_quant.GPTQConfig(bits=4, group_size=16),
                  "calibration": _lm_calib()},
         bad={"config": ["gptq", lm_quant.RTNConfig(group_size=7)],
              "calibration": [[], None]}),
    Case("lm_quant.RTNConfig", lm_quant.RTNConfig, lambda: {"bits": 4, "group_size": 32},
         bad={"bits": [1, 9], "group_size": [0]}),
    Case("lm_quant.GPTQConfig", lm_quant.GPTQConfig,
         lambda: {"bits": 4, "group_size": 32, "act_order": True},
         bad={"bits": [1, 9], "group_size": [0], "damp": [0.0]}),
    Case("lm_quant.AWQConfig", lm_quant.AWQConfig,
         lambda: {"bits": 4, "group_size": 32, "grid": 10, "batches": 1},
         bad={"bits": [1, 9], "grid": [1], "batches": [0]}),
    Case("lm_quant.activation_absmax", lm_quant.activation_absmax,
         lambda: {"model": _lm(), "calibration": _lm_calib()}, bad={"calibration": [[]]}),
    Case("lm_calibrate.block_inputs", lm_calibrate.block_inputs,
         lambda: {"model": _lm(), "calibration": _lm_calib()},
         bad={"calibration": [[]], "max_rows": [0]}),
    Case("lm_calibrate.decoder_blocks", lm_calibrate.decoder_blocks,
         lambda: {"model": _lm()}, bad={"model": [nn.Linear(2, 2)]}),
    Case("llm.token_perplexity", llm.token_perplexity,
         lambda: {"model": _lm(), "tokens": _TOKENS[:100], "window": 8},
         bad={"window": [1], "tokens": [_TOKENS[:100].float(), _TOKENS[:4]],
              "max_tokens": [4]}),
    Case("llm.calibration_batches", llm.calibration_batches,
         lambda: {"tokens": _TOKENS, "num_batches": 2, "seq_len": 16},
         bad={"seq_len": [1, 10_000], "num_batches": [0], "seed": [-1]}),
    Case("lm_prune.prune_lm", lm_prune.prune_lm,
         lambda: {"model": _lm(), "config": lm_prune.WandaConfig(), "calibration": _lm_calib()},
         bad={"config": ["wanda", {"sparsity": 0.5}], "calibration": [[], None]}),
    Case("lm_prune.MagnitudeConfig", lm_prune.MagnitudeConfig,
         lambda: {"sparsity": 0.5, "pattern": "unstructured"},
         bad={"sparsity": [-0.1, 1.0]}, choices=("pattern",)),
    Case("lm_prune.WandaConfig", lm_prune.WandaConfig,
         lambda: {"sparsity": 0.5, "pattern": "2:4"},
         bad={"sparsity": [-0.1, 1.0, 0.3]}, choices=("pattern",)),
    Case("lm_prune.prune_scores", lm_prune.prune_scores,
         lambda: {"weight": torch.randn(4, 8), "input_norm": torch.rand(8)},
         bad={"input_norm": [torch.rand(7)]}),
    Case("lm_prune.prune_mask", lm_prune.prune_mask,
         lambda: {"scores": torch.rand(4, 8), "sparsity": 0.5},
         bad={"sparsity": [1.0, -0.5], "scores": [torch.rand(8)]}, choices=("pattern",)),
    Case("lm_tune.add_lora", lm_tune.add_lora, lambda: {"model": _lm(), "rank": 2},
         bad={"rank": [0, 1000], "alpha": [0.0]}),
    Case("lm_tune.merge_lora", lm_tune.merge_lora,
         lambda: {"model": lm_tune.add_lora(_lm(), rank=2)}),
    Case("lm_tune.trainable_parameters", lm_tune.trainable_parameters,
         lambda: {"model": _lm()}),
    Case("lm_tune.optimizer_state_bytes", lm_tune.optimizer_state_bytes,
         lambda: {"optimizer": torch.optim.Adam(_lm().parameters())},
         bad={"optimizer": ["adam"]}),
    Case("lm_tune.distill_lm_", lm_tune.distill_lm_,
         lambda: {"student": _lm(), "teacher": _lm().eval(), "tokens": _TOKENS,
                  "config": lm.LMTrainConfig(steps=1, batch_size=2, warmup_steps=0)},
         bad={"temperature": [0.0], "alpha": [1.5]}),
    Case("lm_tune.training_memory", lm_tune.training_memory,
         lambda: {"model": _lm(), "batch_size": 2, "seq_len": 16},
         bad={"batch_size": [0], "seq_len": [0]}),
    Case("parallel.fsdp_training", parallel.fsdp_training,
         lambda: {"model": _lm(), "tokens": _TOKENS, "steps": 1, "batch_size": 2},
         bad={"batch_size": [3], "steps": [0], "world_size": [0], "model": [_mlp()]},
         run_valid=False),
    Case("data.make_loaders", data.make_loaders, lambda: {"dataset": _DS, "batch_size": 8},
         bad={"batch_size": [0], "dataset": ["mnist"], "train_size": [0, 10**9]}),
]

# Public functions and classes the sweep does not call, and why. The guard
# below fails when a new public name appears in neither place.
NOT_SWEPT: dict[str, str] = {
    "reference.results_dir": "takes no argument (tests/test_records.py covers it)",
    "page.is_x86": "takes no argument; tested in test_page.py",
    **{f"data.{n}": "a class or fixed-path loader; its errors are tested in test_data.py"
       for n in ("Split", "ImageDataset", "Loaders", "default_cache_dir", "load_mnist",
                 "load_fashion_mnist", "keras_arrays")},
    **{f"models.{n}": "model classes without options; sizes are tested in test_models_train.py"
       for n in ("LeNet300100", "LeNet5", "SmallCNN")},
    "train.default_device": "takes a preference string; falls back to the CPU by design",
    "train.History": "a result dataclass",
    "train.NonFiniteLossError": "an exception; raised in test_models_train.py",
    "prune.Schedule": "a protocol (ConstantSparsity and PolynomialDecay are swept)",
    "train.cached_training": "trains and writes a file; tested in test_models_train.py",
    "train.logits_of": "takes any model output (tensor, .logits, dict, tuple); tested in "
                       "test_models_train.py",
    **{f"measure.{n}": "a result dataclass or table" for n in
       ("Table", "SizeReport", "ParamReport", "FlopReport", "LatencyReport", "CPUInfo",
        "LatencyComparison")},
    "measure.cpu_info": "takes no arguments; tested in test_measure.py",
    "measure.Variant": "a specification dataclass; tested in test_measure.py",
    "measure.assert_timing": "takes a LatencyComparison and a predicate; tested in "
                             "test_measure.py",
    "measure.bytes_per_value": "takes a torch.dtype; tested in test_measure.py",
    **{f"plot.{n}": "plots; label checks are tested in the notebooks' figures"
       for n in ("line_plot", "bar_plot", "histogram")},
    **{f"plot.{n}": "schematic figures; labels and arguments tested in test_diagrams.py"
       for n in ("diagram_lora", "diagram_fsdp", "diagram_gptq", "diagram_early_exit",
                 "diagram_moe", "diagram_kv_cache", "diagram_int8_gemm")},
    **{f"quant.{n}": "a result, observer or layer class; tested in test_quant.py" for n in
       ("QTensor", "Observer", "MinMaxObserver", "MovingAverageMinMaxObserver",
        "PercentileObserver", "MSEObserver", "WeightOnlyConfig", "DynamicInt8Config",
        "StaticInt8Config", "QATConfig", "PTQConfig", "QuantizedWeightLayer", "FakeQuantize",
        "QATLayer")},
    **{f"quant.{n}": "takes a QTensor made by quantize(); tested in test_quant.py"
       for n in ("dequantize", "error_bound")},
    "pt2e.compile_int8": "takes the GraphModule quantize_pt2e returns and compiles it "
                         "(seconds); tested in test_pt2e.py",
    **{f"quant.{n}": "in-place QAT/PTQ steps; tested in test_quant.py" for n in
       ("prepare_qat_", "calibrate_fake_quant_", "convert_qat_", "quantize_model_")},
    **{f"prune.{n}": "in place by name; tested in test_prune.py" for n in
       ("prune_", "threshold_prune_", "remove_", "iterative_prune_",
        "l1_prune_finetune_", "to_semi_structured_")},
    **{f"prune.{n}": "a schedule, callback or report class; tested in test_prune.py"
       for n in ("ConstantSparsity", "PruningCallback", "L1PruneReport")},
    **{f"sparse.{n}": "file I/O around encode/decode; tested in test_sparse.py"
       for n in ("save", "load")},
    "sparse.SparseConfig": "a config dataclass; its checks are tested in test_sparse.py",
    "distill.Hint": "a small regressor module",
    "distill.hint_loss": "tested in test_distill.py",
    "distill.distill_": "a training loop; its argument checks are tested in test_distill.py",
    **{f"lr.{n}": "a result class or a plot" for n in
       ("RangeTestReport", "SweepReport", "TrainingCurve", "plot_range_test")},
    "lr.seed_sweep": "a multi-seed training loop; tested in test_lr.py",
    **{f"optim.{n}": "optimizer classes checked against torch.optim in test_optim.py"
       for n in ("GD", "Momentum", "RMSprop", "Adam", "AdamW")},
    "regularize.penalized_params": "a list of the model's own parameters",
    "regularize.GapReport": "a result dataclass",
    **{f"infer.{n}": "a result class" for n in ("Roofline", "Fp32Baseline")},
    **{f"infer.{n}": "engine wrappers (compile, ONNX Runtime); tested in test_infer.py" for n in
       ("eager_runner", "compile_model", "ort_runner", "ort_predict", "quantize_onnx_int8",
        "accuracy_of", "measure_peak_flops", "measure_bandwidth")},
    **{f"amp.{n}": "a result class" for n in ("AmpReport", "UnderflowReport")},
    "dynamic.EarlyExitReport": "a result class",
    **{f"amp.{n}": "a training step / GPU throughput; tested in test_amp.py"
       for n in ("amp_step_", "throughput")},
    **{f"dynamic.{n}": "tested in test_dynamic.py" for n in
       ("EarlyExitNet", "joint_exit_loss", "fit_early_exit_", "ExitReport", "exit_curve",
        "SkipMLP", "fit_dynamic_")},
    **{f"parallel.{n}": "a result class or a forward helper; tested in test_parallel.py"
       for n in ("pipeline_forward", "PipelineSlot", "PipelineSchedule",
                 "ShardedTrainingReport")},
    **{f"lm.{n}": "a config, data or model class; tested in test_lm.py" for n in
       ("Corpus", "LMConfig", "TinyGPT", "KVCache", "LMTrainConfig", "lm_batches")},
    **{f"lm_quant.{n}": "a result or layer class, or the inverse of a swept function; "
                        "tested in test_lm.py" for n in
       ("scale_groups", "fold_scales_")},
    **{f"lm_calibrate.{n}": "a layer choice, a result class or a listing; tested in "
                            "test_llm.py" for n in ("in_blocks", "BlockCalibration", "linears")},
    **{f"llm.{n}": "loads the real model or needs transformers' models; tested in test_llm.py"
       for n in ("smollm2_path", "check_gguf", "load_smollm2", "texts", "LMTexts",
                 "Int4WeightOnlyLinear", "Int8WeightOnlyLinear", "to_weight_only_",
                 "weight_bytes_per_token", "kv_cache_bytes_per_token", "greedy_decode",
                 "decode_speed", "W8A8Linear", "to_w8a8_")},
    **{f"lm_tune.{n}": "a layer or result class; tested in test_lm.py" for n in
       ("LoRALinear", "MemoryBudget")},
    **{f"apps.{n}": "tested in test_apps.py" for n in
       ("Interactions", "MatrixFactorization", "fit_recommender_", "recall_at_k",
        "quantized_recommender", "frame_latencies",
        "BudgetReport")},
    **{f"architectures.{n}": "model classes; tested in test_architectures.py"
       for n in ("RowRNN", "EncoderBlock", "RowTransformer")},
    **{f"report.{n}": "tested in test_report.py" for n in
       ("ReportConfig", "optimization_report", "plot_report")},
}

_SWEPT_MODULES = ("data", "models", "train", "reference", "measure", "plot", "page", "quant",
                  "pt2e",
                  "prune", "sparse",
                  "architectures", "distill", "lr", "optim", "regularize", "infer", "amp",
                  "dynamic", "parallel", "lm", "lm_calibrate", "lm_quant", "lm_prune",
                  "lm_tune", "llm", "apps",
                  "report")


def _public_names() -> set[str]:
    names = set()
    for mod_name in _SWEPT_MODULES:
        mod = importlib.import_module(f"companion.{mod_name}")
        for n, obj in vars(mod).items():
            if n.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                names.add(f"{mod_name}.{n}")
    return names


def test_every_public_name_is_swept_or_exempted():
    assert set(companion._SUBMODULES) - {"keras", "cli"} == set(_SWEPT_MODULES)
    covered = {c.name for c in CASES} | set(NOT_SWEPT)
    missing = _public_names() - covered
    assert not missing, f"public names neither swept nor exempted: {sorted(missing)}"
    stale = covered - _public_names()
    assert not stale, f"sweep lists names that no longer exist: {sorted(stale)}"


# ---------------------------------------------------------------- the bad calls
def _auto_bad(case: Case, arg: str, value: Any) -> list[tuple[str, Any]]:
    if arg in case.no_auto or isinstance(value, bool):
        return []
    if arg in case.choices:
        return [("unknown name", "no-such-option")]
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return [("NaN tensor", torch.full_like(value, math.nan)),
                ("inf tensor", torch.full_like(value, math.inf)),
                ("empty tensor", value[:0]),
                ("list, not a tensor", value.tolist())]
    if isinstance(value, nn.Module):
        return [("string, not a module", "model.pt")]
    if isinstance(value, float):
        return [("NaN", math.nan)]
    if isinstance(value, int):
        return [("string, not an int", "3")]
    return []


def _bad_calls():
    for case in CASES:
        valid = case.make()
        for arg, value in valid.items():
            for label, bad in _auto_bad(case, arg, value):
                yield pytest.param(case, arg, bad, id=f"{case.name}-{arg}-{label}")
        for arg, values in case.bad.items():
            for i, bad in enumerate(values):
                yield pytest.param(case, arg, bad, id=f"{case.name}-{arg}-range{i}")


@pytest.mark.parametrize(("case", "arg", "bad"), list(_bad_calls()))
def test_bad_input_raises_a_clear_error(case: Case, arg: str, bad: Any):
    kwargs = case.make()
    kwargs[arg] = bad
    with pytest.raises((ValueError, TypeError)) as info:
        case.fn(**kwargs)
    assert names(str(info.value), arg), \
        f"{case.name}: the message {str(info.value)!r} names no {arg!r}"


def names(message: str, arg: str) -> bool:
    """Whether ``message`` names ``arg`` as a whole word ("lo must be", "`lo`", "config.lo",
    "lo=3"), not as part of another ("float", "max_lo")."""
    return re.search(rf"(?<![\w]){re.escape(arg)}(?![\w])", message) is not None


def test_names_matches_whole_words_only():
    assert names("lo must be < hi, got 3", "lo") and names("`hi` is NaN", "hi")
    assert names("config.steps must be >= 1", "steps") and names("(lo=3)", "lo")
    assert not names("expected a float", "lo") and not names("max_tokens must be", "tokens")
    assert not names("high must be positive", "hi")


# ---------------------------------------------------------------- no mutation
# Arguments that a function without a trailing "_" changes, by design and documented
# ("in place" in its docstring). Everything else must come back unchanged.
CHANGES: dict[str, tuple[str, ...]] = {
    "train.fit": ("model",),             # trains the model it is given, as Keras' fit does
}


def _tracked(value: Any, label: str) -> list[tuple[str, Any]]:
    """The modules and tensors in an argument, inside dicts, lists and tuples too."""
    if isinstance(value, (nn.Module, torch.Tensor)):
        return [(label, value)]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _tracked(v, f"{label}[{k!r}]")]
    if isinstance(value, (list, tuple)):
        return [t for i, v in enumerate(value) for t in _tracked(v, f"{label}[{i}]")]
    return []


def _may_change(case: Case) -> set[str]:
    allowed = set(CHANGES.get(case.name, ()))
    if case.fn.__name__.endswith("_"):
        allowed.add(next(iter(inspect.signature(case.fn).parameters)))
    return allowed


def test_changes_lists_documented_exceptions_only():
    by_name = {c.name: c for c in CASES}
    for name, args in CHANGES.items():
        fn = by_name[name].fn
        assert not fn.__name__.endswith("_"), f"{name} ends in _: remove it from CHANGES"
        assert set(args) <= set(inspect.signature(fn).parameters), name
        doc = " ".join((inspect.getdoc(fn) or "").split()).lower()
        assert "in place" in doc, f"{name} changes {args}: its docstring must say so"


@pytest.mark.parametrize("case", [c for c in CASES if c.run_valid], ids=lambda c: c.name)
def test_valid_call_leaves_its_arguments_unchanged(case: Case):
    kwargs = case.make()
    allowed = _may_change(case)
    before = [(label, value, snapshot(value)) for k, v in kwargs.items() if k not in allowed
              for label, value in _tracked(v, k)]
    case.fn(**kwargs)
    changed = {label: found for label, value, b in before if (found := changes(b, value))}
    assert not changed, f"{case.name} changed {changed}"
