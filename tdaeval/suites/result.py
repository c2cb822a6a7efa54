"""``SuiteResult``: every attributor × metric number with CI, cost and provenance, as one JSON document."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tdaeval.functional.ranking import bootstrap_rank_intervals
from tdaeval.metrics.base import MetricResult

__all__ = ["Entry", "RankRow", "SuiteResult", "SCHEMA"]

SCHEMA = "tdaeval.suite_result/1"


@dataclass
class Entry:
    """One attributor on one metric: the result, or why it could not run."""

    attributor: str
    metric: str
    result: MetricResult | None
    cost: dict[str, float] = field(default_factory=dict)
    attributor_params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        base = {"attributor": self.attributor, "metric": self.metric, "cost": self.cost, "attributor_params": self.attributor_params}
        if self.result is None:
            return {**base, "value": None, "ci": [None, None], "higher_is_better": None, "per_example": [], "provenance": {}, "error": self.error}
        return {**base, **self.result.to_dict(), "error": None}


@dataclass(frozen=True)
class RankRow:
    """A row of a per-metric ranking; ``rank_low``–``rank_high`` is the 95% rank interval."""

    attributor: str
    value: float
    ci: tuple[float, float]
    rank: int
    rank_low: int
    rank_high: int
    tied_with: tuple[str, ...]

    @property
    def rank_label(self) -> str:
        """``"2"`` or ``"1–3"`` when the interval spans several ranks."""
        return str(self.rank) if self.rank_low == self.rank_high else f"{self.rank_low}–{self.rank_high}"


@dataclass
class SuiteResult:
    """Results of :func:`tdaeval.evaluate`.

    Attributes
    ----------
    entries : list of Entry
    task : dict
        The task's description (name, config, sizes, fingerprint).
    provenance : dict
        Versions, seed, device, cache directory, git hash when available.
    """

    entries: list[Entry]
    task: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        """Metric names in first-seen order."""
        return list(dict.fromkeys(e.metric for e in self.entries))

    @property
    def attributors(self) -> list[str]:
        """Attributor names in first-seen order."""
        return list(dict.fromkeys(e.attributor for e in self.entries))

    def get(self, attributor: str, metric: str) -> MetricResult:
        """The result of ``attributor`` on ``metric`` (KeyError when absent or failed)."""
        for e in self.entries:
            if e.attributor == attributor and e.metric == metric and e.result is not None:
                return e.result
        raise KeyError(f"No result for attributor {attributor!r} on metric {metric!r}.")

    def ranking(self, metric: str, n_resamples: int = 2000, seed: int = 0) -> list[RankRow]:
        """Attributors ranked on ``metric`` with paired-bootstrap rank intervals over examples.

        Attributors whose rank intervals overlap are listed in each other's ``tied_with``.
        """
        done = [e for e in self.entries if e.metric == metric and e.result is not None]
        if not done:
            return []
        per_example = torch.stack([e.result.per_example.to(torch.float64) for e in done])
        rank, low, high = bootstrap_rank_intervals(per_example, done[0].result.higher_is_better, n_resamples, seed=seed)
        rows = []
        for i, e in enumerate(done):
            tied = tuple(
                done[j].attributor for j in range(len(done)) if j != i and low[j] <= high[i] and low[i] <= high[j]
            )
            rows.append(RankRow(e.attributor, e.result.value, e.result.ci, int(rank[i]), int(low[i]), int(high[i]), tied))
        return sorted(rows, key=lambda r: (r.rank, r.attributor))

    def failures(self) -> list[Entry]:
        """Entries that could not run."""
        return [e for e in self.entries if e.result is None]

    def table(self) -> str:
        """A plain-text ranked table per metric."""
        lines = []
        for metric in self.metrics:
            rows = self.ranking(metric)
            direction = "higher is better" if rows and self.get(rows[0].attributor, metric).higher_is_better else "lower is better"
            lines.append(f"{metric} ({direction})")
            lines.append(f"  {'rank':<6}{'attributor':<22}{'value':>9}  {'95% CI':<19}{'fit s':>8}{'attr. s':>9}")
            for r in rows:
                cost = next(e.cost for e in self.entries if e.attributor == r.attributor and e.metric == metric)
                ci = f"[{_fmt(r.ci[0])}, {_fmt(r.ci[1])}]"
                lines.append(
                    f"  {r.rank_label:<6}{r.attributor:<22}{_fmt(r.value):>9}  {ci:<19}"
                    f"{cost.get('fit_s', float('nan')):>8.2f}{cost.get('attribute_s', float('nan')):>9.2f}"
                )
            for e in self.failures():
                if e.metric == metric:
                    lines.append(f"  {'-':<6}{e.attributor:<22}  could not run: {e.error}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON document (``results`` holds one object per attributor × metric)."""
        results = []
        for metric in self.metrics:
            ranks = {r.attributor: r for r in self.ranking(metric)}
            for e in self.entries:
                if e.metric != metric:
                    continue
                item = e.to_dict()
                if e.attributor in ranks:
                    r = ranks[e.attributor]
                    item["rank"] = {"rank": r.rank, "low": r.rank_low, "high": r.rank_high, "tied_with": list(r.tied_with)}
                results.append(item)
        return {"schema": SCHEMA, "task": self.task, "provenance": self.provenance, "results": results}

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, default=str, allow_nan=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SuiteResult":
        """Inverse of :meth:`to_dict` (rankings are recomputed, not read)."""
        entries = []
        for item in data["results"]:
            result = None if item.get("error") else MetricResult.from_dict(item)
            entries.append(Entry(item["attributor"], item["metric"], result, item.get("cost", {}), item.get("attributor_params", {}), item.get("error")))
        return cls(entries=entries, task=data.get("task", {}), provenance=data.get("provenance", {}))

    @classmethod
    def from_json(cls, path: str | Path) -> "SuiteResult":
        """Read a document written by :meth:`to_json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _fmt(value: float) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.3f}"
