"""companion.page: numbers glued into the prose, cells that need an x86 CPU."""

from __future__ import annotations

import sys
import types

import pytest

from companion import page


def _fake_myst_nb(monkeypatch) -> list:
    calls = []
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=True: calls.append((name, value, display))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    return calls


def test_glue_hands_the_value_to_myst_nb_in_a_kernel(monkeypatch):
    calls = _fake_myst_nb(monkeypatch)
    kernel = types.SimpleNamespace(get_ipython=lambda: object())
    monkeypatch.setitem(sys.modules, "IPython", kernel)
    assert page.glue("dense_acc", 0.9731) == 0.9731
    assert calls == [("dense_acc", 0.9731, False)]      # stored, not shown twice


def test_glue_in_a_plain_script_creates_no_ipython_shell(monkeypatch):
    # myst_nb's glue would create an InteractiveShell, and assert_timing would then
    # believe it runs in Jupyter and only warn: a script must stay a script
    calls = _fake_myst_nb(monkeypatch)
    monkeypatch.setitem(sys.modules, "IPython",
                        types.SimpleNamespace(get_ipython=lambda: None))
    assert page.glue("dense_acc", 0.9731) == 0.9731
    assert calls == []


def test_glue_without_jupyter_book_only_returns_the_value(monkeypatch):
    monkeypatch.setitem(sys.modules, "myst_nb", None)     # import fails as if not installed
    assert page.glue("speedup", 3.5) == 3.5


@pytest.mark.parametrize("name", ["", "dense acc", "1st", None, 3])
def test_glue_refuses_a_name_prose_cannot_use(name):
    with pytest.raises(ValueError, match="name"):
        page.glue(name, 1.0)


@pytest.mark.parametrize(("machine", "x86"), [
    ("x86_64", True), ("AMD64", True), ("arm64", False), ("aarch64", False), ("riscv64", False)])
def test_x86_only_skips_elsewhere_with_a_reason(monkeypatch, capsys, machine, x86):
    monkeypatch.setattr(page.platform, "machine", lambda: machine)
    assert page.is_x86() is x86
    assert page.x86_only("static int8 with fbgemm") is x86
    printed = capsys.readouterr().out
    if x86:
        assert printed == ""
    else:
        assert "static int8 with fbgemm" in printed and machine in printed and "x86-64" in printed


@pytest.mark.parametrize("what", ["", "   ", None])
def test_x86_only_wants_to_say_what_it_skips(what):
    with pytest.raises(ValueError, match="what"):
        page.x86_only(what)


@pytest.mark.parametrize(("value", "error"), [
    (float("nan"), ValueError), (float("inf"), ValueError), (True, TypeError),
    (None, TypeError), ([0.5], TypeError)])
def test_glue_refuses_a_value_prose_cannot_print(value, error):
    with pytest.raises(error, match="value"):
        page.glue("acc", value)


def test_glue_refuses_a_tensor_by_name():
    import torch
    with pytest.raises(TypeError, match="float"):
        page.glue("acc", torch.tensor(0.5))
