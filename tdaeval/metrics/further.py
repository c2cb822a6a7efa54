"""The further-training gold standard as a metric (Wei et al. 2024; docs: Methods §3)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.groundtruth.further import FurtherTrainingGroundTruth, FurtherTrainingSpec, build_further_training_groundtruth
from tdaeval.groundtruth.truths import NO_TRUTH, GroundTruth
from tdaeval.metrics.base import Metric, MetricResult, register_metric
from tdaeval.params import Boolean, Interval, Options

__all__ = ["FurtherTraining", "FurtherTrainingSpearman"]


@register_metric
class FurtherTraining(Metric):
    """Agreement with further training of the final model: per test point, cosine of scores and ``a`` over left-out points.

    ``a_i(z)`` is the change of the test measurement when the final model is
    further trained without ``i`` instead of with it (paired batch orders,
    averaged over ``n_seeds``, centred over the left-out points; oriented so
    that positive = ``i`` supported ``z``), recorded after each epoch. The
    curve is the mean over test points of the per-test cosine after each
    epoch; the value is its maximum, with per-example values and a bootstrap
    CI at that epoch (the choice of the epoch is not part of the interval).
    Cost: ``n_seeds · (n_left_out + 1)`` further-training runs of ``epochs``
    epochs, batched.

    Parameters
    ----------
    n_left_out, n_seeds, epochs, lr, batch_size, subtract_mean, seed, mode, downweight
        See :class:`~tdaeval.groundtruth.further.FurtherTrainingSpec`.
    max_runs : int
        Runs trained together (bounds memory).
    n_bootstrap : int
        Bootstrap resamples for the CI.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import FurtherTrainingGroundTruth, FurtherTrainingSpec
    >>> scores = torch.tensor([[1.0, -1.0, 0.5, -0.5]])  # [n_test=1, n_train=4]
    >>> full = torch.zeros(1, 2, 1)  # [S=1, epochs + 1 = 2, n_test]
    >>> left_out = -scores.T.reshape(4, 1, 1, 1).expand(4, 1, 2, 1)  # leaving i out lowers the measurement by scores[0, i]
    >>> spec = FurtherTrainingSpec(n_left_out=4, n_seeds=1, epochs=1)
    >>> truth = FurtherTrainingGroundTruth(torch.arange(4), full, left_out, spec, higher_is_better=True)
    >>> round(FurtherTraining(n_left_out=4, n_seeds=1, epochs=1, n_bootstrap=100).compute(scores, truth).value, 6)
    1.0
    """

    name = "further_training"
    higher_is_better = True
    bounds = (-1.0, 1.0)
    truth_type = FurtherTrainingGroundTruth
    #: build_truth needs the explained model itself.
    needs_model = True
    correlation: ClassVar[str] = "cosine"

    groundtruth_params = frozenset({"n_seeds", "seed"})
    _parameter_constraints = {
        **Metric._parameter_constraints,
        "n_left_out": [Interval(int, 2, None)],
        "n_seeds": [Interval(int, 1, None)],
        "epochs": [Interval(int, 1, None)],
        "lr": [None, Interval(float, 0, None, closed="neither")],
        "batch_size": [None, Interval(int, 1, None)],
        "subtract_mean": [Boolean()],
        "mode": [Options(("remove", "downweight"))],
        "downweight": [None, Interval(float, 0, 1, closed="right")],
        "max_runs": [Interval(int, 1, None)],
    }

    def __init__(
        self,
        n_left_out: int = 100,
        n_seeds: int = 10,
        epochs: int = 5,
        lr: float | None = None,
        batch_size: int | None = None,
        subtract_mean: bool = True,
        seed: int = 0,
        mode: str = "remove",
        downweight: float | None = None,
        max_runs: int = 256,
        n_bootstrap: int = 2000,
    ) -> None:
        self.spec = FurtherTrainingSpec(n_left_out, n_seeds, epochs, lr, batch_size, subtract_mean, seed, mode, downweight)
        self.mode, self.downweight = mode, downweight
        self.n_left_out, self.n_seeds, self.epochs, self.lr, self.batch_size = n_left_out, n_seeds, epochs, lr, batch_size
        self.subtract_mean, self.seed, self.max_runs, self.n_bootstrap = subtract_mean, seed, max_runs, n_bootstrap

    def build_truth(self, task: Any, store: Any = None, *, model: nn.Module | None = None, device: str = "cpu",
                    executor: Any = None, progress: Any = None) -> FurtherTrainingGroundTruth:
        """Further train (or load) every run from ``model`` (:func:`~tdaeval.groundtruth.build_further_training_groundtruth`)."""
        if model is None:
            raise ConfigError(f"Metric {self.name!r} further trains the explained model: pass model=... to build_truth.")
        return build_further_training_groundtruth(task, model, self.spec, store, max_runs=self.max_runs, device=device, progress=progress)

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        truth = self._truth(truth)
        chosen = self._columns(self._scores(scores, n_test=truth.full_outputs.shape[-1]), truth.left_out, "leaves out")  # [n_test, k]
        per_epoch = F.correlate(chosen, truth.harm, self.correlation)  # [E+1, n_test]
        curve = [None if math.isnan(v) else float(v) for v in torch.nanmean(per_epoch, dim=1).tolist()]  # None: undefined (JSON)
        finite = [(v, e) for e, v in enumerate(curve) if v is not None]
        if not finite:
            raise ConfigError(f"{type(self).__name__}: the gold standard is zero at every epoch; train longer ('epochs', 'lr').")
        best_epoch = max(finite)[1]
        per_test = per_epoch[best_epoch]
        return self._bootstrap_result(per_test, {
            **truth.provenance, "correlation": self.correlation, "curve": curve, "best_epoch": best_epoch,
            "curve_epochs": list(range(len(curve))),
            "ci_covers": "test points resampled; the further-training runs and the best epoch (chosen on all test points) fixed",
        })


@register_metric
class FurtherTrainingSpearman(FurtherTraining):
    """:class:`FurtherTraining` with the Spearman correlation instead of the cosine.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import FurtherTrainingGroundTruth, FurtherTrainingSpec
    >>> scores = torch.tensor([[3.0, -1.0, 0.5, -2.0]])
    >>> left_out = -scores.T.reshape(4, 1, 1, 1).expand(4, 1, 2, 1) ** 3  # same order, other scale
    >>> truth = FurtherTrainingGroundTruth(torch.arange(4), torch.zeros(1, 2, 1), left_out, FurtherTrainingSpec(4, 1, 1), True)
    >>> round(FurtherTrainingSpearman(n_left_out=4, n_seeds=1, epochs=1, n_bootstrap=100).compute(scores, truth).value, 6)
    1.0
    """

    name = "further_training_spearman"
    correlation: ClassVar[str] = "spearman"
