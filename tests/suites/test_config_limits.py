"""Suite documents that expand, nest or grow past any real suite are refused early, with exit 2."""

import time

import pytest
from typer.testing import CliRunner

from tdaeval.cli import app
from tdaeval.errors import ConfigError
from tdaeval.suites import config as suite_config
from tdaeval.suites import schema as suite_schema
from tdaeval.suites.config import parse_suite

runner = CliRunner()


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A YAML billion-laughs document of a few hundred bytes: ``width ** levels`` values once expanded."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def suite_with(params_yaml: str) -> str:
    """A valid suite whose first attributor's params hold ``params_yaml`` (indented mapping text)."""
    return ("task: {name: digits, params: {n_train: 50, n_test: 5}}\n"
            "attributors:\n  - use: random\n    params:\n" + params_yaml + "metrics: [lds]\n")


@pytest.mark.parametrize("levels", [4, 9, 12])
def test_alias_bombs_are_refused_in_time_linear_in_the_text(levels):
    bomb = "    " + alias_bomb(levels).replace("\n", "\n    ").rstrip() + "\n"
    start = time.perf_counter()
    if 9 ** levels + 1 <= suite_config.MAX_SUITE_NODES:  # small enough: a normal parameters error, not a size error
        with pytest.raises(ConfigError, match="attributors.0.params"):
            parse_suite(suite_with(bomb), source="bomb.yaml")
    else:
        with pytest.raises(ConfigError, match=r"bomb.yaml: the document expands to more than"):
            parse_suite(suite_with(bomb), source="bomb.yaml")
    assert time.perf_counter() - start < 5.0


def test_ordinary_aliases_still_work():
    text = ("task: {name: digits, params: &p {n_train: 50, n_test: 5}}\n"
            "attributors: [random]\nmetrics: [lds]\ndescription: &d hello\nname: *d\n")
    config = parse_suite(text, check=False)
    assert config.name == "hello" and config.task.params == {"n_train": 50, "n_test": 5}


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a [1, [2, *a]]\n"])
def test_recursive_aliases_are_refused(text):
    with pytest.raises(ConfigError, match="refers to a value that contains it"):
        parse_suite(text, source="rec.yaml")


@pytest.mark.parametrize("fmt,text", [
    ("yaml", "a: " + "[" * 70 + "]" * 70 + "\n"),
    ("yaml", "a: " + "[" * 1000 + "]" * 1000 + "\n"),
    ("yaml", "a: " + "{b: " * 1000 + "1" + "}" * 1000 + "\n"),
    ("toml", "a = " + "[" * 70 + "]" * 70 + "\n"),
    ("toml", "a = " + "[" * 1000 + "]" * 1000 + "\n"),
])
def test_deep_nesting_is_refused_with_the_file_name(fmt, text):
    with pytest.raises(ConfigError, match=r"deep\.\w+: .*(nested|nesting)"):
        parse_suite(text, source=f"deep.{fmt}", fmt=fmt)


def test_oversized_documents_are_refused_before_parsing(monkeypatch):
    monkeypatch.setattr(suite_schema, "MAX_SUITE_BYTES", 1000)  # the schema reads the text
    with pytest.raises(ConfigError, match="big.yaml: the document is 2,0.. characters long"):
        parse_suite("# " + "x" * 2000 + "\n", source="big.yaml")


@pytest.mark.parametrize("text", [
    suite_with("    " + alias_bomb(9).replace("\n", "\n    ").rstrip() + "\n"),
    "a: " + "[" * 1000 + "]" * 1000 + "\n",
    "a: &a [*a]\n",
])
def test_validate_exits_2_with_one_line_on_documents_past_the_limits(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    res = runner.invoke(app, ["validate", str(path)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and str(path) in res.output.replace("\n", "")


def test_duplicate_names_are_found_in_linear_time():
    n = 50_000
    text = ("task: {name: digits, params: {n_train: 50, n_test: 5}}\nmetrics: [lds]\nattributors:\n"
            + "".join(f"  - {{use: random, name: a{i}}}\n" for i in range(n)) + "  - {use: random, name: a7}\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"attributor names must be unique; \['a7'\]"):
        parse_suite(text, check=False)
    assert time.perf_counter() - start < 30.0  # quadratic counting took minutes at this size
