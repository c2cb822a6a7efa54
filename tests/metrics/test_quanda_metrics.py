"""Where Quanda 0.5.0's metric is correct, ours gives the same value on the same explanations (quanda extra)."""

from types import SimpleNamespace

import pytest
import torch

import tdaeval.functional as F
from tdaeval.groundtruth import LabelTruth, MaskTruth, ModelTruth
from tdaeval.metrics import (
    ClassDetection,
    MislabelDetection,
    MixedDatasets,
    ModelRandomization,
    ShortcutDetection,
    SubclassDetection,
    TopKCardinality,
)

quanda_downstream = pytest.importorskip("quanda.metrics.downstream_eval")
quanda_heuristics = pytest.importorskip("quanda.metrics.heuristics")
quanda_functions = pytest.importorskip("quanda.utils.functions")


@pytest.fixture
def setting(rng):
    inputs, labels = torch.randn(60, 8, generator=rng), torch.randint(0, 4, (60,), generator=rng)
    explanations, test_labels = torch.randn(12, 60, generator=rng), torch.randint(0, 4, (12,), generator=rng)
    return torch.nn.Linear(8, 4), torch.utils.data.TensorDataset(inputs, labels), labels, explanations, test_labels


def test_class_detection_equals_quanda(setting):
    model, dataset, labels, explanations, test_labels = setting
    theirs = quanda_downstream.ClassDetectionMetric(model, dataset, s=5)
    theirs.update(explanations, test_labels)
    ours = ClassDetection(label="true", top_s=5).compute(explanations, LabelTruth(labels, test_labels))
    assert ours.value == pytest.approx(theirs.compute()["score"], abs=1e-6)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_cardinality_equals_quanda(setting, k):
    model, dataset, _, explanations, _ = setting
    theirs = quanda_heuristics.TopKCardinalityMetric(model, dataset, top_k=k)
    theirs.update(explanations)
    assert TopKCardinality(k=k, n_bootstrap=20).compute(explanations).value == pytest.approx(theirs.compute()["score"], abs=1e-6)


# --- subclass, shortcut and mixed-dataset detection -------------------------------------------------


@pytest.mark.parametrize("s", [1, 5])
def test_subclass_detection_equals_quanda(setting, s):
    """Top-s same-subclass fraction, no filtering on either side (Quanda's default filter_by_prediction=False)."""
    model, _, subclasses, explanations, test_subclasses = setting
    superclass_data = torch.utils.data.TensorDataset(torch.zeros(60, 8), subclasses % 2)
    theirs = quanda_downstream.SubclassDetectionMetric(model, superclass_data, train_subclass_labels=subclasses, s=s)
    theirs.update(explanations, test_targets=test_subclasses)
    truth = LabelTruth(subclasses, test_subclasses)
    ours = SubclassDetection(top_s=s, n_bootstrap=20).compute(explanations, truth)
    assert ours.value == pytest.approx(theirs.compute()["score"], abs=1e-6)
    assert torch.allclose(ours.per_example, theirs._per_sample_scores().double(), atol=1e-6)


def _planted(labels, rng, n=12):
    """``[60]`` bool mask of ``n`` seeded training points, and the labels with those points set to class 0."""
    mask = torch.zeros(labels.numel(), dtype=torch.bool)
    mask[torch.randperm(labels.numel(), generator=rng)[:n]] = True
    return mask, torch.where(mask, torch.zeros_like(labels), labels)


def _tied(explanations, ties):
    """The explanations, or rounded to integers so that every row has many ties (both AUPRCs group equal scores)."""
    return explanations.round() if ties else explanations


@pytest.mark.parametrize("ties", [False, True])
def test_shortcut_detection_equals_quanda_unfiltered(setting, rng, ties):
    """Mean per-row AUPRC for the triggered points: sklearn's average precision equals torcheval's binary_auprc."""
    model, _, labels, explanations, _ = setting
    explanations = _tied(explanations, ties)
    shortcut, labels = _planted(labels, rng)
    data = torch.utils.data.TensorDataset(torch.zeros(60, 8), labels)
    theirs = quanda_downstream.ShortcutDetectionMetric(model, data, shortcut_indices=shortcut.nonzero().flatten().tolist(),
                                                       shortcut_cls=0, filter_by_non_shortcut=False, filter_by_shortcut_pred=False)
    theirs.update(explanations)
    ours = ShortcutDetection(n_bootstrap=20).compute(explanations, MaskTruth(shortcut))
    assert ours.value == pytest.approx(theirs.compute()["score"], abs=1e-6)
    assert torch.allclose(ours.per_example, theirs._per_sample_scores().double(), atol=1e-6)


def test_shortcut_detection_differs_from_quanda_only_by_its_prediction_filter(setting, rng):
    """Quanda's default keeps only test points predicted as the shortcut class; ours (with_shortcut's test set) keeps all.

    On purpose: ours asks whether the attribution of the shortcut prediction finds the
    trigger, for every triggered test point. Restricted to the rows the model predicts
    as the shortcut class, ours equals Quanda's default.
    """
    _, _, labels, explanations, _ = setting
    shortcut, labels = _planted(labels, rng)
    data = torch.utils.data.TensorDataset(torch.zeros(60, 8), labels)
    model = torch.nn.Linear(8, 4)
    with torch.no_grad():  # seeded weights: which rows are predicted as the shortcut class must not depend on the global RNG
        model.weight.copy_(torch.randn(4, 8, generator=rng))
        model.bias.zero_()
    test_inputs = torch.randn(12, 8, generator=rng)
    original_labels = torch.randint(1, 4, (12,), generator=rng)  # with_shortcut's test set: the other classes' images
    predicted = model(test_inputs).argmax(-1) == 0
    assert 0 < int(predicted.sum()) < 12
    theirs = quanda_downstream.ShortcutDetectionMetric(model, data, shortcut_indices=shortcut.nonzero().flatten().tolist(),
                                                       shortcut_cls=0)
    theirs.update(explanations, test_data=test_inputs, test_labels=original_labels)
    metric = ShortcutDetection(n_bootstrap=20)
    truth = MaskTruth(shortcut)
    assert metric.compute(explanations[predicted], truth).value == pytest.approx(theirs.compute()["score"], abs=1e-6)
    assert metric.compute(explanations, truth).value != pytest.approx(theirs.compute()["score"], abs=1e-3)


@pytest.mark.parametrize("ties", [False, True])
def test_mixed_datasets_equals_quanda(setting, rng, ties):
    """Mean per-row AUPRC for the foreign points, all test rows (Quanda's default filter_by_prediction=False)."""
    model, _, labels, explanations, _ = setting
    explanations = _tied(explanations, ties)
    foreign, labels = _planted(labels, rng)
    data = torch.utils.data.TensorDataset(torch.zeros(60, 8), labels)
    theirs = quanda_heuristics.MixedDatasetsMetric(model, data, adversarial_indices=foreign.long())
    theirs.update(explanations)
    ours = MixedDatasets(n_bootstrap=20).compute(explanations, MaskTruth(foreign))
    assert ours.value == pytest.approx(theirs.compute()["score"], abs=1e-6)
    assert torch.allclose(ours.per_example, theirs._per_sample_scores().double(), atol=1e-6)


# --- mislabel detection -----------------------------------------------------------------------------


def _quanda_mislabeling(self_influence, flipped):
    data = torch.utils.data.TensorDataset(torch.zeros(flipped.numel(), 8), torch.zeros(flipped.numel(), dtype=torch.long))
    # mislabeling_indices must be Python ints: Quanda tests `elem.item() in set(mislabeling_indices)`.
    metric = quanda_downstream.MislabelingDetectionMetric(torch.nn.Linear(8, 4), data, mislabeling_indices=flipped.nonzero().flatten().tolist(),
                                                          precomputed_self_influence=self_influence)
    return metric.compute()


@pytest.fixture
def flipped(rng):
    mask = torch.zeros(100, dtype=torch.bool)
    mask[torch.randperm(100, generator=rng)[:10]] = True
    return mask


def test_mislabel_detection_matches_quanda_when_well_separated(rng, flipped):
    """Gaps of 1 >> 1e-4·N: same detection curve; Quanda's score is our curve area less a trapezoid end correction, and gives our AUC.

    Quanda's score is trapezoid(curve)/N = (Σ_j c_j − (c_1 + c_N)/2)/N with c_N = 1; ours is
    mean(curve) = Σ_j c_j / N (a Riemann sum), so ours − Quanda's = (c_1 + 1)/(2N). With P flipped
    and Q = N − P clean points and no ties, mean(curve) = (Q·AUC + (P + 1)/2)/N, so Quanda's
    number also determines our headline ROC-AUC exactly.
    """
    n, p = flipped.numel(), int(flipped.sum())
    self_influence = torch.randperm(n, generator=rng).double()
    theirs = _quanda_mislabeling(self_influence, flipped)
    ours = MislabelDetection(n_bootstrap=20).from_self_influence(self_influence, flipped)
    curve = F.detection_curve(self_influence, flipped)
    assert torch.allclose(curve, theirs["curve"].double(), atol=1e-6)
    assert ours.provenance["detection_at_10_percent"] == pytest.approx(float(theirs["curve"][n // 10 - 1]), abs=1e-6)
    c1 = float(theirs["curve"][0])
    assert ours.provenance["detection_curve_area"] - theirs["score"] == pytest.approx((c1 + 1) / (2 * n), abs=1e-6)
    assert ours.provenance["quanda_detection_score"] == pytest.approx(theirs["score"], abs=1e-6)  # Quanda's own number
    auc_from_quanda = (n * (theirs["score"] + (c1 + 1) / (2 * n)) - (p + 1) / 2) / (n - p)
    assert ours.value == pytest.approx(auc_from_quanda, abs=1e-6)


def test_mislabel_detection_differs_from_quanda_on_tiny_values(rng, flipped):
    """Values far below 1e-4·N: Quanda's arange(N)·1e-4 offset ranks by index, so permuting the training set moves its score; ours does not move."""
    self_influence = 1e-6 * torch.rand(100, generator=rng, dtype=torch.float64)
    perm = torch.randperm(100, generator=rng)
    metric = MislabelDetection(n_bootstrap=20)
    ours, ours_permuted = metric.from_self_influence(self_influence, flipped), metric.from_self_influence(self_influence[perm], flipped[perm])
    assert ours.value == pytest.approx(ours_permuted.value, abs=1e-12)
    assert ours.provenance["detection_curve_area"] == pytest.approx(ours_permuted.provenance["detection_curve_area"], abs=1e-12)
    theirs, theirs_permuted = _quanda_mislabeling(self_influence, flipped), _quanda_mislabeling(self_influence[perm], flipped[perm])
    assert abs(theirs["score"] - theirs_permuted["score"]) > 0.05
    # The offset dominates: Quanda's ranking is the reversed index order, whatever the self-influence.
    assert torch.equal(theirs["success_arr"], flipped.flip(0))


# --- model randomization ----------------------------------------------------------------------------


def _output_similarity(model, test_inputs, train_inputs):
    """A deterministic stand-in attributor: dot products of the model's outputs (changes when the weights do)."""
    with torch.no_grad():
        return model(test_inputs) @ model(train_inputs).T


class _QuandaExplainer:
    """Quanda explainer protocol (constructor and explain) around _output_similarity."""

    def __init__(self, model, checkpoints, train_dataset, **kwargs):
        self.model, self.train_inputs = model, train_dataset.tensors[0]

    def explain(self, test_data, targets=None):
        return _output_similarity(self.model, test_data, self.train_inputs)


class _OurAttributor:
    """The fit/attribute protocol that ModelRandomization.compute re-fits on the randomised model."""

    def __init__(self, model, train_inputs):
        self.model, self.train_ = model, train_inputs

    def fit(self, task, model, train, checkpoints=None):
        self.model, self.train_ = model, train
        return self

    def attribute(self, test_inputs):
        return _output_similarity(self.model, test_inputs, self.train_)


@pytest.fixture
def randomization(setting, rng, tmp_path):
    """A trained two-layer model, Quanda's metric on it, and the explanations of the trained model."""
    _, dataset, _, _, _ = setting
    with torch.random.fork_rng():  # Quanda re-seeds the global RNG (torch.manual_seed(seed)) when it randomises
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
        torch.save(model.state_dict(), tmp_path / "model.pth")
        theirs = quanda_heuristics.ModelRandomizationMetric(model, model_id="m", cache_dir=str(tmp_path / "cache"), train_dataset=dataset,
                                                            checkpoints=str(tmp_path / "model.pth"), explainer_cls=_QuandaExplainer, seed=42)
    test_inputs = torch.randn(12, 8, generator=rng)
    return model, dataset.tensors[0], test_inputs, theirs, _output_similarity(model, test_inputs, dataset.tensors[0])


def test_model_randomization_equals_quanda_on_its_random_model(randomization):
    """Given Quanda's re-initialised weights as our reference model (independent mode replaces every layer), the Spearman means agree.

    Without it no exact comparison exists: Quanda re-initialises with torch.manual_seed(seed) and
    reset_parameters, ours copies task.build_model(seed)'s weights.
    """
    model, train_inputs, test_inputs, theirs, explanations = randomization
    theirs.update(explanations, test_data=test_inputs)
    truth = ModelTruth(SimpleNamespace(test_data=test_inputs), model, theirs.rand_model)
    ours = ModelRandomization(mode="independent", n_bootstrap=20).compute(explanations, truth, attributor=_OurAttributor(model, train_inputs))
    assert ours.value == pytest.approx(theirs.compute()["score"], abs=1e-6)
    assert torch.allclose(ours.per_example, theirs._per_sample_scores().double(), atol=1e-6)
    assert ours.value < 0.9  # the weights did change, so the comparison is not 1 == 1


def test_model_randomization_spearman_equals_quanda_with_ties(rng):
    """The per-row Spearman with tied scores: average ranks on both sides (torchmetrics' eps=1e-6 in the denominator is negligible)."""
    x, y = torch.randint(0, 5, (12, 60), generator=rng).double(), torch.randint(0, 5, (12, 60), generator=rng).double()
    theirs = quanda_functions.correlation_functions["spearman"](x, y)
    assert torch.allclose(F.spearman(x, y), theirs.double(), atol=1e-6)


def test_model_randomization_differs_from_quanda_on_a_constant_row(rng):
    """A constant score row has no Spearman: ours is NaN and left out of the mean, torchmetrics gives 0 (cov 0 over eps) and averages it in."""
    x, y = torch.randn(12, 60, generator=rng).double(), torch.randn(12, 60, generator=rng).double()
    y[0] = 1.0
    ours, theirs = F.spearman(x, y), quanda_functions.correlation_functions["spearman"](x, y).double()
    assert torch.isnan(ours[0]) and float(theirs[0]) == 0.0
    assert torch.allclose(ours[1:], theirs[1:], atol=1e-6)
    assert float(ours.nanmean()) != pytest.approx(float(theirs.mean()), abs=1e-3)
