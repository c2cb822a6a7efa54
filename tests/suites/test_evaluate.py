import json

import pytest
import torch

import tdaeval
from tdaeval.attributors import Attributor
from tdaeval.errors import AttributorError, ConfigError, TdaevalError
from tdaeval.suites import SuiteResult
from tdaeval.tasks import DigitsTask


@pytest.fixture(scope="module")
def digits_result(tmp_path_factory):
    """The default digits task, every built-in attributor, LDS with 40 subsets."""
    cache = tmp_path_factory.mktemp("cache")
    return tdaeval.evaluate(DigitsTask(), metrics={"lds": {"n_subsets": 40}}, cache_dir=cache)


@pytest.mark.slow  # the module's digits_result fixture: a full DigitsTask LDS run
def test_gradient_methods_beat_random_whose_ci_covers_zero(digits_result):
    random = digits_result.get("random", "lds")
    assert random.ci[0] < 0 < random.ci[1]
    # "beats" is the paired test on the same subsets and test points: the default LDS CI also covers the
    # draw of the 40 subsets (shared by every attributor), so two marginal CIs can overlap although the
    # paired difference is clear
    rows = {r.attributor: r for r in digits_result.ranking("lds")}
    for name in ("grad_dot", "tracin", "grad_cos"):
        result = digits_result.get(name, "lds")
        assert "random" not in rows[name].tied_with and rows[name].rank < rows["random"].rank, name
        assert result.value > 0.05, name
        assert result.provenance["ci"] == "test+subsets"
        test_only = tdaeval.functional.nanmean_ci(result.per_example, n_resamples=2000, seed=0)[1]
        assert result.ci[1] - result.ci[0] > test_only[1] - test_only[0], name


@pytest.mark.slow  # the module's digits_result fixture: a full DigitsTask LDS run
def test_ranking_puts_random_last(digits_result):
    rows = digits_result.ranking("lds")
    assert rows[-1].attributor == "random" and rows[-1].tied_with == ()
    assert {r.attributor for r in rows} == {"random", "grad_dot", "grad_cos", "tracin", "influence", "trak", "representer", "similarity"}


@pytest.mark.slow  # the module's digits_result fixture: a full DigitsTask LDS run
def test_json_document_has_the_promised_fields_and_roundtrips(digits_result, tmp_path):
    path = tmp_path / "results.json"
    digits_result.to_json(path)
    doc = json.loads(path.read_text())
    assert doc["schema"].startswith("tdaeval.suite_result/")
    for item in doc["results"]:
        for key in ("attributor", "metric", "value", "ci", "higher_is_better", "per_example", "provenance", "cost"):
            assert key in item
        assert item["provenance"]["n_subsets"] == 40 and item["provenance"]["alpha"] == 0.5
    again = SuiteResult.from_json(path)
    assert again.get("tracin", "lds").value == digits_result.get("tracin", "lds").value
    assert "tracin" in digits_result.table()


class Negated(Attributor):
    name = "negated_input_dot"

    def _attribute(self, test):
        return -(test.inputs @ self.train_.inputs.T)


def input_dot(model, train, test):
    return test.inputs @ train.inputs.T


def test_three_ways_to_plug_in(small_logreg, tmp_path):
    result = tdaeval.evaluate(
        small_logreg,
        attributors={"fn": input_dot, "cls": Negated(), "path": "tests.attributors.plugin_example:input_dot"},
        metrics={"lds": {"n_subsets": 4}},
        cache_dir=tmp_path,
    )
    fn, cls, path = (result.get(n, "lds").value for n in ("fn", "cls", "path"))
    assert fn == pytest.approx(-cls) and fn == path


def test_same_config_and_seed_give_the_same_numbers(small_logreg, tmp_path):
    kwargs = dict(attributors=["grad_dot", "random"], metrics={"lds": {"n_subsets": 4}})
    a = tdaeval.evaluate(small_logreg, cache_dir=tmp_path / "a", **kwargs)
    b = tdaeval.evaluate(small_logreg, cache_dir=tmp_path / "b", **kwargs)
    for name in ("grad_dot", "random"):
        assert torch.equal(a.get(name, "lds").per_example, b.get(name, "lds").per_example)


def test_nan_returning_attributor_is_named(small_logreg, tmp_path):
    def broken(model, train, test):
        return torch.full((len(test), len(train)), float("nan"))

    with pytest.raises(AttributorError, match="'broken'.*non-finite"):
        tdaeval.evaluate(small_logreg, {"broken": broken}, metrics={"lds": {"n_subsets": 2}}, cache_dir=tmp_path)


def test_wrong_shape_is_named_and_recorded_when_asked(small_logreg, tmp_path):
    def transposed(model, train, test):
        return torch.zeros(len(train), len(test))

    with pytest.raises(AttributorError, match="'transposed'.*transposed"):
        tdaeval.evaluate(small_logreg, {"transposed": transposed}, metrics={"lds": {"n_subsets": 2}}, cache_dir=tmp_path)
    result = tdaeval.evaluate(
        small_logreg, {"transposed": transposed, "ok": input_dot}, metrics={"lds": {"n_subsets": 2}},
        cache_dir=tmp_path, on_error="record",
    )
    assert result.failures()[0].attributor == "transposed"
    assert "could not run" in result.table()
    assert json.loads(result.to_json())["results"][0]["error"]


def test_crashing_user_attributor_is_wrapped(small_logreg, tmp_path):
    def crashes(model, train, test):
        raise KeyError("boom")

    with pytest.raises(TdaevalError, match="Attributor 'crashes' failed: KeyError"):
        tdaeval.evaluate(small_logreg, {"crashes": crashes}, metrics={"lds": {"n_subsets": 2}}, cache_dir=tmp_path)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"attributors": {"x": "nope"}}, "Unknown attributor 'nope'"),
        ({"attributors": {}}, "empty"),
        ({"metrics": ["nope"]}, "Unknown metric 'nope'"),
        ({"metrics": {"lds": {"alpha": 2.0}}}, "'alpha' parameter of LDS must be in"),
        ({"metrics": {"lds": {"n_subsets": 1}}}, "'n_subsets'"),
        ({"on_error": "ignore"}, "'on_error'"),
    ],
)
def test_bad_arguments(small_logreg, tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        tdaeval.evaluate(small_logreg, cache_dir=tmp_path, **kwargs)


def test_task_must_be_a_task(tmp_path):
    with pytest.raises(ConfigError, match="'task' parameter of evaluate"):
        tdaeval.evaluate("digits", cache_dir=tmp_path)


def test_reference_model_is_cached_in_the_store(small_logreg, tmp_path, monkeypatch):
    from tdaeval.groundtruth import ArtifactStore

    kwargs = dict(attributors=["grad_dot", "tracin"], metrics={"lds": {"n_subsets": 4}}, cache_dir=tmp_path)
    first = tdaeval.evaluate(small_logreg, **kwargs)
    kinds = [row["kind"] for row in ArtifactStore(tmp_path).entries()]
    assert kinds.count("reference_model") == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the reference model should come from the store")

    monkeypatch.setattr("tdaeval.suites.runner.train_model", no_training)
    again = tdaeval.evaluate(small_logreg, **kwargs)  # tracin needs the stored checkpoints too
    for name in ("grad_dot", "tracin"):
        assert torch.equal(first.get(name, "lds").per_example, again.get(name, "lds").per_example)
