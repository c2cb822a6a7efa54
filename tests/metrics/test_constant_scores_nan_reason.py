"""Constant scores (or constant ground truth) give NaN correlations: the result and the reports say why (#14, item 10).

Fuzzed over the classes of input that make a correlation undefined: every score row constant, some rows
constant, constant ground truth, for LDS (Spearman over subsets) and LOO (Spearman and Pearson over the
removed points). The NaN itself is checked against scipy, which also returns NaN for a constant input.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from scipy import stats

from tdaeval.groundtruth import LDSGroundTruth, LDSSpec
from tdaeval.groundtruth.lds import subset_masks
from tdaeval.metrics import LDS, LOO, LOOPearson
from tdaeval.reports import render_html, render_markdown


def _lds_truth(rng, n_train=30, n_test=8, m=12, constant_truth=()):
    masks = subset_masks(n_train, LDSSpec(n_subsets=m, alpha=0.5))  # fixed-size subsets, as the store draws them
    effects = torch.randn(n_test, n_train, generator=rng)
    outputs = (masks.float() @ effects.T).unsqueeze(1) + 0.3 * torch.randn(m, 1, n_test, generator=rng)
    for z in constant_truth:
        outputs[:, :, z] = 1.5
    return effects, LDSGroundTruth(masks, outputs, LDSSpec(n_subsets=m, alpha=0.5), True, {"kind": "lds"})


def _scipy_nan(x, y) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return math.isnan(stats.spearmanr(x, y).statistic)


@pytest.mark.parametrize("constant_rows", [range(8), [0], [2, 5, 7]])
def test_lds_constant_score_rows_are_explained(rng, constant_rows):
    effects, truth = _lds_truth(rng)
    scores = effects.clone()
    for z in constant_rows:
        scores[z] = 0.25 * (z + 1)
    result = LDS(n_subsets=12, n_bootstrap=50).compute(scores, truth)
    n = len(list(constant_rows))
    assert result.n_nan == n
    predictions = (truth.masks.double() @ scores.double().T)
    for z in constant_rows:  # scipy agrees that these correlations are undefined
        assert _scipy_nan(predictions[:, z].numpy(), truth.mean_outputs[:, z].numpy())
    assert result.provenance["nan_reason"] == f"scores constant for {n} of 8 test points: rank correlation undefined"
    if n == 8:
        assert math.isnan(result.value)


def test_lds_constant_ground_truth_is_explained(rng):
    effects, truth = _lds_truth(rng, constant_truth=[1, 4])
    result = LDS(n_subsets=12, n_bootstrap=50).compute(effects, truth)
    assert result.n_nan == 2
    assert result.provenance["nan_reason"] == "ground truth constant for 2 of 8 test points: rank correlation undefined"


def test_lds_without_nan_has_no_reason(rng):
    effects, truth = _lds_truth(rng)
    assert "nan_reason" not in LDS(n_subsets=12, n_bootstrap=50).compute(effects, truth).provenance


@pytest.mark.parametrize("metric, kind", [(LOO, "rank correlation"), (LOOPearson, "Pearson correlation")])
def test_loo_constant_scores_are_explained(linear_task, tmp_path, metric, kind):
    from tdaeval.groundtruth import ArtifactStore

    m = metric(n_removed=10, n_bootstrap=50)
    truth = m.build_truth(linear_task, ArtifactStore(tmp_path))
    scores = torch.randn(linear_task.n_test, linear_task.n_train, dtype=torch.float64)
    scores[:3] = 2.0
    result = m.compute(scores, truth)
    assert result.n_nan == 3
    assert result.provenance["nan_reason"] == f"scores constant for 3 of {linear_task.n_test} test points: {kind} undefined"
    scores[:] = 2.0
    assert math.isnan(m.compute(scores, truth).value)


def test_constant_attributor_gives_nan_lds_and_the_reports_say_why(small_logreg, tmp_path, monkeypatch):
    import tdaeval.reports.html

    tiny_png = bytes.fromhex("89504e470d0a1a0a")  # the plots are not what this test is about
    monkeypatch.setattr(tdaeval.reports.html, "_png", lambda draw, *args: tiny_png)

    def constant(model, train, test):
        return torch.ones(len(test), len(train))

    def input_dot(model, train, test):
        return test.inputs @ train.inputs.T

    result = tdaeval.evaluate(small_logreg, {"constant": constant, "dot": input_dot},
                              metrics={"lds": {"n_subsets": 4, "n_bootstrap": 50}}, cache_dir=tmp_path)
    lds = result.get("constant", "lds")
    assert math.isnan(lds.value)
    reason = "scores constant for 20 of 20 test points: rank correlation undefined"
    assert lds.provenance["nan_reason"] == reason
    assert "nan_reason" not in result.get("dot", "lds").provenance
    assert f"NaN: constant: {reason}." in render_markdown(result)
    assert f'<p class="note">NaN: constant: {reason}.</p>' in render_html(result)
