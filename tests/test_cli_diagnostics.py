"""Diagnostics on the command line and in evaluate: plug-ins next to the user, tracebacks, progress lines.

#13 items 11 (``-a module:Name`` from the working directory, import hints), 12 (``--debug`` on every
command, tracebacks in results) and 13 (progress without a terminal, ``evaluate(progress=...)``).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import sys

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

import tdaeval
from tdaeval.attributors import get as get_attributor
from tdaeval.cli import app
from tdaeval.errors import ConfigError
from tdaeval.reports import result_schema
from tdaeval.suites.result import SuiteResult
from tdaeval.task import TrainRecipe

runner = CliRunner()
SMALL = ["--n-train", "100", "--n-test", "10", "--subsets", "2"]
PLUGIN = "tdaeval_cwd_plugin"  # a module that exists only in a test's working directory


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def bare_path(monkeypatch):
    """``sys.path`` as the ``tdaeval`` console script has it: without the working directory ('' or '.')."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    for name in (PLUGIN, "tdaeval_cwd_broken"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()


# --- item 11: ``-a module:Name`` imports from the working directory; failed imports say where they looked


def test_quickstart_imports_an_attributor_module_from_the_working_directory(tmp_path, monkeypatch, bare_path):
    (tmp_path / f"{PLUGIN}.py").write_text("def scores(model, train, test):\n    return test.inputs @ train.inputs.T\n")
    monkeypatch.chdir(tmp_path)
    from tdaeval.tasks import DigitsTask

    def small_digits(**sizes):  # the quick start's task, as a 2-epoch logistic regression (seconds, not minutes)
        return DigitsTask(model="logreg", recipe=TrainRecipe(epochs=2), **sizes)

    monkeypatch.setattr("tdaeval.tasks.DigitsTask", small_digits)
    res = runner.invoke(app, ["quickstart", "--out", "o", "--cache-dir", "c", *SMALL, "-a", f"{PLUGIN}:scores", "-a", "random"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert {r["attributor"] for r in doc["results"]} == {f"{PLUGIN}:scores", "random"}
    assert all(r["error"] is None for r in doc["results"])


def test_a_missing_module_is_named_with_the_folders_searched(tmp_path, monkeypatch, bare_path):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["quickstart", "--out", "o", "--cache-dir", "c", *SMALL, "-a", "no_such_module_zz:scores"])
    assert res.exit_code == 2
    (line,) = error_lines(res.stderr)  # one line, no traceback
    assert "no module named 'no_such_module_zz'" in line and "searched:" in line
    assert f"{tmp_path.resolve()} (the working directory)" in line


def test_a_module_that_fails_inside_is_told_apart_from_a_missing_one(tmp_path, monkeypatch, bare_path):
    (tmp_path / "tdaeval_cwd_broken.py").write_text("import no_such_dependency_zz\n")
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["quickstart", "--out", "o", "--cache-dir", "c", *SMALL, "-a", "tdaeval_cwd_broken:scores"])
    assert res.exit_code == 2
    (line,) = error_lines(res.stderr)
    assert "module 'tdaeval_cwd_broken' was found, but importing it failed" in line and "no_such_dependency_zz" in line


def test_import_hints_are_the_same_in_suites_and_in_python(tmp_path, monkeypatch, bare_path):
    """Every way of naming ``module:Name`` (suite file, evaluate, attributors.get) gives the hint."""
    folder = tmp_path / "suites"
    folder.mkdir()
    suite = folder / "s.yaml"
    suite.write_text(yaml.safe_dump({"name": "s", "task": {"name": "digits"}, "attributors": ["no_such_module_zz:Name"],
                                     "metrics": ["lds"]}))
    res = runner.invoke(app, ["validate", str(suite)])
    assert res.exit_code == 2
    (line,) = error_lines(res.stderr)
    assert "no module named 'no_such_module_zz'" in line and str(folder.resolve()) in line  # the suite's folder was searched
    with pytest.raises(ConfigError, match=r"for attributor 'no_such_module_zz:Name': no module named 'no_such_module_zz'; searched: /"):
        get_attributor("no_such_module_zz:Name")


# --- item 12: --debug on every command; tracebacks of what could not run in the results


def _forced_failure(*args, **kwargs):
    raise RuntimeError("forced failure")


class _Raising:
    def __init__(self, *args, **kwargs):
        _forced_failure()


# Every command of the CLI, with a function it calls made to raise.
COMMANDS = {
    "quickstart": (["quickstart", "--out", "{tmp}/o", "--cache-dir", "{tmp}/c"], "tdaeval.suites.evaluate", _forced_failure),
    "run": (["run", "smoke", "--out", "{tmp}/o"], "tdaeval.suites.runner.run_suite", _forced_failure),
    "validate": (["validate", "smoke"], "tdaeval.suites.build.build_suite", _forced_failure),
    "report": (["report", "{tmp}/r.json"], "tdaeval.suites.result.SuiteResult.from_json", _forced_failure),
    "compare": (["compare", "{tmp}/a.json", "{tmp}/b.json"], "tdaeval.suites.result.SuiteResult.from_json", _forced_failure),
    "check": (["check", "smoke", "--out", "{tmp}/o"], "tdaeval.suites.build.build_suite", _forced_failure),
    "groundtruth run": (["groundtruth", "run", "smoke"], "tdaeval.suites.runner.build_groundtruth", _forced_failure),
    "groundtruth status": (["groundtruth", "status", "smoke"], "tdaeval.suites.runner.build_groundtruth", _forced_failure),
    "cache ls": (["cache", "ls", "--cache-dir", "{tmp}/c"], "tdaeval.groundtruth.store.ArtifactStore", _Raising),
    "cache verify": (["cache", "verify", "--cache-dir", "{tmp}/c"], "tdaeval.groundtruth.store.ArtifactStore", _Raising),
    "cache gc": (["cache", "gc", "--cache-dir", "{tmp}/c"], "tdaeval.groundtruth.store.ArtifactStore", _Raising),
}


def _invoke_failing(command, tmp_path, monkeypatch, prefix=(), env=None):
    monkeypatch.delenv("TDAEVAL_DEBUG", raising=False)
    args, target, replacement = COMMANDS[command]
    monkeypatch.setattr(target, replacement)
    return runner.invoke(app, [*prefix, *(a.format(tmp=tmp_path) for a in args)], env=env)


@pytest.mark.parametrize("command", COMMANDS)
def test_debug_prints_the_full_traceback_on_every_command(command, tmp_path, monkeypatch):
    res = _invoke_failing(command, tmp_path, monkeypatch, prefix=["--debug"])
    assert res.exit_code == 3, res.output
    assert "Traceback (most recent call last)" in res.stderr and "_forced_failure" in res.stderr
    assert error_lines(res.stderr)[-1] == "error: runtime failure: RuntimeError: forced failure"


@pytest.mark.parametrize("command", ["quickstart", "run", "cache ls"])
def test_tdaeval_debug_environment_variable_does_the_same(command, tmp_path, monkeypatch):
    res = _invoke_failing(command, tmp_path, monkeypatch, env={"TDAEVAL_DEBUG": "1"})
    assert res.exit_code == 3 and "Traceback (most recent call last)" in res.stderr and "_forced_failure" in res.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_without_debug_an_error_is_one_line_without_traceback(command, tmp_path, monkeypatch):
    res = _invoke_failing(command, tmp_path, monkeypatch)
    assert res.exit_code == 3, res.output
    assert error_lines(res.stderr) == ["error: runtime failure: RuntimeError: forced failure"]
    assert "Traceback" not in res.output


def _raise_value_error(model, train, test):
    raise ValueError("attributor crashed")


def _wrong_shape(model, train, test):
    return test.inputs.sum(1)


@pytest.mark.parametrize("fault", ["crash", "invalid scores", "metric fails"])
def test_an_entry_that_could_not_run_keeps_its_traceback(fault, small_logreg, tmp_path, monkeypatch):
    if fault == "metric fails":
        from tdaeval.metrics.lds import LDS

        def compute(self, scores, truth, **kwargs):
            raise ConfigError("this metric cannot score this attributor")

        monkeypatch.setattr(LDS, "compute", compute)
    attributor = {"crash": _raise_value_error, "invalid scores": _wrong_shape, "metric fails": "random"}[fault]
    result = tdaeval.evaluate(small_logreg, {"a": attributor}, metrics={"lds": {"n_subsets": 2}}, cache_dir=tmp_path,
                              on_error="record", progress=False)
    (entry,) = result.failures()
    expected = {"crash": "_raise_value_error", "invalid scores": "validate_scores", "metric fails": "in compute"}[fault]
    assert entry.traceback.startswith("Traceback (most recent call last)") and expected in entry.traceback
    doc = json.loads(result.to_json())
    jsonschema.validate(doc, result_schema(), cls=jsonschema.Draft202012Validator)
    assert doc["results"][0]["traceback"] == entry.traceback and doc["results"][0]["error"] == entry.error
    assert SuiteResult.from_dict(doc).failures()[0].traceback == entry.traceback


# --- item 12 and 13 through `run`: tracebacks in results.json and --debug; progress lines without a terminal

SUITE = {
    "name": "diagnostics",
    "task": {"name": "digits", "params": {"model": "logreg", "n_train": 200, "n_test": 20, "recipe": {"epochs": 3}}},
    "attributors": ["random", {"use": "tests.attributors.plugin_example:crashes", "name": "crashes"}],
    "metrics": [{"name": "lds", "params": {"n_subsets": 4}}],
    "store": "store",
}


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("diag") / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    return path


def test_run_without_a_terminal_logs_numbered_progress_lines_and_records_tracebacks(suite_file, tmp_path, monkeypatch):
    monkeypatch.delenv("TDAEVAL_DEBUG", raising=False)
    res = runner.invoke(app, ["run", str(suite_file), "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stderr.splitlines() if line.startswith("[")]
    assert lines[0].startswith("[1/4] reference model: training")
    assert "[2/4] lds: building ground truth" in lines and "[2/4] lds: 4 models, 0 already stored" in lines
    assert any(re.fullmatch(r"\[3/4\] random: done \(fit \d+\.\d\d s, attribute \d+\.\d\d s; \d+\.\d\d s in all\)", x) for x in lines)
    assert "[4/4] crashes: could not run: RuntimeError: boom (" in "\n".join(lines)
    assert "Traceback" not in res.output  # recorded, not printed, without --debug
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    (failed,) = [r for r in doc["results"] if r["error"]]
    assert "Traceback (most recent call last)" in failed["traceback"] and "in crashes" in failed["traceback"]
    assert 'raise RuntimeError("boom")' in failed["traceback"]


def test_run_with_debug_prints_the_traceback_of_an_attributor_that_could_not_run(suite_file, tmp_path):
    res = runner.invoke(app, ["--debug", "run", str(suite_file), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "crashes on lds could not run:\nTraceback (most recent call last)" in res.stderr
    assert 'raise RuntimeError("boom")' in res.stderr


# --- item 13: evaluate(progress=...)


def _progress_records(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "tdaeval" and r.getMessage().startswith("[")]


def test_evaluate_progress_true_logs_a_line_per_step(small_logreg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tdaeval")
    tdaeval.evaluate(small_logreg, ["random", "grad_dot"], metrics={"lds": {"n_subsets": 2}}, cache_dir=tmp_path, progress=True)
    lines = _progress_records(caplog)
    assert [x.split(":")[0] for x in lines] == [
        "[1/4] reference model", "[1/4] reference model", "[2/4] lds", "[2/4] lds", "[2/4] lds",
        "[3/4] random", "[3/4] random", "[4/4] grad_dot", "[4/4] grad_dot",
    ]
    assert lines[4].startswith("[2/4] lds: ground truth ready (") and lines[-1].startswith("[4/4] grad_dot: done (fit ")


def test_evaluate_progress_true_shows_lines_where_logging_is_not_configured(small_logreg, tmp_path, capsys):
    saved = logging.root.handlers[:]
    logging.root.handlers.clear()  # a plain script or notebook: no logging set-up (pytest's capture handlers put back below)
    try:
        tdaeval.evaluate(small_logreg, ["random"], metrics={"lds": {"n_subsets": 2}}, cache_dir=tmp_path, progress=True)
    finally:
        logging.root.handlers[:] = saved
    err = capsys.readouterr().err
    assert "[1/3] reference model: training" in err and "[3/3] random: done" in err
    assert not logging.getLogger("tdaeval").handlers and logging.getLogger("tdaeval").level == logging.NOTSET  # restored


@pytest.mark.parametrize("progress", [False, None])
def test_evaluate_progress_false_logs_nothing(progress, small_logreg, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    tdaeval.evaluate(small_logreg, ["random"], metrics={"lds": {"n_subsets": 2}}, cache_dir=tmp_path, progress=progress)
    assert not [r for r in caplog.records if r.name == "tdaeval"]


def test_evaluate_progress_callable_gets_stage_done_total_and_no_lines(small_logreg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tdaeval")
    events = []
    tdaeval.evaluate(small_logreg, ["random"], metrics={"lds": {"n_subsets": 2}}, cache_dir=tmp_path,
                     progress=lambda stage, done, total: events.append((stage, done, total)))
    assert events[0] == ("reference model", 0, 1) and events[-1] == ("attributors", 1, 1)
    assert ("ground truth (lds)", 2, 2) in events and not _progress_records(caplog)


def test_evaluate_progress_auto_defers_to_the_logging_set_up(small_logreg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tdaeval")
    tdaeval.evaluate(small_logreg, ["random"], metrics={"lds": {"n_subsets": 2}}, cache_dir=tmp_path)
    assert _progress_records(caplog)[0].startswith("[1/3] reference model")


@pytest.mark.parametrize("bad", ["yes", 1, 0.5])
def test_bad_progress_is_named(bad, small_logreg, tmp_path):
    with pytest.raises(ConfigError, match=r"The 'progress' parameter of evaluate must be True, False, 'auto' or a callable"):
        tdaeval.evaluate(small_logreg, ["random"], metrics={"lds": {"n_subsets": 2}}, cache_dir=tmp_path, progress=bad)


def test_groundtruth_run_logs_progress_lines_too(suite_file, tmp_path):
    res = runner.invoke(app, ["groundtruth", "run", str(suite_file), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "[1/1] lds: building ground truth" in res.stderr
    assert "[1/1] lds: complete, 4 jobs: 0 stored, 4 trained, 0 missing (" in res.stderr
