"""Shared fixtures. The whole test session runs with outbound network blocked:
a test (or library code) that tries to reach a non-local address fails loudly."""

from __future__ import annotations

import os
import socket

import pytest
import torch

# timing claims fail here, also in the notebook kernels nbval starts (they inherit this)
os.environ.setdefault("COMPANION_STRICT_TIMING", "1")

_LOCAL = ("127.", "::1", "localhost", "0.0.0.0")
_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else str(address)
    if isinstance(host, str) and not host.startswith(_LOCAL) and self.family != socket.AF_UNIX:
        raise RuntimeError(f"network access attempted during tests: {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _block_network():
    socket.socket.connect = _guarded_connect
    yield
    socket.socket.connect = _real_connect


@pytest.fixture
def tiny_data():
    from companion import data
    return data._synthetic_images(n_train=256, n_test=128, seed=0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class _EmptyLoader:
    """An empty loader without len(): only running it shows that it is empty."""

    def __iter__(self):
        return iter(())


@pytest.fixture(params=["list", "no len"])
def empty_loader(request):
    """Both kinds of empty loader: one whose len() is 0, one only iteration exposes."""
    return [] if request.param == "list" else _EmptyLoader()


# A number glued into the prose (companion.page.glue) is stored as a papermill
# record output. Its printed digits are machine-dependent like any measurement;
# the cell asserts the claim it supports, so nbval does not compare the record.
_GLUE_RECORD = "application/papermill.record/text/plain"
try:
    from nbval.plugin import IPyNbFile as _IPyNbFile
except ImportError:  # pragma: no cover - nbval is a dev dependency
    _IPyNbFile = None
if _IPyNbFile is not None:
    _nbval_init = _IPyNbFile.__init__

    def _init_skipping_glue(self, *args, **kwargs):
        _nbval_init(self, *args, **kwargs)
        self.skip_compare = (*self.skip_compare, _GLUE_RECORD)

    _IPyNbFile.__init__ = _init_skipping_glue
