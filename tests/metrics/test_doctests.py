"""The ``>>>`` examples in the metrics and in :mod:`tdaeval.functional` run and print what they say.

A test file (not ``--doctest-modules`` in pytest's options) so the examples
run in the default test run whatever paths pytest is given, and so that
every public metric class is required to have one.
"""

import doctest
import importlib
import pkgutil

import pytest

import tdaeval.functional
import tdaeval.metrics
from tdaeval.metrics import metric_class, metric_names

MODULES = [f"{package.__name__}.{info.name}" for package in (tdaeval.metrics, tdaeval.functional)
           for info in pkgutil.iter_modules(package.__path__)]


@pytest.mark.parametrize("module", MODULES)
def test_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {module}"


@pytest.mark.parametrize("name", [n for n in metric_names() if metric_class(n).__module__.startswith("tdaeval.")])
def test_every_metric_class_has_an_example(name):
    assert ">>>" in (metric_class(name).__doc__ or ""), f"{metric_class(name).__name__} has no doctest example"
