"""A metric that fails in any way is recorded like a failing attributor (on_error='record') or raised
naming the metric and the attributor (on_error='raise'); the other entries are unaffected."""

import pytest
import torch

import tdaeval
from tdaeval.errors import TdaevalError
from tdaeval.metrics.base import Metric


class Exploding(Metric):
    """A user metric whose compute raises a plain Python error."""

    name, n_bootstrap, seed = "exploding", 100, 0

    def build_truth(self, task, store, **kwargs):
        return None

    def compute(self, scores, truth, attributor=None):
        raise ZeroDivisionError("user metric bug")


class Mean(Metric):
    name, n_bootstrap, seed = "mean_score", 100, 0

    def build_truth(self, task, store, **kwargs):
        return None

    def compute(self, scores, truth, attributor=None):
        return self._bootstrap_result(torch.as_tensor(scores).double().mean(1), {"kind": "toy"})


def test_a_metric_crash_is_recorded_with_its_traceback(small_logreg, tmp_path):
    result = tdaeval.evaluate(small_logreg, attributors=["random", "grad_dot"], metrics=[Exploding(), Mean()],
                              cache_dir=tmp_path, on_error="record", progress=False)
    failures = {(e.attributor, e.metric): e for e in result.failures()}
    assert set(failures) == {("random", "exploding"), ("grad_dot", "exploding")}
    entry = failures[("grad_dot", "exploding")]
    assert entry.error == "ZeroDivisionError: user metric bug" and "ZeroDivisionError" in entry.traceback
    assert result.get("grad_dot", "mean_score") is not None and result.get("random", "mean_score") is not None


def test_a_metric_crash_is_raised_naming_metric_and_attributor(small_logreg, tmp_path):
    with pytest.raises(TdaevalError, match=r"Metric 'exploding' failed on attributor 'random': ZeroDivisionError"):
        tdaeval.evaluate(small_logreg, attributors=["random"], metrics=[Exploding()], cache_dir=tmp_path, progress=False)
