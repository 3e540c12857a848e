"""Recorded runs are found through companion (not through paths relative to a page), and a
timing claim only warns in a reader's interactive session."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from companion import measure, reference

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(Path(reference.__file__).resolve().parents[1] != ROOT,
                    reason="companion is installed outside this repository (make check-wheel): "
                           "only COMPANION_RECORDS can point it at the records")
def test_records_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("COMPANION_RECORDS", raising=False)
    monkeypatch.chdir(tmp_path)                        # a notebook copied out of the repo
    assert reference.results_dir() == ROOT / "benchmarks" / "results"
    rec = reference.load_record("llm")
    assert rec == json.loads((ROOT / "benchmarks" / "results" / "llm.json").read_text())
    assert reference.load_record("llm.json") == rec


def test_records_folder_from_the_environment(tmp_path, monkeypatch):
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "b.json").write_text('{"device": "B"}')
    (tmp_path / "gpu" / "a.json").write_text('{"device": "A"}')
    monkeypatch.setenv("COMPANION_RECORDS", str(tmp_path))
    assert reference.results_dir() == tmp_path
    assert reference.load_records("gpu") == [("a.json", {"device": "A"}),
                                             ("b.json", {"device": "B"})]
    assert reference.load_records("nothing-yet") == []
    with pytest.raises(FileNotFoundError, match="no record llm.json"):
        reference.load_record("llm")
    with pytest.raises(TypeError, match="name"):
        reference.load_record(3)


def test_missing_records_say_where_they_were_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_RECORDS", str(tmp_path / "absent"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reference, "__file__", str(tmp_path / "site" / "companion" / "x.py"))
    with pytest.raises(FileNotFoundError, match="COMPANION_RECORDS") as info:
        reference.results_dir()
    assert str(tmp_path / "absent") in str(info.value)


def test_no_notebook_reads_records_through_a_relative_path():
    def climbs_out(src: str) -> bool:     # a string literal starting with ../
        return any(q + "../" in src for q in ('"', "'"))
    bad = [p.name for p in (ROOT / "book").rglob("*.ipynb")
           if any(climbs_out("".join(c["source"]))
                  for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code")]
    assert not bad, f"read records with companion.reference.load_record(s): {bad}"


def _failing_comparison():
    def fn():
        pass
    return measure.compare_latency({"a": fn, "b": fn}, repeats=2, warmup=0)


def test_timing_claim_warns_only_in_an_interactive_session(monkeypatch, capsys):
    cmp = _failing_comparison()
    monkeypatch.delenv("COMPANION_STRICT_TIMING", raising=False)
    with pytest.raises(AssertionError):                # a plain script: the claim fails
        measure.assert_timing(cmp, lambda c: False, "b is fast", retries=0)
    shell = types.SimpleNamespace(get_ipython=lambda: object())   # a Jupyter kernel
    monkeypatch.setitem(sys.modules, "IPython", shell)
    kept = measure.assert_timing(cmp, lambda c: False, "b is fast", retries=0)
    err = capsys.readouterr().err
    assert kept is cmp and err.count("\n") == 1
    assert "TIMING CLAIM NOT MET" in err and "b is fast" in err and "PyTorch kernels" in err
    monkeypatch.setenv("COMPANION_STRICT_TIMING", "1")  # the book's builds and tests
    with pytest.raises(AssertionError, match="b is fast"):
        measure.assert_timing(cmp, lambda c: False, "b is fast", retries=0)
    monkeypatch.setitem(sys.modules, "IPython",
                        types.SimpleNamespace(get_ipython=lambda: None))   # IPython, no shell
    monkeypatch.delenv("COMPANION_STRICT_TIMING")
    with pytest.raises(AssertionError):
        measure.assert_timing(cmp, lambda c: False, "b is fast", retries=0)
