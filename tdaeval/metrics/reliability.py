"""Seed-noise reliability of an attributor's scores (Nguyen, Seo, Oh 2023; docs: Methods §4).

Both metrics read an :class:`~tdaeval.attributors.Attribution` with its
per-seed samples, as :class:`~tdaeval.attributors.seeds.SeedPosterior`
returns (``seed_posterior(attributor, n_seeds=S)``); they need no retraining
of their own beyond the posterior's ``S`` models.
"""

from __future__ import annotations

from typing import Any

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.functional.reliability import TESTS, describe_test, seed_statistics
from tdaeval.groundtruth.truths import NO_TRUTH, GroundTruth
from tdaeval.metrics.base import Metric, MetricResult, ScoresOnlyMetric, register_metric
from tdaeval.params import Interval, Options
from tdaeval.scores import Attribution

__all__ = ["SeedReliability", "SeedRankStability"]


def _attribution(scores: Any, metric: str) -> Attribution:
    if not isinstance(scores, Attribution) or scores.samples is None:
        raise ConfigError(
            f"Metric {metric!r} needs the per-seed scores of a seed posterior, not plain scores: evaluate "
            "seed_posterior(attributor, n_seeds=S) (tdaeval.attributors.seeds) instead of the attributor itself."
        )
    return scores


#: What the seed metrics' CIs cover: test points are resampled, the S training seeds are not (a new
#: draw of seeds would move the value too; more seeds narrow that part, not the CI).
SEED_CI_COVERS = "test points resampled; the training seeds held fixed"


@register_metric
class SeedReliability(ScoresOnlyMetric):
    """Fraction of train–test pairs whose score is distinguishable from seed noise (``p < alpha``).

    Per test point, the fraction of its training points with ``p < alpha``;
    the value is the mean over test points (the overall fraction) with a
    bootstrap CI over test points. The p-values come from the seed samples
    with the metric's ``test`` (the posterior's own p-values when it used the
    same test). The provenance adds the mean p-value, the number of seeds,
    the test in words under ``"test"`` and its code under ``"test_code"``.

    Parameters
    ----------
    alpha : float
        Significance level in (0, 1).
    test : {"t", "snr"}
        ``"t"`` (default): the one-sample t-test over seeds, calibrated (under
        zero effect about ``alpha`` of the pairs read as reliable);
        ``"snr"``: the paper's signal-to-noise test, to reproduce the paper
        (not calibrated: it calls far fewer pairs reliable than ``alpha``
        under the null, so its fraction is not a false-positive rate). See
        :func:`tdaeval.functional.reliability.seed_statistics`.
    n_bootstrap, seed : int
        Bootstrap resamples and their seed.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.scores import Attribution
    >>> samples = torch.tensor([[[5.0, 0.1]], [[5.1, -0.1]], [[4.9, 0.2]]])  # [S=3, n_test=1, n_train=2]
    >>> attribution = Attribution(samples.mean(0), samples.std(0), 3, torch.ones(1, 2), test="snr", samples=samples)
    >>> SeedReliability(alpha=0.05, n_bootstrap=100).compute(attribution).value  # only the first pair beats seed noise
    0.5
    """

    name = "seed_reliability"
    higher_is_better = True
    bounds = (0.0, 1.0)
    _parameter_constraints = {**Metric._parameter_constraints, "alpha": [Interval(float, 0, 1, closed="neither")], "test": [Options(TESTS)]}

    def __init__(self, alpha: float = 0.05, test: str = "t", n_bootstrap: int = 2000, seed: int = 0) -> None:
        super().__init__(n_bootstrap, seed)
        self.alpha, self.test = float(alpha), test

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        self._truth(truth)
        result = _attribution(scores, self.name)
        p_value = result.p_value if result.test == self.test else seed_statistics(result.samples, self.test)[2]
        per_test = F.significant_fraction(p_value, self.alpha)
        return self._bootstrap_result(per_test, {
            "kind": "seed_noise", "ci_covers": SEED_CI_COVERS, "alpha": self.alpha, "n_seeds": result.n_samples,
            "test": describe_test(self.test), "test_code": self.test,
            "mean_p": float(p_value.double().mean()),
        })


@register_metric
class SeedRankStability(ScoresOnlyMetric):
    """Agreement of the seeds' rankings: mean pairwise Spearman of each test point's score rows.

    The provenance adds the mean top-``k`` Jaccard index of the seeds' ``k``
    highest-scored training points.

    Parameters
    ----------
    k : int
        Size of the top set for the Jaccard index.
    n_bootstrap, seed : int
        Bootstrap resamples and their seed.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.scores import Attribution
    >>> samples = torch.tensor([[[1.0, 2.0, 3.0]], [[1.5, 2.5, 3.5]]])  # two seeds that rank alike
    >>> attribution = Attribution(samples.mean(0), samples.std(0), 2, torch.ones(1, 3), samples=samples)
    >>> round(SeedRankStability(k=2, n_bootstrap=100).compute(attribution).value, 6)
    1.0
    """

    name = "seed_rank_stability"
    higher_is_better = True
    bounds = (-1.0, 1.0)
    _parameter_constraints = {**Metric._parameter_constraints, "k": [Interval(int, 1, None)]}

    def __init__(self, k: int = 10, n_bootstrap: int = 2000, seed: int = 0) -> None:
        super().__init__(n_bootstrap, seed)
        self.k = k

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        self._truth(truth)
        result = _attribution(scores, self.name)
        samples = result.samples.double()
        k = min(self.k, samples.shape[-1])
        per_test = F.rank_stability(samples)
        jaccard = F.topk_jaccard(samples, k)
        return self._bootstrap_result(per_test, {
            "kind": "seed_noise", "ci_covers": SEED_CI_COVERS, "n_seeds": result.n_samples, "k": k, "topk_jaccard": float(jaccard.mean()),
            "topk_jaccard_per_example": jaccard.tolist(),
        })
