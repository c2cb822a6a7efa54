"""What every report says under a metric's table, computed once for the Markdown and HTML renderers."""

from __future__ import annotations

from typing import Any

__all__ = ["metric_notes", "entry_warnings"]

#: Provenance keys shown as notes, with their labels, in this order.
NOTE_KEYS = (("ci_covers", "CI"), ("test", "test"))


def entry_warnings(entry: Any) -> list[str]:
    """The entry's ``warnings`` (a list of strings; absent in older results files)."""
    found = getattr(entry, "warnings", None)
    return [str(w) for w in found] if isinstance(found, (list, tuple)) else []


def _provenance(entry: Any) -> dict[str, Any]:
    result = getattr(entry, "result", None)
    provenance = getattr(result, "provenance", None) if result is not None else None
    return provenance if isinstance(provenance, dict) else {}


def metric_notes(entries: list[Any]) -> list[tuple[str, list[str]]]:
    """``[(label, texts)]`` for one metric's entries, unescaped (each renderer escapes).

    ``CI``: what the CIs cover and ``test``: the significance test (distinct values, in order of
    appearance); ``NaN``: ``"attributor: reason"`` for every value that is undefined and says why.
    Labels without any text are left out, so older results files give no notes.
    """
    notes = []
    for key, label in NOTE_KEYS:
        values = list(dict.fromkeys(str(_provenance(e)[key]).rstrip(".") for e in entries if _provenance(e).get(key) not in (None, "")))
        if values:
            notes.append((label, values))
    nan = [f"{e.attributor}: {str(_provenance(e)['nan_reason']).rstrip('.')}" for e in entries if _provenance(e).get("nan_reason")]
    if nan:
        notes.append(("NaN", nan))
    return notes
