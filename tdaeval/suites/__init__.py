"""Running evaluations and holding their results."""

from tdaeval.suites.result import Entry, RankRow, SuiteResult
from tdaeval.suites.runner import builtin_attributors, evaluate, train_reference

__all__ = ["Entry", "RankRow", "SuiteResult", "builtin_attributors", "evaluate", "train_reference"]
