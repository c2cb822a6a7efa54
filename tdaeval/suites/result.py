"""``SuiteResult``: every attributor × metric number with CI, cost and provenance, as one JSON document."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tdaeval.errors import ConfigError, TdaevalError
from tdaeval.metrics.base import MetricResult
from tdaeval.suites.ranking import (
    DEFAULT_SETTINGS,
    AggregateRow,
    ParetoPoint,
    Rankings,
    RankRow,
    aggregate_ranks,
    describe_test,
    pareto_points,
    rank_results,
    ranking_settings,
)

__all__ = ["Entry", "RankRow", "AggregateRow", "ParetoPoint", "Rankings", "SuiteResult", "SCHEMA", "result_schema"]

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
    """Results of :func:`tdaeval.evaluate`: plain data, written and read back unchanged by :meth:`to_dict`/:meth:`from_dict`.

    Renderers live in :mod:`tdaeval.reports`, except the plain-text table, the result's own
    string form (:meth:`table`, also :func:`tdaeval.reports.render_text`).

    Attributes
    ----------
    entries : list of Entry
    task : dict
        The task's description (name, config, sizes, fingerprint).
    provenance : dict
        Versions, seed, device, cache directory, git hash when available, the suite.
    checks : list of dict
        Outcomes of ``tdaeval check`` (:class:`tdaeval.suites.checks.CheckOutcome` as dicts), when run.
    rankings : tdaeval.suites.ranking.Rankings or None
        Per-metric rankings, aggregate ranks and the Pareto set, computed once by :meth:`rank`
        (the runner does it at the end of a run, and results documents store them). A result
        built by hand, or read from a document written before they were stored, computes them
        when first needed and keeps them; call :meth:`rank` again after changing ``entries``.
    """

    entries: list[Entry]
    task: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    rankings: Rankings | None = None

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
        """The ranking test's settings (``alpha``, ``n_resamples``, ``correction``, ``seed``).

        Those of the stored :attr:`rankings`; without them the suite's ``ranking`` section
        (``provenance["ranking"]``), else alpha 0.05, 2000 resamples, Holm, seed 0.
        """
        if self.rankings is not None:
            return dict(self.rankings.settings)
        given = self.provenance.get("ranking", {})
        given = given if isinstance(given, dict) else {}
        return ranking_settings({k: v for k, v in given.items() if k in DEFAULT_SETTINGS}, "provenance.ranking")

    def rank(
        self, alpha: float | None = None, n_resamples: int | None = None, correction: str | None = None, seed: int | None = None
    ) -> Rankings:
        """Rank every metric, aggregate the ranks and find the Pareto set, once; store and return them as :attr:`rankings`.

        Unset arguments come from :meth:`ranking_settings`. A metric that cannot be ranked
        (e.g. per-example values of different lengths) is recorded in ``Rankings.errors``
        and :meth:`ranking` raises its reason; the other metrics are ranked.
        """
        asked = {"alpha": alpha, "n_resamples": n_resamples, "correction": correction, "seed": seed}
        settings = ranking_settings({**self.ranking_settings(), **{k: v for k, v in asked.items() if v is not None}}, "SuiteResult.rank")
        per_metric: dict[str, list[RankRow]] = {}
        errors: dict[str, str] = {}
        for metric in self.metrics:
            try:
                per_metric[metric] = self._rank_metric(metric, settings)
            except Exception as err:  # noqa: BLE001 - a finished run is not lost to its ranking: the reports say why
                per_metric[metric] = []
                errors[metric] = str(err) if isinstance(err, TdaevalError) else f"The ranking of {metric!r} failed: {type(err).__name__}: {err}"
        metric = self.pareto_metric()
        self.rankings = Rankings(settings, per_metric, aggregate_ranks(per_metric), metric, self._pareto(metric), errors)
        return self.rankings

    def _ranked(self) -> Rankings:
        """The stored rankings, computed first when there are none."""
        return self.rankings if self.rankings is not None else self.rank()

    def _rank_metric(self, metric: str, settings: dict[str, Any]) -> list[RankRow]:
        done = [e for e in self.entries if e.metric == metric and e.result is not None]
        return rank_results([e.attributor for e in done], [e.result for e in done], settings["alpha"], settings["n_resamples"],
                            settings["seed"], settings["correction"])

    def ranking(
        self, metric: str, alpha: float | None = None, n_resamples: int | None = None, seed: int | None = None, correction: str | None = None
    ) -> list[RankRow]:
        """Attributors ranked on ``metric``, best first; ties and rank intervals from paired-bootstrap tests.

        With the settings of :meth:`ranking_settings` (arguments unset or equal to them) these are
        the stored rows of :attr:`rankings`, computed once; other settings rank ``metric`` again
        (a different question; not stored). See :mod:`tdaeval.suites.ranking` for the test.
        """
        current = self.ranking_settings()
        asked = {"alpha": alpha, "n_resamples": n_resamples, "seed": seed, "correction": correction}
        settings = {**current, **{k: v for k, v in asked.items() if v is not None}}
        if settings == current:
            return self._ranked().rows(metric)
        return self._rank_metric(metric, ranking_settings(settings, "SuiteResult.ranking"))

    def aggregate_ranking(self) -> list[AggregateRow]:
        """Mean rank across metrics, with the per-metric rank rows (stored in :attr:`rankings`)."""
        return list(self._ranked().aggregate)

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
        """Quality on ``metric`` (default :meth:`pareto_metric`) against fit + attribute seconds.

        The stored set of :attr:`rankings` for its metric; computed (no bootstrap) for another metric
        or when nothing is stored.
        """
        metric = metric or self.pareto_metric()
        if self.rankings is not None and metric == self.rankings.pareto_metric:
            return list(self.rankings.pareto)
        return self._pareto(metric)

    def _pareto(self, metric: str | None) -> list[ParetoPoint]:
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
        """A plain-text ranked table per metric: rank (interval), attributor, value, 95% CI, fit and attribute seconds.

        What ``tdaeval run`` prints and ``str(result)`` gives (also :func:`tdaeval.reports.render_text`).
        Reads the stored rankings (:attr:`rankings`); attributors that could not run are listed under
        each metric with the reason. Lines are joined by newlines (no trailing newline).
        """
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
        """The versioned JSON document.

        ``results`` holds one object per attributor × metric, in the order of :attr:`entries`, with
        its ``rank`` (and the pairwise p-values) when ranked; ``ranking`` the settings, the per-metric order, the metrics that
        could not be ranked, the aggregate ranks and the Pareto set: :attr:`rankings` as they are
        (computed first when there are none). :meth:`from_dict` reads them back unchanged.
        """
        ranked = self._ranked()
        ranks = {(metric, r.attributor): r for metric, rows in ranked.per_metric.items() for r in rows}
        results = []
        for e in self.entries:  # in their order, so that reading back gives the same list (a run's: metric by metric)
            item = e.to_dict()
            r = ranks.get((e.metric, e.attributor))
            if r is not None:
                item["rank"] = {"rank": r.rank, "low": r.rank_low, "high": r.rank_high, "tied_with": list(r.tied_with),
                                "p_values": {name: _finite(p) for name, p in r.p_values.items()}}
            results.append(item)
        settings = ranked.settings
        ranking = {
            **settings,
            "test": describe_test(settings["alpha"], settings["n_resamples"], settings["correction"]),
            "aggregate": [
                {"attributor": row.attributor, "mean_rank": row.mean_rank, "n_metrics": row.n_metrics,
                 "ranks": {m: r.rank for m, r in row.ranks.items()}}
                for row in ranked.aggregate
            ],
            "order": {m: [r.attributor for r in rows] for m, rows in ranked.per_metric.items()},
            "errors": dict(ranked.errors),
            "pareto": {
                "metric": ranked.pareto_metric,
                "points": [{"attributor": p.attributor, "quality": _finite(p.quality), "cost": _finite(p.cost), "on_front": p.on_front}
                           for p in ranked.pareto],
            },
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
        """Inverse of :meth:`to_dict`: ``from_dict(d).to_dict() == d`` for a document ``d`` it wrote.

        The stored rankings (``ranking.order`` with the results' ``rank``, ``ranking.aggregate``
        and ``ranking.pareto``) are read as they are, without any bootstrap. A document written
        before they were stored (no ``ranking.order``) gets them computed when first needed, with
        the settings of ``provenance.ranking``.

        The document is validated against the published JSON Schema
        (:func:`result_schema`, also :func:`tdaeval.reports.result_schema`) first; a malformed one raises
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
                entries.append(Entry(item["attributor"], item["metric"], result, item.get("cost", {}), item.get("attributor_params", {}),
                                     item.get("error"), traceback=item.get("traceback"), warnings=list(item.get("warnings", []))))
            rankings = _read_rankings(data, entries, source) if "order" in data["ranking"] else None
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{source}: malformed results document ({type(err).__name__}: {err}).") from None
        return cls(entries=entries, task=data.get("task", {}), provenance=data.get("provenance", {}), checks=data.get("checks", []),
                   rankings=rankings)

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


def _read_rankings(data: dict[str, Any], entries: list[Entry], source: str) -> Rankings:
    """The :class:`Rankings` stored in a validated document (``entries`` are its ``results``, in order)."""
    block = data["ranking"]
    try:
        settings = ranking_settings({k: block[k] for k in DEFAULT_SETTINGS}, "the ranking")
    except ConfigError as err:
        raise ConfigError(f"{source}: ranking: {err}") from None
    ranked: dict[tuple[str, str], tuple[dict[str, Any], MetricResult]] = {}
    for item, entry in zip(data["results"], entries):
        if item.get("rank") is not None and entry.result is not None:
            ranked.setdefault((entry.metric, entry.attributor), (item["rank"], entry.result))
    per_metric: dict[str, list[RankRow]] = {}
    for metric, names in block["order"].items():
        rows = []
        for name in names:
            if (metric, name) not in ranked:
                raise ConfigError(f"{source}: ranking.order.{metric}: {name!r} has no ranked result on {metric!r}.")
            rank, result = ranked[(metric, name)]
            p_values = {other: math.nan if p is None else float(p) for other, p in rank.get("p_values", {}).items()}
            rows.append(RankRow(name, result.value, result.ci, float(rank["rank"]), int(rank["low"]), int(rank["high"]),
                                tuple(rank["tied_with"]), p_values))
        per_metric[metric] = rows
    aggregate = []
    for row in block["aggregate"]:
        ranks = {}
        for metric in row["ranks"]:
            match = next((r for r in per_metric.get(metric, []) if r.attributor == row["attributor"]), None)
            if match is None:
                raise ConfigError(f"{source}: ranking.aggregate: {row['attributor']!r} has a rank on {metric!r} but no row in ranking.order.")
            ranks[metric] = match
        aggregate.append(AggregateRow(row["attributor"], float(row["mean_rank"]), ranks, int(row["n_metrics"])))
    pareto = [
        ParetoPoint(p["attributor"], math.nan if p["quality"] is None else float(p["quality"]),
                    math.nan if p["cost"] is None else float(p["cost"]), bool(p["on_front"]))
        for p in block["pareto"]["points"]
    ]
    return Rankings(settings, per_metric, aggregate, block["pareto"]["metric"], pareto, dict(block.get("errors", {})))


def _fmt(value: float | None) -> str:
    """A value in the text table: three decimals, ``nan`` when undefined."""
    return "nan" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _finite(value: float | None) -> float | None:
    """``value`` as a JSON number, None when undefined (NaN or infinite)."""
    return float(value) if value is not None and math.isfinite(value) else None


def result_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every ``results.json`` validates against (``suite_result.schema.json`` beside this module)."""
    return json.loads((resources.files("tdaeval.suites") / "suite_result.schema.json").read_text())


def _validate(data: Any, source: str) -> None:
    """Raise ConfigError ``<source>: <key.path>: <message>`` when ``data`` does not match the results schema."""
    import jsonschema

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

