"""The one registry type and the one ``module:Name`` resolver, for attributors, metrics, executors and tasks (#15, point 5)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tdaeval.attributors import Attributor, NaiveEnsemble, RandomAttributor, get, resolve
from tdaeval.attributors.base import ATTRIBUTORS
from tdaeval.errors import ConfigError
from tdaeval.groundtruth.executors import EXECUTORS, Executor, LocalExecutor, get_executor
from tdaeval.metrics import LDS, Metric, get_metric
from tdaeval.metrics.base import METRICS
from tdaeval.registry import Registry, import_object
from tdaeval.task import Task
from tdaeval.tasks import TASKS, LinearRegressionTask, get_task

HERE = __name__  # importable as a module path: "tests.test_registry:Name"


# --- plug-ins named by "module:Name" paths below ------------------------------------------------------
class Widget:
    name = "widget"

    def __init__(self, size: int = 1, colour: str = "red") -> None:
        self.size, self.colour = size, colour


class Gear(Widget):
    name = "gear"


class Needy(Widget):
    name = "needy"

    def __init__(self, teeth: int, size: int = 1) -> None:
        super().__init__(size)
        self.teeth = teeth


class Outer:
    class Inner(Widget):
        name = "inner"


NOT_A_CLASS = 3


class PluginAttributor(RandomAttributor):
    name = "plugin_random"


class PluginMetric(LDS):
    name = "plugin_lds"


class PluginExecutor(LocalExecutor):
    name = "plugin_local"


class PluginTask(LinearRegressionTask):
    name = "plugin_linear"


@pytest.fixture
def widgets() -> Registry[Widget]:
    registry: Registry[Widget] = Registry("widget", Widget)
    registry.register(Gear)
    return registry


# --- the Registry contract ------------------------------------------------------------------------------
def test_register_plain_and_as_a_decorator_with_a_name(widgets):
    @widgets.register
    class Cog(Widget):
        name = "cog"

    @widgets.register(name="sprocket")
    class Other(Widget):
        pass

    assert widgets.names() == ["cog", "gear", "sprocket"] == list(widgets)
    assert widgets.get_class("cog") is Cog and widgets["sprocket"] is Other and len(widgets) == 3
    assert "gear" in widgets and "nope" not in widgets and 3 not in widgets
    assert widgets.register(Gear) is Gear  # the same class again under its own name: a no-op
    assert dict(widgets.items())["gear"] is Gear


def test_a_taken_name_names_both_classes(widgets):
    class Impostor(Widget):
        name = "gear"

    with pytest.raises(ConfigError, match=r"A widget named 'gear' is already registered \(.*\.Gear\); cannot register .*\.Impostor"):
        widgets.register(Impostor)
    assert widgets["gear"] is Gear


@pytest.mark.parametrize("cls, name, match", [
    (int, None, r"The widget registry takes Widget subclasses\. Got <class 'int'>"),
    (Gear(), None, "takes Widget subclasses"),
    (Widget, "", "must be a non-empty string without ':'"),
    (Widget, "a:b", "must be a non-empty string without ':'"),
])
def test_registering_a_non_subclass_or_a_bad_name_is_an_error(widgets, cls, name, match):
    with pytest.raises(ConfigError, match=match):
        widgets.register(cls, name=name)
    assert widgets.names() == ["gear"]


def test_unknown_names_list_the_known_ones(widgets):
    with pytest.raises(ConfigError, match=r"^Unknown widget 'cogg'\. Expected one of: gear, or 'module:Name'\.$"):
        widgets.get_class("cogg")
    with pytest.raises(ConfigError, match="Widget names must be strings. Got int"):
        widgets.create(3)


def test_create_builds_and_names_bad_parameters(widgets):
    gear = widgets.create("gear", size=3)
    assert type(gear) is Gear and gear.size == 3
    with pytest.raises(ConfigError, match=r"^Invalid parameters \['sise'\] for widget 'gear': Gear does not take it\. "
                                          r"Accepted: \['size', 'colour'\]\.$"):
        widgets.create("gear", sise=3)
    with pytest.raises(ConfigError, match=r"Invalid parameters \['size'\] for widget '.*:Needy': missing a required argument: 'teeth'"):
        widgets.create(f"{HERE}:Needy", size=2)


def test_import_paths_resolve_to_subclasses(widgets):
    assert widgets.get_class(f"{HERE}:Needy") is Needy and f"{HERE}:Needy" not in widgets
    assert widgets.create(f"{HERE}:Outer.Inner", colour="blue").colour == "blue"  # a dotted attribute
    assert import_object(f"{HERE}:NOT_A_CLASS", "number") == 3


@pytest.mark.parametrize("path, match", [
    ("a/b:C", r"The widget path 'a/b:C' must look like 'package\.module:Name'"),
    ("../evil.py:make", "must look like"),
    ("module:", "must look like"),
    (":Name", "must look like"),
    ("a:b:c", "must look like"),
    ("no_such_module_zz:Thing", r"^Cannot import module 'no_such_module_zz' for widget 'no_such_module_zz:Thing': "
                                r"no module named 'no_such_module_zz'; searched: "),
    (f"{HERE}:Missing", rf"^Module '{HERE}' has no attribute 'Missing' \(widget '{HERE}:Missing'\)\.$"),
    (f"{HERE}:Outer.Missing", r"has no attribute 'Outer\.Missing'"),
    (f"{HERE}:NOT_A_CLASS", rf"^Widget '{HERE}:NOT_A_CLASS' must be a Widget subclass\. Got an object of type int\.$"),
    (f"{HERE}:PluginMetric", r"must be a Widget subclass\. Got class PluginMetric\."),
])
def test_bad_import_paths_are_one_clear_line(widgets, path, match):
    with pytest.raises(ConfigError, match=match) as err:
        widgets.get_class(path)
    assert "\n" not in str(err.value)


def test_a_module_that_raises_while_importing_is_told_apart(widgets, tmp_path, monkeypatch):
    (tmp_path / "tdaeval_registry_broken_zz.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "tdaeval_registry_needs_zz.py").write_text("import no_such_dependency_zz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"module 'tdaeval_registry_broken_zz' was found, but importing it failed: RuntimeError: boom at import"):
        widgets.get_class("tdaeval_registry_broken_zz:W")
    with pytest.raises(ConfigError, match=r"module 'tdaeval_registry_needs_zz' was found, but importing it failed: .*no_such_dependency_zz"):
        widgets.get_class("tdaeval_registry_needs_zz:W")


def test_listing_and_looking_up_never_builds(widgets):
    @widgets.register
    class Lazy(Widget):
        name = "lazy"

        def __init__(self) -> None:
            import no_such_optional_library_zz  # noqa: F401  (an optional library, imported when built)

    assert "lazy" in widgets.names() and widgets.get_class("lazy") is Lazy
    with pytest.raises(ModuleNotFoundError):
        widgets.create("lazy")


def test_listing_the_real_registries_imports_no_optional_library():
    code = textwrap.dedent("""
        import sys
        from tdaeval.attributors.base import ATTRIBUTORS
        import tdaeval.attributors
        from tdaeval.metrics.base import METRICS
        import tdaeval.metrics
        from tdaeval.groundtruth.executors import EXECUTORS
        from tdaeval.tasks import TASKS
        for registry in (ATTRIBUTORS, METRICS, EXECUTORS, TASKS):
            for name in registry.names():
                assert name in registry and registry.get_class(name).__doc__
        assert any(name.startswith("kronfluence.") for name in ATTRIBUTORS.names())
        print(sorted(m for m in ("captum", "dattri", "kronfluence", "quanda", "ray") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# --- the same contract for the four registries -------------------------------------------------------------
REGISTRIES = [
    pytest.param("attributor", ATTRIBUTORS, Attributor, "random", PluginAttributor, get, id="attributors"),
    pytest.param("metric", METRICS, Metric, "lds", PluginMetric, get_metric, id="metrics"),
    pytest.param("executor", EXECUTORS, Executor, "local", PluginExecutor,
                 lambda name, **params: get_executor({"name": name, **params}), id="executors"),
    pytest.param("task", TASKS, Task, "linear_regression", PluginTask, get_task, id="tasks"),
]


@pytest.mark.parametrize("kind, registry, base, builtin, plugin, build", REGISTRIES)
def test_every_registry_keeps_the_contract(kind, registry, base, builtin, plugin, build):
    assert isinstance(registry, Registry) and registry.kind == kind and registry.base is base
    assert builtin in registry.names() and builtin in registry and registry[builtin].name == builtin
    assert type(build(builtin)) is registry[builtin]
    with pytest.raises(ConfigError, match=rf"^Unknown {kind} 'nope'\. Expected one of: .*{builtin}.*, or 'module:Name'\.$"):
        build("nope")
    with pytest.raises(ConfigError, match=rf"^Invalid parameters \['nope_param'\] for {kind} '{builtin}': .*Accepted: \["):
        build(builtin, nope_param=1)
    path = f"{HERE}:{plugin.__name__}"
    assert type(build(path)) is plugin and registry.get_class(path) is plugin and path not in registry
    with pytest.raises(ConfigError, match=rf"{base.__name__} subclass"):
        build(f"{HERE}:NOT_A_CLASS")
    with pytest.raises(ConfigError, match=r"no module named 'no_such_module_zz'"):
        build("no_such_module_zz:Thing")

    class Impostor(plugin):
        name = builtin

    taken = registry[builtin].__qualname__
    with pytest.raises(ConfigError, match=rf"named '{builtin}' is already registered \(.*{taken}\); cannot register .*Impostor"):
        registry.register(Impostor)
    assert registry[builtin] is not Impostor


def test_executor_strings_take_import_paths_too():
    assert type(get_executor(f"{HERE}:PluginExecutor", device="cpu")) is PluginExecutor
    with pytest.raises(ConfigError, match=r"Unknown executor 'local:x'\. Expected 'local', 'process:N', 'ray', 'ray:ADDRESS' or 'module:Name'"):
        get_executor("local:x")
    with pytest.raises(ConfigError, match="An executor mapping needs a 'name'"):
        get_executor({"workers": 2})


# --- renaming an attributor ----------------------------------------------------------------------------------
def test_renamed_is_a_copy_and_leaves_the_original_untouched():
    original = RandomAttributor(seed=3)
    twin = original.renamed("baseline")
    assert twin is not original and type(twin) is RandomAttributor and twin.seed == 3
    assert twin.display_name == "baseline" and original.display_name == "random"
    assert twin.renamed("again").display_name == "again" and twin.display_name == "baseline"
    assert resolve(original, name="other").display_name == "other" and original.display_name == "random"
    with pytest.raises(ConfigError, match="renamed expects a non-empty string 'name'"):
        original.renamed("")


def test_renamed_wrappers_show_the_new_name():
    ensemble = NaiveEnsemble("random")
    assert ensemble.renamed("mine").display_name == "mine" and ensemble.display_name == "naive_ensemble(random)"
