"""The linear datamodeling score as a metric."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

import torch

import tdaeval.functional as F
from tdaeval.groundtruth.lds import LDSGroundTruth, LDSSpec, build_lds_groundtruth
from tdaeval.groundtruth.truths import NO_TRUTH, GroundTruth
from tdaeval.metrics._nan import constant_nan_reason
from tdaeval.metrics.base import Metric, MetricResult, RetrainingMetric, register_metric
from tdaeval.params import Interval, Options

__all__ = ["LDS"]


@register_metric
class LDS(RetrainingMetric):
    """Linear datamodeling score (Park et al. 2023; docs: Methods §1).

    Per test point, the Spearman correlation over M subsets between the
    retrained measurement (averaged over R seeds) and the additive prediction
    ``Σ_{i∈S_j} scores[z, i]``; the value is the mean over test points with a
    95% bootstrap CI whose coverage ``ci`` chooses (the result's
    ``provenance["ci_covers"]`` says which). A test point whose subset
    predictions (e.g. constant scores) or measurements are constant has no
    rank correlation: its value is NaN and ``provenance["nan_reason"]`` says
    so, e.g. ``"scores constant for 40 of 40 test points: rank correlation
    undefined"``.

    Parameters
    ----------
    n_subsets : int
        M (>= 2).
    alpha : float
        Subset fraction in (0, 1).
    n_seeds : int
        R, seeds per subset.
    seed : int
        Seed of subset draws and training seeds.
    n_bootstrap : int
        Bootstrap resamples for the CI.
    ci : {"test+subsets", "test"}
        What the CI resamples. ``"test+subsets"`` (default): test points and
        subsets together, a two-way bootstrap
        (:func:`tdaeval.functional.lds_two_way_ci`) that includes the variance
        of drawing the M subsets and of training their models; that variance
        is shared by every test point, so it does not shrink with more test
        points and dominates at the usual M = 20–100. ``"test"``: test points
        only, the subsets and their models held fixed (narrower; what
        TRAK-style tables report). The default covers what the value is an
        estimate of, the attributor's LDS with randomly drawn subsets, at a
        cost of about ``n_bootstrap · M · n_test`` operations instead of
        ``n_bootstrap · n_test`` (about a second at M = 100, 100 test points).
        Rankings are unaffected: they pair attributors on the same subsets and
        resample test points (:mod:`tdaeval.suites.ranking`).

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import LDSGroundTruth, LDSSpec
    >>> g = torch.Generator().manual_seed(0)
    >>> masks = torch.rand(20, 8, generator=g) < 0.5  # M = 20 subsets of 8 training points
    >>> effects = torch.randn(3, 8, generator=g)  # 3 test points
    >>> outputs = (masks.float() @ effects.T).unsqueeze(1)  # [M, R=1, n_test]: exactly additive
    >>> truth = LDSGroundTruth(masks, outputs, LDSSpec(n_subsets=20), higher_is_better=True)
    >>> result = LDS(n_subsets=20, n_bootstrap=100).compute(effects, truth)
    >>> round(result.value, 6), result.per_example.shape
    (1.0, torch.Size([3]))
    """

    #: What each ``ci`` setting resamples, as stored in ``provenance["ci_covers"]``.
    CI_COVERS: ClassVar[dict[str, str]] = {
        "test+subsets": "test points and subsets resampled together (two-way bootstrap); covers the draw of test points, "
                        "of the M subsets and the training noise of their models",
        "test": "test points resampled; the M subsets and their trained models fixed (leaves out the variance of drawing the subsets)",
    }

    name = "lds"
    higher_is_better = True
    bounds = (-1.0, 1.0)
    truth_type = LDSGroundTruth
    #: The ``M · R`` subset models.
    builder = staticmethod(build_lds_groundtruth)

    groundtruth_params = frozenset({"n_subsets", "alpha", "n_seeds", "seed"})
    _parameter_constraints = {
        **Metric._parameter_constraints,
        "n_subsets": [Interval(int, 2, None)],
        "alpha": [Interval(float, 0, 1, closed="neither")],
        "n_seeds": [Interval(int, 1, None)],
        "ci": [Options(CI_COVERS)],
    }

    def __init__(self, n_subsets: int = 50, alpha: float = 0.5, n_seeds: int = 1, seed: int = 0, n_bootstrap: int = 2000,
                 ci: str = "test+subsets") -> None:
        self.spec = LDSSpec(n_subsets=n_subsets, alpha=alpha, n_seeds=n_seeds, seed=seed)
        self.n_subsets, self.alpha, self.n_seeds, self.seed = n_subsets, alpha, n_seeds, seed
        self.n_bootstrap, self.ci = n_bootstrap, ci

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        truth = self._truth(truth)
        scores = self._scores(scores, n_test=truth.outputs.shape[2], n_train=truth.masks.shape[1])
        outputs = truth.mean_outputs if truth.higher_is_better else -truth.mean_outputs
        predictions = F.subset_predictions(scores, truth.masks)  # [M, n_test], once for the value and the CI
        per_test = F.spearman(predictions, outputs.to(torch.float64), dim=0)  # = F.lds(scores, truth.masks, outputs)
        provenance = {**truth.provenance, "ci": self.ci, "ci_covers": self.CI_COVERS[self.ci]}
        reason = constant_nan_reason(per_test, predictions, outputs, dim=0, kind="rank correlation")
        if reason is not None:  # e.g. constant scores: the value is NaN, and the result says why
            provenance["nan_reason"] = reason
        result = self._bootstrap_result(per_test, provenance)
        if self.ci == "test+subsets":
            result.ci = F.lds_two_way_ci(predictions, outputs, n_resamples=self.n_bootstrap, seed=self.seed)
        return result

    def spec_dict(self) -> dict[str, Any]:
        """The ground-truth spec as a dict."""
        return asdict(self.spec)
