"""Leave-one-out correlation as a metric (docs: Methods §2)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.groundtruth.loo import LOOGroundTruth, LOOSpec, build_loo_groundtruth
from tdaeval.metrics.base import Metric, MetricResult, check_n_bootstrap, register_metric
from tdaeval.metrics._nan import constant_nan_reason

__all__ = ["LOO", "LOOPearson"]


@register_metric
class LOO(Metric):
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
    """

    name = "loo"
    higher_is_better = True
    bounds = (-1.0, 1.0)
    requires = frozenset({"loo"})
    correlation: ClassVar[str] = "spearman"

    groundtruth_params = frozenset({"n_seeds", "seed"})

    def __init__(self, n_removed: int = 100, n_seeds: int = 1, seed: int = 0, n_bootstrap: int = 2000) -> None:
        self.spec = LOOSpec(n_removed=n_removed, n_seeds=n_seeds, seed=seed)
        self.n_removed, self.n_seeds, self.seed = n_removed, n_seeds, seed
        check_n_bootstrap(type(self).__name__, n_bootstrap)
        self.n_bootstrap = n_bootstrap

    def build_truth(self, task: Any, store: Any, **kwargs: Any) -> LOOGroundTruth:
        return build_loo_groundtruth(task, self.spec, store, **kwargs)

    def compute(self, scores: Tensor | Any, truth: LOOGroundTruth) -> MetricResult:
        scores = getattr(scores, "mean", scores) if not isinstance(scores, Tensor) else scores
        n_test = truth.full_outputs.shape[1]
        if not isinstance(scores, Tensor) or scores.ndim != 2 or scores.shape[0] != n_test:
            raise ConfigError(
                f"{type(self).__name__} expects scores [n_test={n_test}, n_train] matching its ground truth. "
                f"Got {tuple(getattr(scores, 'shape', ()))}."
            )
        if int(truth.removed.max()) >= scores.shape[1]:
            raise ConfigError(f"{type(self).__name__}: the ground truth removes training index {int(truth.removed.max())} "
                              f"but the scores have only {scores.shape[1]} columns.")
        chosen = scores[:, truth.removed].double()
        correlate = F.spearman if self.correlation == "spearman" else F.pearson
        per_test = correlate(chosen, truth.harm)
        provenance = {**truth.provenance, "correlation": self.correlation}
        kind = "rank correlation" if self.correlation == "spearman" else "Pearson correlation"
        reason = constant_nan_reason(per_test, chosen, truth.harm.double(), dim=-1, kind=kind)
        if reason is not None:  # e.g. constant scores: the value is NaN, and the result says why
            provenance["nan_reason"] = reason
        return self._bootstrap_result(per_test, provenance)


@register_metric
class LOOPearson(LOO):
    """:class:`LOO` with the Pearson correlation instead of Spearman (same ground truth, same parameters)."""

    name = "loo_pearson"
    correlation: ClassVar[str] = "pearson"
