"""Counterfactual removal metrics: top-k removal, the flip test and brittleness (docs: Methods §2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.groundtruth.removal import RemovalContext, RemovalSpec, build_removal_context, removal_outcome
from tdaeval.groundtruth.truths import NO_TRUTH, GroundTruth
from tdaeval.metrics.base import Metric, MetricResult, RetrainingMetric, register_metric
from tdaeval.params import Check, Interval

__all__ = ["TopKRemoval", "FlipTest", "Brittleness"]


def _increasing_sizes(k_grid: Any) -> bool:
    """Whether ``k_grid`` is a non-empty sequence (not a string) of increasing integers >= 1."""
    if not isinstance(k_grid, Sequence) or isinstance(k_grid, str) or not k_grid:
        return False
    return all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in k_grid) and list(k_grid) == sorted(set(k_grid))


class _RemovalMetric(RetrainingMetric):
    truth_type = RemovalContext
    #: The full-data models and the evaluated test points (removals are trained when scores arrive).
    builder = staticmethod(build_removal_context)

    groundtruth_params = frozenset({"n_seeds", "seed"})
    _parameter_constraints = {
        **Metric._parameter_constraints,
        "k_grid": [Check(_increasing_sizes, "a non-empty increasing list of integers >= 1", invalid=[(), (20, 10), (0, 5), "ab", 10])],
        "n_seeds": [Interval(int, 1, None)],
        "n_test_points": [None, Interval(int, 1, None)],
    }

    def __init__(self, k_grid: Sequence[int], n_seeds: int, n_test_points: int | None, seed: int, n_bootstrap: int) -> None:
        self.spec = RemovalSpec(k_grid=tuple(k_grid), n_seeds=n_seeds, n_test_points=n_test_points, seed=seed)
        self.k_grid, self.n_seeds, self.n_test_points = list(self.spec.k_grid), n_seeds, n_test_points
        self.seed, self.n_bootstrap = seed, n_bootstrap

    def _removal_scores(self, scores: Any, truth: GroundTruth) -> tuple[Tensor, RemovalContext]:
        """The checked truth and scores ``[n_test, n_train]`` of its task."""
        truth = self._truth(truth)
        task = truth.task
        return self._scores(scores, n_test=None if task is None else task.n_test, n_train=None if task is None else task.n_train), truth

    def _result(self, per_example: Tensor, provenance: dict[str, Any], higher_is_better: bool) -> MetricResult:
        return self._bootstrap_result(per_example, {**provenance, "kind": self.name}, higher_is_better)


@register_metric
class TopKRemoval(_RemovalMetric):
    """Harm to a test point's measurement from removing its ``k`` highest-scored training points and retraining.

    For each evaluated test point and each ``k``: remove the ``k`` training
    points with the highest scores, retrain from scratch with ``n_seeds``
    paired seeds and measure how much the test measurement got worse than
    with all data (positive = the removed points supported it). The value is
    the mean harm at the largest ``k`` with a bootstrap CI over test points;
    the provenance holds the mean harm per ``k`` for the top-, random- and
    bottom-scored removals (the baselines). Cost:
    ``3 · len(k_grid) · n_seeds · n_test_points`` trainings per attributor
    (random removals are shared by all attributors).

    Parameters
    ----------
    k_grid : list of int
        Removal sizes, increasing.
    n_seeds : int
        Paired seeds per removal.
    n_test_points : int, optional
        Test points evaluated (seeded sample; None: all).
    seed : int
        Seed of the sample, of random removals and of training.
    n_bootstrap : int
        Bootstrap resamples for the CI.

    Examples
    --------
    >>> import tempfile, torch
    >>> from tdaeval.groundtruth import ArtifactStore
    >>> from tdaeval.tasks import LinearRegressionTask  # trains in closed form: retraining is cheap
    >>> task = LinearRegressionTask(n_train=20, n_test=4, n_features=3)
    >>> metric = TopKRemoval(k_grid=(2, 4), n_seeds=1, n_test_points=2, n_bootstrap=100)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     truth = metric.build_truth(task, ArtifactStore(folder))  # a RemovalContext: the full-data models
    ...     result = metric.compute(torch.randn(4, 20, generator=torch.Generator().manual_seed(0)), truth)
    >>> sorted(result.provenance["mean_harm_per_k"]), result.n
    (['bottom', 'random', 'top'], 2)
    """

    name = "topk_removal"
    higher_is_better = True

    def __init__(self, k_grid=(10, 20, 40), n_seeds: int = 2, n_test_points: int | None = 20, seed: int = 0, n_bootstrap: int = 2000) -> None:
        super().__init__(k_grid, n_seeds, n_test_points, seed, n_bootstrap)

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        scores, truth = self._removal_scores(scores, truth)
        higher = truth.task.higher_is_better
        curves, trained = {}, 0
        for selection in ("top", "random", "bottom"):
            outcome = removal_outcome(truth, scores, selection)
            harm = outcome.harm(higher)  # [t, len(k)]
            curves[selection] = harm.mean(0).tolist()
            trained += outcome.jobs_trained
            if selection == "top":
                per_example = harm[:, -1]
        provenance = {**truth.provenance, "mean_harm_per_k": curves, "jobs_trained": trained,
                      "model_trainings": 3 * len(truth.spec.k_grid) * truth.spec.n_seeds * len(truth.test_points) + truth.spec.n_seeds}
        return self._result(per_example, provenance, higher_is_better=True)


def _check_margin(context: RemovalContext, name: str) -> None:
    if context.task.measurement_name != "margin":
        raise ConfigError(
            f"Metric {name!r} needs a classification task measured by the margin (correct = margin > 0). "
            f"Got measurement {context.task.measurement_name!r}."
        )


@register_metric
class FlipTest(_RemovalMetric):
    """Fraction of test points whose prediction flips when their top-``k`` training points are removed.

    Test points correctly classified by every full-data seed are kept; for each
    ``k`` the ``k`` highest-scored training points are removed and the model
    retrained with ``n_seeds`` seeds; a point is flipped at ``k`` when fewer
    than half of the seeds classify it correctly (margin > 0), and stays
    flipped for larger ``k`` (cumulative). The value is the fraction flipped
    at the largest ``k`` (bootstrap CI over the kept points); the provenance
    holds the fraction per ``k`` for the top-scored and for random removals.
    Cost: ``2 · len(k_grid) · n_seeds`` trainings per kept test point.

    Parameters
    ----------
    k_grid, n_seeds, n_test_points, seed, n_bootstrap
        As :class:`TopKRemoval` (defaults: k = 20, 40, …, 120; 3 seeds).

    Examples
    --------
    >>> import tempfile, torch
    >>> from tdaeval.groundtruth import ArtifactStore
    >>> from tdaeval.task import TrainRecipe
    >>> from tdaeval.tasks import DigitsTask
    >>> task = DigitsTask(model="logreg", n_train=60, n_test=4, recipe=TrainRecipe(epochs=10, batch_size=60, lr=1.0))
    >>> metric = FlipTest(k_grid=(5,), n_seeds=1, n_test_points=None, n_bootstrap=100)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     result = metric.compute(torch.randn(4, 60), metric.build_truth(task, ArtifactStore(folder)))
    >>> 0.0 <= result.value <= 1.0 and sorted(result.provenance["fraction_flipped_per_k"])
    ['random', 'top']
    """

    name = "flip_test"
    higher_is_better = True
    bounds = (0.0, 1.0)

    def __init__(self, k_grid=(20, 40, 60, 80, 100, 120), n_seeds: int = 3, n_test_points: int | None = 20, seed: int = 0,
                 n_bootstrap: int = 2000) -> None:
        super().__init__(k_grid, n_seeds, n_test_points, seed, n_bootstrap)

    def _flips(self, truth: RemovalContext, scores: Tensor, selection: str) -> tuple[Tensor, Tensor, int]:
        """Kept test points, cumulative flips ``[t, len(k)]`` and jobs trained."""
        _check_margin(truth, self.name)
        correct_everywhere = (truth.full_outputs[:, truth.test_points] > 0).all(dim=0)
        kept = truth.test_points[correct_everywhere]
        if kept.numel() == 0:
            raise ConfigError(f"Metric {self.name!r}: none of the {len(truth.test_points)} test points is classified correctly by every seed.")
        outcome = removal_outcome(truth, scores, selection, points=kept)
        return kept, F.cumulative_flips(outcome.outputs), outcome.jobs_trained

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        scores, truth = self._removal_scores(scores, truth)
        kept, top, trained = self._flips(truth, scores, "top")
        _, random, trained_random = self._flips(truth, scores, "random")
        provenance = {
            **truth.provenance,
            "kept_test_points": kept.tolist(),
            "fraction_flipped_per_k": {"top": top.double().mean(0).tolist(), "random": random.double().mean(0).tolist()},
            "jobs_trained": trained + trained_random,
        }
        return self._result(top[:, -1].double(), provenance, higher_is_better=True)


@register_metric
class Brittleness(FlipTest):
    """Smallest number of top-scored training points whose removal flips a test prediction (Ilyas et al. 2022).

    Per kept test point (correct under every full-data seed), the smallest
    ``k`` in the grid at which removing its ``k`` highest-scored training
    points and retraining flips it (as in :class:`FlipTest`). A point that no
    ``k`` in the grid flips is **censored**: its value is one grid step past
    the largest ``k`` (``k_max + (k_max − k_prev)``; ``2·k_max`` for a
    one-size grid, :func:`tdaeval.functional.censoring_value`), worse than
    every tested ``k`` and a lower bound on its true support size. The value
    is the mean over all kept points, a restricted mean support size (lower =
    the attributor finds smaller supports for more points), so a point the
    attributor cannot flip counts against it in the value, the CI, the
    paired ranking and the Pareto set: an attributor that flips 1 of 20
    points at k = 20 ranks below one that flips all 20 at k = 40. The
    provenance adds the fraction flipped within the grid, the median ``k``
    (the smallest ``k`` flipping at least half the points; None when fewer
    than half flip, i.e. the median lies past the grid), the censoring value,
    ``n_never_flipped`` and the CDF. Defaults follow dattri: ``k`` = 20, 40,
    …, 180, one seed per ``k``.

    Examples
    --------
    >>> import tempfile, torch
    >>> from tdaeval.groundtruth import ArtifactStore
    >>> from tdaeval.task import TrainRecipe
    >>> from tdaeval.tasks import DigitsTask
    >>> task = DigitsTask(model="logreg", n_train=60, n_test=4, recipe=TrainRecipe(epochs=10, batch_size=60, lr=1.0))
    >>> metric = Brittleness(k_grid=(5, 10), n_seeds=1, n_test_points=None, n_bootstrap=100)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     result = metric.compute(torch.randn(4, 60), metric.build_truth(task, ArtifactStore(folder)))
    >>> set(result.per_example.tolist()) <= {5.0, 10.0, 15.0}, result.provenance["censored_at"]  # 15: never flipped
    (True, 15.0)
    """

    name = "brittleness"
    higher_is_better = False
    bounds = None

    def __init__(self, k_grid=(20, 40, 60, 80, 100, 120, 140, 160, 180), n_seeds: int = 1, n_test_points: int | None = 20,
                 seed: int = 0, n_bootstrap: int = 2000) -> None:
        super().__init__(k_grid, n_seeds, n_test_points, seed, n_bootstrap)

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        scores, truth = self._removal_scores(scores, truth)
        kept, top, trained = self._flips(truth, scores, "top")
        grid = list(truth.spec.k_grid)
        first = F.first_event_k(top, grid)  # [t]; never flipped -> censoring value
        never = ~top.any(dim=1)
        provenance = {
            **truth.provenance,
            "kept_test_points": kept.tolist(),
            "cdf": {"k": grid, "fraction_flipped": top.double().mean(0).tolist()},
            "n_never_flipped": int(never.sum()),
            "fraction_flipped": float((~never).double().mean()),
            "median_k": F.censored_median(first, grid),
            "censored_at": F.censoring_value(grid),
            "value_is": "restricted mean support size: mean over kept points of the smallest flipping k, "
                        "never-flipped points counted at censored_at",
            "jobs_trained": trained,
        }
        return self._result(first, provenance, higher_is_better=False)
