"""Heuristic metrics that need no retraining: class detection and model randomization (METHODS.md §7)."""

from __future__ import annotations

import copy
import platform
from typing import Any

import torch
from torch import Tensor, nn

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.metrics.base import Metric, MetricResult, register_metric

__all__ = ["ClassDetection", "ModelRandomization"]

LABELS = ("predicted", "true")
MODES = ("independent", "cascading")


def _scores(scores: Any) -> Tensor:
    scores = getattr(scores, "mean", scores) if not isinstance(scores, Tensor) else scores
    if not isinstance(scores, Tensor) or scores.ndim != 2:
        raise ConfigError(f"Expected scores as a Tensor [n_test, n_train]. Got {type(scores).__name__}.")
    return scores


class _Heuristic(Metric):
    requires = frozenset()
    needs_model = True

    def _result(self, per_test: Tensor, provenance: dict[str, Any]) -> MetricResult:
        value, ci, n_nan = F.nanmean_ci(per_test, n_resamples=self.n_bootstrap, seed=self.seed)
        provenance = {**provenance, "kind": self.name, "n_bootstrap": self.n_bootstrap, "ci_level": 0.95,
                      "torch": torch.__version__, "python": platform.python_version()}
        return MetricResult(self.name, value, ci, per_test, self.higher_is_better, n_nan, self.bounds, provenance)

    def _check_bootstrap(self, n_bootstrap: int) -> None:
        if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 10:
            raise ConfigError(f"The 'n_bootstrap' parameter of {type(self).__name__} must be an integer >= 10. Got {n_bootstrap!r} instead.")


@register_metric
class ClassDetection(_Heuristic):
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
    """

    name = "class_detection"
    higher_is_better = True
    bounds = (0.0, 1.0)

    def __init__(self, label: str | None = None, top_s: int = 5, n_bootstrap: int = 2000, seed: int = 0) -> None:
        if label not in LABELS:
            raise ConfigError(f"The 'label' parameter of class_detection must be chosen explicitly: one of {LABELS}. Got {label!r}.")
        if isinstance(top_s, bool) or not isinstance(top_s, int) or top_s < 1:
            raise ConfigError(f"The 'top_s' parameter of class_detection must be an integer >= 1. Got {top_s!r} instead.")
        self._check_bootstrap(n_bootstrap)
        self.label, self.top_s, self.n_bootstrap, self.seed = label, top_s, n_bootstrap, seed

    def build_truth(self, task: Any, store: Any = None, model: nn.Module | None = None, **kwargs: Any) -> dict[str, Tensor]:
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
                device = next(model.parameters()).device
                test_labels = model(task.test_data.inputs.to(device)).argmax(-1).cpu()
        return {"train_labels": train_labels, "test_labels": test_labels}

    def compute(self, scores: Any, truth: dict[str, Tensor]) -> MetricResult:
        scores = _scores(scores)
        s = min(self.top_s, scores.shape[1])
        top = scores.topk(s, dim=1).indices
        per_test = (truth["train_labels"][top] == truth["test_labels"][:, None]).double().mean(dim=1)
        return self._result(per_test, {"label": self.label, "top_s": s})


def randomized_model(model: nn.Module, reference: nn.Module, layers: int | None = None) -> nn.Module:
    """A copy of ``model`` with the parameters of its last ``layers`` parameterised modules from ``reference`` (all: None).

    ``reference`` is a freshly initialised model of the same architecture
    (``task.build_model(seed)``, which leaves the global RNG alone).
    """
    owners = [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]
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
    """

    name = "model_randomization"
    higher_is_better = False
    bounds = (-1.0, 1.0)
    needs_attributor = True

    def __init__(self, mode: str = "independent", seed: int = 12345, n_bootstrap: int = 2000) -> None:
        if mode not in MODES:
            raise ConfigError(f"The 'mode' parameter of model_randomization must be one of {MODES}. Got {mode!r} instead.")
        self._check_bootstrap(n_bootstrap)
        self.mode, self.seed, self.n_bootstrap = mode, seed, n_bootstrap

    def build_truth(self, task: Any, store: Any = None, model: nn.Module | None = None, **kwargs: Any) -> dict[str, Any]:
        if model is None:
            raise ConfigError("model_randomization needs the model: pass model=... to build_truth.")
        return {"task": task, "model": model, "reference": task.build_model(self.seed)}

    def compute(self, scores: Any, truth: dict[str, Any], attributor: Any = None) -> MetricResult:
        if attributor is None:
            raise ConfigError("model_randomization needs the fitted attributor to re-fit it on the randomised model.")
        scores = _scores(scores)
        task, model, reference = truth["task"], truth["model"], truth["reference"]
        n_layers = sum(1 for m in model.modules() if any(True for _ in m.parameters(recurse=False)))
        stages = [None] if self.mode == "independent" else list(range(1, n_layers + 1))
        curve, per_test = [], None
        for layers in stages:
            randomized = randomized_model(model, reference, layers)
            refit = copy.deepcopy(attributor)
            refit.fit(task, randomized, attributor.train_, checkpoints=None)
            other = _scores(refit.attribute(task.test_data))
            per_test = F.spearman(scores.double(), other.double())
            curve.append(float(torch.nanmean(per_test)))
        provenance = {"mode": self.mode, "seed": self.seed}
        if self.mode == "cascading":
            provenance["curve"] = curve
            provenance["layers_randomized"] = stages
        return self._result(per_test, provenance)
