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

#: finetune-dda's grid: label -> (inner, debias, denoise); the inner alone is debias off, last checkpoint (denoise None).
DDA_GRID = {}
for _label, _inner in (("grad_dot", "grad_dot"), ("grad_cos", "grad_cos"), ("ekfac", "influence")):
    DDA_GRID[_label] = (_inner, False, None)
    DDA_GRID[f"{_label}+denoise"] = (_inner, False, "mean")
    DDA_GRID[f"{_label}+debias"] = (_inner, True, None)
    DDA_GRID[f"dda({_label})"] = (_inner, True, "mean")


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
    assert len(DDA_GRID) == 12
    assert list(built.attributors) == ["random", *[a for a in built.attributors if a != "random"]]
    grid = {label: a for label, a in built.attributors.items() if label != "random"}
    assert set(grid) == set(DDA_GRID)
    for label, attributor in grid.items():
        inner, debias, denoise = DDA_GRID[label]
        assert (attributor.name, attributor.inner, attributor.debias, attributor.denoise) == ("dda", inner, debias, denoise), label
        if inner == "influence":
            assert attributor.inner_params == {"solver": "ekfac"}, label
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
