"""The output of ``tdaeval compare``: a table of changes between two results documents."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from tdaeval.suites.compare import Difference

__all__ = ["render_comparison"]


def _fmt(value: float, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _status(d: Difference) -> str:
    compared = d.status in ("improved", "regressed", "no change")
    return d.status + (" (unpaired)" if compared and not d.paired else "")


def render_comparison(differences: Sequence[Difference], fmt: str = "text", alpha: float = 0.05) -> str:
    """``differences`` as plain text, Markdown or JSON.

    Parameters
    ----------
    differences : sequence of Difference
        From :func:`tdaeval.suites.compare.compare_results`.
    fmt : {"text", "md", "json"}
        Output format.
    alpha : float
        The level used, stated in the footer.
    """
    if fmt == "json":
        return json.dumps({"alpha": alpha, "differences": [d.to_dict() for d in differences]}, indent=2, allow_nan=False)
    header = ["attributor", "metric", "base", "new", "change", "95% CI", "p", "status"]
    rows = [
        [d.attributor, d.metric, _fmt(d.base_value), _fmt(d.new_value), _fmt(d.change, True),
         f"[{_fmt(d.ci[0], True)}, {_fmt(d.ci[1], True)}]", _fmt(d.p_value), _status(d)]
        for d in differences
    ]
    counts = {s: sum(d.status == s for d in differences) for s in ("improved", "regressed", "no change")}
    footer = (
        f"{counts['improved']} improved, {counts['regressed']} regressed, {counts['no change']} without significant change "
        f"(two-sided bootstrap test at alpha {alpha:g}, Holm-adjusted over the rows; paired over test points "
        f"when both runs share the task)."
    )
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
        return "\n".join(lines + ["", footer])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines + ["", footer])
