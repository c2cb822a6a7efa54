"""Rankings with honest uncertainty: per metric, across metrics, and quality against cost.

Per metric, every pair of attributors is compared by a **paired bootstrap
over test points** (the same resampled test points for both): the two-sided
p-value of the mean difference is Holm-adjusted over all pairs of the metric,
and a pair whose adjusted p-value is at least ``alpha`` (0.05) is a **tie**.
An attributor's rank interval holds the ranks compatible with every
significant difference: ``1 + #significantly better`` to ``A − #significantly
worse``. Its point rank is the midpoint of that interval, so attributors tied
with each other share one rank value (their midrank: three tied for first all
rank 2.0), in every table, the aggregate mean rank and the heat map.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tdaeval.errors import ConfigError
from tdaeval.functional.ranking import holm_adjust, paired_bootstrap_differences, pareto_front, rank_intervals
from tdaeval.metrics.base import MetricResult

__all__ = [
    "RankRow", "AggregateRow", "ParetoPoint", "Rankings", "DEFAULT_SETTINGS", "ranking_settings", "rank_results",
    "aggregate_ranks", "pareto_points", "describe_test",
]

#: The ranking test's settings when a run or a suite names none.
DEFAULT_SETTINGS: dict[str, Any] = {"alpha": 0.05, "n_resamples": 2000, "correction": "holm", "seed": 0}


@dataclass(frozen=True)
class RankRow:
    """A row of a per-metric ranking; ``rank_low``–``rank_high`` is the rank interval.

    ``rank`` is the point rank, a midrank (:func:`tdaeval.functional.rank_intervals`):
    attributors tied with each other share it, e.g. 2.0 for three tied for first.
    """

    attributor: str
    value: float
    ci: tuple[float, float]
    rank: float
    rank_low: int
    rank_high: int
    tied_with: tuple[str, ...]
    p_values: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def rank_label(self) -> str:
        """``"2"`` or ``"1–3"`` when the interval spans several ranks."""
        return str(self.rank_low) if self.rank_low == self.rank_high else f"{self.rank_low}–{self.rank_high}"


@dataclass(frozen=True)
class AggregateRow:
    """An attributor's ranks across metrics; ``mean_rank`` is over the metrics it ran on."""

    attributor: str
    mean_rank: float
    ranks: dict[str, RankRow]
    n_metrics: int


@dataclass(frozen=True)
class ParetoPoint:
    """An attributor's quality on one metric against its cost; ``on_front`` when not dominated."""

    attributor: str
    quality: float
    cost: float
    on_front: bool


@dataclass
class Rankings:
    """Every ranking of one run, computed once with one set of settings (:meth:`tdaeval.suites.SuiteResult.rank`).

    Attributes
    ----------
    settings : dict
        ``alpha``, ``n_resamples``, ``correction`` and ``seed`` of the paired-bootstrap test.
    per_metric : dict
        ``{metric: rows}``, rows best first (:func:`rank_results`); ``[]`` for a metric without results.
    aggregate : list of AggregateRow
        Mean rank across the ranked metrics (:func:`aggregate_ranks`).
    pareto_metric : str or None
        The metric of the quality-vs-cost view (``lds`` when present, else the first metric).
    pareto : list of ParetoPoint
        Quality on ``pareto_metric`` against fit + attribute seconds (:func:`pareto_points`).
    errors : dict
        ``{metric: message}`` for metrics that could not be ranked (e.g. per-example values of different lengths).
    """

    settings: dict[str, Any]
    per_metric: dict[str, list[RankRow]]
    aggregate: list[AggregateRow]
    pareto_metric: str | None
    pareto: list[ParetoPoint]
    errors: dict[str, str] = field(default_factory=dict)

    def rows(self, metric: str) -> list[RankRow]:
        """The rows of ``metric`` (``[]`` when it has no results); ConfigError with the reason when it could not be ranked."""
        if metric in self.errors:
            raise ConfigError(self.errors[metric])
        return list(self.per_metric.get(metric, []))


def ranking_settings(settings: Mapping[str, Any] | None = None, owner: str = "the ranking") -> dict[str, Any]:
    """:data:`DEFAULT_SETTINGS` updated with ``settings``, checked.

    Parameters
    ----------
    settings : mapping, optional
        Any of ``alpha`` (in (0, 1)), ``n_resamples`` (int ≥ 1), ``correction`` (``"holm"`` or ``"none"``)
        and ``seed`` (int, of the resampling).
    owner : str
        Who takes the settings, for error messages (e.g. ``"evaluate"``).

    Returns
    -------
    dict
        All four settings.
    """
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise ConfigError(f"The 'ranking' parameter of {owner} must be a dict of ranking settings. Got {type(settings).__name__}.")
    unknown = sorted(str(k) for k in settings if k not in DEFAULT_SETTINGS)
    if unknown:
        raise ConfigError(
            f"The 'ranking' parameter of {owner} has unknown key(s) {unknown}; expected any of {list(DEFAULT_SETTINGS)}."
        )
    out = {**DEFAULT_SETTINGS, **settings}
    _check(out["alpha"], out["correction"])
    for key, low in (("n_resamples", 1), ("seed", None)):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
            expected = "an integer" if low is None else f"an integer >= {low}"
            raise ConfigError(f"The '{key}' parameter of the ranking must be {expected}. Got {value!r} instead.")
    return {"alpha": float(out["alpha"]), "n_resamples": int(out["n_resamples"]), "correction": out["correction"], "seed": int(out["seed"])}


def describe_test(alpha: float = 0.05, n_resamples: int = 2000, correction: str = "holm") -> str:
    """One sentence stating the ranking test, for reports."""
    adjust = "Holm-adjusted over the pairs of each metric" if correction == "holm" else "not adjusted for multiple pairs"
    return (
        f"Ties: paired bootstrap over test points ({n_resamples} resamples), two-sided p-value of the mean "
        f"difference, {adjust}; a pair with p ≥ {alpha:g} is tied. Rank intervals span the ranks "
        f"compatible with every significant difference."
    )


def _check(alpha: float, correction: str) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ConfigError(f"The 'alpha' parameter of the ranking must be in (0, 1). Got {alpha!r} instead.")
    if correction not in ("holm", "none"):
        raise ConfigError(f"The 'correction' parameter of the ranking must be 'holm' or 'none'. Got {correction!r} instead.")


def rank_results(
    names: Sequence[str],
    results: Sequence[MetricResult],
    alpha: float = 0.05,
    n_resamples: int = 2000,
    seed: int = 0,
    correction: str = "holm",
) -> list[RankRow]:
    """Rank attributors on one metric from their results on the same test points.

    Parameters
    ----------
    names : sequence of str
        Attributor names, one per result.
    results : sequence of MetricResult
        Results of one metric whose ``per_example`` share length and order.
    alpha : float
        Significance level of the pairwise tests.
    n_resamples : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling.
    correction : {"holm", "none"}
        Multiple-comparison adjustment over the pairs.

    Returns
    -------
    list of RankRow
        Sorted by rank, then by observed value (best first; the order inside a
        tie is for reading only, the shared rank is the result), then name.
    """
    _check(alpha, correction)
    if not results:
        return []
    lengths = {int(r.per_example.numel()) for r in results}
    if len(lengths) > 1:
        raise ConfigError(
            f"Cannot rank {sorted(names)} on metric {results[0].metric!r}: their per-example values have "
            f"different lengths {sorted(lengths)}; paired comparisons need the same test points."
        )
    per_example = torch.stack([r.per_example.to(torch.float64) for r in results])
    _, _, _, p = paired_bootstrap_differences(per_example, n_resamples=n_resamples, seed=seed)
    n_methods = len(results)
    if correction == "holm" and n_methods > 1:
        i, j = torch.triu_indices(n_methods, n_methods, offset=1)
        adjusted = holm_adjust(p[i, j])
        p = p.clone()
        p[i, j], p[j, i] = adjusted, adjusted
    significant = torch.nan_to_num(p, nan=1.0) < alpha
    means = torch.tensor([r.value for r in results], dtype=torch.float64)
    rank, low, high = rank_intervals(means, significant, results[0].higher_is_better)
    rows = []
    for a, (name, result) in enumerate(zip(names, results)):
        others = [b for b in range(n_methods) if b != a]
        tied = tuple(names[b] for b in others if not significant[a, b])
        p_values = {names[b]: float(p[a, b]) for b in others}
        rows.append(RankRow(name, result.value, result.ci, float(rank[a]), int(low[a]), int(high[a]), tied, p_values))
    sign = -1.0 if results[0].higher_is_better else 1.0

    def order(row: RankRow) -> tuple[float, float, str]:
        value = sign * float(row.value) if row.value is not None and math.isfinite(row.value) else math.inf
        return row.rank, value, row.attributor

    return sorted(rows, key=order)


def aggregate_ranks(per_metric: dict[str, list[RankRow]]) -> list[AggregateRow]:
    """Mean rank of each attributor over the metrics it has a result on, best first.

    The mean is over the point ranks (midranks), so attributors tied on every
    metric get the same mean rank.

    Parameters
    ----------
    per_metric : dict
        ``{metric: rows}`` from :func:`rank_results`.
    """
    names = list(dict.fromkeys(r.attributor for rows in per_metric.values() for r in rows))
    out = []
    for name in names:
        ranks = {m: r for m, rows in per_metric.items() for r in rows if r.attributor == name}
        mean = sum(r.rank for r in ranks.values()) / len(ranks)
        out.append(AggregateRow(name, mean, ranks, len(ranks)))
    return sorted(out, key=lambda row: (-row.n_metrics, row.mean_rank, row.attributor))


def pareto_points(names: Sequence[str], quality: Sequence[float], cost: Sequence[float], higher_is_better: bool = True) -> list[ParetoPoint]:
    """Quality against cost for each attributor, flagging the non-dominated ones (the Pareto set)."""
    q = torch.tensor([math.nan if v is None else float(v) for v in quality], dtype=torch.float64)
    c = torch.tensor([math.nan if v is None else float(v) for v in cost], dtype=torch.float64)
    front = pareto_front(q, c, higher_is_better) if len(names) else torch.zeros(0, dtype=torch.bool)
    return [ParetoPoint(n, float(q[i]), float(c[i]), bool(front[i])) for i, n in enumerate(names)]
