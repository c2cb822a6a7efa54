"""Tail-patch (TrackStar; Quanda's ``TailPatchMetric``) as a lookup into the one-step effect matrix."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

import tdaeval.functional as F
from tdaeval.errors import ConfigError
from tdaeval.groundtruth.tail_patch import DELTAS, DTYPES, OPTIMIZERS, OneStepEffectSpec, OneStepEffectTruth, build_one_step_effects
from tdaeval.groundtruth.truths import NO_TRUTH, GroundTruth
from tdaeval.metrics.base import Metric, MetricResult, register_metric
from tdaeval.params import Interval, Options

__all__ = ["TailPatch", "topk_expected_mean"]

#: ``eta=None`` means the training recipe's learning rate divided by this.
DEFAULT_ETA_DIVISOR = 100.0

TIE_RULE = ("expected value under uniformly random tie-breaking: training examples whose score ties the k-th largest "
            "share the remaining top-k slots equally")


def topk_expected_mean(scores: Tensor, values: Tensor, k: int) -> Tensor:
    """Per row, the mean of ``values`` over the ``k`` highest-scored columns, ties broken at random in expectation.

    Columns scored above the ``k``-th largest score are in the top ``k``; the
    ``c`` columns tied with it share the ``r`` remaining slots, each counted
    with weight ``r / c`` (the expected value over uniformly random
    tie-breaking, exact, no sampling). Without ties this is the plain top-``k`` mean.

    Parameters
    ----------
    scores : Tensor
        ``[n, N]``, no NaN.
    values : Tensor
        ``[n, N]`` finite.
    k : int
        ``1 <= k <= N``.

    Returns
    -------
    Tensor
        ``[n]`` float64.

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[3.0, 1.0, 1.0, 0.0]])
    >>> values = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    >>> topk_expected_mean(scores, values, 2).tolist()  # item 0, then half of items 1 and 2
    [2.0]
    """
    return (F.topk_inclusion(scores, k) * values.double()).sum(dim=1) / k  # the tie rule of the retrieval metrics


@register_metric
class TailPatch(Metric):
    """Tail-patch: how much one optimizer step on an attributor's top-``k`` training examples raises the query's ``f``.

    Per query ``q``, the mean over the ``k`` training examples ``j`` an
    attributor scores highest of ``Δ[q, j] = f(q; θ − η·u(∇L(z_j))) − f(q; θ)``
    (one step of ``optimizer`` from fresh state on ``z_j`` alone, from the
    reference model; :mod:`tdaeval.groundtruth.tail_patch`), oriented so that
    positive = the step helped (``−Δ`` when the task's measurement is lower-is-better).
    The value is the mean over queries with a bootstrap CI over queries.
    Quanda deep-copies the model for every (query, proponent); here the whole
    ``Δ`` matrix is the ground truth, computed once in a batched pass, cached
    in the store (keyed by task, model, ``eta``, optimizer, ``delta``, weight
    decay and dtype) and shared by every attributor, each of which is then a lookup.

    Ties (:func:`topk_expected_mean`): the expected value under uniformly
    random tie-breaking among examples tied with the ``k``-th largest score.

    The provenance reports the **ceiling** (per query the mean of the ``k``
    largest ``Δ``, averaged: the best any ranking can do), the value as a
    ``share_of_ceiling``, the **random expectation** (per query the mean of
    ``Δ`` over all training examples, averaged: what random scores get in
    expectation), ``share_of_ceiling_above_random`` (``(value − random) /
    (ceiling − random)``), and ``eta`` (the value used), optimizer, ``delta``.

    **Read with care.** With SGD at small ``η``, ``Δ[q, i] ≈ η·∇f(q)·(−∇L(z_i))
    = η·grad_dot[q, i]``: Grad-Dot is first-order optimal for this metric *by
    construction* (its share of the ceiling → 1 as ``η → 0``), so tail-patch
    measures one-step influence, not which training examples the model's
    behaviour rests on (use LDS or removal for that). A sane ``η`` is small,
    ``≤ lr/50`` of the training recipe: the default ``eta=None`` is
    ``task.recipe.lr / 100``; at the training learning rate the one-step
    effects are far from linear and mostly negative for every attributor.
    Values scale with ``η`` (compare attributors at one ``η``, or read the share).

    Parameters
    ----------
    k : int
        Top examples per query (Quanda's benchmark: 10; its GPT-2 config: 4).
    eta : float, optional
        Step size ``η`` (> 0); None: ``task.recipe.lr / 100``, recorded in the provenance.
    optimizer : {"sgd", "adam", "adamw"}
        First step from fresh state: ``sgd`` (``u = g``), ``adam``/``adamw``
        (``u = g / (|g| + eps)``; ``adamw`` with decoupled decay, Quanda's choice).
    delta : {"measurement", "logprob", "prob"}
        ``f``: the task's measurement (default), ``−loss`` (the log-probability
        of the target) or ``exp(−loss)`` (Quanda's ``p_new − p₀``).
    weight_decay : float
        Weight decay of the step (0 by default; torch's AdamW default is 0.01).
    dtype : {"float32", "float64"}
        Precision of ``Δ``.
    chunk_size : int
        Training examples per batched pass (bounds memory; does not change the values).
    n_bootstrap, seed : int
        Bootstrap resamples of the CI and their seed.

    Examples
    --------
    >>> import torch
    >>> from tdaeval.groundtruth.tail_patch import OneStepEffectSpec, OneStepEffectTruth
    >>> effects = torch.tensor([[0.3, -0.1, 0.2, 0.0]])  # Δ[q, i] for 1 query, 4 training examples
    >>> truth = OneStepEffectTruth(effects, higher_is_better=True, spec=OneStepEffectSpec(eta=0.01))
    >>> scores = torch.tensor([[1.0, 3.0, 2.0, 0.0]])  # top 2: examples 1 and 2
    >>> result = TailPatch(k=2, eta=0.01, n_bootstrap=100).compute(scores, truth)
    >>> round(result.value, 6), round(result.provenance["ceiling"], 6), round(result.provenance["share_of_ceiling"], 6)
    (0.05, 0.25, 0.2)
    """

    name = "tail_patch"
    higher_is_better = True
    bounds = None
    truth_type = OneStepEffectTruth
    #: build_truth steps from the explained (reference) model.
    needs_model = True

    _parameter_constraints = {
        **Metric._parameter_constraints,
        "k": [Interval(int, 1, None)],
        "eta": [None, Interval(float, 0, None, closed="neither")],
        "optimizer": [Options(OPTIMIZERS)],
        "delta": [Options(DELTAS)],
        "weight_decay": [Interval(float, 0, None)],
        "dtype": [Options(tuple(DTYPES))],
        "chunk_size": [Interval(int, 1, None)],
    }

    def __init__(self, k: int = 10, eta: float | None = None, optimizer: str = "sgd", delta: str = "measurement",
                 weight_decay: float = 0.0, dtype: str = "float32", chunk_size: int = 64, n_bootstrap: int = 2000,
                 seed: int = 0) -> None:
        super().__init__(n_bootstrap, seed)
        self.k, self.eta, self.optimizer, self.delta = k, eta, optimizer, delta
        self.weight_decay, self.dtype, self.chunk_size = weight_decay, dtype, chunk_size

    def spec_for(self, task: Any) -> OneStepEffectSpec:
        """The :class:`~tdaeval.groundtruth.tail_patch.OneStepEffectSpec` for ``task`` (``eta=None`` resolved from its recipe)."""
        eta = self.eta
        if eta is None:
            recipe = getattr(task, "recipe", None)
            lr = getattr(recipe, "lr", None)
            if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
                raise ConfigError("Metric 'tail_patch' with eta=None takes task.recipe.lr / 100, but the task has no recipe "
                                  "learning rate: pass eta=...")
            eta = float(lr) / DEFAULT_ETA_DIVISOR
        return OneStepEffectSpec(eta=eta, optimizer=self.optimizer, delta=self.delta, weight_decay=self.weight_decay, dtype=self.dtype)

    def build_truth(self, task: Any, store: Any = None, *, model: nn.Module | None = None, device: str = "cpu", executor: Any = None,
                    progress: Any = None) -> OneStepEffectTruth:
        """The one-step effect matrix of ``model`` (:func:`~tdaeval.groundtruth.tail_patch.build_one_step_effects`), cached in ``store``."""
        if model is None:
            raise ConfigError("Metric 'tail_patch' steps from the explained model: pass model=... to build_truth.")
        return build_one_step_effects(task, model, self.spec_for(task), store, device=device, chunk_size=self.chunk_size,
                                      progress=progress)

    def _check_truth(self, truth: OneStepEffectTruth) -> None:
        """A truth computed with other settings than this metric's is refused (one line naming the first difference)."""
        spec = truth.spec
        asked = {"optimizer": self.optimizer, "delta": self.delta, "weight_decay": float(self.weight_decay), "dtype": self.dtype}
        if self.eta is not None:
            asked["eta"] = float(self.eta)
        for name, value in asked.items():
            if getattr(spec, name) != value:
                raise ConfigError(f"Metric 'tail_patch' has {name}={value!r} but its truth was computed with "
                                  f"{name}={getattr(spec, name)!r}: rebuild the truth with this metric's build_truth.")

    def compute(self, scores: Any, truth: GroundTruth = NO_TRUTH, attributor: Any = None) -> MetricResult:
        truth = self._truth(truth)
        self._check_truth(truth)
        n_test, n_train = truth.effects.shape
        scores = self._scores(scores, n_test=n_test, n_train=n_train)
        if self.k > n_train:
            raise ConfigError(f"Metric 'tail_patch' has k={self.k} but only {n_train} training examples.")
        if bool(torch.isnan(scores).any()):
            raise ConfigError(f"Metric 'tail_patch': the scores have {int(torch.isnan(scores).sum())} NaN values.")
        gain = truth.gain  # [n_test, n_train] float64, positive = the step helped
        per_query = topk_expected_mean(scores, gain, self.k)
        ceiling = float(gain.topk(self.k, dim=1).values.mean())
        random = float(gain.mean())
        value = float(per_query.mean())
        provenance = {
            **truth.provenance,
            "k": self.k,
            "eta": truth.spec.eta,
            "optimizer": truth.spec.optimizer,
            "delta": truth.spec.delta,
            "oriented": "positive = the step on the training example improved the query (Δ negated for a lower-is-better f)"
                        if not truth.higher_is_better else "Δ as measured (f is higher-is-better)",
            "tie_rule": TIE_RULE,
            "ceiling": ceiling,
            "share_of_ceiling": value / ceiling if ceiling > 0 else math.nan,
            "random_expectation": random,
            "share_of_ceiling_above_random": (value - random) / (ceiling - random) if ceiling > random else math.nan,
            "ci_covers": "test queries resampled; the reference model and its one-step effects fixed",
        }
        for name in ("share_of_ceiling", "share_of_ceiling_above_random"):
            if math.isnan(provenance[name]):
                provenance[name] = None  # undefined (a ceiling <= 0): JSON null, not NaN
        return self._bootstrap_result(per_query, provenance)
