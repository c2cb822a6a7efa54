"""The tutorials run as scripts, write only where they are told, and pass their own checks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
# Each tutorial runs as a subprocess with its own limit; pytest's limit for the test (the
# global one in pyproject.toml is shorter) leaves a margin above it for the test's own checks,
# so that the subprocess limit, with its clearer error, is the one that fires.
SUBPROCESS_TIMEOUT_S = 900
SUBPROCESS_TIMEOUT_01_S = 300
TEST_MARGIN_S = 60

TUTORIAL_01_ATTRIBUTORS = {"pixels (function)", "embedding (class)", "grad_dot", "grad_cos (module:Name)", "random"}


def _run(tmp_path: Path, script: str, *args: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs ``tutorials/<script> <args>`` in ``tmp_path`` (ground truth cached in ``tmp_path/cache``); fails on a non-zero exit."""
    base = {k: v for k, v in os.environ.items() if k != "TDAEVAL_TUTORIAL_OUT"}
    env = {**base, "TDAEVAL_CACHE_DIR": str(tmp_path / "cache"), **(env or {})}
    proc = subprocess.run([sys.executable, str(TUTORIALS / script), *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _results(out_dir: Path) -> list[dict]:
    """The entries of ``out_dir/results.json``."""
    return json.loads((out_dir / "results.json").read_text())["results"]


@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_TIMEOUT_01_S + TEST_MARGIN_S)
@pytest.mark.parametrize("out_via", ["argument", "environment"])
def test_tutorial_01_runs(tmp_path, out_via):
    out_dir = tmp_path / "out"
    args, env = ([str(out_dir)], None) if out_via == "argument" else ([], {"TDAEVAL_TUTORIAL_OUT": str(out_dir)})
    proc = _run(tmp_path, "01_plug_in_your_attributor.py", *args, env=env, timeout=SUBPROCESS_TIMEOUT_01_S)

    assert (out_dir / "results.json").is_file(), proc.stdout + proc.stderr
    results = _results(out_dir)
    assert {r["attributor"] for r in results} == TUTORIAL_01_ATTRIBUTORS
    assert all(r["error"] is None and r["value"] is not None for r in results)
    for name in TUTORIAL_01_ATTRIBUTORS:
        assert name in proc.stdout  # the printed table
    # The ground truth went to TDAEVAL_CACHE_DIR, and nothing else was written next to the script.
    assert any((tmp_path / "cache" / "objects").rglob("*.safetensors"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out"]


@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S + TEST_MARGIN_S)
def test_tutorial_02_compares_every_family_and_the_installed_adapters(tmp_path):
    from tdaeval.attributors import get
    from tdaeval.attributors.adapters import AdapterAttributor

    proc = _run(tmp_path, "02_compare_attributors.py", str(tmp_path / "out"), timeout=SUBPROCESS_TIMEOUT_S)
    ran = {r["attributor"] for r in _results(tmp_path / "out") if r["error"] is None}
    assert {"grad_dot", "tracin", "influence (ekfac)", "source", "trak", "random", "captum TracInCP"} <= ran
    # every adapter whose library is installed here was run; the others are listed with their extra
    sys.path.insert(0, str(TUTORIALS))
    try:
        import importlib

        tutorial = importlib.import_module("02_compare_attributors")
    finally:
        sys.path.remove(str(TUTORIALS))
    for label, (name, params) in tutorial.ADAPTERS.items():
        attributor = get(name, **params)
        if isinstance(attributor, AdapterAttributor) and attributor.available():
            assert label in ran, label
        else:
            assert f"pip install 'tdaeval[{attributor.extra}]'" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S + TEST_MARGIN_S)
def test_tutorial_03_ensembles_and_seed_noise(tmp_path):
    proc = _run(tmp_path, "03_ensembles_and_seed_noise.py", str(tmp_path / "out"), timeout=SUBPROCESS_TIMEOUT_S)
    results = _results(tmp_path / "out")
    ran = {r["attributor"]: r for r in results if r["error"] is None}
    assert {"grad_dot naive I=8", "trak naive I=8", "grad_dot dropout K=4", "grad_dot lora K=4"} <= set(ran)
    assert ran["grad_dot lora K=4"]["cost"]["storage_bytes"] > 0  # the ensembles' cost split reaches the results
    noise = json.loads((tmp_path / "out" / "seed_noise.json").read_text())
    assert set(noise) == {"grad_dot", "influence", "grad_dot, init only", "grad_dot, batch order only"}
    assert all(0.0 <= row["mean_p"] <= 1.0 for row in noise.values())
    # no number of the tutorial comes from a solve that did not converge (influence's CG, #13)
    assert "ConvergenceWarning" not in proc.stderr and "did not converge" not in proc.stderr
    assert all(row["warnings"] == [] for row in noise.values()) and all(r["warnings"] == [] for r in results)


@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S + TEST_MARGIN_S)
def test_tutorial_04_gold_standards(tmp_path):
    _run(tmp_path, "04_gold_standards.py", str(tmp_path / "out"), timeout=SUBPROCESS_TIMEOUT_S)
    metrics = {(r["attributor"], r["metric"]) for r in _results(tmp_path / "out") if r["error"] is None}
    for metric in ("lds", "loo", "topk_removal", "further_training"):
        assert ("grad_dot", metric) in metrics and ("random", metric) in metrics
    timings = json.loads((tmp_path / "out" / "timings.json").read_text())
    assert set(timings) == {"lds", "loo", "topk_removal", "further_training"}


def test_tutorial_05_suite_and_workflow_are_valid():
    """The CI tutorial's suite has the documented structure and its workflow runs `tdaeval check`."""
    import re

    import yaml

    from tdaeval.suites.config import parse_suite

    text = (TUTORIALS / "05_ci.md").read_text()
    suite_text, workflow_text = re.findall(r"```yaml\n(.*?)```", text, re.S)
    # the suite names the reader's own attributor (mypkg), so only its structure can be checked here
    config = parse_suite(suite_text, source="05_ci.md", check=False)
    assert config.thresholds.max_regression == 0.02 and config.thresholds.ci_must_clear
    assert {f.attributor for f in config.thresholds.floors} == {"mine", "random"}
    assert workflow_text == (TUTORIALS / "05_ci_workflow.yml").read_text()
    workflow = yaml.safe_load(workflow_text)
    runs = [step.get("run", "") for step in workflow["jobs"]["tdaeval"]["steps"]]
    assert any(r.startswith("tdaeval check tdaeval-suite.yaml") for r in runs)
    cached = [s for s in workflow["jobs"]["tdaeval"]["steps"] if s.get("uses", "").startswith("actions/cache")]
    assert cached and cached[0]["with"]["path"] == config.store


@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S + TEST_MARGIN_S)
def test_tutorial_06_fact_tracing(tmp_path):
    proc = _run(tmp_path, "06_fact_tracing.py", str(tmp_path / "out"), timeout=SUBPROCESS_TIMEOUT_S)
    results = _results(tmp_path / "out")
    assert all(r["error"] is None and r["value"] is not None for r in results)
    attributors = {"random", "bm25", "bm25 (prompt)", "entailment", "similarity", "grad_dot", "grad_cos"}
    metrics = {"mrr", "hit_at_k", "recall_at_k", "precision_at_k", "tail_patch", "lds"}
    assert {(r["attributor"], r["metric"]) for r in results} == {(a, m) for a in attributors for m in metrics}
    for heading in (*metrics, "with lexical control (aliases=2)", "held-out-paraphrase accuracy", "proponent"):
        assert heading in proc.stdout  # the printed tables and the example query
    # The ground truth went to TDAEVAL_CACHE_DIR, and nothing else was written next to the script.
    assert any((tmp_path / "cache" / "objects").rglob("*.safetensors"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out"]


@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_TIMEOUT_S + TEST_MARGIN_S)
def test_tutorial_07_fine_tuning_and_dda(tmp_path):
    out = tmp_path / "out"
    proc = _run(tmp_path, "07_fine_tuning_and_dda.py", str(out), timeout=SUBPROCESS_TIMEOUT_S)
    grid = {"grad_dot", "grad_dot+denoise", "grad_dot+debias", "dda(grad_dot)"}
    traced = _results(out)
    assert all(r["error"] is None and r["value"] is not None for r in traced)
    lm_attributors = {"random", "bm25", "entailment", *grid, "influence", "influence+denoise", "influence+debias", "dda(influence)"}
    assert {(r["attributor"], r["metric"]) for r in traced} == {(a, m) for a in lm_attributors for m in ("roc_auc", "recall_at_k", "mrr", "lds")}
    digits = json.loads((out / "digits.json").read_text())["results"]
    assert {(r["attributor"], r["metric"]) for r in digits} == {(a, "lds") for a in {"random", "tracin", *grid}}
    for heading in ("hallucinated queries", "base model:", "injected", "roc_auc", "lds"):
        assert heading in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out"]
