"""The JSON Schema of results documents (``tdaeval.suite_result/1``), kept beside :class:`~tdaeval.suites.SuiteResult`.

The schema file is ``tdaeval/suites/suite_result.schema.json``, next to the class that
writes and validates the documents; :func:`result_schema` is re-exported here with the
other renderers' names. The stored rankings (``ranking.order``, ``errors``, ``pareto``,
``seed``, each result's ``rank.p_values``) were added to version 1 as optional keys, so
older documents still validate.
"""

from __future__ import annotations

from tdaeval.suites.result import result_schema

__all__ = ["result_schema"]
