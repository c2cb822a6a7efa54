"""Malformed results documents: report, compare and check --results exit 2 with one line naming the file (#14 item 12)."""

import copy
import json
import random
import time

import pytest
import torch
import yaml
from typer.testing import CliRunner

from tdaeval.cli import app
from tdaeval.errors import ConfigError
from tdaeval.metrics.base import MetricResult
from tdaeval.suites.result import Entry, SuiteResult

runner = CliRunner()


def valid_document(n=10):
    values = torch.linspace(0, 1, n, dtype=torch.float64)
    entries = [Entry(name, "lds", MetricResult(metric="lds", value=float(values.mean()), ci=(0.1, 0.9), per_example=values + i,
                                                 higher_is_better=True), cost={"fit_s": 1.0, "attribute_s": 0.5})
               for i, name in enumerate(["random", "grad_dot"])]
    provenance = {"tdaeval": "0", "torch": "2", "python": "3", "git": None, "seed": 0, "device": "cpu"}
    return SuiteResult(entries, task={"name": "digits", "fingerprint": "abc"}, provenance=provenance).to_dict()


def mutations(doc):
    """(name, text) pairs: one class of malformed input each."""
    def edit(f):
        d = copy.deepcopy(doc)
        f(d)
        return json.dumps(d)
    out = [
        ("top-level list", "[1, 2]"), ("top-level number", "3"), ("top-level string", '"x"'), ("top-level null", "null"),
        ("truncated", json.dumps(doc)[: len(json.dumps(doc)) // 2]), ("empty", ""),
        ("deep nesting", "[" * 100_000 + "]" * 100_000),
        ("deep nesting in task", json.dumps({**doc, "task": 1}).replace('"task": 1', '"task": {"a": ' + "[" * 5000 + "]" * 5000 + "}")),
        ("wrong schema", edit(lambda d: d.update(schema="tdaeval.suite_result/99"))),
        ("foreign schema", edit(lambda d: d.update(schema="other/1"))),
        ("results not a list", edit(lambda d: d.update(results={"a": 1}))),
        ("result is a number", edit(lambda d: d["results"].__setitem__(1, 7))),
        ("string in per_example", edit(lambda d: d["results"][1]["per_example"].__setitem__(7, "x"))),
        ("bool in per_example", edit(lambda d: d["results"][0]["per_example"].__setitem__(3, True))),
        ("per_example not a list", edit(lambda d: d["results"][0].update(per_example=5))),
        ("NaN in per_example", json.dumps(doc).replace('"per_example": [0.0', '"per_example": [NaN', 1)),
        ("Infinity in per_example", json.dumps(doc).replace('"per_example": [0.0', '"per_example": [-Infinity', 1)),
        ("string value", edit(lambda d: d["results"][0].update(value="high"))),
        ("short ci", edit(lambda d: d["results"][0].update(ci=[0.1]))),
        ("cost not numbers", edit(lambda d: d["results"][0]["cost"].update(fit_s="slow"))),
        ("ranking alpha out of range", edit(lambda d: d["ranking"].update(alpha=2))),
        ("checks not a list", edit(lambda d: d.update(checks="none"))),
        ("provenance a string", edit(lambda d: d.update(provenance="p"))),
        ("unknown top-level key", edit(lambda d: d.update(extra=1))),
        ("invalid utf-8", b'{"schema": "\xff\xfe"}'),
    ]
    for key in ["schema", "task", "provenance", "results", "ranking", "checks"]:
        out.append((f"missing {key}", edit(lambda d, key=key: d.pop(key))))
    for key in ["attributor", "metric", "value", "ci", "higher_is_better", "per_example", "error"]:
        out.append((f"missing results.0.{key}", edit(lambda d, key=key: d["results"][0].pop(key))))
    # seeded: a wrong-typed value at a random place of every level
    rng = random.Random(14)
    bad_values = [1, "x", None, [], {}, True, 1.5]
    for i in range(30):
        d = copy.deepcopy(doc)
        node, path = d, []
        while isinstance(node, (dict, list)) and node and rng.random() < 0.8:
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            if not isinstance(node[key], (dict, list)) or not node[key]:
                break
            node, path = node[key], path + [key]
        if not node:
            continue
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        node[key] = rng.choice([v for v in bad_values if type(v) is not type(node[key])])
        out.append((f"seeded {i}: {'.'.join(map(str, path + [key]))}", json.dumps(d)))
    return out


def _is_valid(text):
    try:
        SuiteResult.from_dict(json.loads(text))
        return True
    except (ConfigError, ValueError, RecursionError, TypeError):
        return False


CORPUS = mutations(valid_document())


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "results.json"
    path.write_text(json.dumps(valid_document()))
    return path


@pytest.mark.parametrize("name, text", CORPUS, ids=[name for name, _ in CORPUS])
def test_every_malformed_document_raises_one_line_config_error_naming_the_file(tmp_path, name, text):
    if name.startswith("seeded") and _is_valid(text):
        pytest.skip("this seeded change still matches the schema")
    bad = tmp_path / "results.json"
    bad.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as err:
        SuiteResult.from_json(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow  # 4 CLI runs per document: about 2 minutes on 2 cores
@pytest.mark.parametrize("name, text", CORPUS, ids=[name for name, _ in CORPUS])
def test_malformed_results_exit_2_with_one_line_naming_the_file(tmp_path, good, name, text):
    if name.startswith("seeded") and _is_valid(text):
        pytest.skip("this seeded change still matches the schema")  # e.g. a free-form provenance field
    bad = tmp_path / "results.json"
    bad.write_bytes(text if isinstance(text, bytes) else text.encode())
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "s", "task": {"name": "digits"}, "attributors": ["random"], "metrics": ["lds"]}))
    for args in (["report", str(bad), "--format", "json"], ["compare", str(good), str(bad)], ["compare", str(bad), str(good)],
                 ["check", str(suite), "--results", str(bad), "--out", str(tmp_path / "out")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output, res.exception)
        lines = [line for line in res.output.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in res.output, (args, res.output)


def test_the_message_names_the_key_path_and_what_was_expected():
    doc = valid_document()
    doc["results"][1]["per_example"][7] = "x"
    with pytest.raises(ConfigError, match=r"^results.json: results.1.per_example.7: 'x' is not of type 'number', 'null'$"):
        SuiteResult.from_dict(doc, source="results.json")
    doc = valid_document()
    doc["results"][0]["cost"]["fit_s"] = "slow"
    with pytest.raises(ConfigError, match=r"^r: results.0.cost.fit_s: 'slow' is not of type 'number'$"):
        SuiteResult.from_dict(doc, source="r")


def test_a_valid_document_still_loads_and_a_million_values_validate_fast():
    doc = valid_document()  # ranked on 10 values; the bootstrap of a million would dominate the test
    for i, item in enumerate(doc["results"]):
        item["per_example"] = (torch.linspace(0, 1, 1_000_000, dtype=torch.float64) + i).tolist()
    start = time.perf_counter()
    result = SuiteResult.from_dict(doc)
    assert time.perf_counter() - start < 10
    assert result.get("grad_dot", "lds").per_example.numel() == 1_000_000
