"""The JSON Schema of results documents (``tdaeval.suite_result/1``).

The stored rankings (``ranking.order``, ``errors``, ``pareto``, ``seed``, each result's
``rank.p_values``) were added to version 1 as optional keys, so older documents still validate.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["result_schema"]


def result_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every ``results.json`` validates against."""
    return json.loads((resources.files("tdaeval.reports") / "suite_result.schema.json").read_text())
