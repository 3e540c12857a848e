import subprocess
import sys

import pytest

import companion


def test_import_companion_does_not_import_tensorflow():
    code = ("import sys, companion; from companion import data, models, train, measure, plot; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('tensorflow', 'keras')))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError):
        companion.no_such_module  # noqa: B018


def test_network_is_blocked():
    import socket
    s = socket.socket()
    try:
        with pytest.raises(RuntimeError, match="network access"):
            s.connect(("192.0.2.1", 80))
    finally:
        s.close()


# The package's layers, bottom up (CONTRIBUTING.md, "Architecture", draws the same
# picture): a module may import only modules of lower layers, so there is no cycle,
# and a new module must be placed here before its test passes.
LAYERS = [
    ["_checks", "_timing", "plot"],
    ["measure.table", "measure.cpu", "lm.corpus", "lm.model"],
    ["measure.size", "measure.flops", "measure.latency", "measure.profile"],
    ["data", "models", "architectures", "optim", "pt2e", "_channel_graph", "quant.affine",
     "lm_calibrate", "llm.text", "llm.decode"],
    ["train.evaluation", "train.setup", "quant.observers", "llm.loading"],
    ["train.loop"],
    ["train"],
    ["measure.compare"],
    ["measure", "reference", "keras.core", "apps", "lr", "regularize", "quant.configs",
     "distill", "amp", "lm_quant", "prune.unstructured", "prune.semi_structured"],
    ["quant.modules", "prune.schedules", "prune.structured", "prune.l1", "llm.kernels"],
    ["quant.backends"],
    ["quant.api"],
    ["quant"],
    ["infer.engines", "lm.training", "lm.evaluation"],
    ["infer.onnx_engine", "infer.roofline_model"],
    ["prune", "infer", "dynamic", "lm", "lm_prune", "llm"],
    ["sparse", "lm_tune", "parallel", "keras.prune"],
    ["keras"],
    ["report"],
    ["cli_load"],
    ["cli"],
]


def _companion_imports(path, package_root):
    """The companion modules that ``path`` imports, lazily imported ones included."""
    import ast

    here = path.relative_to(package_root).with_suffix("").parts[:-1]   # ("keras",) or ()
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = list(here[:len(here) - (node.level - 1)])
        elif node.module and node.module.split(".")[0] == "companion":
            base = []
            node = ast.ImportFrom(module=node.module.partition(".")[2] or None,
                                  names=node.names, level=1)
        else:
            continue
        if node.module:
            found.add(".".join([*base, node.module.split(".")[0]]))
        else:
            found.update(".".join([*base, alias.name]) for alias in node.names)
    return found


def test_modules_import_only_lower_layers():
    from pathlib import Path

    root = Path(companion.__file__).parent
    layer_of = {m: i for i, names in enumerate(LAYERS) for m in names}
    # a subpackage (companion/quant/) is checked twice: each of its modules
    # ("quant.affine"), and its __init__.py under the package's own name
    # ("quant"), which sits above the modules it re-exports
    modules = {".".join(p.relative_to(root).with_suffix("").parts): p
               for p in root.rglob("*.py") if p.name != "__init__.py"}
    modules.update({".".join(p.parent.relative_to(root).parts): p
                    for p in root.rglob("*/__init__.py")})
    assert set(modules) == set(layer_of), (
        f"place these in LAYERS: {sorted(set(modules) - set(layer_of))}; "
        f"gone: {sorted(set(layer_of) - set(modules))}")
    upward = [(name, dep) for name, path in modules.items()
              for dep in _companion_imports(path, root)
              if dep in layer_of and layer_of[dep] >= layer_of[name]]
    assert not upward, f"imports at the same or a higher layer: {upward}"
