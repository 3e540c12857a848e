"""The CPU as PyTorch's kernels see it: instruction sets, their caps, threads."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

# --------------------------------------------------------------------------- the machine
# Environment variables that cap the instruction sets of PyTorch's CPU kernels; the
# book's `make test-avx2` sets all four to imitate a CPU without AVX-512 or VNNI.
ISA_LIMIT_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS",
                       "MKL_ENABLE_INSTRUCTIONS")
_NO_VNNI_ONEDNN = {"SSE41", "AVX", "AVX2", "AVX512_CORE"}      # oneDNN caps below VNNI
_NO_VNNI_FBGEMM = {"AVX2", "AVX512", "AVX512_256"}             # fbgemm caps below VNNI (E1)


def _cpu_flags() -> tuple[str, set[str]]:
    """CPU model name and feature flags from /proc/cpuinfo (empty where unavailable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU", set()
    name, flags = platform.processor() or "unknown CPU", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return name, flags


def _torch_cpu_feature(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)  # private probes; absent on other builds
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # noqa: BLE001 - a probe that fails means "unknown", i.e. no
        return False


@dataclass
class CPUInfo:
    """What decides the speed of a CPU kernel: instruction sets and threads.

    ``vnni`` and ``amx`` are the instructions that make int8 matrix products
    faster than float32 ones (``vpdpbusd`` on AVX-512 VNNI / AVX-VNNI, tile
    multiplies on AMX); without them an int8 convolution is about as fast as
    a float32 one. Both are *effective* values: a CPU that has VNNI counts as
    without it when an environment variable in :data:`ISA_LIMIT_VARIABLES`
    caps oneDNN or fbgemm below it.
    """

    model_name: str
    capability: str           # torch.backends.cpu.get_cpu_capability(): AVX2, AVX512, ...
    vnni: bool
    amx: bool
    avx512_bf16: bool         # native bfloat16 arithmetic (AVX-512 BF16 or AMX-BF16)
    fp16: bool                # native float16 arithmetic (AVX-512 FP16 or AMX-FP16)
    cores: int                # os.cpu_count()
    threads: int              # PyTorch intra-op threads now
    quantized_engine: str
    limits: dict[str, str] = field(default_factory=dict)  # ISA caps found in the environment

    @property
    def int8_dot_product(self) -> bool:
        """True when int8 GEMM/conv kernels have a dedicated instruction (VNNI or AMX)."""
        return self.vnni or self.amx

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["limits"] = dict(self.limits)
        return row

    def __str__(self) -> str:
        yes = {True: "yes", False: "no"}
        caps = f"; capped by {', '.join(f'{k}={v}' for k, v in self.limits.items())}" \
            if self.limits else ""
        return (f"CPU {self.model_name}: PyTorch kernels {self.capability}, int8 dot product "
                f"(VNNI) {yes[self.vnni]}, AMX {yes[self.amx]}, bf16 {yes[self.avx512_bf16]}, "
                f"fp16 {yes[self.fp16]}; "
                f"{self.cores} cores, {self.threads} PyTorch thread(s){caps}")


def cpu_info() -> CPUInfo:
    """Describe this CPU as PyTorch's kernels see it (print it beside every timing).

    >>> print(cpu_info())  # doctest: +SKIP
    CPU AMD EPYC: PyTorch kernels AVX512, int8 dot product (VNNI) yes, AMX no, ...
    """
    name, flags = _cpu_flags()
    limits = {k: os.environ[k] for k in ISA_LIMIT_VARIABLES if os.environ.get(k)}
    if flags:
        vnni = bool({"avx512_vnni", "avx_vnni"} & flags)
        amx = "amx_int8" in flags
        bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
        fp16 = bool({"avx512_fp16", "amx_fp16"} & flags)
    else:
        vnni = _torch_cpu_feature("_is_vnni_supported")
        amx = _torch_cpu_feature("_is_amx_tile_supported")
        bf16 = _torch_cpu_feature("_is_avx512_bf16_supported")
        fp16 = _torch_cpu_feature("_is_amx_fp16_supported")
    onednn = limits.get("ONEDNN_MAX_CPU_ISA", "").upper()
    fbgemm = limits.get("FBGEMM_ENABLE_INSTRUCTIONS", "").upper()
    capped = onednn in _NO_VNNI_ONEDNN or fbgemm in _NO_VNNI_FBGEMM
    if capped:
        vnni = amx = bf16 = fp16 = False
    return CPUInfo(name, torch.backends.cpu.get_cpu_capability(), vnni, amx, bf16, fp16,
                   os.cpu_count() or 1, torch.get_num_threads(),
                   torch.backends.quantized.engine, limits)
