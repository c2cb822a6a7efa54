"""Compare two results documents: per attributor × metric difference with a bootstrap CI and p-value."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from tdaeval.errors import ConfigError
from tdaeval.functional.bootstrap import bootstrap_means
from tdaeval.functional.ranking import holm_adjust, paired_bootstrap_differences
from tdaeval.metrics.base import MetricResult
from tdaeval.suites.result import SuiteResult

__all__ = ["Difference", "compare_results", "bootstrap_difference"]


@dataclass(frozen=True)
class Difference:
    """``new − base`` for one attributor × metric.

    Attributes
    ----------
    change : float
        ``new.value − base.value``.
    improvement : float
        ``change`` signed so that positive is better (negated for lower-is-better metrics).
    ci : tuple of float
        95% bootstrap interval of ``change``.
    p_value : float
        Two-sided bootstrap p-value of ``change``, Holm-adjusted over the compared
        rows unless ``correction="none"`` (NaN when one side is missing).
    paired : bool
        Whether the two results were resampled on the same test points.
    status : str
        ``"improved"``, ``"regressed"`` (significant at ``alpha``), ``"no change"``,
        ``"added"``, ``"removed"``, or ``"could not run"``.
    """

    attributor: str
    metric: str
    base_value: float
    new_value: float
    change: float
    improvement: float
    ci: tuple[float, float]
    p_value: float
    paired: bool
    higher_is_better: bool | None
    status: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN as None)."""
        out = asdict(self)
        for key in ("base_value", "new_value", "change", "improvement", "p_value"):
            out[key] = None if not math.isfinite(out[key]) else out[key]
        out["ci"] = [None if not math.isfinite(v) else v for v in self.ci]
        return out


def bootstrap_difference(
    base: MetricResult, new: MetricResult, paired: bool, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, tuple[float, float], float]:
    """``new − base`` in mean value, its 95% percentile interval and two-sided p-value.

    Paired resamples the same test points for both (their per-example values
    must align); unpaired resamples each result's examples independently.
    Both run in bounded memory: resamples are drawn in blocks of rows of at
    most 2**24 elements plus one row (``3·n`` for more than 2**23 examples),
    with numbers bit-identical to drawing all of them at once.
    """
    if paired:
        diff, low, high, p = paired_bootstrap_differences(
            torch.stack([new.per_example.to(torch.float64), base.per_example.to(torch.float64)]), n_resamples=n_resamples, seed=seed
        )
        return float(diff[0, 1]), (float(low[0, 1]), float(high[0, 1])), float(p[0, 1])
    generator = torch.Generator().manual_seed(seed)

    def boot(values: torch.Tensor) -> torch.Tensor:
        values = values.to(torch.float64)
        values = values[torch.isfinite(values)]
        if values.numel() == 0:
            return torch.full((n_resamples,), math.nan, dtype=torch.float64)
        return bootstrap_means(values, n_resamples, generator)

    deltas = boot(new.per_example) - boot(base.per_example)
    change = float(new.value - base.value)
    if not torch.isfinite(deltas).all():
        return change, (math.nan, math.nan), math.nan
    p = min(1.0, 2 * min(float((deltas <= 0).double().mean()), float((deltas >= 0).double().mean())))
    low, high = torch.quantile(deltas, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return change, (low, high), p


def compare_results(
    base: SuiteResult, new: SuiteResult, alpha: float = 0.05, n_resamples: int = 2000, seed: int = 0, correction: str = "holm"
) -> list[Difference]:
    """Every attributor × metric of either document, with its change from ``base`` to ``new``.

    Results are paired (same test points resampled together) when both
    documents come from the same task (equal fingerprints) and have the same
    number of per-example values; otherwise each side is resampled on its own.

    Parameters
    ----------
    base, new : SuiteResult
        The reference and the candidate.
    alpha : float
        Level at which a change counts as significant.
    n_resamples : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling.
    correction : {"holm", "none"}
        Adjustment of the p-values over all compared attributor × metric rows, so that
        a long comparison does not flag a change by chance.
    """
    if correction not in ("holm", "none"):
        raise ConfigError(f"The 'correction' parameter of compare_results must be 'holm' or 'none'. Got {correction!r} instead.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"The 'alpha' parameter of compare_results must be in (0, 1). Got {alpha!r} instead.")
    same_task = bool(base.task.get("fingerprint")) and base.task.get("fingerprint") == new.task.get("fingerprint")
    keys = list(dict.fromkeys([(e.attributor, e.metric) for e in base.entries] + [(e.attributor, e.metric) for e in new.entries]))
    nan = math.nan
    out = []
    for attributor, metric in keys:
        b = _lookup(base, attributor, metric)
        n = _lookup(new, attributor, metric)
        if b is None or n is None:
            present = n if b is None else b
            status = "could not run" if _has_entry(base, attributor, metric) and _has_entry(new, attributor, metric) else (
                "added" if not _has_entry(base, attributor, metric) else "removed")
            out.append(Difference(
                attributor, metric, b.value if b else nan, n.value if n else nan, nan, nan, (nan, nan), nan, False,
                present.higher_is_better if present else None, status,
            ))
            continue
        paired = same_task and b.per_example.numel() == n.per_example.numel()
        change, ci, p = bootstrap_difference(b, n, paired, n_resamples, seed)
        sign = 1.0 if n.higher_is_better else -1.0
        out.append(Difference(attributor, metric, b.value, n.value, change, sign * change, ci, p, paired, n.higher_is_better, "pending"))
    compared = [i for i, d in enumerate(out) if d.status == "pending"]
    if correction == "holm" and compared:
        adjusted = holm_adjust(torch.tensor([out[i].p_value for i in compared], dtype=torch.float64)).tolist()
        for i, p in zip(compared, adjusted):
            out[i] = replace(out[i], p_value=p)
    for i in compared:
        d = out[i]
        significant = math.isfinite(d.p_value) and d.p_value < alpha and d.improvement != 0
        out[i] = replace(d, status=("improved" if d.improvement > 0 else "regressed") if significant else "no change")
    return out


def _has_entry(result: SuiteResult, attributor: str, metric: str) -> bool:
    return any(e.attributor == attributor and e.metric == metric for e in result.entries)


def _lookup(result: SuiteResult, attributor: str, metric: str) -> MetricResult | None:
    try:
        return result.get(attributor, metric)
    except KeyError:
        return None
