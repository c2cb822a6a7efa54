"""The ``Metric`` base, its result type, and the metric registry."""

from __future__ import annotations

import inspect
import math
import platform
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from tdaeval.errors import ConfigError, check_int_at_least

__all__ = ["Metric", "MetricResult", "register_metric", "get_metric", "metric_class", "metric_names", "as_score_matrix", "check_n_bootstrap"]

_METRICS: dict[str, type["Metric"]] = {}


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


class Metric(ABC):
    """Compares attribution scores with a gold standard.

    Subclasses set the class attributes below, build their ground truth in
    :meth:`build_truth` and compare scores with it in :meth:`compute`.

    Attributes
    ----------
    name : str
        Registry name.
    higher_is_better : bool
        Direction of the metric's value.
    bounds : tuple or None
        Range of possible values.
    requires : frozenset of str
        Kinds of ground truth the metric needs (e.g. ``{"lds"}``).
    """

    name: ClassVar[str] = "metric"
    higher_is_better: ClassVar[bool] = True
    bounds: ClassVar[tuple[float, float] | None] = None
    requires: ClassVar[frozenset[str]] = frozenset()
    #: Constructor parameters that are ground-truth settings (a suite's ``groundtruth`` section fills them).
    groundtruth_params: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def build_truth(self, task: Any, store: Any, **kwargs: Any) -> Any:
        """Build (or load) the ground truth this metric needs."""

    @abstractmethod
    def compute(self, scores: Tensor, truth: Any) -> MetricResult:
        """The metric for ``scores`` ``[n_test, n_train]`` against ``truth``."""

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


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator adding a metric to the registry under ``cls.name`` (a taken name is an error)."""
    if not (isinstance(cls, type) and issubclass(cls, Metric)):
        raise ConfigError(f"register_metric expects a Metric subclass. Got {cls!r}.")
    if cls.name in _METRICS and _METRICS[cls.name] is not cls:
        raise ConfigError(f"A metric named {cls.name!r} is already registered ({_METRICS[cls.name].__name__}).")
    _METRICS[cls.name] = cls
    return cls


def metric_names() -> list[str]:
    """Registered metric names, sorted."""
    return sorted(_METRICS)


def check_n_bootstrap(owner: str, n_bootstrap: Any) -> int:
    """``n_bootstrap`` when it is an integer >= 10, else a ``ConfigError`` naming ``owner``."""
    check_int_at_least("n_bootstrap", owner, n_bootstrap, 10)
    return n_bootstrap


def as_score_matrix(scores: Any, metric: str) -> Tensor:
    """``scores`` as a ``[n_test, n_train]`` tensor: the tensor itself, or an Attribution's mean."""
    scores = getattr(scores, "mean", scores) if not isinstance(scores, Tensor) else scores
    if not isinstance(scores, Tensor) or scores.ndim != 2:
        raise ConfigError(f"Metric {metric!r} expects scores as a Tensor [n_test, n_train]. Got {type(scores).__name__}.")
    return scores


def metric_class(name: str) -> type[Metric]:
    """The class registered under ``name`` (not instantiated: some metrics need parameters)."""
    if name not in _METRICS:
        raise ConfigError(f"Unknown metric {name!r}. Expected one of: {', '.join(metric_names())}.")
    return _METRICS[name]


def get_metric(name: str, **params: Any) -> Metric:
    """A registered metric by name, built with ``params``."""
    if name not in _METRICS:
        raise ConfigError(f"Unknown metric {name!r}. Expected one of: {', '.join(metric_names())}.")
    try:
        return _METRICS[name](**params)
    except TypeError as err:
        raise ConfigError(f"Invalid parameters {sorted(params)} for metric {name!r}: {err}.") from err
