"""The suite commands: run, validate, report, compare, check, with every exit code."""

import json
import xml.etree.ElementTree as ET

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tdaeval.cli import app
from tdaeval.reports import result_schema

runner = CliRunner()

SUITE = {
    "name": "cli-test",
    "task": {"name": "digits", "params": {"n_train": 200, "n_test": 20, "recipe": {"epochs": 5}}},
    "attributors": ["random", "grad_dot", {"use": "tests.attributors.plugin_example:InputSimilarity", "name": "mine"}],
    "metrics": [{"name": "lds", "params": {"n_subsets": 6}}],
    "thresholds": {"floors": [{"attributor": "grad_dot", "metric": "lds", "min": -1.0}]},
}


def write_suite(path, **changes):
    path.write_text(yaml.safe_dump({**SUITE, **changes}))
    return path


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """One run of the test suite: (suite path, output directory, cache directory)."""
    root = tmp_path_factory.mktemp("cli")
    suite = write_suite(root / "suite.yaml", store="store")
    res = runner.invoke(app, ["run", str(suite), "--out", str(root / "out")])
    assert res.exit_code == 0, res.output
    return suite, root / "out", root / "store"


def test_run_ranks_a_users_attributor_beside_builtins_and_writes_every_report(ran):
    suite, out, store = ran
    doc = json.loads((out / "results.json").read_text())
    jsonschema.validate(doc, result_schema(), cls=jsonschema.Draft202012Validator)
    ranks = {r["attributor"]: r["rank"] for r in doc["results"]}
    assert set(ranks) == {"random", "grad_dot", "mine"} and all(1 <= r["rank"] <= 3 for r in ranks.values())
    assert doc["provenance"]["suite"]["name"] == "cli-test" and doc["provenance"]["suite_file"].endswith("suite.yaml")
    assert (store / "objects").exists()  # the suite's relative store resolves next to the suite file
    assert "| rank | attributor |" in (out / "report.md").read_text()
    assert "## Checks: ✅ all thresholds hold" in (out / "report.md").read_text()  # run reports the floors, check enforces them
    assert "<img" in (out / "report.html").read_text()
    assert ET.fromstring((out / "junit.xml").read_text()).tag == "testsuites"


def test_run_writes_the_github_step_summary(ran, tmp_path):
    suite, _, store = ran
    summary = tmp_path / "summary.md"
    res = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path / "o")], env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert res.exit_code == 0, res.output
    assert "# tdaeval report: cli-test" in summary.read_text()


@pytest.mark.parametrize("fmt,check", [
    ("md", lambda text: "## lds" in text),
    ("json", lambda text: jsonschema.validate(json.loads(text), result_schema()) is None),
    ("junit", lambda text: ET.fromstring(text.split("?>", 1)[1]).find("testsuite").get("tests") == "1"),  # the one floor
    ("html", lambda text: text.lstrip().lower().startswith("<!doctype html")),
])
def test_report_renders_each_format(ran, fmt, check):
    _, out, _ = ran
    to_stdout = ["--out", "-"] if fmt == "html" else []  # html goes to report.html unless asked for on stdout
    res = runner.invoke(app, ["report", str(out / "results.json"), "--format", fmt, *to_stdout])
    assert res.exit_code == 0, res.output
    assert check(res.stdout)


def test_report_bad_usage_exits_2(ran, tmp_path):
    _, out, _ = ran
    res = runner.invoke(app, ["report", str(out / "results.json"), "--format", "pdf"])
    assert res.exit_code == 2 and "'--format' option of report must be one of html, md, json, junit" in res.output
    (tmp_path / "x.json").write_text('{"schema": "something/else"}')
    for path, message in [(tmp_path / "missing.json", "Cannot read results file"), (tmp_path / "x.json", "not a tdaeval results document")]:
        res = runner.invoke(app, ["report", str(path)])
        assert res.exit_code == 2 and message in " ".join(res.output.split()) and "Traceback" not in res.output


def test_compare_against_itself_reports_no_change(ran):
    _, out, _ = ran
    res = runner.invoke(app, ["compare", str(out / "results.json"), str(out / "results.json"), "--fail-on-regression"])
    assert res.exit_code == 0, res.output
    assert "0 improved, 0 regressed, 3 without significant change" in res.stdout
    assert res.stdout.count("no change") == 3


def test_compare_fails_on_a_significant_regression_when_asked(ran, tmp_path):
    _, out, _ = ran
    doc = json.loads((out / "results.json").read_text())
    for item in doc["results"]:
        if item["attributor"] == "grad_dot":
            item["per_example"] = [v - 0.5 for v in item["per_example"]]
            item["value"] -= 0.5
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(doc))
    res = runner.invoke(app, ["compare", str(out / "results.json"), str(worse), "--format", "md", "--fail-on-regression"])
    assert res.exit_code == 1 and "| grad_dot | lds |" in res.stdout and "regressed" in res.stdout


def test_check_passes_then_fails_when_a_floor_is_raised_above_the_value(ran, tmp_path):
    suite, out, store = ran
    res = runner.invoke(app, ["check", str(suite), "--out", str(tmp_path / "pass"), "--results", str(out / "results.json")])
    assert res.exit_code == 0, res.output
    assert "PASS  grad_dot / lds >= -1" in res.stdout
    value = next(r["value"] for r in json.loads((out / "results.json").read_text())["results"] if r["attributor"] == "grad_dot")
    floors = {"floors": [{"attributor": "grad_dot", "metric": "lds", "min": value + 0.01}, {"attributor": "*", "metric": "lds", "min": -1.0}]}
    raised = write_suite(tmp_path / "raised.yaml", store=str(store), thresholds=floors)
    res = runner.invoke(app, ["check", str(raised), "--out", str(tmp_path / "fail")])  # runs the suite from the warm store
    assert res.exit_code == 1, res.output
    assert "FAIL  grad_dot / lds >=" in res.stdout
    junit = ET.fromstring((tmp_path / "fail" / "junit.xml").read_text().split("?>", 1)[1])
    suite_el = junit.find("testsuite")
    assert suite_el.get("tests") == "4" and suite_el.get("failures") == "1"
    assert json.loads((tmp_path / "fail" / "results.json").read_text())["checks"][0]["passed"] is False


def test_check_against_a_baseline(ran, tmp_path):
    suite, out, store = ran
    ok = write_suite(tmp_path / "b.yaml", store=str(store), baseline=str(out / "results.json"), thresholds={"max_regression": 0.0})
    res = runner.invoke(app, ["check", str(ok), "--out", str(tmp_path / "o"), "--results", str(out / "results.json")])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("PASS") == 3
    no_base = write_suite(tmp_path / "n.yaml", thresholds={"max_regression": 0.0})
    res = runner.invoke(app, ["check", str(no_base), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "thresholds.max_regression needs a baseline" in res.output


def test_runtime_failure_exits_3(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", task={"factory": "tests.suites.plugin_tasks:diverging"}, attributors=["random"],
                        thresholds={}, metrics=[{"name": "lds", "params": {"n_subsets": 4}}])
    res = runner.invoke(app, ["run", str(suite), "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 3 and "runtime failure: RuntimeError: loss diverged at step 3" in res.output
    assert "Traceback" not in res.output


MALFORMED = [
    ({"colour": "red"}, "colour: unknown key"),
    ({"seed": "zero"}, "seed: Input should be a valid integer"),
    ({"groundtruth": {"alpha": 1.5}}, "groundtruth.alpha: Input should be less than 1 (got 1.5)"),
    ({"task": None}, "task: Input should be"),
    ({"attributors": ["grad_dot", "no_such_attributor"]}, "attributors.1.use: Unknown attributor 'no_such_attributor'"),
    ({"attributors": ["nosuchmodule:Thing"]}, "attributors.0.use: Cannot import module 'nosuchmodule'"),
]


@pytest.mark.parametrize("change,message", MALFORMED)
def test_malformed_suites_exit_2_with_the_key_path(tmp_path, change, message):
    suite = write_suite(tmp_path / "bad.yaml", **change)
    for command in (["validate", str(suite)], ["run", str(suite), "--out", str(tmp_path / "o")], ["check", str(suite), "--out", str(tmp_path / "o")]):
        res = runner.invoke(app, command)
        assert res.exit_code == 2, (command, res.output)
        assert f"bad.yaml: {message}" in " ".join(res.output.split()) and "Traceback" not in res.output


def test_missing_task_exits_2(tmp_path):
    doc = {k: v for k, v in SUITE.items() if k != "task"}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    res = runner.invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert res.exit_code == 2 and "s.yaml: task: Field required" in res.output


def test_validate_accepts_a_good_suite_and_the_builtins(tmp_path):
    for suite in (str(write_suite(tmp_path / "s.yaml")), "smoke", "standard"):
        res = runner.invoke(app, ["validate", suite])
        assert res.exit_code == 0 and "valid suite" in res.stdout, res.output


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8),
                     st.sampled_from(["digits", "lds", "grad_dot", "random", "local", "cpu", "*", "a:b", "os:getcwd"]))
_keys = st.sampled_from(["task", "attributors", "metrics", "name", "params", "use", "groundtruth", "alpha", "n_subsets", "thresholds",
                         "floors", "min", "max", "metric", "attributor", "seed", "store", "executor", "device", "ranking", "factory",
                         "setting", "version", "baseline", "x"])
_documents = st.recursive(
    _scalars, lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_keys, children, max_size=6)), max_leaves=25
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=_documents)
def test_random_yaml_documents_never_give_a_traceback(tmp_path, document):
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump(document))
    res = runner.invoke(app, ["validate", str(path)])
    assert res.exit_code in (0, 2), res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80))
def test_random_text_never_gives_a_traceback(tmp_path, text):
    path = tmp_path / "random.yaml"
    path.write_text(text)
    res = runner.invoke(app, ["validate", str(path)])
    assert res.exit_code in (0, 2) and (res.exception is None or isinstance(res.exception, SystemExit)), repr(res.exception)


def test_groundtruth_and_cache_commands(ran, tmp_path):
    suite, _, store = ran
    res = runner.invoke(app, ["groundtruth", "status", str(suite)])
    assert res.exit_code == 0 and "lds" in res.stdout and "complete" in res.stdout, res.output
    fresh = tmp_path / "fresh"
    res = runner.invoke(app, ["groundtruth", "run", str(suite), "--shard", "0/2", "--cache-dir", str(fresh)])
    assert res.exit_code == 0 and "incomplete" in res.stdout and "other shards" in res.stdout, res.output
    res = runner.invoke(app, ["groundtruth", "run", str(suite), "--shard", "1/2", "--cache-dir", str(fresh)])
    assert res.exit_code == 0 and "complete" in res.stdout
    res = runner.invoke(app, ["cache", "ls", "--suite", str(suite)])
    assert res.exit_code == 0 and "train_measure" in res.stdout
    res = runner.invoke(app, ["cache", "verify", "--cache-dir", str(fresh)])
    assert res.exit_code == 0 and "6 of 6 artifacts intact." in res.stdout, res.output
    victim = sorted(fresh.rglob("*.safetensors"))[0]
    victim.write_bytes(b"garbage")
    res = runner.invoke(app, ["cache", "verify", "--cache-dir", str(fresh)])
    assert res.exit_code == 1 and f"DAMAGED  {victim}" in res.stdout
    res = runner.invoke(app, ["cache", "verify", "--cache-dir", str(fresh), "--repair"])
    assert res.exit_code == 0 and "removed" in res.stdout
    res = runner.invoke(app, ["cache", "gc", "--cache-dir", str(fresh), "--dry-run"])
    assert res.exit_code == 0 and "0 files" in res.stdout
    res = runner.invoke(app, ["groundtruth", "run", str(suite), "--shard", "2/2"])
    assert res.exit_code == 2 and "shard index must be an integer in [0, 2)" in res.output


def test_progress_bars_only_on_a_terminal_without_no_color(monkeypatch):
    import sys

    from tdaeval.cli import _Progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert _Progress().enabled
    monkeypatch.setenv("NO_COLOR", "1")
    assert not _Progress().enabled
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.delenv("NO_COLOR")
    assert not _Progress().enabled


def test_run_check_and_validate_build_the_task_once(tmp_path, monkeypatch):
    import functools

    from tdaeval.tasks.digits import DigitsTask

    calls = []
    original = DigitsTask.__init__

    @functools.wraps(original)  # keeps the constructor's signature
    def counting(self, *args, **kwargs):
        calls.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(DigitsTask, "__init__", counting)
    suite = write_suite(tmp_path / "s.yaml", task={"name": "digits", "params": {"n_train": 40, "n_test": 4, "recipe": {"epochs": 1}}},
                        attributors=["random"], metrics=[{"name": "lds", "params": {"n_subsets": 2}}], thresholds={}, store="store")
    expected = {"validate": 1, "validate --schema-only": 0, "run": 1, "check": 1}  # six for run and check before (#15)
    for command, count in expected.items():
        calls.clear()
        name, *flags = command.split()
        out = ["--out", str(tmp_path / "o")] if name != "validate" else []
        res = runner.invoke(app, [name, str(suite), *flags, *out])
        assert res.exit_code == 0, (command, res.output)
        assert len(calls) == count, command
