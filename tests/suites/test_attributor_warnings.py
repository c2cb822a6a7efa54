"""An attributor's warnings (a solve that did not converge) reach its results entries, on every path of evaluate (#13, item 18).

A number computed from a failed solve must never look like any other: the
entry keeps it, with ``warnings`` saying why it should not be trusted.
"""

import warnings

import jsonschema
import pytest

import tdaeval
from tdaeval.attributors import Attributor
from tdaeval.attributors.influence import Influence
from tdaeval.errors import AttributorError, ConvergenceWarning, collect_warnings
from tdaeval.reports.schema import result_schema
from tdaeval.suites.result import SuiteResult
from tdaeval.tasks import DigitsTask, LinearRegressionTask, with_flipped_labels


class Warns(Attributor):
    """Input similarity that issues a ConvergenceWarning in ``where`` (and raises after it when ``fail``)."""

    name = "test_warns"

    def __init__(self, where: str = "attribute", fail: bool = False) -> None:
        self.where, self.fail = where, fail

    def _say(self, where):
        if self.where == where:
            warnings.warn(f"solver stopped in {where}", ConvergenceWarning, stacklevel=2)
            if self.fail:
                raise AttributorError("gave up")

    def _fit(self):
        self._say("fit")

    def _attribute(self, test):
        self._say("attribute")
        return test.inputs.float() @ self.train_.inputs.float().T

    def self_influence(self, chunk_size=256):
        self._say("self_influence")
        return (self.train_.inputs.float() ** 2).sum(1)


@pytest.fixture(scope="module")
def regression():
    return LinearRegressionTask(n_train=30, n_test=6, n_features=4)


def _check_document(result):
    doc = result.to_dict()
    jsonschema.validate(doc, result_schema(), cls=jsonschema.Draft202012Validator)
    again = SuiteResult.from_dict(doc)
    assert [e.warnings for e in again.entries] == [e.warnings for e in result.entries]
    return doc


@pytest.mark.parametrize("score_chunk", [None, 7], ids=["in-memory", "streamed"])
def test_cg_that_did_not_converge_is_recorded_and_still_shown(tmp_path, regression, score_chunk):
    # row-wise CG: one iteration cannot solve a 5-dimensional system (a block of 6 test points spans it at once)
    attributors = {"cg, 1 iteration": Influence(solver="cg", damping=0.0, max_iter=1, cg_block=False), "explicit": Influence(solver="explicit")}
    with pytest.warns(ConvergenceWarning, match="did not converge"):  # the console still shows it
        result = tdaeval.evaluate(regression, attributors=attributors, metrics={"lds": {"n_subsets": 10, "n_bootstrap": 100}},
                                  cache_dir=tmp_path, score_chunk=score_chunk, scores_dir=tmp_path / "scores")
    failed, clean = (next(e for e in result.entries if e.attributor == name) for name in attributors)
    assert failed.result is not None  # the number is kept ...
    assert len(failed.warnings) == 1 and failed.warnings[0].startswith("ConvergenceWarning: Influence(solver='cg'): ")
    assert "did not converge" in failed.warnings[0]  # ... and marked
    assert clean.warnings == []
    doc = _check_document(result)
    assert {r["attributor"]: r["warnings"] for r in doc["results"]} == {"cg, 1 iteration": failed.warnings, "explicit": []}


@pytest.mark.parametrize("where,fail", [("fit", False), ("attribute", False), ("fit", True), ("attribute", True)])
def test_warnings_of_fit_and_attribute_reach_every_entry_of_the_attributor(tmp_path, regression, where, fail):
    with pytest.warns(ConvergenceWarning):
        result = tdaeval.evaluate(regression, attributors={"w": Warns(where, fail)}, metrics={"lds": {"n_subsets": 10, "n_bootstrap": 100}},
                                  cache_dir=tmp_path, on_error="record")
    (entry,) = result.entries
    assert entry.warnings == [f"ConvergenceWarning: solver stopped in {where}"]
    assert (entry.result is None) == fail and (entry.error is not None) == fail
    _check_document(result)


def test_warnings_of_a_metric_that_asks_the_attributor_again_are_recorded(tmp_path):
    task = with_flipped_labels(DigitsTask(n_train=60, n_test=5, model="logreg"), fraction=0.2)
    with pytest.warns(ConvergenceWarning):
        result = tdaeval.evaluate(task, attributors={"w": Warns("self_influence")},
                                  metrics={"mislabel_detection": {"n_bootstrap": 100}, "lds": {"n_subsets": 10, "n_bootstrap": 100}},
                                  cache_dir=tmp_path)
    by_metric = {e.metric: e.warnings for e in result.entries}
    assert by_metric == {"mislabel_detection": ["ConvergenceWarning: solver stopped in self_influence"], "lds": []}
    _check_document(result)


def test_documents_without_warnings_still_load(regression, tmp_path):
    result = tdaeval.evaluate(regression, attributors={"explicit": Influence(solver="explicit")},
                              metrics={"lds": {"n_subsets": 10, "n_bootstrap": 100}}, cache_dir=tmp_path)
    doc = result.to_dict()
    for item in doc["results"]:
        del item["warnings"]
    jsonschema.validate(doc, result_schema(), cls=jsonschema.Draft202012Validator)
    assert [e.warnings for e in SuiteResult.from_dict(doc).entries] == [[]]


def test_collect_warnings_records_tdaeval_warnings_under_any_filter_and_reissues_all():
    said = []
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with collect_warnings(said):
            warnings.warn("not converged", ConvergenceWarning, stacklevel=1)
            warnings.warn("not converged", ConvergenceWarning, stacklevel=1)  # recorded once
            warnings.warn("someone else's", UserWarning, stacklevel=1)  # shown, not recorded
    assert said == ["ConvergenceWarning: not converged"]
    assert [str(w.message) for w in shown] == ["not converged", "not converged", "someone else's"]
    with pytest.raises(KeyError), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # silenced on the console, still on record; and kept when the block fails
        with collect_warnings(said := []):
            warnings.warn("before the failure", ConvergenceWarning, stacklevel=1)
            raise KeyError("x")
    assert said == ["ConvergenceWarning: before the failure"]
