"""What every report says under a metric's table, computed once for the Markdown and HTML renderers."""

from __future__ import annotations

from typing import Any

from tdaeval.suites.result import Entry

__all__ = ["metric_notes", "entry_warnings"]

#: Provenance keys shown as notes, with their labels, in this order.
NOTE_KEYS = (("ci_covers", "CI"), ("test", "test"))


def entry_warnings(entry: Entry) -> list[str]:
    """The entry's ``warnings`` as strings (empty for older results files, which have none)."""
    return [str(w) for w in entry.warnings]


def _provenance(entry: Entry) -> dict[str, Any]:
    """The entry's metric provenance; empty for an entry that could not run."""
    return {} if entry.result is None else entry.result.provenance


def metric_notes(entries: list[Entry]) -> list[tuple[str, list[str]]]:
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
