"""``tdaeval validate --schema-only`` and ``cache ... --suite`` run no code named in a suite (#14, item 15).

A suite is code: plain ``validate`` imports its task factory and its ``module:Name`` attributors, so a
module beside the suite runs its top-level code. Each class of place a suite can name code is covered
(the task factory, an attributor, a standard-library callable such as ``os:system``), each with a module
whose import writes a marker file: absent after ``--schema-only`` (and ``cache ls --suite``), present
after plain ``validate`` (which shows that the marker would catch an import).
"""

from __future__ import annotations

import sys
import uuid

import pytest
import yaml
from typer.testing import CliRunner

from tdaeval.cli import app

runner = CliRunner()


@pytest.fixture
def isolated(monkeypatch):
    """Restore ``sys.path`` and ``sys.modules`` after the test (plain validate imports the marker module)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules = set(sys.modules)
    yield
    for name in set(sys.modules) - modules:
        if name.startswith("marker_"):
            del sys.modules[name]


def _suite(tmp_path, where: str):
    module = f"marker_{uuid.uuid4().hex[:12]}"
    marker = tmp_path / "imported.txt"
    (tmp_path / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'w').write('top-level code ran')\n"
        "def make_task():\n    raise RuntimeError('called')\n"
        "class Mine:\n    pass\n"
    )
    doc = {"name": "untrusted", "task": "digits", "attributors": ["random"], "metrics": [{"name": "lds", "params": {"n_subsets": 4}}],
           "store": "store"}
    if where == "factory":
        doc["task"] = {"factory": f"{module}:make_task"}
    else:
        doc["attributors"] = ["random", {"use": f"{module}:Mine", "name": "mine"}]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, marker, module


@pytest.mark.parametrize("where", ["factory", "attributor"])
def test_schema_only_imports_nothing_and_plain_validate_does(tmp_path, isolated, where):
    suite, marker, module = _suite(tmp_path, where)
    before = list(sys.path)
    res = runner.invoke(app, ["validate", str(suite), "--schema-only"])
    assert res.exit_code == 0, res.output
    assert "schema only" in res.stdout and "no suite code was imported or run" in res.stdout
    assert not marker.exists() and module not in sys.modules
    assert sys.path == before  # the suite's folder is not added either
    res = runner.invoke(app, ["cache", "ls", "--suite", str(suite)])  # only needs the suite's 'store'
    assert res.exit_code == 0, res.output
    assert str(tmp_path / "store") in res.stdout
    assert not marker.exists() and module not in sys.modules and sys.path == before
    res = runner.invoke(app, ["validate", str(suite)])  # resolving names imports the module: the marker appears
    assert marker.exists(), res.output


def test_schema_only_does_not_resolve_a_stdlib_callable(tmp_path, isolated, monkeypatch):
    import os

    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"task": {"factory": "os:system", "params": {"command": "true"}}, "attributors": ["random"],
                                     "metrics": ["lds"]}))
    res = runner.invoke(app, ["validate", str(suite), "--schema-only"])
    assert res.exit_code == 0, res.output
    assert calls == []


@pytest.mark.parametrize("doc, match", [
    ({"task": "digits", "attributors": ["random"], "metrics": ["lds"], "groundtruth": {"n_subsets": 1}}, "n_subsets"),
    ({"task": {"factory": "../evil.py:make"}, "attributors": ["random"], "metrics": ["lds"]}, "factory"),
    ({"task": "digits", "attributors": [{"use": "a/b:C"}], "metrics": ["lds"]}, "use"),
    ({"task": "digits", "attributors": ["random"], "metrics": ["lds"], "surprise": 1}, "surprise"),
    (["not", "a", "mapping"], "mapping"),
])
def test_schema_only_still_checks_structure_and_ranges(tmp_path, isolated, doc, match):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(doc))
    res = runner.invoke(app, ["validate", str(suite), "--schema-only"])
    assert res.exit_code == 2 and match in res.output, res.output
