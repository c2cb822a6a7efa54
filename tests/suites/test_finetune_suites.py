"""The built-in fine-tuning suites (issue #17): they validate, build the two-stage task and the ablation grid, and run."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

import tdaeval
from tdaeval.cli import app
from tdaeval.suites import build_suite, run_suite
from tdaeval.suites.schema import builtin_suites, load_suite
from tdaeval.tasks.finetune import FineTuneTask
from tdaeval.tasks.language import LanguageModelTask

#: finetune-dda's grid: label -> (inner, debias, denoise); the inner alone is debias off, last checkpoint (denoise None).
DDA_GRID = {}
for _label, _inner in (("grad_dot", "grad_dot"), ("grad_cos", "grad_cos"), ("ekfac", "influence")):
    DDA_GRID[_label] = (_inner, False, None)
    DDA_GRID[f"{_label}+denoise"] = (_inner, False, "mean")
    DDA_GRID[f"{_label}+debias"] = (_inner, True, None)
    DDA_GRID[f"dda({_label})"] = (_inner, True, "mean")
    if _inner != "influence":  # debias_side="query" is defined for grad_dot / grad_cos only
        DDA_GRID[f"{_label}+debias-q"] = (_inner, "query", None)
        DDA_GRID[f"dda-q({_label})"] = (_inner, "query", "mean")


def _check_grid(attributors, ekfac_params):
    """``attributors`` (label -> attributor, "random" first) holds exactly DDA_GRID, each row with its settings."""
    grid = {label: a for label, a in attributors.items() if a.name == "dda"}
    assert set(grid) == set(DDA_GRID)
    for label, attributor in grid.items():
        inner, debias, denoise = DDA_GRID[label]
        side = "query" if debias == "query" else "both"
        got = (attributor.inner, attributor.debias, attributor.debias_side, attributor.denoise)
        assert got == (inner, bool(debias), side, denoise), label
        if inner == "influence":
            assert attributor.inner_params == ekfac_params, label


def test_finetune_dda_is_builtin_and_validates_from_the_command_line():
    assert "finetune-dda" in builtin_suites()
    config, folder = load_suite("finetune-dda")
    assert config.name == "finetune-dda" and folder is None and config.description
    res = CliRunner().invoke(app, ["validate", "finetune-dda"])
    assert res.exit_code == 0, res.output


def test_finetune_dda_builds_the_two_stage_task_and_the_full_grid():
    built = build_suite("finetune-dda")
    task = built.task
    assert isinstance(task, FineTuneTask)
    assert set(task.train_data.targets.tolist()) == {5, 6, 7, 8, 9}  # fine-tuning data: the classes the base never saw
    assert set(task.base_task.train_data.targets.tolist()) == {0, 1, 2, 3, 4}
    assert len(DDA_GRID) == 16
    assert list(built.attributors)[0] == "random" and len(built.attributors) == 17
    _check_grid(built.attributors, {"solver": "ekfac"})
    assert [m.name for m in built.metrics] == ["lds"] and built.metrics[0].n_subsets == 50


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_finetune_dda_runs_and_its_control_rows_are_the_plain_inner_attributors(tmp_path):
    result = run_suite("finetune-dda", cache_dir=tmp_path / "store", progress=False)
    assert result.failures() == []
    for entry in result.entries:
        assert math.isfinite(entry.result.value) and entry.result.ci[0] <= entry.result.value <= entry.result.ci[1]
    # The control row (debias off, last checkpoint) is the inner attributor at the explained model: same LDS.
    built = build_suite("finetune-dda")
    plain = tdaeval.evaluate(built.task, attributors=["grad_dot", "grad_cos"], metrics=[built.metrics[0]], cache_dir=tmp_path / "store")
    for name in ("grad_dot", "grad_cos"):
        assert result.get(name, "lds").value == pytest.approx(plain.get(name, "lds").value, abs=1e-6), name
    per_query = torch.as_tensor(result.get("grad_dot", "lds").per_example)
    assert per_query.shape == (150,)
    # the random row is random
    low, high = result.get("random", "lds").ci
    assert low < 0 < high


def test_hallucination_dda_is_builtin_validates_and_builds_the_grid():
    assert "hallucination-dda" in builtin_suites()
    res = CliRunner().invoke(app, ["validate", "hallucination-dda"])
    assert res.exit_code == 0, res.output
    built = build_suite("hallucination-dda")
    task = built.task
    assert isinstance(task, FineTuneTask) and isinstance(task.base_task, LanguageModelTask)
    assert task.setting_params["n_kept"] == task.n_test > 0
    assert list(built.attributors)[:3] == ["random", "bm25", "entailment"]
    _check_grid({k: v for k, v in built.attributors.items() if k not in ("bm25", "entailment")}, {"solver": "ekfac", "params": "linear"})
    assert [m.name for m in built.metrics] == ["roc_auc", "recall_at_k", "mrr", "lds"]
    assert built.metrics[1].k == 10 and built.metrics[3].n_subsets == 50


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_hallucination_dda_runs_with_the_documented_findings(tmp_path):
    """The orderings docs/hallucination-tracing.rst reports: if one flips, the page is out of date."""
    result = run_suite("hallucination-dda", cache_dir=tmp_path / "store", progress=False)
    assert result.failures() == []

    def value(attributor, metric):
        return result.get(attributor, metric).value

    assert value("entailment", "roc_auc") == 1.0 and value("entailment", "mrr") == 1.0
    low, high = result.get("random", "roc_auc").ci
    assert low < 0.5 < high
    for inner in ("grad_dot", "grad_cos", "ekfac"):
        # denoise (the mean over fine-tuning checkpoints) helps on every metric
        for metric in ("roc_auc", "recall_at_k", "mrr", "lds"):
            assert value(f"{inner}+denoise", metric) > value(inner, metric), (inner, metric)
        # debias with both sides at the base ranks the injected sentences last
        assert value(f"{inner}+debias", "roc_auc") < 0.05 and value(f"dda({inner})", "lds") < -0.3, inner
    for inner in ("grad_dot", "grad_cos"):  # the query-side reading does not collapse, and does not beat denoise alone
        assert 0.5 < value(f"dda-q({inner})", "roc_auc") <= value(f"{inner}+denoise", "roc_auc"), inner
