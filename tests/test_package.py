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
