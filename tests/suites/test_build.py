"""A suite is parsed once (the schema, importing nothing) and built once (task, attributors, metrics)."""

from __future__ import annotations

import functools
import sys
import uuid

import pytest
import yaml

from tdaeval.errors import ConfigError
from tdaeval.suites import BuiltSuite, build_groundtruth, build_suite, evaluate_checks, run_suite, schema
from tdaeval.suites import config as suite_config
from tdaeval.suites.build import build_task
from tdaeval.task import TrainRecipe
from tdaeval.tasks import SyntheticTask
from tdaeval.tasks.digits import DigitsTask

TINY = {
    "name": "tiny",
    "task": {"name": "digits", "params": {"n_train": 40, "n_test": 4, "hidden": 8, "recipe": {"epochs": 1}}},
    "attributors": ["random", {"use": "grad_dot", "name": "gd"}],
    "metrics": [{"name": "lds", "params": {"n_subsets": 2}}],
    "thresholds": {"floors": [{"attributor": "gd", "metric": "lds", "min": -1.0}]},
    "store": "store",
}


@pytest.fixture
def constructions(monkeypatch):
    """Counts DigitsTask constructions (the wrapper keeps the constructor's signature)."""
    calls = []
    original = DigitsTask.__init__

    @functools.wraps(original)
    def counting(self, *args, **kwargs):
        calls.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(DigitsTask, "__init__", counting)
    return calls


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_run_suite_from_a_path_builds_the_task_once(tiny, constructions):
    result = run_suite(tiny, progress=False)
    assert len(constructions) == 1  # four before: load_suite's check built it (twice: once for the recipe's defaults), then the run
    assert {e.attributor for e in result.entries} == {"random", "gd"} and not result.failures()
    assert result.provenance["suite_file"] == str(tiny.resolve()) and result.provenance["suite"]["name"] == "tiny"


def test_build_groundtruth_from_a_path_builds_the_task_once(tiny, constructions):
    rows = build_groundtruth(tiny, plan_only=True, progress=False)
    assert len(constructions) == 1 and [r["metric"] for r in rows] == ["lds"]


def test_a_built_suite_is_run_as_it_is(tiny, constructions):
    built = build_suite(tiny)
    assert isinstance(built, BuiltSuite) and len(constructions) == 1
    assert built.source == str(tiny) and built.folder == tiny.parent.resolve() and built.store == tiny.parent.resolve() / "store"
    assert list(built.attributors) == ["random", "gd"] and built.attributors["gd"].display_name == "gd"
    assert [m.name for m in built.metrics] == ["lds"] and built.metrics[0].n_subsets == 2
    assert built.task.recipe.epochs == 1 and built.executor == "local" and built.device == "cpu"
    result = run_suite(built, progress=False)
    assert len(constructions) == 1  # nothing built again
    assert result.task["fingerprint"] == built.task.fingerprint()
    assert built.attributors["gd"].model_ is not None  # the run fitted the built attributor itself
    assert (tiny.parent / "store").exists()


def test_built_suites_of_a_config_and_of_a_builtin_name():
    config = schema.parse_suite("task: {name: digits, params: {n_train: 30, n_test: 3}}\nattributors: [random]\nmetrics: [lds]\n")
    built = build_suite(config)
    assert built.source == "<suite>" and built.folder is None and built.store is None and built.suite_file == "<suite>"
    smoke = build_suite("smoke")
    assert smoke.source == "builtin suite 'smoke'" and smoke.folder is None and smoke.config.name == "smoke"


def test_build_suite_refuses_other_types():
    with pytest.raises(ConfigError, match=r"The 'suite' parameter of build_suite must be a SuiteConfig or a path\. Got dict"):
        build_suite({"task": "digits"})
    with pytest.raises(ConfigError, match=r"The 'suite' parameter of run_suite must be a BuiltSuite, a SuiteConfig or a path\. Got int"):
        run_suite(3)


def test_build_errors_name_the_file_and_the_key_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, "attributors": ["random", "grad_dott"]}))
    with pytest.raises(ConfigError, match=r"^.*bad\.yaml: attributors\.1\.use: Unknown attributor 'grad_dott'"):
        build_suite(path)
    config = schema.parse_suite(yaml.safe_dump({**TINY, "thresholds": {"floors": [{"attributor": "nope", "metric": "lds", "min": 0}]}}))
    with pytest.raises(ConfigError, match=r"^s\.yaml: thresholds\.floors\.0\.attributor: 'nope' is not an attributor of this suite"):
        build_suite(config, source="s.yaml")


def test_a_partial_recipe_gives_the_task_the_recipe_constructor_would():
    config = schema.parse_suite(
        "task: {name: synthetic, params: {n_train: 100, n_test: 10, recipe: {epochs: 3}}}\nattributors: [random]\nmetrics: [lds]\n"
    )
    built = build_task(config)
    direct = SyntheticTask(n_train=100, n_test=10, recipe=TrainRecipe(epochs=3, batch_size=512, lr=0.1, momentum=0.9))
    assert built.recipe == direct.recipe and built.fingerprint() == direct.fingerprint()


def test_a_recipe_for_a_task_without_one_is_refused():
    config = schema.parse_suite("task: {name: linear_regression, params: {recipe: {epochs: 2}}}\nattributors: [random]\nmetrics: [lds]\n")
    with pytest.raises(ConfigError, match=r"^s\.yaml: task\.params: .*'recipe'"):
        build_task(config, "s.yaml")


@pytest.fixture
def marker_module(tmp_path, monkeypatch):
    """A module beside a suite whose import is recorded; ``sys.path`` and ``sys.modules`` restored afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = f"marker_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{module}.py").write_text(
        "import sys\nsys.modules['tdaeval'].__dict__.setdefault('_test_imported', []).append(__name__)\n"
        "from tdaeval.tasks import DigitsTask\n"
        "def make_task(**params):\n    return DigitsTask(n_train=30, n_test=3)\n"
    )
    yield module
    sys.modules.pop(module, None)
    import tdaeval

    tdaeval.__dict__.pop("_test_imported", None)


def test_the_schema_imports_nothing_and_the_build_does(tmp_path, marker_module):
    import tdaeval

    path = tmp_path / "suite.yaml"
    text = yaml.safe_dump({"task": {"factory": f"{marker_module}:make_task"}, "attributors": ["random"], "metrics": ["lds"]})
    path.write_text(text)
    before = list(sys.path)
    schema.parse_suite(text)
    schema.load_suite(path)
    schema.read_suite(path)
    suite_config.parse_suite(text, check=False)
    suite_config.load_suite(path, check=False)
    assert marker_module not in sys.modules and not tdaeval.__dict__.get("_test_imported") and sys.path == before
    built = build_suite(path)  # the build imports the factory (the suite's folder put on sys.path) and calls it once
    assert tdaeval.__dict__.get("_test_imported") == [marker_module] and sys.path == [*before, str(tmp_path.resolve())]
    assert built.task.n_train == 30


def test_the_older_one_call_forms_still_build_to_check(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, "metrics": ["ldss"]}))
    with pytest.raises(ConfigError, match=r"bad\.yaml: metrics\.0\.name: Unknown metric 'ldss'"):
        suite_config.load_suite(path)
    config, folder = suite_config.load_suite(path, check=False)
    assert config.metrics[0].name == "ldss" and folder == tmp_path.resolve()
    with pytest.raises(ConfigError, match=r"s\.yaml: metrics\.0\.name: Unknown metric 'ldss'"):
        suite_config.parse_suite(path.read_text(), source="s.yaml")


def test_a_metric_named_by_path_is_keyed_by_its_registered_name_in_results_and_floors(tmp_path):
    path = tmp_path / "s.yaml"
    metric = {"name": "tdaeval.metrics.lds:LDS", "params": {"n_subsets": 2}}
    path.write_text(yaml.safe_dump({**TINY, "metrics": [metric], "thresholds": {"floors": [{"attributor": "gd", "metric": "lds", "min": -1.0}]}}))
    built = build_suite(path)
    assert [m.name for m in built.metrics] == ["lds"] and built.metrics[0].n_subsets == 2
    result = run_suite(built, progress=False)
    assert {e.metric for e in result.entries} == {"lds"}
    outcomes = evaluate_checks(result, built.config.thresholds)
    assert [(o.metric, o.passed) for o in outcomes] == [("lds", True)]  # the floor found the path's entries


def test_a_floor_naming_a_metric_by_its_path_is_refused_with_the_name_to_write():
    text = yaml.safe_dump({**TINY, "metrics": ["tdaeval.metrics.lds:LDS"],
                           "thresholds": {"floors": [{"attributor": "gd", "metric": "tdaeval.metrics.lds:LDS", "min": 0}]}})
    with pytest.raises(ConfigError, match=r"^s\.yaml: thresholds\.floors\.0\.metric: floors name a metric as results do, by its registered "
                                          r"name: write 'lds' for 'tdaeval\.metrics\.lds:LDS'\.$"):
        build_suite(schema.parse_suite(text), source="s.yaml")


def test_two_metrics_resolving_to_one_registered_name_are_refused():
    text = yaml.safe_dump({**TINY, "metrics": ["lds", "tdaeval.metrics.lds:LDS"], "thresholds": {}})
    with pytest.raises(ConfigError, match=r"^s\.yaml: metrics\.1\.name: 'tdaeval\.metrics\.lds:LDS' is the metric 'lds', as metrics\.0 is"):
        build_suite(schema.parse_suite(text), source="s.yaml")
