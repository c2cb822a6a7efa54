"""What the command line prints: messages shown as written (no rich markup eaten), plain-text help and ``ls``,
warnings for what a run leaves unchecked, and where ``report`` writes. Nothing here trains a digits model."""

import json
import re
import xml.etree.ElementTree as ET

import pytest
import typer
import yaml
from typer.testing import CliRunner

from tdaeval.cli import app
from tests.suites.helpers import synthetic_result

runner = CliRunner()
BRACKETS = "expected [n_test=30, n_train=300]."
RST = ("``", ":class:", ":doc:", ":func:", ":meth:", ":mod:", ":ref:", ":attr:", ":math:", "`_")


def _flat(text: str) -> str:
    return " ".join(text.split())


def _write_suite(path, **changes):
    suite = {
        "name": "out-test",
        "task": {"name": "digits", "params": {"n_train": 200, "n_test": 20}},
        "attributors": ["random", "grad_dot"],
        "metrics": [{"name": "lds", "params": {"n_subsets": 4}}],
        "thresholds": {"floors": [{"attributor": "*", "metric": "lds", "min": -1.0}]},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**suite, **changes}))
    return path


def _results(path):
    """A results document for the suite above (attributors random and grad_dot on lds), without training."""
    result = synthetic_result({"lds": ({"random": [0.0, 0.1, -0.1, 0.05], "grad_dot": [0.5, 0.6, 0.4, 0.55]}, True)})
    path.parent.mkdir(parents=True, exist_ok=True)
    result.to_json(path)
    return path


# --------------------------------------------------------------------------- 9: brackets survive every print site

FACTORY = '''
from tdaeval.errors import ConfigError


def config_error(**params):
    raise ConfigError("expected [n_test=30, n_train=300].")


def runtime_error(**params):
    raise RuntimeError("index [3] is out of range for [n_train=300]")
'''


def _bracket_cases(tmp):
    """``(command line, environment, text that must appear verbatim)`` for every kind of print site."""
    folder = tmp / "[dir]"
    missing_suite = str(folder / "s[1].yaml")
    missing_json = str(folder / "r[1].json")
    (tmp / "bracket_factories.py").write_text(FACTORY)
    config_suite = str(_write_suite(tmp / "c[1].yaml", task={"factory": "bracket_factories:config_error"}))
    runtime_suite = str(_write_suite(tmp / "e[1].yaml", task={"factory": "bracket_factories:runtime_error"}))
    good = str(_write_suite(folder / "good.yaml", baseline="base[2].json"))
    results = str(_results(folder / "results.json"))
    blocker = tmp / "file[x]"
    blocker.write_text("")
    out = str(tmp / "o")
    cases = {}
    for name, args in {
        "validate": ["validate"], "run": ["run"], "check": ["check"], "groundtruth-run": ["groundtruth", "run"],
        "groundtruth-status": ["groundtruth", "status"],
    }.items():
        extra = ["--out", out] if name in ("run", "check") else []
        cases[f"{name}-missing-suite"] = ([*args, missing_suite, *extra], {}, missing_suite)
        cases[f"{name}-error-message"] = ([*args, config_suite, *extra], {}, BRACKETS)
        cases[f"{name}-runtime-failure"] = ([*args, runtime_suite, *extra], {}, "index [3] is out of range for [n_train=300]")
    for sub in ("ls", "verify", "gc"):
        cases[f"cache-{sub}-missing-suite"] = (["cache", sub, "--suite", missing_suite], {}, missing_suite)
    cases["report-missing-results"] = (["report", missing_json], {}, missing_json)
    cases["report-unwritable-out"] = (["report", results, "--out", str(blocker / "r.md")], {}, str(blocker / "r.md"))
    cases["compare-missing-results"] = (["compare", missing_json, results], {}, missing_json)
    cases["quickstart-unwritable-out"] = (["quickstart", "--out", str(blocker / "o")], {}, str(blocker / "o"))
    cases["check-missing-baseline-warning"] = (["check", good, "--results", results, "--out", out], {}, str(folder / "base[2].json"))
    cases["check-step-summary-warning"] = (
        ["check", good, "--results", results, "--out", out], {"GITHUB_STEP_SUMMARY": str(blocker / "summary[1].md")},
        str(blocker / "summary[1].md"),
    )
    return cases


CASE_NAMES = sorted([
    *(f"{c}-{k}" for c in ("validate", "run", "check", "groundtruth-run", "groundtruth-status")
      for k in ("missing-suite", "error-message", "runtime-failure")),
    *(f"cache-{s}-missing-suite" for s in ("ls", "verify", "gc")),
    "report-missing-results", "report-unwritable-out", "compare-missing-results", "quickstart-unwritable-out",
    "check-missing-baseline-warning", "check-step-summary-warning",
])


@pytest.mark.parametrize("case", CASE_NAMES)
def test_square_brackets_in_messages_and_paths_are_printed_as_written(tmp_path, case):
    args, env, expected = _bracket_cases(tmp_path)[case]
    res = runner.invoke(app, args, env=env)
    assert "Traceback" not in res.output
    assert expected in _flat(res.output), (case, res.output)
    assert res.exit_code in (0, 1, 2, 3) and (res.exit_code != 0 or "warning" in case), (case, res.exit_code, res.output)


def test_every_bracket_case_is_listed(tmp_path):
    assert sorted(_bracket_cases(tmp_path)) == CASE_NAMES


def test_progress_bar_labels_keep_their_brackets(monkeypatch):
    import sys

    from rich.text import Text

    from tdaeval.cli import _Progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    progress = _Progress()  # not started: nothing is drawn
    stage = "ground truth (lds[n_subsets=4])"
    progress(stage, 0, 4)
    (task,) = progress.bar.tasks
    assert Text.from_markup(task.description).plain == stage  # the bar's TextColumn reads the description as markup


# --------------------------------------------------------------------------- 14: plain help and ls


def _command_paths(command, prefix=()):
    yield prefix
    if isinstance(getattr(command, "commands", None), dict):  # a group (typer has its own click classes)
        for name, sub in command.commands.items():
            yield from _command_paths(sub, (*prefix, name))


COMMANDS = list(_command_paths(typer.main.get_command(app)))


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "tdaeval")
def test_help_of_every_command_is_plain_text(path):
    res = runner.invoke(app, [*path, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    for markup in RST:
        assert markup not in res.output, (path, markup, res.output)


def test_every_command_is_covered():
    names = {" ".join(p) for p in COMMANDS}
    assert {"run", "check", "report", "ls", "groundtruth run", "cache gc"} <= names


def test_ls_is_plain_text_in_aligned_columns():
    res = runner.invoke(app, ["ls"])
    assert res.exit_code == 0, res.output
    for markup in RST:
        assert markup not in res.output, markup
    rows = [line for line in res.output.splitlines() if line.startswith("  ")]
    assert len(rows) > 20 and {"attributors:", "metrics:"} <= set(res.output.splitlines())
    starts = set()
    for line in rows:
        name, rest = line[2:].split(" ", 1)
        starts.add(len(line) - len(rest.lstrip(" ")))
        assert len(rest) - len(rest.lstrip(" ")) >= 1, line  # at least one space between name and description
    assert len(starts) == 1, f"descriptions start at columns {sorted(starts)}"
    grad_dot = next(line for line in rows if line.split()[0] == "grad_dot")
    assert "score(z, z_i) = ∇(-f)(z) · ∇L(z_i)" in grad_dot  # the literal's text stays, its backticks go
    assert "with the Pearson correlation" in next(line for line in rows if line.split()[0] == "loo_pearson")


def test_rst_to_plain():
    from tdaeval._text import rst_to_plain, summary

    text = """Run it: use ``check`` for :class:`~tdaeval.suites.SuiteResult`, :func:`tdaeval.evaluate`,
    :doc:`the CI page <ci>`, `Park et al. <https://arxiv.org/abs/2303.14186>`_ and **this**.

    * one ``a``
    * two

    Example::

        x = [1]
    """
    assert rst_to_plain(text) == (
        "Run it: use check for SuiteResult, tdaeval.evaluate, the CI page, Park et al. and this.\n\n"
        "* one a\n* two\n\nExample:\n\n    x = [1]"
    )
    assert summary(":class:`LOO` with\n  Pearson.\n\nMore.") == "LOO with Pearson."
    assert rst_to_plain(None) == "" and summary("") == ""


# --------------------------------------------------------------------------- 10: a missing baseline is said


def _linear_suite(path, **changes):
    return _write_suite(path, task={"factory": "tests.suites.plugin_tasks:small_linear"}, **changes)


def test_validate_notes_a_missing_baseline(tmp_path):
    suite = _linear_suite(tmp_path / "s.yaml", baseline="base.json", thresholds={"max_regression": 0.02})
    res = runner.invoke(app, ["validate", str(suite)])
    assert res.exit_code == 0 and "valid suite" in res.stdout, res.output
    assert f"note: thresholds.max_regression (0.02) is not checked: the baseline file {str(tmp_path / 'base.json')!r} does not exist" in res.stdout
    no_base = _linear_suite(tmp_path / "n.yaml", thresholds={"max_regression": 0.02})
    res = runner.invoke(app, ["validate", str(no_base)])
    assert res.exit_code == 0 and "note: thresholds.max_regression (0.02) is not checked: no baseline results file is set" in res.stdout
    _results(tmp_path / "base.json")
    res = runner.invoke(app, ["validate", str(suite)])
    assert res.exit_code == 0 and "note:" not in res.output


def test_run_warns_and_every_report_says_the_regression_check_was_left_out(tmp_path):
    suite = _linear_suite(tmp_path / "s.yaml", baseline="base.json", thresholds={
        "floors": [{"attributor": "*", "metric": "lds", "min": -1.0}], "max_regression": 0.02})
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(suite), "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    note = f"thresholds.max_regression (0.02) is not checked: the baseline file {str(tmp_path / 'base.json')!r} does not exist"
    assert f"warning: {note}" in _flat(res.output)
    assert json.loads((out / "results.json").read_text())["provenance"]["check_notes"][0].startswith(note)
    markdown = (out / "report.md").read_text()
    assert "all thresholds hold" not in markdown and "## Checks: ⚠ all checked thresholds hold" in markdown
    assert "**Note:** thresholds.max_regression (0.02) is not checked" in markdown
    assert "⚠ Note: thresholds.max_regression (0.02) is not checked" in (out / "report.html").read_text()
    suite_el = ET.fromstring((out / "junit.xml").read_text().split("?>", 1)[1]).find("testsuite")
    assert suite_el.get("skipped") == "1" and suite_el.find("testcase/skipped").get("message").startswith(note)


def test_check_refuses_a_missing_baseline_it_needs_and_warns_about_one_it_does_not(tmp_path):
    results = str(_results(tmp_path / "r.json"))
    needs = _write_suite(tmp_path / "needs.yaml", baseline="base.json", thresholds={"max_regression": 0.02})
    res = runner.invoke(app, ["check", str(needs), "--results", results, "--out", str(tmp_path / "o1")])
    assert res.exit_code == 2 and "thresholds.max_regression needs the baseline file" in _flat(res.output), res.output
    unused = _write_suite(tmp_path / "unused.yaml", baseline="base.json")
    res = runner.invoke(app, ["check", str(unused), "--results", results, "--out", str(tmp_path / "o2")])
    assert res.exit_code == 0, res.output
    assert f"warning: the baseline file {str(tmp_path / 'base.json')!r} does not exist" in _flat(res.output)
    assert "**Note:** the baseline file" in (tmp_path / "o2" / "report.md").read_text()
    # a note from an earlier run is not carried into a check that has its baseline
    _results(tmp_path / "base.json")
    res = runner.invoke(app, ["check", str(unused), "--results", str(tmp_path / "o2" / "results.json"), "--out", str(tmp_path / "o3")])
    assert res.exit_code == 0 and "warning" not in res.output, res.output
    assert "Note:" not in (tmp_path / "o3" / "report.md").read_text()


def test_baseline_note_cases(tmp_path):
    from tdaeval.errors import ConfigError
    from tdaeval.suites.checks import baseline_note
    from tdaeval.suites.config import ThresholdSpec

    with_regression, floors_only = ThresholdSpec(max_regression=0.05), ThresholdSpec()
    present = _results(tmp_path / "present.json")
    absent = tmp_path / "absent.json"
    assert baseline_note(with_regression, present) is None and baseline_note(floors_only, present) is None
    assert baseline_note(floors_only, None) is None
    assert baseline_note(with_regression, None).startswith("thresholds.max_regression (0.05) is not checked: no baseline")
    assert baseline_note(with_regression, absent).startswith(f"thresholds.max_regression (0.05) is not checked: the baseline file {str(absent)!r}")
    assert baseline_note(floors_only, absent).startswith(f"the baseline file {str(absent)!r} does not exist (no threshold uses it")
    with pytest.raises(ConfigError, match="'thresholds' parameter of baseline_note"):
        baseline_note({"max_regression": 0.05}, absent)


# --------------------------------------------------------------------------- 8 and 15: check's reports, report's HTML


def test_check_writes_every_threshold_into_every_report(tmp_path):
    results = str(_results(tmp_path / "r.json"))
    floors = {"floors": [{"attributor": "grad_dot", "metric": "lds", "min": 0.9}, {"attributor": "random", "metric": "lds", "min": -1.0}]}
    suite = _write_suite(tmp_path / "s.yaml", thresholds=floors)
    res = runner.invoke(app, ["check", str(suite), "--results", results, "--out", str(tmp_path / "o")])
    assert res.exit_code == 1, res.output
    page = (tmp_path / "o" / "report.html").read_text()
    assert "<h2>Checks: ❌ 1 of 2 thresholds failed</h2>" in page
    for line in res.stdout.splitlines():
        if line.startswith(("PASS", "FAIL")):
            verdict, rest = line.split("  ", 1)
            name, message = rest.split(": ", 1)
            row = re.escape(f"<td>{'❌ FAIL' if verdict == 'FAIL' else '✅ pass'}</td><td>{name.replace('>', '&gt;')}</td>"
                            f"<td>{message.replace('>', '&gt;')}</td>")
            assert re.search(row, page), line


def test_report_html_goes_to_a_file_not_the_terminal(tmp_path):
    results = _results(tmp_path / "run" / "results.json")
    res = runner.invoke(app, ["report", str(results), "--format", "html"])
    assert res.exit_code == 0, res.output
    assert "<html" not in res.stdout and res.stdout.strip() == f"Wrote {results.parent / 'report.html'}"
    assert (results.parent / "report.html").read_text().startswith("<!DOCTYPE html>")
    res = runner.invoke(app, ["report", str(results), "--format", "html", "--out", "-"])
    assert res.exit_code == 0 and res.stdout.startswith("<!DOCTYPE html>")
    res = runner.invoke(app, ["report", str(results), "--format", "md"])
    assert res.exit_code == 0 and res.stdout.startswith("# tdaeval report")
