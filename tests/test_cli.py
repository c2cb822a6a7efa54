import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tdaeval.cli import app

runner = CliRunner()
SMALL = ["--n-train", "200", "--n-test", "20", "--subsets", "6"]


# 200 training points make the tiny MLP's damped Hessian indefinite, so block CG warns that it did not
# converge: the warning is right, and not what this test is about.
@pytest.mark.filterwarnings("ignore:Influence\\(solver='cg'\\).*did not converge:UserWarning")
@pytest.mark.slow
def test_quickstart_writes_results_and_report(tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["quickstart", "--out", str(out), "--cache-dir", str(tmp_path / "c"), *SMALL])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "results.json").read_text())
    names = {r["attributor"] for r in doc["results"]}
    assert names == {"random", "grad_dot", "grad_cos", "tracin", "influence", "trak", "representer", "similarity"}
    for item in doc["results"]:
        assert {"attributor", "metric", "value", "ci", "higher_is_better", "per_example", "provenance", "cost"} <= item.keys()
    report = (out / "report.md").read_text()
    assert "| rank | attributor |" in report and "grad_dot" in report
    assert "lds" in res.output


@pytest.mark.parametrize(
    "args,match",
    [
        (["--alpha", "1.5"], "'alpha' parameter of LDS must be in (0, 1). Got 1.5"),
        (["--subsets", "1"], "'n_subsets' parameter of LDS"),
        (["--n-train", "5000"], "'n_train' + 'n_test'"),
    ],
)
def test_bad_input_exits_2_without_traceback(tmp_path, args, match):
    res = runner.invoke(app, ["quickstart", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), *args])
    assert res.exit_code == 2
    assert match in " ".join(res.output.split())
    assert "Traceback" not in res.output
    assert not (tmp_path / "c" / "objects").exists() or not any((tmp_path / "c" / "objects").iterdir())


def test_unwritable_cache_dir_exits_2(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("")
    res = runner.invoke(app, ["quickstart", "--out", str(tmp_path / "o"), "--cache-dir", str(blocker / "c"), *SMALL])
    assert res.exit_code == 2 and "not writable" in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_user_attributor_by_module_path(tmp_path):
    args = ["quickstart", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), *SMALL]
    res = runner.invoke(app, [*args, "-a", "tests.attributors.plugin_example:input_dot", "-a", "random"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert {r["attributor"] for r in doc["results"]} == {"tests.attributors.plugin_example:input_dot", "random"}


@pytest.mark.parametrize(
    "spec,code,match",
    [
        ("tests.attributors.plugin_example:nan_scores", 2, "non-finite"),
        ("no_such_attributor", 2, "Unknown attributor 'no_such_attributor'"),
        ("tests.attributors.plugin_example:crashes", 3, "RuntimeError: boom"),
    ],
)
def test_bad_attributor_is_named_with_its_exit_code(tmp_path, spec, code, match):
    args = ["quickstart", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), *SMALL]
    res = runner.invoke(app, [*args, "-a", spec])
    assert res.exit_code == code
    assert match in res.output and spec in res.output and "Traceback" not in res.output


def test_ls_lists_attributors_and_metrics():
    res = runner.invoke(app, ["ls"])
    assert res.exit_code == 0
    for name in ("random", "grad_dot", "grad_cos", "tracin", "lds"):
        assert name in res.output


def test_console_script_runs_as_a_subprocess():
    proc = subprocess.run([sys.executable, "-m", "tdaeval.cli", "ls"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "grad_dot" in proc.stdout


def test_import_does_not_pull_optional_backends():
    code = (
        "import sys, tdaeval, tdaeval.attributors, tdaeval.metrics, tdaeval.groundtruth;"
        "bad = [m for m in ('dattri', 'trak', 'kronfluence', 'quanda', 'ray', 'peft', 'captum', 'matplotlib') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
