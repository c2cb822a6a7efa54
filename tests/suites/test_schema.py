"""The suite schema checks the shape of every name that may be a ``module:Name`` path, importing nothing."""

from __future__ import annotations

import pytest

from tdaeval.errors import ConfigError
from tdaeval.suites.schema import AttributorSpec, MetricSpec, TaskSpec, parse_suite

SUITE = "task: {task}\nattributors: [{attributor}]\nmetrics: [{metric}]\n"


@pytest.mark.parametrize(
    ("key", "where"),
    [("task", "task: 'name'"), ("attributor", "attributors.0: 'use'"), ("metric", "metrics.0: 'name'")],
)
@pytest.mark.parametrize("bad", ["'pkg/mod.py:Name'", "'pkg.mod:'", "'a:b:c'", "'1mod:Name'"])
def test_a_name_with_a_colon_must_be_an_import_path(key, where, bad):
    fields = {"task": "digits", "attributor": "random", "metric": "lds", key: bad}
    with pytest.raises(ConfigError, match=rf"^s\.yaml: {where} must look like 'package\.module:Name' \(dotted Python names, no file paths\)"):
        parse_suite(SUITE.format(**fields), source="s.yaml")


def test_registered_names_and_import_paths_pass_unimported():
    config = parse_suite(SUITE.format(task="'no_such_pkg.tasks:MyTask'", attributor="'no_such_pkg.a:Mine'", metric="'no_such_pkg.m:Score'"))
    assert (config.task.name, config.attributors[0].use, config.metrics[0].name) == (
        "no_such_pkg.tasks:MyTask", "no_such_pkg.a:Mine", "no_such_pkg.m:Score")
    assert config.task.factory is None


@pytest.mark.parametrize(("spec", "key"), [(TaskSpec, "name"), (AttributorSpec, "use"), (MetricSpec, "name")])
def test_a_bare_string_is_shorthand_for_the_naming_key(spec, key):
    assert spec.model_validate("digits").model_dump()[key] == "digits"
    assert spec.model_validate({key: "digits"}) == spec.model_validate("digits")
