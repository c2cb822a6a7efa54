"""Mislabel detection from self-influence (docs: Methods §7)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.groundtruth.truths import NO_TRUTH, GroundTruth, MaskTruth
from tdaeval.metrics.base import Metric, MetricResult, register_metric
from tdaeval.params import Interval

__all__ = ["MislabelDetection"]


@register_metric
class MislabelDetection(Metric):
    """How well an attributor's self-influence finds the training points whose labels were flipped.

    Evaluate it on a task from :func:`tdaeval.tasks.with_flipped_labels`: the
    model is trained on the flipped labels, every training point is scored by
    its self-influence (:meth:`~tdaeval.attributors.Attributor.self_influence`,
    higher = more suspicious) and the value is the ROC-AUC of that ranking for
    the flipped points (0.5 = chance). Per-example values are, for each flipped
    point, the fraction of clean points ranked below it (their mean is the
    AUC), and the CI is a bootstrap over flipped points. The provenance adds
    the average precision, the mean of Quanda's cumulative detection curve
    (fraction of flipped points found among the top ``j``, averaged over
    ``j``) and Quanda's own score for that curve (its trapezoid area over
    ``N``, which differs from the mean by ``(c_1 + c_N)/(2N)``). Everything is O(n log n) and independent of the order of the
    training points.

    Parameters
    ----------
    n_bootstrap, seed : int
        Bootstrap resamples and their seed.
    chunk_size : int
        Training points per chunk of the self-influence diagonal.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import MaskTruth
    >>> truth = MaskTruth(torch.tensor([True, False, False, True, False]))
    >>> self_influence = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.2])  # what attributor.self_influence() returns
    >>> result = MislabelDetection(n_bootstrap=100).from_self_influence(self_influence, truth)
    >>> result.per_example.tolist(), round(result.value, 4)  # per flipped point: share of clean points below it
    ([1.0, 0.6666666666666666], 0.8333)
    """

    name = "mislabel_detection"
    higher_is_better = True
    bounds = (0.0, 1.0)
    truth_type = MaskTruth
    needs_attributor = True
    _parameter_constraints = {**Metric._parameter_constraints, "chunk_size": [Interval(int, 1, None)]}

    def __init__(self, n_bootstrap: int = 2000, seed: int = 0, chunk_size: int = 256) -> None:
        super().__init__(n_bootstrap, seed)
        self.chunk_size = chunk_size

    def build_truth(self, task: Any, store: Any = None, *, model: Any = None, device: str = "cpu", executor: Any = None,
                    progress: Any = None) -> MaskTruth:
        """The flipped-label mask of a :func:`~tdaeval.tasks.with_flipped_labels` task."""
        if task.setting is None or task.setting.flipped is None:
            raise ConfigError(
                "Metric 'mislabel_detection' needs a task with flipped labels: "
                "tdaeval.tasks.with_flipped_labels(task, fraction=0.1, seed=0)."
            )
        return MaskTruth(task.setting.flipped, tuple(task.transforms))

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        """The metric for ``attributor``'s self-influence (the test ``scores`` are not read).

        To score a precomputed self-influence vector use :meth:`from_self_influence`.
        """
        truth = self._truth(truth)
        if attributor is None:
            raise ConfigError("Metric 'mislabel_detection' needs the fitted attributor (compute(..., attributor=...)), "
                              "or use from_self_influence(self_influence, truth).")
        return self.from_self_influence(attributor.self_influence(chunk_size=self.chunk_size), truth)

    def from_self_influence(self, self_influence: Tensor, flipped: MaskTruth | Tensor, transforms: list | None = None) -> MetricResult:
        """The metric for a self-influence vector ``[n_train]`` and the flipped mask (a :class:`MaskTruth` or ``[n_train]`` bool)."""
        if isinstance(flipped, MaskTruth):
            flipped, transforms = flipped.mask, list(flipped.transforms)
        self_influence = torch.as_tensor(self_influence).detach().cpu()
        flipped = torch.as_tensor(flipped, dtype=torch.bool)
        if self_influence.shape != flipped.shape or self_influence.ndim != 1:
            raise ConfigError(f"Metric 'mislabel_detection' expects a self-influence of shape [n_train={flipped.numel()}]. "
                              f"Got {tuple(self_influence.shape)}.")
        if not bool(torch.isfinite(self_influence).all()):
            raise ConfigError("Metric 'mislabel_detection': the self-influence has non-finite values.")
        if bool(flipped.all()) or not bool(flipped.any()):
            raise ConfigError("Metric 'mislabel_detection' needs both flipped and clean training points.")
        per_flipped = F.positive_ranks(self_influence, flipped)
        curve = F.detection_curve(self_influence, flipped)
        provenance = {
            "kind": "mislabel_detection",
            "n_train": int(flipped.numel()),
            "n_flipped": int(flipped.sum()),
            "average_precision": float(F.average_precision(self_influence, flipped)),
            "detection_curve_area": float(curve.mean()),
            # Quanda 0.5.0's score: the trapezoid area of the same curve over N points, divided by N
            # (= mean − (c_1 + c_N)/(2N)); equal to Quanda's number when no ties are broken by its index offset.
            "quanda_detection_score": float(torch.trapezoid(curve.double()) / curve.numel()),
            "detection_at_10_percent": float(curve[max(0, round(0.1 * curve.numel()) - 1)]),
            "transforms": list(transforms or []),
            "ci_covers": "flipped training points resampled; the clean points, the trained model and its self-influence fixed",
        }
        return self._bootstrap_result(per_flipped, provenance)
