"""One tester for every registered metric (issue #15).

For each name in ``metric_names()`` a case below builds the metric, small
synthetic scores and its typed ground truth directly from tensors (no
retraining, except the removal metrics, whose gold standard *is* retraining:
a tiny logistic regression), and an INDEPENDENT reference for the
per-example values written here with numpy / scipy / scikit-learn. Every
metric is checked for: its registration, ``get_params`` round-tripping into
the constructor, determinism, direction and bounds, the per-example
reference, and (where chance is defined) that random scores land near it.
A metric of the package without a case fails ``test_every_metric_has_a_case``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from tdaeval.datasets import Data
from tdaeval.groundtruth import (
    NO_TRUTH,
    EntailmentTruth,
    FurtherTrainingGroundTruth,
    FurtherTrainingSpec,
    GroundTruth,
    LabelTruth,
    LDSGroundTruth,
    LDSSpec,
    LOOGroundTruth,
    LOOSpec,
    MaskTruth,
    ModelTruth,
)
from tdaeval.metrics import get_metric, metric_class, metric_names
from tdaeval.scores import Attribution


@dataclass
class Case:
    """A metric with scores, truth, attributor, the reference per-example values and the chance level."""

    metric: Any
    scores: Any
    truth: GroundTruth
    reference: np.ndarray
    attributor: Any = None
    chance: float | None = None  # expected value for random scores; None: not defined
    tolerance: float = 0.0  # |value − chance| allowed


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(stats.spearmanr(x, y).statistic)


# ----------------------------------------------------------------------------- retrained gold standards, given


def _lds() -> Case:
    r = _rng(1)
    n_subsets, n_seeds, n_test, n_train = 40, 2, 30, 20
    masks = r.random((n_subsets, n_train)) < 0.5
    outputs = r.normal(size=(n_subsets, n_seeds, n_test))
    scores = r.normal(size=(n_test, n_train))
    truth = LDSGroundTruth(torch.tensor(masks), torch.tensor(outputs, dtype=torch.float32), LDSSpec(n_subsets=n_subsets, n_seeds=n_seeds),
                           True, {"kind": "lds"})
    measured = outputs.astype(np.float32).mean(axis=1)  # [M, n_test]
    predictions = masks.astype(float) @ scores.T  # [M, n_test]
    reference = np.array([_spearman(predictions[:, t], measured[:, t]) for t in range(n_test)])
    metric = get_metric("lds", n_subsets=n_subsets, n_seeds=n_seeds, n_bootstrap=100)
    return Case(metric, torch.tensor(scores), truth, reference, chance=0.0, tolerance=0.15)


def _loo(name: str, correlation: Callable) -> Callable[[], Case]:
    def build() -> Case:
        r = _rng(2)
        n_test, n_train, n_removed, n_seeds = 30, 25, 15, 2
        removed = np.sort(r.permutation(n_train)[:n_removed])
        full = r.normal(size=(n_seeds, n_test))
        without = r.normal(size=(n_removed, n_seeds, n_test))
        scores = r.normal(size=(n_test, n_train))
        truth = LOOGroundTruth(torch.tensor(removed), torch.tensor(full), torch.tensor(without), LOOSpec(n_removed=n_removed, n_seeds=n_seeds),
                               True, {"kind": "loo"})
        harm = -(without - full[None]).mean(axis=1)  # [k, n_test]; higher is better: removal hurting = positive
        reference = np.array([correlation(scores[t, removed], harm[:, t]) for t in range(n_test)])
        metric = get_metric(name, n_removed=n_removed, n_seeds=n_seeds, n_bootstrap=100)
        return Case(metric, torch.tensor(scores), truth, reference, chance=0.0, tolerance=0.15)

    return build


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))


def _further(name: str, correlation: Callable) -> Callable[[], Case]:
    def build() -> Case:
        r = _rng(3)
        n_test, n_train, k, n_seeds, epochs = 30, 25, 12, 2, 3
        left_out = np.sort(r.permutation(n_train)[:k])
        full = r.normal(size=(n_seeds, epochs + 1, n_test))
        without = r.normal(size=(k, n_seeds, epochs + 1, n_test))
        scores = r.normal(size=(n_test, n_train))
        spec = FurtherTrainingSpec(n_left_out=k, n_seeds=n_seeds, epochs=epochs)
        truth = FurtherTrainingGroundTruth(torch.tensor(left_out), torch.tensor(full), torch.tensor(without), spec, True, {"kind": "further"})
        a = (without - full[None]).mean(axis=1)  # [k, E+1, n_test]
        harm = -(a - a.mean(axis=0, keepdims=True))  # centred over the left-out points
        per_epoch = np.array([[correlation(scores[t, left_out], harm[:, e, t]) for t in range(n_test)] for e in range(epochs + 1)])
        reference = per_epoch[int(np.argmax(per_epoch.mean(axis=1)))]  # the best epoch of the mean curve
        metric = get_metric(name, n_left_out=k, n_seeds=n_seeds, epochs=epochs, n_bootstrap=100)
        return Case(metric, torch.tensor(scores), truth, reference, chance=None)  # the max over epochs is biased up

    return build


# ----------------------------------------------------------------------------- truths built from tensors


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _labels(name: str) -> Callable[[], Case]:
    def build() -> Case:
        r = _rng(4)
        n_test, n_train, n_classes, s = 60, 50, 4, 5
        train_labels, test_labels = r.integers(0, n_classes, n_train), r.integers(0, n_classes, n_test)
        scores = r.normal(size=(n_test, n_train))
        reference = (train_labels[_top(scores, s)] == test_labels[:, None]).mean(axis=1)
        chance = float(np.mean([(train_labels == y).mean() for y in test_labels]))
        metric = get_metric(name, top_s=s, n_bootstrap=100, **({"label": "true"} if name == "class_detection" else {}))
        truth = LabelTruth(torch.tensor(train_labels), torch.tensor(test_labels))
        return Case(metric, torch.tensor(scores), truth, reference, chance=chance, tolerance=0.1)

    return build


def _retrieval(name: str) -> Callable[[], Case]:
    def build() -> Case:
        r = _rng(5)
        n_test, n_train = 40, 60
        mask = r.random(n_train) < 0.25
        scores = r.normal(size=(n_test, n_train))
        reference = np.array([average_precision_score(mask, row) for row in scores])
        metric = get_metric(name, n_bootstrap=100)
        return Case(metric, torch.tensor(scores), MaskTruth(torch.tensor(mask)), reference, chance=float(mask.mean()), tolerance=0.1)

    return build


class _SelfInfluence:
    """An attributor stand-in: only ``self_influence`` is read by mislabel detection."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def self_influence(self, chunk_size: int = 256) -> torch.Tensor:
        return torch.tensor(self.values)


def _mislabel() -> Case:
    r = _rng(6)
    n_train = 200
    flipped = r.random(n_train) < 0.2
    influence = np.round(r.normal(size=n_train), 1)  # ties on purpose
    clean = influence[~flipped]
    reference = np.array([(np.sum(clean < v) + 0.5 * np.sum(clean == v)) / clean.size for v in influence[flipped]])
    assert reference.mean() == pytest.approx(roc_auc_score(flipped, influence))  # per flipped point: its share of the AUC
    metric = get_metric("mislabel_detection", n_bootstrap=100)
    return Case(metric, torch.zeros(3, n_train), MaskTruth(torch.tensor(flipped)), reference, attributor=_SelfInfluence(influence),
                chance=0.5, tolerance=0.1)


def _similarity(model: torch.nn.Module, test: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(test) @ model(train).T


class _OutputSimilarity:
    """An attributor stand-in with the fit/attribute protocol model randomization re-fits."""

    def __init__(self, model: torch.nn.Module, train: torch.Tensor) -> None:
        self.model, self.train_ = model, train

    def fit(self, task, model, train, checkpoints=None):
        self.model, self.train_ = model, train
        return self

    def attribute(self, test: Data) -> torch.Tensor:
        return _similarity(self.model, test.inputs, self.train_)


def _model_randomization() -> Case:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    reference_model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    r = _rng(7)
    train, test = torch.tensor(r.normal(size=(30, 6)), dtype=torch.float32), torch.tensor(r.normal(size=(40, 6)), dtype=torch.float32)
    scores = r.normal(size=(40, 30))
    task = SimpleNamespace(test_data=Data(test, torch.zeros(40, dtype=torch.long)))
    # independent mode replaces every layer: the randomised model is the reference model
    randomized = _similarity(reference_model, test, train).double().numpy()
    reference = np.array([_spearman(scores[t], randomized[t]) for t in range(40)])
    metric = get_metric("model_randomization", mode="independent", n_bootstrap=100)
    return Case(metric, torch.tensor(scores), ModelTruth(task, model, reference_model), reference,
                attributor=_OutputSimilarity(model, train), chance=0.0, tolerance=0.15)


def _seed_attribution(r: np.random.Generator, n_seeds: int = 5, n_test: int = 30, n_train: int = 40) -> tuple[np.ndarray, Attribution]:
    samples = r.normal(size=(n_seeds, n_test, n_train))
    mean = torch.tensor(samples.mean(axis=0))
    # test="snr" and dummy p-values: the t-test metric must compute its own p-values
    attribution = Attribution(mean, torch.tensor(samples.std(axis=0, ddof=1)), n_seeds, torch.ones_like(mean), test="snr",
                              samples=torch.tensor(samples))
    return samples, attribution


def _seed_reliability() -> Case:
    samples, attribution = _seed_attribution(_rng(8))
    p_values = stats.ttest_1samp(samples, 0.0, axis=0).pvalue  # [n_test, n_train]
    reference = (p_values < 0.05).mean(axis=1)
    metric = get_metric("seed_reliability", alpha=0.05, test="t", n_bootstrap=100)
    return Case(metric, attribution, NO_TRUTH, reference, chance=0.05, tolerance=0.03)


def _seed_rank_stability() -> Case:
    samples, attribution = _seed_attribution(_rng(9))
    pairs = list(itertools.combinations(range(samples.shape[0]), 2))
    reference = np.array([np.mean([_spearman(samples[a, t], samples[b, t]) for a, b in pairs]) for t in range(samples.shape[1])])
    metric = get_metric("seed_rank_stability", k=5, n_bootstrap=100)
    return Case(metric, attribution, NO_TRUTH, reference, chance=0.0, tolerance=0.1)


def _top_k_cardinality() -> Case:
    r = _rng(10)
    scores, k = r.normal(size=(20, 50)), 4
    top = _top(scores, k)
    counts = {i: int((top == i).sum()) for i in np.unique(top)}
    reference = np.array([sum(1.0 / counts[i] for i in row) / k for row in top])
    assert reference.mean() == pytest.approx(np.unique(top).size / top.size)
    return Case(get_metric("top_k_cardinality", k=k, n_bootstrap=100), torch.tensor(scores), NO_TRUTH, reference, chance=None)


def _tail_patch() -> Case:
    from tdaeval.groundtruth.tail_patch import OneStepEffectSpec, OneStepEffectTruth

    r = _rng(12)
    n_test, n_train, k = 40, 30, 5
    effects, scores = r.normal(size=(n_test, n_train)), r.normal(size=(n_test, n_train))
    reference = np.take_along_axis(effects, _top(scores, k), axis=1).mean(axis=1)  # tie-free: the top-k mean of Δ
    truth = OneStepEffectTruth(torch.tensor(effects), True, OneStepEffectSpec(eta=0.01))
    metric = get_metric("tail_patch", k=k, eta=0.01, n_bootstrap=100)
    return Case(metric, torch.tensor(scores), truth, reference, chance=float(effects.mean()), tolerance=0.2)


def _fact_tracing(name: str) -> Callable[[], Case]:
    def build() -> Case:
        from scipy.special import comb

        r = _rng(12)
        n_test, n_train, m, k = 60, 120, 2, 10
        entailment = np.zeros((n_test, n_train), dtype=bool)
        for q in range(n_test):
            entailment[q, r.choice(n_train, m, replace=False)] = True
        scores = r.normal(size=(n_test, n_train))
        ranked = entailment[np.arange(n_test)[:, None], np.argsort(-scores, axis=1, kind="stable")]  # relevance in rank order
        hits = ranked[:, :k].sum(axis=1)
        reference = {"mrr": 1.0 / (np.argmax(ranked, axis=1) + 1), "hit_at_k": (hits > 0).astype(float),
                     "recall_at_k": hits / m, "precision_at_k": hits / k}[name]
        chance = {"mrr": sum(comb(n_train - rank, m - 1) / comb(n_train, m) / rank for rank in range(1, n_train - m + 2)),
                  "hit_at_k": 1 - comb(n_train - m, k) / comb(n_train, k), "recall_at_k": k / n_train, "precision_at_k": m / n_train}[name]
        tolerance = {"mrr": 0.05, "hit_at_k": 0.15, "recall_at_k": 0.1, "precision_at_k": 0.02}[name]
        metric = get_metric(name, k=k, n_bootstrap=100)
        return Case(metric, torch.tensor(scores), EntailmentTruth(torch.tensor(entailment)), reference, chance=float(chance),
                    tolerance=tolerance)

    return build


def _roc_auc() -> Case:
    r = _rng(13)
    n_test, n_train = 60, 80
    entailment = r.random((n_test, n_train)) < 0.05
    entailment[np.arange(n_test), r.integers(0, n_train, n_test)] = True  # every query has a positive
    scores = r.integers(0, 6, size=(n_test, n_train)).astype(float)  # many ties: sklearn counts a tied pair 1/2
    reference = np.array([roc_auc_score(entailment[q], scores[q]) for q in range(n_test)])
    metric = get_metric("roc_auc", n_bootstrap=100)
    return Case(metric, torch.tensor(scores), EntailmentTruth(torch.tensor(entailment)), reference, chance=0.5, tolerance=0.05)


def _contradiction_rate() -> Case:
    r = _rng(14)
    n_test, n_train, k = 60, 120, 10
    names = ("other", "proponent", "same_subject", "same_object", "same_relation", "contradiction")
    codes = r.choice(len(names), size=(n_test, n_train), p=[0.6, 0.03, 0.1, 0.1, 0.07, 0.1])
    scores = r.normal(size=(n_test, n_train))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    reference = np.array([sum(codes[q, i] == 5 for i in top[q]) / k for q in range(n_test)])  # a literal loop over the top-k
    truth = EntailmentTruth(torch.tensor(codes == 1), torch.tensor(codes, dtype=torch.int8), names)
    metric = get_metric("contradiction_rate_at_k", k=k, n_bootstrap=100)
    return Case(metric, torch.tensor(scores), truth, reference, chance=float((codes == 5).mean()), tolerance=0.03)


def _set_metric(name: str) -> Callable[[], Case]:
    def build() -> Case:
        from sklearn.metrics import precision_recall_fscore_support

        r = _rng(13)
        n_test, n_train, m = 60, 120, 3
        entailment = np.zeros((n_test, n_train), dtype=bool)
        for q in range(n_test):
            entailment[q, r.choice(n_train, m, replace=False)] = True
        scores = r.normal(size=(n_test, n_train))
        column = {"set_precision": 0, "set_recall": 1, "set_f1": 2}[name]
        reference = []
        for q in range(n_test):  # R-precision: the literal top-m set, scored by scikit-learn
            chosen = np.zeros(n_train, dtype=bool)
            chosen[np.argsort(-scores[q], kind="stable")[:m]] = True
            reference.append(precision_recall_fscore_support(entailment[q], chosen, average="binary", zero_division=0.0)[column])
        metric = get_metric(name, threshold="rank", n_bootstrap=100)
        return Case(metric, torch.tensor(scores), EntailmentTruth(torch.tensor(entailment)), np.array(reference),
                    chance=m / n_train, tolerance=0.02)

    return build


# ----------------------------------------------------------------------------- removal: the gold standard is retraining


@pytest.fixture(scope="module")
def removal_setting(tmp_path_factory):
    from tdaeval.groundtruth import ArtifactStore
    from tdaeval.task import TrainRecipe
    from tdaeval.tasks import DigitsTask

    task = DigitsTask(model="logreg", n_train=60, n_test=8, recipe=TrainRecipe(epochs=10, batch_size=60, lr=1.0))
    return task, ArtifactStore(tmp_path_factory.mktemp("removal-store"))


def _measure_without(task, removed: np.ndarray, seed: int) -> torch.Tensor:
    """The task's measurement (all test points) of a model trained from scratch without ``removed``."""
    from tdaeval.training import train_model

    keep = np.setdiff1d(np.arange(task.n_train), removed)
    model = train_model(task, task.build_model(seed), torch.tensor(keep), seed).model
    return task.measure(model).double()


def _removal(name: str) -> Callable[[Any], Case]:
    grid = (3, 6)

    def build(setting) -> Case:
        task, store = setting
        metric = get_metric(name, k_grid=grid, n_seeds=1, n_test_points=None, n_bootstrap=100)
        truth = metric.build_truth(task, store)
        scores = _rng(11).normal(size=(task.n_test, task.n_train))
        (seed,) = truth.seeds
        full = _measure_without(task, np.array([], dtype=int), seed)
        top = {k: [_measure_without(task, _top(scores[z : z + 1], k)[0], seed)[z] for z in range(task.n_test)] for k in grid}
        if name == "topk_removal":
            reference = np.array([float(full[z] - top[grid[-1]][z]) for z in range(task.n_test)])  # margin: higher is better
        else:
            kept = [z for z in range(task.n_test) if full[z] > 0]
            assert kept, "the tiny task classifies no test point correctly: train it longer"
            flips = np.array([[top[k][z] <= 0 for k in grid] for z in kept])  # one seed: flipped = not correct
            flips = np.maximum.accumulate(flips, axis=1)
            if name == "flip_test":
                reference = flips[:, -1].astype(float)
            else:
                censored = grid[-1] + (grid[-1] - grid[-2])
                reference = np.array([grid[int(np.argmax(row))] if row.any() else censored for row in flips], dtype=float)
        return Case(metric, torch.tensor(scores), truth, reference, chance=None)

    return build


CASES: dict[str, Callable[..., Case]] = {
    "lds": _lds,
    "loo": _loo("loo", _spearman),
    "loo_pearson": _loo("loo_pearson", lambda x, y: float(stats.pearsonr(x, y).statistic)),
    "further_training": _further("further_training", _cosine),
    "further_training_spearman": _further("further_training_spearman", _spearman),
    "class_detection": _labels("class_detection"),
    "subclass_detection": _labels("subclass_detection"),
    "shortcut_detection": _retrieval("shortcut_detection"),
    "mixed_datasets": _retrieval("mixed_datasets"),
    "mislabel_detection": _mislabel,
    "model_randomization": _model_randomization,
    "seed_reliability": _seed_reliability,
    "seed_rank_stability": _seed_rank_stability,
    "top_k_cardinality": _top_k_cardinality,
    "tail_patch": _tail_patch,
    "mrr": _fact_tracing("mrr"),
    "hit_at_k": _fact_tracing("hit_at_k"),
    "recall_at_k": _fact_tracing("recall_at_k"),
    "precision_at_k": _fact_tracing("precision_at_k"),
    "roc_auc": _roc_auc,
    "contradiction_rate_at_k": _contradiction_rate,
    "set_precision": _set_metric("set_precision"),
    "set_recall": _set_metric("set_recall"),
    "set_f1": _set_metric("set_f1"),
    "topk_removal": _removal("topk_removal"),
    "flip_test": _removal("flip_test"),
    "brittleness": _removal("brittleness"),
}
REMOVAL = {"topk_removal", "flip_test", "brittleness"}
PACKAGE_METRICS = [name for name in metric_names() if metric_class(name).__module__.startswith("tdaeval.")]


_BUILT: dict[str, Case] = {}  # removal cases retrain: build each once per session


def _case(name: str, request) -> Case:
    if name not in CASES:
        pytest.fail(f"Metric {name!r} has no case in tests/metrics/test_common.py: add one with an independent reference.")
    if name not in REMOVAL:
        return CASES[name]()
    if name not in _BUILT:
        _BUILT[name] = CASES[name](request.getfixturevalue("removal_setting"))
    return _BUILT[name]


def _compute(case: Case):
    return case.metric.compute(case.scores, case.truth, attributor=case.attributor)


def test_every_metric_has_a_case():
    missing = sorted(set(PACKAGE_METRICS) - set(CASES))
    assert not missing, f"metrics without a reference case in test_common.py: {missing}"
    assert set(CASES) <= set(metric_names())


@pytest.mark.parametrize("name", PACKAGE_METRICS)
def test_registered_under_its_name_and_params_round_trip(name, request):
    case = _case(name, request)
    cls = type(case.metric)
    assert cls.name == name and metric_class(name) is cls
    params = case.metric.get_params()
    rebuilt = cls(**params)
    assert rebuilt.get_params() == params
    assert {"n_bootstrap", "seed"} <= set(params)


@pytest.mark.parametrize("name", PACKAGE_METRICS)
def test_per_example_values_match_an_independent_reference(name, request):
    case = _case(name, request)
    result = _compute(case)
    assert result.metric == name
    tolerance = 1e-4 if name in REMOVAL else 1e-6  # retrained models: batched and one-at-a-time training agree to float32 round-off
    np.testing.assert_allclose(result.per_example.numpy(), case.reference, rtol=tolerance, atol=tolerance)
    if name != "top_k_cardinality":  # its value is the exact ratio, equal to the mean up to rounding
        assert result.value == pytest.approx(float(np.nanmean(case.reference)), abs=tolerance)
    else:
        assert result.value == pytest.approx(float(np.mean(case.reference)), abs=1e-9)


@pytest.mark.parametrize("name", PACKAGE_METRICS)
def test_deterministic_direction_and_bounds(name, request):
    case = _case(name, request)
    first, second = _compute(case), _compute(case)
    assert first.value == second.value and first.ci == second.ci
    torch.testing.assert_close(first.per_example, second.per_example, rtol=0, atol=0, equal_nan=True)
    metric = case.metric
    assert first.higher_is_better == metric.higher_is_better and first.bounds == metric.bounds
    assert first.per_example.dtype == torch.float64
    assert first.ci[0] <= first.value <= first.ci[1] + 1e-12
    if metric.bounds is not None:
        low, high = metric.bounds
        finite = first.per_example[torch.isfinite(first.per_example)]
        assert bool(((finite >= low - 1e-12) & (finite <= high + 1e-12)).all()) and low <= first.value <= high
    assert first.provenance["n_bootstrap"] == metric.n_bootstrap and "ci_covers" in first.provenance


@pytest.mark.parametrize("name", [name for name in PACKAGE_METRICS if name not in REMOVAL])
def test_random_scores_score_near_chance(name, request):
    case = _case(name, request)
    if case.chance is None:
        pytest.skip(f"{name}: chance is not defined")
    assert abs(_compute(case).value - case.chance) <= case.tolerance


@pytest.mark.parametrize("name", PACKAGE_METRICS)
def test_a_truth_of_the_wrong_type_is_a_clear_error(name, request):
    from tdaeval.errors import ConfigError

    case = _case(name, request)
    wrong = NO_TRUTH if case.metric.truth_type is not type(NO_TRUTH) else MaskTruth(torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ConfigError, match=rf"Metric '{name}' expects its truth as a {case.metric.truth_type.__name__}"):
        case.metric.compute(case.scores, wrong, attributor=case.attributor)
