"""The ``Metric`` base, its result type, and the metric registry."""

from __future__ import annotations

import inspect
import math
import platform
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from tdaeval.errors import ConfigError
from tdaeval.groundtruth.truths import NO_TRUTH, GroundTruth, NoTruth
from tdaeval.params import Interval, ValidatedInit
from tdaeval.registry import Registry
from tdaeval.scores import Attribution

__all__ = ["METRICS", "Metric", "RetrainingMetric", "ScoresOnlyMetric", "MetricResult", "register_metric", "get_metric", "metric_class",
           "metric_names", "as_score_matrix", "N_BOOTSTRAP_CONSTRAINT", "SEED_CONSTRAINT"]

#: What every metric's ``n_bootstrap`` accepts (fewer resamples give no usable interval).
N_BOOTSTRAP_CONSTRAINT = [Interval(int, 10, None)]
#: What every metric's ``seed`` accepts (as the attributors' ``seed``).
SEED_CONSTRAINT = [Interval(int, 0, None)]


@dataclass
class MetricResult:
    """A metric's value with its uncertainty and provenance.

    Attributes
    ----------
    metric : str
        Metric name.
    value : float
        Mean over the finite per-example values.
    ci : tuple of float
        95% percentile-bootstrap interval of ``value`` over examples.
    per_example : Tensor
        ``[n]`` float64 per-example values (NaN where undefined).
    higher_is_better : bool
        Direction.
    n_nan : int
        Per-example values that were NaN and skipped.
    bounds : tuple of float, optional
        Range of possible values.
    provenance : dict
        Everything needed to reproduce the number (seeds, M, α, R, versions…).
    """

    metric: str
    value: float
    ci: tuple[float, float]
    per_example: Tensor
    higher_is_better: bool
    n_nan: int = 0
    bounds: tuple[float, float] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of examples with a finite value."""
        return int(self.per_example.numel()) - self.n_nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN becomes None."""
        return {
            "metric": self.metric,
            "value": _finite_or_none(self.value),
            "ci": [_finite_or_none(self.ci[0]), _finite_or_none(self.ci[1])],
            "higher_is_better": self.higher_is_better,
            "n": self.n,
            "n_nan": self.n_nan,
            "bounds": list(self.bounds) if self.bounds is not None else None,
            "per_example": [_finite_or_none(v) for v in self.per_example.tolist()],
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MetricResult":
        """Inverse of :meth:`to_dict`."""
        nan = float("nan")
        return cls(
            metric=data["metric"],
            value=nan if data["value"] is None else data["value"],
            ci=tuple(nan if v is None else v for v in data["ci"]),
            per_example=torch.tensor([nan if v is None else v for v in data["per_example"]], dtype=torch.float64),
            higher_is_better=data["higher_is_better"],
            n_nan=data.get("n_nan", 0),
            bounds=tuple(data["bounds"]) if data.get("bounds") else None,
            provenance=data.get("provenance", {}),
        )


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


class Metric(ValidatedInit, ABC):
    """Compares attribution scores with a gold standard.

    The contract: a subclass sets the class attributes below, declares what
    each constructor parameter accepts in ``_parameter_constraints`` (checked
    before the constructor body runs, :class:`tdaeval.params.ValidatedInit`;
    checks relating two parameters stay in the constructor), builds its
    ground truth (a :class:`~tdaeval.groundtruth.truths.GroundTruth` of type
    ``truth_type``) in :meth:`build_truth` and compares scores with it in
    :meth:`compute`, both with the signatures declared here. ``compute``
    should be thin: :meth:`_scores` (unwrap and check the shape once), one
    function of :mod:`tdaeval.functional` for the per-example values,
    :meth:`_bootstrap_result` for the value and its interval.

    Attributes
    ----------
    name : str
        Registry name.
    higher_is_better : bool
        Direction of the metric's value.
    bounds : tuple or None
        Range of possible values.
    needs_model : bool
        :meth:`build_truth` needs the explained model (``model=``).
    needs_attributor : bool
        :meth:`compute` needs the fitted attributor (``attributor=``), not
        only its scores.
    groundtruth_params : frozenset of str
        Constructor parameters that are ground-truth settings (a suite's
        ``groundtruth`` section fills them).
    n_bootstrap : int
        Bootstrap resamples of the interval (instance attribute; each metric's
        constructor sets it, 2000 unless its docstring says otherwise).
    seed : int
        Seed of the bootstrap (and of whatever else the metric draws).
    _parameter_constraints : dict
        Constructor parameter → what it accepts (:mod:`tdaeval.params`). The
        base declares ``n_bootstrap`` (an integer >= 10) and ``seed`` (an
        integer >= 0); a subclass extends it:
        ``{**Metric._parameter_constraints, "k": [Interval(int, 1, None)]}``.
    """

    name: ClassVar[str] = "metric"
    higher_is_better: ClassVar[bool] = True
    bounds: ClassVar[tuple[float, float] | None] = None
    #: The :class:`~tdaeval.groundtruth.truths.GroundTruth` subclass :meth:`build_truth` returns and
    #: :meth:`compute` accepts (:class:`~tdaeval.groundtruth.truths.NoTruth` for a metric that reads only the scores).
    truth_type: ClassVar[type[GroundTruth]] = NoTruth
    needs_model: ClassVar[bool] = False
    needs_attributor: ClassVar[bool] = False
    groundtruth_params: ClassVar[frozenset[str]] = frozenset()
    n_bootstrap: int = 2000
    seed: int = 0
    _parameter_constraints: ClassVar[dict[str, Any]] = {"n_bootstrap": N_BOOTSTRAP_CONSTRAINT, "seed": SEED_CONSTRAINT}

    def __init__(self, n_bootstrap: int = 2000, seed: int = 0) -> None:
        self.n_bootstrap, self.seed = n_bootstrap, seed

    @abstractmethod
    def build_truth(self, task: Any, store: Any = None, *, model: Any = None, device: str = "cpu", executor: Any = None,
                    progress: Any = None) -> GroundTruth:
        """Build (or load from ``store``) the ground truth this metric needs.

        Parameters
        ----------
        task : Task
            The task being explained.
        store : ArtifactStore, optional
            Where retrained models' measurements are cached (metrics that retrain need one).
        model : nn.Module, optional
            The explained model (read when ``needs_model``).
        device : str
            Where to train.
        executor : Executor or str, optional
            Where to run training jobs.
        progress : callable, optional
            ``progress(done, total)`` after each finished job.

        Returns
        -------
        GroundTruth
            An instance of ``truth_type``.
        """

    @abstractmethod
    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        """The metric for ``scores`` ``[n_test, n_train]`` (or an Attribution) against ``truth``.

        ``truth`` is what :meth:`build_truth` returned (the default
        :data:`~tdaeval.groundtruth.truths.NO_TRUTH` only suits metrics whose
        ``truth_type`` is ``NoTruth``); ``attributor`` is the fitted
        attributor, read only by metrics with ``needs_attributor``.
        """

    def _truth(self, truth: Any) -> Any:
        """``truth`` when it is a ``truth_type``, else a one-line ``ConfigError`` naming the metric."""
        if not isinstance(truth, self.truth_type):
            raise ConfigError(f"Metric {self.name!r} expects its truth as a {self.truth_type.__name__} (from build_truth). "
                              f"Got {type(truth).__name__}.")
        return truth

    def _scores(self, scores: Any, n_test: int | None = None, n_train: int | None = None) -> Tensor:
        """``scores`` as a ``[n_test, n_train]`` tensor (:func:`as_score_matrix`), its shape checked against the truth's sizes.

        A size left None is not checked. A mismatch is a one-line ``ConfigError`` naming the metric.
        """
        scores = as_score_matrix(scores, self.name)
        expected = (scores.shape[0] if n_test is None else n_test, scores.shape[1] if n_train is None else n_train)
        if tuple(scores.shape) != expected:
            want = ", ".join(f"{label}={'any' if size is None else size}" for label, size in (("n_test", n_test), ("n_train", n_train)))
            raise ConfigError(f"Metric {self.name!r} expects scores of shape [{want}] to match its ground truth. Got {tuple(scores.shape)}.")
        return scores

    def _columns(self, scores: Tensor, index: Tensor, verb: str) -> Tensor:
        """``scores[:, index]`` as float64 ``[n_test, k]``: the columns of the training points a truth sampled.

        ``verb`` says what the truth did to them ("removes", "leaves out") in
        the one-line ``ConfigError`` raised when an index is past the scores' columns.
        """
        if int(index.max()) >= scores.shape[1]:
            raise ConfigError(f"Metric {self.name!r}: the ground truth {verb} training index {int(index.max())} "
                              f"but the scores have only {scores.shape[1]} columns.")
        return scores[:, index].double()

    def _bootstrap_result(self, per_example: Tensor, provenance: dict[str, Any], higher_is_better: bool | None = None) -> MetricResult:
        """The result whose value is the mean of ``per_example``, with a bootstrap CI (``self.n_bootstrap``, ``self.seed``).

        ``provenance["ci_covers"]`` states in words which variance the CI
        covers: "test points resampled; ground truth fixed" unless
        ``provenance`` already says otherwise (a metric whose examples are not
        test points, or whose CI holds more fixed, passes its own).
        """
        import tdaeval.functional as F

        value, ci, n_nan = F.nanmean_ci(per_example, n_resamples=self.n_bootstrap, seed=self.seed)
        provenance = {"ci_covers": "test points resampled; ground truth fixed",  # a metric's own statement wins
                      **provenance, "n_bootstrap": self.n_bootstrap, "ci_level": 0.95, "torch": torch.__version__,
                      "python": platform.python_version()}
        direction = self.higher_is_better if higher_is_better is None else higher_is_better
        return MetricResult(self.name, value, ci, per_example, direction, n_nan, self.bounds, provenance)

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters and their values (for provenance)."""
        return {p: getattr(self, p) for p in inspect.signature(type(self).__init__).parameters if p != "self" and hasattr(self, p)}


class ScoresOnlyMetric(Metric):
    """A metric without a gold standard: it reads only the scores (``truth_type`` is :class:`~tdaeval.groundtruth.truths.NoTruth`)."""

    truth_type = NoTruth

    def build_truth(self, task: Any, store: Any = None, *, model: Any = None, device: str = "cpu", executor: Any = None,
                    progress: Any = None) -> NoTruth:
        """No gold standard: :data:`~tdaeval.groundtruth.truths.NO_TRUTH`."""
        return NO_TRUTH


class RetrainingMetric(Metric):
    """A metric whose ground truth is retrained from its spec (``self.spec``) by one builder function.

    A subclass sets ``builder`` (``staticmethod(build_..._groundtruth)``, called
    as ``builder(task, spec, store, executor=, device=, progress=)``) and
    ``self.spec`` in its constructor; :meth:`build_truth` is then inherited.
    """

    #: Builds (or loads from the store) the ground truth of ``self.spec``.
    builder: ClassVar[Callable[..., GroundTruth]]
    #: The ground-truth spec (a frozen dataclass that validates itself).
    spec: Any

    def build_truth(self, task: Any, store: Any = None, *, model: Any = None, device: str = "cpu", executor: Any = None,
                    progress: Any = None) -> GroundTruth:
        """Train (or load from ``store``) the models ``self.spec`` asks for, with the class's ``builder``."""
        return self.builder(task, self.spec, store, executor=executor, device=device, progress=progress)


#: The metrics by name (``tdaeval ls``); :func:`register_metric`, :func:`get_metric` and friends read and write it.
METRICS: Registry[Metric] = Registry("metric", Metric)


def register_metric(cls: type[Metric] | None = None, *, name: str | None = None) -> Any:
    """Class decorator adding a metric to the registry under ``cls.name`` (or ``name``; a taken name is an error)."""
    return METRICS.register(cls, name=name)


def metric_names() -> list[str]:
    """Registered metric names, sorted."""
    return METRICS.names()



def as_score_matrix(scores: Any, metric: str) -> Tensor:
    """``scores`` as a ``[n_test, n_train]`` tensor: the tensor itself, or an :class:`~tdaeval.scores.Attribution`'s mean."""
    scores = scores.mean if isinstance(scores, Attribution) else scores
    if not isinstance(scores, Tensor) or scores.ndim != 2:
        raise ConfigError(f"Metric {metric!r} expects scores as a Tensor [n_test, n_train]. Got {type(scores).__name__}.")
    return scores


def metric_class(name: str) -> type[Metric]:
    """The class registered under ``name``, or a ``"module:Name"`` path's ``Metric`` subclass (not instantiated: some metrics need parameters)."""
    return METRICS.get_class(name)


def get_metric(name: str, **params: Any) -> Metric:
    """A registered metric by name, or a ``"module:Name"`` path to a ``Metric`` subclass, built with ``params``."""
    return METRICS.create(name, **params)
