"""Heuristic metrics that need no retraining: class detection and model randomization (docs: Methods §7)."""

from __future__ import annotations

import copy
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.groundtruth.truths import NO_TRUTH, GroundTruth, LabelTruth, MaskTruth, ModelTruth
from tdaeval.metrics.base import Metric, MetricResult, ScoresOnlyMetric, register_metric
from tdaeval.params import Check, Interval, Options

if TYPE_CHECKING:
    from tdaeval.task import ControlledSetting

__all__ = ["ClassDetection", "MixedDatasets", "ModelRandomization", "ShortcutDetection", "SubclassDetection", "TopKCardinality"]

LABELS = ("predicted", "true")
MODES = ("independent", "cascading")
#: A top-``s`` or top-``k`` size.
_TOP_SIZE = [Interval(int, 1, None)]


class _Heuristic(Metric):

    def _result(self, per_test: Tensor, provenance: dict[str, Any]) -> MetricResult:
        return self._bootstrap_result(per_test, {**provenance, "kind": self.name})


class _LabelAgreement(_Heuristic):
    """Fraction of each test point's ``top_s`` highest-scored training points that share its label (as the truth gives them)."""

    higher_is_better = True
    bounds = (0.0, 1.0)
    truth_type = LabelTruth
    _parameter_constraints = {**Metric._parameter_constraints, "top_s": _TOP_SIZE}
    top_s: int

    def _provenance(self, truth: LabelTruth) -> dict[str, Any]:
        """What the result records besides ``top_s``."""
        return {}

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        truth = self._truth(truth)
        scores = self._scores(scores, n_test=truth.test_labels.numel(), n_train=truth.train_labels.numel())
        s = min(self.top_s, scores.shape[1])
        per_test = F.topk_label_agreement(scores, truth.train_labels, truth.test_labels, s)
        return self._result(per_test, {**self._provenance(truth), "top_s": s})


@register_metric
class ClassDetection(_LabelAgreement):
    """Fraction of each test point's ``top_s`` highest-scored training points that share its label.

    Parameters
    ----------
    label : {"predicted", "true"}
        Which label of the test point to compare with: the model's prediction
        or the dataset's label. No default: the two answer different questions
        (what the model did, what the data say), so choose explicitly.
    top_s : int
        ``s`` (5, as Quanda).
    n_bootstrap, seed : int
        Bootstrap over test points.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import LabelTruth
    >>> truth = LabelTruth(train_labels=torch.tensor([0, 0, 1, 1]), test_labels=torch.tensor([0, 1]))
    >>> scores = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.9, 0.0, 0.8, 0.1]])
    >>> ClassDetection(label="true", top_s=2, n_bootstrap=100).compute(scores, truth).per_example.tolist()
    [1.0, 0.5]
    """

    name = "class_detection"
    #: build_truth needs the model for the predicted labels.
    needs_model = True
    _parameter_constraints = {
        **_LabelAgreement._parameter_constraints,
        "label": [Check(Options(LABELS).is_satisfied_by, f"chosen explicitly (no default): {Options(LABELS)}", invalid=[None, "pred"])],
    }

    def __init__(self, label: str | None = None, top_s: int = 5, n_bootstrap: int = 2000, seed: int = 0) -> None:
        self.label, self.top_s, self.n_bootstrap, self.seed = label, top_s, n_bootstrap, seed

    def build_truth(self, task: Any, store: Any = None, *, model: nn.Module | None = None, device: str = "cpu",
                    executor: Any = None, progress: Any = None) -> LabelTruth:
        """The training labels and the test points' true or predicted labels."""
        train_labels = task.train_data.targets
        if train_labels.dtype not in (torch.int64, torch.int32):
            raise ConfigError("class_detection needs a classification task with integer labels.")
        if self.label == "true":
            test_labels = task.test_data.targets
        else:
            if model is None:
                raise ConfigError("class_detection with label='predicted' needs the model: pass model=... to build_truth.")
            with torch.no_grad():
                model.eval()
                test_labels = model(task.test_data.inputs.to(next(model.parameters()).device)).argmax(-1).cpu()
        return LabelTruth(train_labels, test_labels, tuple(task.transforms))

    def _provenance(self, truth: LabelTruth) -> dict[str, Any]:
        return {"label": self.label}


def parameterised_modules(model: nn.Module, example: Tensor | None = None) -> list[str]:
    """Names of the modules that own parameters, in the order the forward pass calls them.

    With ``example`` (a small input batch) the order is recorded with forward
    hooks, so a module defined before but called after another is ordered by
    its call; modules never called keep their definition order, first.
    Without it, definition order (``named_modules``).
    """
    owners = [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]
    if example is None:
        return owners
    called: list[str] = []
    modules = dict(model.named_modules())
    hooks = [modules[name].register_forward_hook(lambda m, i, o, name=name: called.append(name)) for name in owners]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example)
        model.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    order = list(dict.fromkeys(called))
    return [name for name in owners if name not in order] + order


def randomized_model(
    model: nn.Module, reference: nn.Module, layers: int | None = None, example: Tensor | None = None
) -> nn.Module:
    """A copy of ``model`` with the parameters of its last ``layers`` parameterised modules from ``reference`` (all: None).

    ``reference`` is a freshly initialised model of the same architecture
    (``task.build_model(seed)``, which leaves the global RNG alone). "Last"
    follows the forward pass when ``example`` inputs are given
    (:func:`parameterised_modules`), else the order of definition.
    """
    owners = parameterised_modules(model, example)
    chosen = set(owners if layers is None else owners[len(owners) - layers :])
    out = copy.deepcopy(model)
    fresh = dict(reference.named_parameters())
    with torch.no_grad():
        for name, param in out.named_parameters():
            owner = name.rpartition(".")[0]
            if owner in chosen:
                param.copy_(fresh[name].to(param.device, param.dtype))
    return out.eval()


@register_metric
class ModelRandomization(_Heuristic):
    """Spearman between each test point's scores on the trained model and on a randomised one (lower is better).

    An attributor whose scores barely change when the model's weights are
    replaced by random ones explains the data, not the model (Adebayo et al.
    2018; Hanawa et al. 2021). ``mode="independent"`` re-initialises every
    layer at once; ``"cascading"`` re-initialises layers from the output
    down, one more at a time, and reports the curve, the value being the
    fully randomised stage. The new weights come from
    ``task.build_model(seed)``, which leaves the global RNG untouched.
    Attributors that need checkpoints cannot be re-fitted on a randomised
    model and are reported as such.

    Parameters
    ----------
    mode : {"independent", "cascading"}
    seed : int
        Seed of the random model (and of the bootstrap).
    n_bootstrap : int

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from tdaeval.datasets import Data
    >>> from tdaeval.groundtruth import ModelTruth
    >>> class OutputSimilarity:  # any fitted attributor: fit(task, model, train, checkpoints) and attribute(test)
    ...     def fit(self, task, model, train, checkpoints=None):
    ...         self.model, self.train_ = model, train
    ...         return self
    ...     def attribute(self, test):
    ...         with torch.no_grad():
    ...             return self.model(test.inputs) @ self.model(self.train_).T
    >>> _ = torch.manual_seed(0)
    >>> model, fresh = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    >>> train, test = torch.randn(10, 4), Data(torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
    >>> attributor = OutputSimilarity().fit(None, model, train)
    >>> truth = ModelTruth(SimpleNamespace(test_data=test), model, fresh)
    >>> result = ModelRandomization(n_bootstrap=100).compute(attributor.attribute(test), truth, attributor=attributor)
    >>> result.per_example.shape, result.higher_is_better
    (torch.Size([5]), False)
    """

    name = "model_randomization"
    higher_is_better = False
    bounds = (-1.0, 1.0)
    truth_type = ModelTruth
    needs_model = True
    needs_attributor = True
    _parameter_constraints = {**Metric._parameter_constraints, "mode": [Options(MODES)]}

    def __init__(self, mode: str = "independent", seed: int = 12345, n_bootstrap: int = 2000) -> None:
        self.mode, self.seed, self.n_bootstrap = mode, seed, n_bootstrap

    def build_truth(self, task: Any, store: Any = None, *, model: nn.Module | None = None, device: str = "cpu",
                    executor: Any = None, progress: Any = None) -> ModelTruth:
        """The explained model and a fresh one (``task.build_model(seed)``)."""
        if model is None:
            raise ConfigError("model_randomization needs the model: pass model=... to build_truth.")
        return ModelTruth(task, model, task.build_model(self.seed))

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        truth = self._truth(truth)
        if attributor is None:
            raise ConfigError("model_randomization needs the fitted attributor to re-fit it on the randomised model.")
        task, model, reference = truth.task, truth.model, truth.reference
        scores = self._scores(scores)
        n_layers = sum(1 for m in model.modules() if any(True for _ in m.parameters(recurse=False)))
        stages = [None] if self.mode == "independent" else list(range(1, n_layers + 1))
        example = None  # independent mode replaces every layer: order does not matter
        if self.mode == "cascading":  # follow the forward pass, output layer first
            example = task.test_data.inputs[:2].to(next(iter(model.parameters())).device)
        curve, per_test = [], None
        for layers in stages:
            randomized = randomized_model(model, reference, layers, example=example)
            refit = copy.deepcopy(attributor)
            refit.fit(task, randomized, attributor.train_, checkpoints=None)
            other = self._scores(refit.attribute(task.test_data), *scores.shape)
            per_test = F.spearman(scores.double(), other.double())
            curve.append(float(torch.nanmean(per_test)))
        provenance = {"mode": self.mode, "seed": self.seed}
        if self.mode == "cascading":
            provenance["curve"] = curve
            provenance["layers_randomized"] = stages
        return self._result(per_test, provenance)


@register_metric
class SubclassDetection(_LabelAgreement):
    """Fraction of each test point's ``top_s`` training points that share its original subclass.

    Evaluate it on a task from :func:`tdaeval.tasks.with_grouped_labels`: the
    model only ever saw superclasses, so a training point of the test point's
    own subclass must be found through what the model learnt about it.
    Higher is better; chance is about one over the number of subclasses in a
    superclass.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import LabelTruth
    >>> truth = LabelTruth(train_labels=torch.tensor([0, 1, 2, 3]), test_labels=torch.tensor([2]))  # original subclasses
    >>> SubclassDetection(top_s=1, n_bootstrap=100).compute(torch.tensor([[0.0, 0.1, 0.9, 0.2]]), truth).value
    1.0
    """

    name = "subclass_detection"

    def __init__(self, top_s: int = 5, n_bootstrap: int = 2000, seed: int = 0) -> None:
        self.top_s, self.n_bootstrap, self.seed = top_s, n_bootstrap, seed

    def build_truth(self, task: Any, store: Any = None, *, model: Any = None, device: str = "cpu", executor: Any = None,
                    progress: Any = None) -> LabelTruth:
        """The original (sub)class labels of a :func:`~tdaeval.tasks.with_grouped_labels` task."""
        if task.setting is None or task.setting.subclass_train is None:
            raise ConfigError("Metric 'subclass_detection' needs a task from tdaeval.tasks.with_grouped_labels(task, n_groups=2).")
        return LabelTruth(task.setting.subclass_train, task.setting.subclass_test, tuple(task.transforms))

    def _provenance(self, truth: LabelTruth) -> dict[str, Any]:
        return {"transforms": list(truth.transforms)}


class _Retrieval(_Heuristic):
    """Mean average precision of each score row for a planted set of training points."""

    bounds = (0.0, 1.0)
    higher_is_better = True
    truth_type = MaskTruth
    #: The function of :mod:`tdaeval.tasks` that plants the mask (named in the error when the task has none).
    helper = ""

    @abstractmethod
    def _planted(self, setting: ControlledSetting) -> Tensor | None:
        """The ``[n_train]`` planted mask of ``setting`` (None when the setting has none)."""

    def build_truth(self, task: Any, store: Any = None, *, model: Any = None, device: str = "cpu", executor: Any = None,
                    progress: Any = None) -> MaskTruth:
        """The planted mask of the task's controlled setting."""
        mask = None if task.setting is None else self._planted(task.setting)
        if mask is None:
            raise ConfigError(f"Metric {self.name!r} needs a task from tdaeval.tasks.{self.helper}(task).")
        return MaskTruth(mask, tuple(task.transforms))

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        truth = self._truth(truth)
        positives = truth.mask
        scores = self._scores(scores, n_train=positives.numel())
        per_test = F.average_precision(scores, positives)
        return self._result(per_test, {"n_positive": int(positives.sum()), "chance": float(positives.double().mean()),
                                       "transforms": list(truth.transforms)})


@register_metric
class ShortcutDetection(_Retrieval):
    """Mean AUPRC of each (triggered) test point's scores for the training images carrying the trigger.

    Evaluate it on a task from :func:`tdaeval.tasks.with_shortcut`. Chance is
    the share of triggered training images (in the provenance).

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import MaskTruth
    >>> truth = MaskTruth(torch.tensor([True, False, False, True]))  # the triggered training images
    >>> ShortcutDetection(n_bootstrap=100).compute(torch.tensor([[0.9, 0.1, 0.2, 0.8], [0.1, 0.9, 0.2, 0.8]]), truth).per_example.tolist()
    [1.0, 0.5]
    """

    name, helper = "shortcut_detection", "with_shortcut"

    def _planted(self, setting: ControlledSetting) -> Tensor | None:
        return setting.shortcut


@register_metric
class MixedDatasets(_Retrieval):
    """Mean AUPRC of each foreign test image's scores for the foreign images mixed into the training set.

    Evaluate it on a task from :func:`tdaeval.tasks.with_mixed_dataset`. Chance
    is the share of foreign training images (in the provenance).

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth import MaskTruth
    >>> truth = MaskTruth(torch.tensor([False, False, True, True]))  # the foreign training images
    >>> MixedDatasets(n_bootstrap=100).compute(torch.tensor([[0.0, 0.1, 0.9, 0.8]]), truth).value
    1.0
    """

    name, helper = "mixed_datasets", "with_mixed_dataset"

    def _planted(self, setting: ControlledSetting) -> Tensor | None:
        return setting.foreign


@register_metric
class TopKCardinality(ScoresOnlyMetric):
    """Distinct training points among all test points' top ``k``: ``|∪_z topk(z)| / (n_test·k)`` (docs: Methods §7, as Quanda).

    A global property of the score matrix (higher = explanations more specific
    to each test point; an attributor that blames the same few points for
    everything scores low; when ``n_test·k > n_train`` even distinct
    explanations cannot reach 1). The per-example value of test point ``t`` is
    its share of the union, ``(1/k)·Σ_{i ∈ topk(t)} 1/c_i`` with ``c_i`` the
    number of test points whose top ``k`` holds ``i``; these average exactly
    to the ratio, so rankings compare the reported quantity. The interval is
    a percentile bootstrap of that mean over test points with the counts held
    fixed (a test point's share depends on the others; the ratio itself also
    falls as ``n_test`` grows, so it is comparable only at equal ``n_test``).

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])  # both test points blame the same 2 points
    >>> TopKCardinality(k=2, n_bootstrap=100).compute(scores).value  # 2 distinct of 2 · 2
    0.5
    """

    name = "top_k_cardinality"
    higher_is_better = True
    bounds = (0.0, 1.0)
    _parameter_constraints = {**Metric._parameter_constraints, "k": _TOP_SIZE}

    def __init__(self, k: int = 5, n_bootstrap: int = 1000, seed: int = 0) -> None:
        self.k, self.n_bootstrap, self.seed = k, n_bootstrap, seed

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        self._truth(truth)
        scores = self._scores(scores)
        k = min(self.k, scores.shape[1])
        # Each distinct training point in the union is shared out over the c rows that hold it
        # (1/c each), so row t's share (1/k)·Σ_{i ∈ topk(t)} 1/c_i averages exactly to the value.
        per_test, value = F.topk_cardinality_shares(scores, k)
        result = self._bootstrap_result(per_test, {
            "kind": self.name, "k": k,
            "value_is": "global cardinality ratio = mean over test points of their share (1/k)·Σ 1/count of their top-k",
            "ci_is": "percentile bootstrap of that mean over test points, with the counts of the full test set held fixed",
            "ci_covers": "test points resampled; how often each training point is in the full test set's top-k fixed",
        })
        result.value = value  # equal to the mean up to rounding; the exact ratio is reported
        return result
