"""Mislabel detection from self-influence (docs: Methods §7)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.metrics.base import Metric, MetricResult, check_n_bootstrap, register_metric

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
    """

    name = "mislabel_detection"
    higher_is_better = True
    bounds = (0.0, 1.0)
    requires = frozenset({"flipped_labels"})
    #: compute() needs the fitted attributor (for self-influence), not only its test scores.
    needs_attributor = True

    def __init__(self, n_bootstrap: int = 2000, seed: int = 0, chunk_size: int = 256) -> None:
        check_n_bootstrap("MislabelDetection", n_bootstrap)
        self.n_bootstrap, self.seed, self.chunk_size = n_bootstrap, seed, chunk_size

    def build_truth(self, task: Any, store: Any = None, **kwargs: Any) -> dict[str, Any]:
        flipped = getattr(task, "flipped", None)
        if flipped is None:
            raise ConfigError(
                "Metric 'mislabel_detection' needs a task with flipped labels: "
                "tdaeval.tasks.with_flipped_labels(task, fraction=0.1, seed=0)."
            )
        return {"flipped": flipped, "transforms": list(getattr(task, "transforms", []))}

    def compute(self, scores: Any, truth: dict[str, Any], attributor: Any = None, self_influence: Tensor | None = None) -> MetricResult:
        """The metric for ``attributor``'s self-influence (or a given ``self_influence`` ``[n_train]``)."""
        if self_influence is None:
            if attributor is None:
                raise ConfigError("Metric 'mislabel_detection' needs the fitted attributor (or self_influence=[n_train]).")
            self_influence = attributor.self_influence(chunk_size=self.chunk_size)
        return self.from_self_influence(self_influence, truth["flipped"], truth.get("transforms", []))

    def from_self_influence(self, self_influence: Tensor, flipped: Tensor, transforms: list | None = None) -> MetricResult:
        """The metric for a self-influence vector ``[n]`` and the flipped mask ``[n]``."""
        self_influence = torch.as_tensor(self_influence).detach().cpu()
        flipped = torch.as_tensor(flipped, dtype=torch.bool)
        if self_influence.shape != flipped.shape or self_influence.ndim != 1:
            raise ConfigError(f"mislabel_detection: self-influence of shape {tuple(self_influence.shape)} for {flipped.numel()} training points.")
        if not bool(torch.isfinite(self_influence).all()):
            raise ConfigError("mislabel_detection: the self-influence has non-finite values.")
        if bool(flipped.all()) or not bool(flipped.any()):
            raise ConfigError("mislabel_detection needs both flipped and clean training points.")
        per_flipped = F.positive_ranks(self_influence, flipped)
        curve = F.detection_curve(self_influence, flipped)
        provenance = {
            "kind": "mislabel_detection",
            "n_train": int(flipped.numel()),
            "n_flipped": int(flipped.sum()),
            "average_precision": _average_precision(self_influence, flipped),
            "detection_curve_area": float(curve.mean()),
            # Quanda 0.5.0's score: the trapezoid area of the same curve over N points, divided by N
            # (= mean − (c_1 + c_N)/(2N)); equal to Quanda's number when no ties are broken by its index offset.
            "quanda_detection_score": float(torch.trapezoid(curve.double()) / curve.numel()),
            "detection_at_10_percent": float(curve[max(0, round(0.1 * curve.numel()) - 1)]),
            "transforms": transforms or [],
            "ci_covers": "flipped training points resampled; the clean points, the trained model and its self-influence fixed",
        }
        return self._bootstrap_result(per_flipped, provenance)


def _average_precision(scores: Tensor, positives: Tensor) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(positives.numpy(), scores.double().numpy()))
