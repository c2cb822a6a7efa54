"""Every metric result says which variance its CI covers (``provenance["ci_covers"]``), and LDS offers both CIs (#13 item 7)."""

import ast
from pathlib import Path

import pytest
import torch

import tdaeval
import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.groundtruth import LDSGroundTruth, LDSSpec
from tdaeval.metrics import LDS, get_metric
from tdaeval.metrics.base import Metric

PACKAGE = Path(tdaeval.__file__).parent


def _lds_truth(shared_weight, seed=0, n_subsets=20, n_train=40, n_test=25):
    """Outputs from additive effects with a component shared by all test points (subset noise) of weight ``shared_weight``."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(n_subsets, n_train, generator=generator).argsort(-1) < n_train // 2
    shared = torch.randn(n_train, generator=generator)
    effects = shared_weight * shared + 0.5 * torch.randn(n_test, n_train, generator=generator)
    outputs = (masks.float() @ effects.T).unsqueeze(1) + 2.0 * torch.randn(n_subsets, 1, n_test, generator=generator)
    scores = effects + torch.randn(n_test, n_train, generator=generator)
    return scores, LDSGroundTruth(masks, outputs, LDSSpec(n_subsets=n_subsets, n_seeds=1), True, {"kind": "lds"})


def test_lds_default_ci_resamples_subsets_too_and_says_so():
    scores, truth = _lds_truth(shared_weight=1.0)
    two_way = LDS(n_subsets=20, n_bootstrap=500).compute(scores, truth)
    test_only = LDS(n_subsets=20, n_bootstrap=500, ci="test").compute(scores, truth)
    assert two_way.value == test_only.value and torch.equal(two_way.per_example, test_only.per_example)
    assert two_way.provenance["ci"] == "test+subsets" and "subsets resampled" in two_way.provenance["ci_covers"]
    assert test_only.provenance["ci"] == "test" and "subsets and their trained models fixed" in test_only.provenance["ci_covers"]
    # "test" is the test-point bootstrap of the per-test values; "test+subsets" the two-way bootstrap
    _, expected, _ = F.nanmean_ci(test_only.per_example, n_resamples=500, seed=0)
    assert test_only.ci == pytest.approx(expected, abs=0)
    predictions = F.subset_predictions(scores, truth.masks)
    assert two_way.ci == pytest.approx(F.lds_two_way_ci(predictions, truth.mean_outputs, n_resamples=500, seed=0), abs=0)
    assert two_way.ci[1] - two_way.ci[0] > 1.5 * (test_only.ci[1] - test_only.ci[0])
    assert two_way.ci[0] <= two_way.value <= two_way.ci[1]


def test_lds_ci_parameter_is_checked():
    assert get_metric("lds", ci="test").ci == "test"
    with pytest.raises(ConfigError, match=r"The 'ci' parameter of LDS must be one of 'test\+subsets', 'test'\. Got 'subsets' instead\."):
        LDS(ci="subsets")


def test_the_bootstrap_result_default_and_metric_specific_statements():
    from tdaeval.metrics import MislabelDetection
    from tdaeval.metrics.heuristics import TopKCardinality

    class Toy(Metric):
        name, n_bootstrap, seed = "toy", 100, 0

        def build_truth(self, task, store, **kwargs):
            return None

        def compute(self, scores, truth):
            return self._bootstrap_result(scores, {"kind": "toy"})

    assert Toy().compute(torch.arange(5.0), None).provenance["ci_covers"] == "test points resampled; ground truth fixed"
    flipped = torch.zeros(40, dtype=torch.bool)
    flipped[:6] = True
    mislabel = MislabelDetection(n_bootstrap=100).from_self_influence(torch.linspace(1, 0, 40), flipped)
    assert mislabel.provenance["ci_covers"].startswith("flipped training points resampled")
    cardinality = TopKCardinality(k=3, n_bootstrap=100).compute(torch.randn(6, 20, generator=torch.Generator().manual_seed(0)))
    assert "test points resampled" in cardinality.provenance["ci_covers"]
    assert cardinality.to_dict()["provenance"]["ci_covers"] == cardinality.provenance["ci_covers"]  # travels with the JSON


def _functions_building_metric_results():
    """``(file, function, source)`` of every function in the package that calls ``MetricResult(...)`` itself."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            calls = [c for c in ast.walk(node) if isinstance(c, ast.Call)
                     and (getattr(c.func, "id", None) == "MetricResult" or getattr(c.func, "attr", None) == "MetricResult")]
            if calls:
                out.append((path.relative_to(PACKAGE).as_posix(), node.name, ast.unparse(node)))
    return out


def test_every_metric_result_built_in_the_package_states_what_its_ci_covers():
    """A metric either goes through ``Metric._bootstrap_result`` (which sets the default) or sets ``ci_covers`` itself."""
    builders = _functions_building_metric_results()
    assert ("metrics/base.py", "_bootstrap_result") in {(f, n) for f, n, _ in builders}
    assert ("metrics/lds.py", "compute") not in {(f, n) for f, n, _ in builders}  # thin metrics: through _bootstrap_result
    for file, name, source in builders:
        if (file, name) == ("metrics/base.py", "from_dict"):  # reads a stored document back as written
            continue
        assert "ci_covers" in source, f"{file}:{name} builds a MetricResult without provenance['ci_covers']"
