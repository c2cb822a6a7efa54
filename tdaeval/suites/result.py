"""``SuiteResult``: every attributor × metric number with CI, cost and provenance, as one JSON document."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from tdaeval.errors import ConfigError
from tdaeval.metrics.base import MetricResult
from tdaeval.suites.ranking import AggregateRow, ParetoPoint, RankRow, aggregate_ranks, pareto_points, rank_results

__all__ = ["Entry", "RankRow", "AggregateRow", "ParetoPoint", "SuiteResult", "SCHEMA"]

SCHEMA = "tdaeval.suite_result/1"


@dataclass
class Entry:
    """One attributor on one metric: the result, or why it could not run.

    ``error`` is the one-line reason an entry could not run (``result`` is then
    None) and ``traceback`` the full Python traceback of that failure.
    ``warnings`` lists what the attributor warned about while it ran
    (``"ConvergenceWarning: ..."``: e.g. an influence solve that did not
    converge), so that a report can mark a number that should not be trusted.
    """

    attributor: str
    metric: str
    result: MetricResult | None
    cost: dict[str, float] = field(default_factory=dict)
    attributor_params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        base = {"attributor": self.attributor, "metric": self.metric, "cost": self.cost, "attributor_params": self.attributor_params,
                "warnings": list(self.warnings)}
        if self.result is None:
            return {**base, "value": None, "ci": [None, None], "higher_is_better": None, "per_example": [], "provenance": {}, "error": self.error,
                    "traceback": self.traceback}
        return {**base, **self.result.to_dict(), "error": None}


@dataclass
class SuiteResult:
    """Results of :func:`tdaeval.evaluate`.

    Attributes
    ----------
    entries : list of Entry
    task : dict
        The task's description (name, config, sizes, fingerprint).
    provenance : dict
        Versions, seed, device, cache directory, git hash when available, the suite.
    checks : list of dict
        Outcomes of ``tdaeval check`` (:class:`tdaeval.suites.checks.CheckOutcome` as dicts), when run.
    """

    entries: list[Entry]
    task: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)

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

    def ranking_settings(self) -> dict[str, Any]:
        """The ranking test's settings: the suite's ``ranking`` section, else alpha 0.05, 2000 resamples, Holm."""
        settings = {"alpha": 0.05, "n_resamples": 2000, "correction": "holm"}
        settings.update({k: v for k, v in self.provenance.get("ranking", {}).items() if k in settings})
        return settings

    def ranking(
        self, metric: str, alpha: float | None = None, n_resamples: int | None = None, seed: int = 0, correction: str | None = None
    ) -> list[RankRow]:
        """Attributors ranked on ``metric``; ties and rank intervals from paired-bootstrap tests.

        Unset arguments come from :meth:`ranking_settings`; see :mod:`tdaeval.suites.ranking` for the test.
        """
        settings = self.ranking_settings()
        done = [e for e in self.entries if e.metric == metric and e.result is not None]
        return rank_results(
            [e.attributor for e in done], [e.result for e in done],
            settings["alpha"] if alpha is None else alpha,
            settings["n_resamples"] if n_resamples is None else n_resamples,
            seed,
            settings["correction"] if correction is None else correction,
        )

    def aggregate_ranking(self) -> list[AggregateRow]:
        """Mean rank across metrics, with the per-metric rank rows."""
        return aggregate_ranks({m: self.ranking(m) for m in self.metrics})

    def cost_seconds(self, attributor: str) -> float:
        """Fit plus attribute wall time of ``attributor`` (NaN when it could not run)."""
        for e in self.entries:
            if e.attributor == attributor and "fit_s" in e.cost:
                return float(e.cost["fit_s"]) + float(e.cost.get("attribute_s", 0.0))
        return math.nan

    def pareto_metric(self) -> str | None:
        """The metric the Pareto view uses: ``lds`` when present, else the first metric."""
        return "lds" if "lds" in self.metrics else (self.metrics[0] if self.metrics else None)

    def pareto(self, metric: str | None = None) -> list[ParetoPoint]:
        """Quality on ``metric`` (default :meth:`pareto_metric`) against fit + attribute seconds."""
        metric = metric or self.pareto_metric()
        done = [e for e in self.entries if e.metric == metric and e.result is not None]
        if not done:
            return []
        return pareto_points(
            [e.attributor for e in done], [e.result.value for e in done], [self.cost_seconds(e.attributor) for e in done],
            done[0].result.higher_is_better,
        )

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
        """The versioned JSON document (``results`` holds one object per attributor × metric).

        Rank fields are computed for readers of the JSON; :meth:`from_dict` recomputes them.
        """
        from tdaeval.suites.ranking import describe_test

        results = []
        per_metric = {metric: self.ranking(metric) for metric in self.metrics}
        for metric in self.metrics:
            ranks = {r.attributor: r for r in per_metric[metric]}
            for e in self.entries:
                if e.metric != metric:
                    continue
                item = e.to_dict()
                if e.attributor in ranks:
                    r = ranks[e.attributor]
                    item["rank"] = {"rank": r.rank, "low": r.rank_low, "high": r.rank_high, "tied_with": list(r.tied_with)}
                results.append(item)
        settings = self.ranking_settings()
        ranking = {
            **settings,
            "test": describe_test(settings["alpha"], settings["n_resamples"], settings["correction"]),
            "aggregate": [
                {"attributor": row.attributor, "mean_rank": row.mean_rank, "n_metrics": row.n_metrics,
                 "ranks": {m: r.rank for m, r in row.ranks.items()}}
                for row in aggregate_ranks(per_metric)
            ],
        }
        return {"schema": SCHEMA, "task": self.task, "provenance": self.provenance, "results": results,
                "ranking": ranking, "checks": self.checks}

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, default=str, allow_nan=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "results") -> "SuiteResult":
        """Inverse of :meth:`to_dict` (rankings are recomputed, not read).

        The document is validated against the published JSON Schema
        (:func:`tdaeval.reports.result_schema`) first; a malformed one raises
        :class:`~tdaeval.errors.ConfigError` with one line
        ``<source>: <key.path>: <what was expected>``. ``per_example`` arrays
        are checked by a dedicated fast loop (a million values take well under
        a second), everything else by ``jsonschema``.
        """
        if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("tdaeval.suite_result/"):
            raise ConfigError(f"{source}: not a tdaeval results document (expected a JSON object with schema {SCHEMA!r}).")
        if data["schema"] != SCHEMA:
            raise ConfigError(f"{source}: results schema {data['schema']!r} is not supported by this tdaeval (expected {SCHEMA!r}).")
        _validate(data, source)  # what the document is comes first; then every key path against the schema
        entries = []
        try:
            for item in data["results"]:
                result = None if item.get("error") else MetricResult.from_dict(item)
                entries.append(Entry(item["attributor"], item["metric"], result, item.get("cost", {}), item.get("attributor_params", {}), item.get("error"),
                                     traceback=item.get("traceback"), warnings=list(item.get("warnings", []))))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{source}: malformed results document ({type(err).__name__}: {err}).") from None
        return cls(entries=entries, task=data.get("task", {}), provenance=data.get("provenance", {}), checks=data.get("checks", []))

    @classmethod
    def from_json(cls, path: str | Path) -> "SuiteResult":
        """Read a document written by :meth:`to_json`."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as err:
            raise ConfigError(f"Cannot read results file {str(path)!r}: {err.strerror or err}.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"Results file {str(path)!r} is not valid JSON: {err}.") from None
        except RecursionError:
            raise ConfigError(f"Results file {str(path)!r}: the document is nested too deeply.") from None
        return cls.from_dict(data, source=str(path))


def _validate(data: Any, source: str) -> None:
    """Raise ConfigError ``<source>: <key.path>: <message>`` when ``data`` does not match the results schema."""
    import jsonschema

    from tdaeval.reports.schema import result_schema

    def fail(path: list, message: str) -> None:
        where = ".".join(str(p) for p in path) or "(top level)"
        raise ConfigError(f"{source}: {where}: {message}")

    if isinstance(data, dict) and data.get("schema") != SCHEMA and isinstance(data.get("schema"), str) \
            and data["schema"].startswith("tdaeval.suite_result/"):
        fail(["schema"], f"results schema {data['schema']!r} is not supported by this tdaeval (expected {SCHEMA!r})")
    light = data
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        # per_example can hold millions of numbers: check them here, the rest with jsonschema
        results = []
        for i, item in enumerate(data["results"]):
            if isinstance(item, dict) and isinstance(item.get("per_example"), list):
                for j, v in enumerate(item["per_example"]):
                    if v is not None and (type(v) is bool or not isinstance(v, (int, float)) or v != v or v in (math.inf, -math.inf)):
                        fail(["results", i, "per_example", j], f"{v!r} is not of type 'number', 'null'")
                item = {**item, "per_example": []}
            results.append(item)
        light = {**data, "results": results}
    try:
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(result_schema()).iter_errors(light))
    except RecursionError:
        fail([], "the document is nested too deeply")
    if error is not None:
        message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        fail(list(error.absolute_path), message.replace("\n", " "))


def _fmt(value: float) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.3f}"
