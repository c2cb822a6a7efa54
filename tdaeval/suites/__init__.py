"""Suites: evaluations from a file or from Python, their results, rankings, comparisons and CI checks."""

from tdaeval.suites.build import BuiltSuite, build_suite
from tdaeval.suites.checks import CheckOutcome, evaluate_checks
from tdaeval.suites.compare import Difference, compare_results
from tdaeval.suites.config import load_suite, parse_suite  # the one-call forms that also build (check=True)
from tdaeval.suites.ranking import AggregateRow, ParetoPoint, RankRow
from tdaeval.suites.result import Entry, SuiteResult
from tdaeval.suites.runner import build_groundtruth, builtin_attributors, evaluate, run_suite, train_reference
from tdaeval.suites.schema import SuiteConfig

__all__ = [
    "AggregateRow",
    "BuiltSuite",
    "CheckOutcome",
    "Difference",
    "Entry",
    "ParetoPoint",
    "RankRow",
    "SuiteConfig",
    "SuiteResult",
    "build_groundtruth",
    "build_suite",
    "builtin_attributors",
    "compare_results",
    "evaluate",
    "evaluate_checks",
    "load_suite",
    "parse_suite",
    "run_suite",
    "train_reference",
]
