"""Leave-one-out correlation as a metric (docs: Methods §2)."""

from __future__ import annotations

from typing import Any, ClassVar

import tdaeval.functional as F
from tdaeval.groundtruth.loo import LOOGroundTruth, LOOSpec, build_loo_groundtruth
from tdaeval.groundtruth.truths import NO_TRUTH, GroundTruth
from tdaeval.metrics._nan import constant_nan_reason
from tdaeval.metrics.base import Metric, MetricResult, RetrainingMetric, register_metric
from tdaeval.params import Interval

__all__ = ["LOO", "LOOPearson"]


@register_metric
class LOO(RetrainingMetric):
    """Leave-one-out correlation: per test point, scores against the retrained removal effect.

    For test point ``z``, the Spearman correlation over the removed training
    points between ``scores[z, i]`` and the harm of removing ``i``
    (``−Δ_i(z)`` when higher is better, ``Δ_i(z)`` otherwise; ``Δ`` averaged
    over ``n_seeds`` paired seeds). The value is the mean over test points with
    a bootstrap CI over test points. Cost: ``n_seeds · (n_removed + 1)`` model
    trainings. Single-seed LOO of a deep net is mostly noise: report ``n_seeds``.
    A test point whose scores or removal effects are constant over the
    removed points has no correlation: its value is NaN and
    ``provenance["nan_reason"]`` says why.

    Parameters
    ----------
    n_removed : int
        Training points left out (a seeded sample).
    n_seeds : int
        R, paired seeds.
    seed : int
        Seed of the sample and of the training seeds.
    n_bootstrap : int
        Bootstrap resamples for the CI.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import LOOGroundTruth, LOOSpec
    >>> g = torch.Generator().manual_seed(0)
    >>> full = torch.zeros(1, 2)  # [R=1, n_test=2]
    >>> scores = torch.randn(2, 6, generator=g)  # [n_test, n_train]
    >>> removed_outputs = -scores.T.unsqueeze(1)  # removing i lowers z's measurement by scores[z, i]
    >>> truth = LOOGroundTruth(torch.arange(6), full, removed_outputs, LOOSpec(n_removed=6), higher_is_better=True)
    >>> LOO(n_removed=6, n_bootstrap=100).compute(scores, truth).per_example.tolist()
    [1.0, 1.0]
    """

    name = "loo"
    higher_is_better = True
    bounds = (-1.0, 1.0)
    truth_type = LOOGroundTruth
    #: The full-data and leave-one-out models.
    builder = staticmethod(build_loo_groundtruth)
    correlation: ClassVar[str] = "spearman"

    groundtruth_params = frozenset({"n_seeds", "seed"})
    _parameter_constraints = {**Metric._parameter_constraints, "n_removed": [Interval(int, 2, None)], "n_seeds": [Interval(int, 1, None)]}

    def __init__(self, n_removed: int = 100, n_seeds: int = 1, seed: int = 0, n_bootstrap: int = 2000) -> None:
        self.spec = LOOSpec(n_removed=n_removed, n_seeds=n_seeds, seed=seed)
        self.n_removed, self.n_seeds, self.seed, self.n_bootstrap = n_removed, n_seeds, seed, n_bootstrap

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        truth = self._truth(truth)
        chosen = self._columns(self._scores(scores, n_test=truth.full_outputs.shape[1]), truth.removed, "removes")
        per_test = F.correlate(chosen, truth.harm, self.correlation)
        provenance = {**truth.provenance, "correlation": self.correlation}
        kind = "rank correlation" if self.correlation == "spearman" else "Pearson correlation"
        reason = constant_nan_reason(per_test, chosen, truth.harm.double(), dim=-1, kind=kind)
        if reason is not None:  # e.g. constant scores: the value is NaN, and the result says why
            provenance["nan_reason"] = reason
        return self._bootstrap_result(per_test, provenance)


@register_metric
class LOOPearson(LOO):
    """:class:`LOO` with the Pearson correlation instead of Spearman (same ground truth, same parameters).

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import LOOGroundTruth, LOOSpec
    >>> scores = torch.tensor([[1.0, 2.0, 4.0]])
    >>> truth = LOOGroundTruth(torch.arange(3), torch.zeros(1, 1), -2 * scores.T.unsqueeze(1), LOOSpec(n_removed=3), True)
    >>> round(LOOPearson(n_removed=3, n_bootstrap=100).compute(scores, truth).value, 6)
    1.0
    """

    name = "loo_pearson"
    correlation: ClassVar[str] = "pearson"
