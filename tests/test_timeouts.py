"""The test suite's own limits agree: a test's pytest timeout outlasts the subprocesses it waits for.

A subprocess limit longer than the test's pytest limit can never fire: the
test dies on pytest-timeout's limit first, without the subprocess's output.
Every test module is read (its source, not run): each call in a test function
that passes ``timeout=`` (``subprocess.run``, ``Popen.communicate``, ...) is
added up, and the test's ``@pytest.mark.timeout`` (or the module's, or the
``timeout`` of ``pyproject.toml``) must be longer. Tests that may run longer
than the global limit, and the tutorial tests, carry the ``slow`` marker, so
that ``make test-fast`` (``-m "not slow"``) leaves them out.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _marks(obj, name: str) -> list:
    return [m for m in getattr(obj, "pytestmark", []) if m.name == name]


def _timeout_mark(fn, module) -> float | None:
    for owner in (fn, module):
        marks = _marks(owner, "timeout")
        if marks:
            mark = marks[0]
            return float(mark.args[0] if mark.args else mark.kwargs["timeout"])
    return None


def _test_functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            yield None, node
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    yield node.name, item


def _subprocess_timeouts(fn: ast.FunctionDef, namespace: dict, where: str) -> list[float]:
    """The ``timeout=`` of every call in the body (each call site once), evaluated in the module."""
    found = []
    for statement in fn.body:
        for node in ast.walk(statement):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg != "timeout":
                    continue
                try:
                    value = eval(compile(ast.Expression(keyword.value), where, "eval"), dict(namespace))
                except NameError as err:
                    raise AssertionError(f"{where}: give timeout= as a number or a module constant ({err})") from None
                if value is not None:
                    found.append(float(value))
    return found


def _collect():
    """(test id, subprocess timeouts, pytest timeout or None, is slow) for every test that waits on a timeout."""
    rows = []
    for path in sorted(TESTS.rglob("test_*.py")):
        source = path.read_text(encoding="utf-8")
        if "timeout=" not in source:
            continue
        relative = path.relative_to(TESTS.parent)
        module = importlib.import_module(".".join(relative.with_suffix("").parts))
        for class_name, node in _test_functions(ast.parse(source)):
            owner = getattr(module, class_name) if class_name else module
            fn = getattr(owner, node.name)
            where = f"{relative}::{class_name + '::' if class_name else ''}{node.name}"
            timeouts = _subprocess_timeouts(node, vars(module), where)
            if timeouts:
                slow = bool(_marks(fn, "slow") or _marks(module, "slow") or (class_name and _marks(owner, "slow")))
                rows.append((where, timeouts, _timeout_mark(fn, module), slow))
    return rows


def test_every_pytest_timeout_outlasts_the_subprocesses_it_waits_for(pytestconfig):
    default = float(pytestconfig.getini("timeout") or 0)
    rows = _collect()
    assert any("test_tutorials.py" in where for where, *_ in rows)  # the scan does see the tutorials
    too_short = []
    for where, timeouts, marked, _ in rows:
        limit = marked if marked is not None else default
        if limit and limit <= sum(timeouts):
            too_short.append(f"{where}: pytest timeout {limit:g} s <= subprocess timeouts {sum(timeouts):g} s")
    assert not too_short, "; ".join(too_short)


def test_tutorial_tests_and_tests_longer_than_the_default_limit_are_slow(pytestconfig):
    default = float(pytestconfig.getini("timeout") or 0)
    rows = _collect()
    tutorials = [row for row in rows if "test_tutorials.py" in row[0]]
    assert len(tutorials) >= 4
    not_slow = [where for where, _, _, slow in tutorials if not slow]
    not_slow += [where for where, timeouts, _, slow in rows if default and sum(timeouts) >= default and not slow]
    assert not not_slow, f"mark these @pytest.mark.slow: {sorted(set(not_slow))}"


# Calls that wait on a child process: ``subprocess.<name>(...)`` for these names, and ``.wait()``/``.communicate()``
# (Popen's) in a module that uses subprocess. Each needs a ``timeout=`` (Popen.wait's first, communicate's second
# positional argument counts), so that a hung child fails its test with a clear error instead of hanging the run.
_RUNNERS = frozenset({"run", "call", "check_call", "check_output"})
PACKAGE = TESTS.parent / "tdaeval"


def _waits_without_timeout(source: str, where: str) -> list[str]:
    """``where:line: call`` for each call in ``source`` that waits on a subprocess without a timeout."""
    if "subprocess" not in source:
        return []
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        keywords = {k.arg for k in node.keywords}
        if "timeout" in keywords or None in keywords:  # timeout= given, or **kwargs passed on
            continue
        name, owner = node.func.attr, node.func.value
        if name in _RUNNERS:
            waits = isinstance(owner, ast.Name) and owner.id == "subprocess"
        else:
            waits = (name == "wait" and not node.args) or (name == "communicate" and len(node.args) < 2)
        if waits:
            found.append(f"{where}:{node.lineno}: {ast.unparse(node.func)}(...)")
    return found


def test_every_subprocess_wait_in_the_tests_and_the_package_has_a_timeout():
    missing = []
    for root in (TESTS, PACKAGE):
        for path in sorted(root.rglob("*.py")):
            missing += _waits_without_timeout(path.read_text(encoding="utf-8"), str(path.relative_to(TESTS.parent)))
    assert not missing, f"give these a timeout= well below pytest's limit: {missing}"


def test_the_scan_names_each_wait_without_a_timeout():
    source = """import subprocess
def f(proc, **kw):
    subprocess.run(["x"], check=True)
    subprocess.check_output(["x"], timeout=5)
    subprocess.run(["x"], **kw)
    proc.wait()
    proc.wait(10)
    proc.communicate()
    proc.communicate(None, 10)
    out, err = proc.communicate(timeout=1)
"""
    assert _waits_without_timeout(source, "m.py") == ["m.py:3: subprocess.run(...)", "m.py:6: proc.wait(...)", "m.py:8: proc.communicate(...)"]
    assert _waits_without_timeout(source.replace("subprocess", "other"), "m.py") == []  # no subprocess in the module: not scanned


def test_tests_relying_on_the_default_limit_give_their_subprocesses_at_most_half_of_it(pytestconfig):
    """A subprocess limit close to pytest's leaves no time for the test's own work: at most half of the default."""
    default = float(pytestconfig.getini("timeout") or 0)
    too_long = [f"{where}: {sum(timeouts):g} s" for where, timeouts, marked, _ in _collect() if marked is None and sum(timeouts) > default / 2]
    assert not too_long, f"lower these subprocess timeouts (or mark the test's own @pytest.mark.timeout): {too_long}"


def test_slow_marker_is_registered(pytestconfig):
    assert any(line.split(":")[0].strip() == "slow" for line in pytestconfig.getini("markers"))
