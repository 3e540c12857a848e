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
    ["page"],
    ["measure.table", "measure.cpu", "lm.corpus", "lm.model"],
    ["measure.size", "measure.flops", "measure.latency", "measure.profile"],
    ["data", "models", "architectures", "optim", "pt2e", "prune.channel_graph", "quant.affine",
     "llm.text", "llm.decode"],
    ["train.evaluation", "train.setup", "quant.observers", "llm.loading"],
    ["train.loop"],
    ["train"],
    ["measure.compare"],
    ["measure", "reference", "keras.core", "lr", "regularize", "quant.configs",
     "distill", "amp", "prune.unstructured", "prune.semi_structured"],
    ["quant.modules", "prune.schedules", "prune.structured", "prune.l1"],
    ["quant.backends"],
    ["quant.api"],
    ["quant"],
    ["infer.engines", "lm.training", "lm.evaluation", "lm_calibrate", "apps"],
    ["infer.onnx_engine", "infer.roofline_model", "lm_quant", "llm.kernels"],
    ["prune", "infer", "dynamic", "lm", "llm"],
    ["sparse", "lm_tune", "parallel", "keras.prune", "lm_prune"],
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


def _package_inits():
    from pathlib import Path

    root = Path(companion.__file__).parent
    return sorted(root.rglob("__init__.py"))


def test_no_package_reexports_a_private_name():
    """A package's ``__init__`` imports public names only: private helpers are imported
    from their own file by the modules that need them (``from .affine import _codes``)."""
    import ast

    found = []
    for path in _package_inits():
        text = path.read_text()
        assert "noqa: F401" not in text, f"{path}: an unused import hidden by noqa"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.parent.name}: {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, f"private names re-exported: {found}"


# the subpackages that import their files eagerly; companion and companion.keras load
# their submodules on first use (their __all__ lists submodules)
EAGER_PACKAGES = ["quant", "prune", "measure", "train", "infer", "lm", "llm"]


def _import_package(name: str):
    """``companion.<name>``, or a skip when it needs an optional extra that is missing."""
    import importlib

    try:
        return importlib.import_module(f"companion.{name}")
    except ModuleNotFoundError as err:
        if (err.name or "").startswith("companion"):
            raise
        pytest.skip(f"companion.{name} needs {err.name} (an optional extra)")


@pytest.mark.parametrize("name", EAGER_PACKAGES)
def test_package_namespace_is_its_all(name):
    """Every public name a package holds is in its ``__all__`` (and the other way round),
    and each public class or function says the package is its home (``__module__``)."""
    import inspect
    import types

    package = _import_package(name)
    names = {n for n, v in vars(package).items()
             if not n.startswith("_") and not isinstance(v, types.ModuleType)
             and n not in ("annotations", "own_public_names")}
    assert names == set(package.__all__), (
        f"not in __all__: {sorted(names - set(package.__all__))}; "
        f"in __all__ but missing: {sorted(set(package.__all__) - names)}")
    private = [n for n in vars(package) if n.startswith("_") and not n.startswith("__")]
    assert not private, f"companion.{name} holds private names: {private}"
    homes = {n: getattr(package, n).__module__ for n in package.__all__
             if inspect.isclass(getattr(package, n)) or inspect.isfunction(getattr(package, n))}
    assert all(home == package.__name__ for home in homes.values()), homes


@pytest.mark.parametrize("name", EAGER_PACKAGES)
def test_no_file_shadows_a_package_name(name):
    """A function or class in a package's file that has the name of one of the package's
    public names is that very object (the graph engine's ``prune_`` once shadowed
    ``prune.prune_``)."""
    import importlib
    import inspect
    import pkgutil

    package = _import_package(name)
    shadows = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for n, obj in vars(module).items():
            if (n in package.__all__ and (inspect.isfunction(obj) or inspect.isclass(obj))
                    and obj is not getattr(package, n)):
                shadows.append(f"{info.name}.{n}")
    assert not shadows, f"files define another object under a package name: {shadows}"
