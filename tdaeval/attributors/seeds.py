"""Seed noise: the posterior of an attributor's scores over training seeds (Nguyen, Seo, Oh 2023; docs: Methods §4).

Each score is a random variable over the noise of training (initialisation
and batch order). :class:`SeedPosterior` trains ``S`` models, attributes with
each (optionally averaging over the last ``k`` checkpoints of each run) and
returns an :class:`~tdaeval.attributors.base.Attribution`: the mean, the
standard deviation and a p-value for every train–test pair.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
from torch import Tensor, nn

from tdaeval.attributors.base import DEVICE_CONSTRAINT, Attributor, register
from tdaeval.attributors.ensembles import Ensemble, base_attributor, model_with_params
from tdaeval.datasets import Data
from tdaeval.errors import ConfigError
from tdaeval.hashing import derive_seed
from tdaeval.params import Instance, Interval, Options
from tdaeval.scores import Attribution
from tdaeval.training import set_training_seed, train_model, train_models

__all__ = ["SeedPosterior", "seed_posterior", "seed_statistics", "describe_test", "TESTS", "TEST_DESCRIPTIONS", "VARY"]

TESTS = ("t", "snr")
VARY = ("both", "init", "order")

#: What each p-value test is, in words (results and reports name the test with it).
TEST_DESCRIPTIONS = {
    "t": "one-sample t-test over seeds (calibrated)",
    "snr": "paper's SNR test (not calibrated under the null)",
}

#: Spread below this fraction of ``|mean|`` is float32 round-off of one value, not seed noise.
_ROUNDOFF = 1e-6


def describe_test(test: str) -> str:
    """The human-readable name of a p-value test (``"t"`` or ``"snr"``), as results record it."""
    if test not in TESTS:
        raise ConfigError(f"The 'test' parameter must be one of {TESTS}. Got {test!r} instead.")
    return TEST_DESCRIPTIONS[test]


def seed_statistics(stack: Tensor, test: str = "t") -> tuple[Tensor, Tensor, Tensor]:
    """Mean, standard deviation and p-value per pair of a stack of scores ``[S, n_test, n_train]``.

    The p-value tests "the expected score over training seeds is zero".

    Parameters
    ----------
    stack : Tensor
        ``[S, ...]``: one score matrix per seed, ``S >= 2``.
    test : {"t", "snr"}
        ``"t"`` (default): the one-sample t-test of the mean,
        ``t = μ/(σ/√S)`` with ``S − 1`` degrees of freedom; calibrated: under
        the null (zero mean, normal seed noise) ``P(p < α) = α``.
        ``"snr"``: the paper's per-draw signal-to-noise test,
        ``p = 2(1 − Φ(|μ/σ|))`` (no ``√S``), kept to reproduce the paper; it
        is not a test of zero effect (under the null ``P(p < 0.05)`` is 1.2%
        at 5 seeds and 0.016% at 10).

    Returns
    -------
    tuple of Tensor
        ``mean``, ``std`` (ddof = 1) and ``p_value``, each ``stack.shape[1:]``,
        float64. Where the seeds agree (``σ ≤ 10⁻⁶ |μ|``, which includes
        ``σ = 0``: float32 round-off of one value) there is no estimate of the
        seed noise and the p-value is 1: identical samples are never "reliable".
    """
    if test not in TESTS:
        raise ConfigError(f"The 'test' parameter must be one of {TESTS}. Got {test!r} instead.")
    if stack.ndim < 1 or stack.shape[0] < 2:
        raise ConfigError(f"Seed statistics need scores from at least 2 seeds. Got a stack of shape {tuple(stack.shape)}.")
    stack = stack.double()
    n = stack.shape[0]
    mean = stack.mean(0)
    std = stack.std(0, correction=1)
    degenerate = std <= _ROUNDOFF * mean.abs()
    safe_std = torch.where(degenerate, torch.ones_like(std), std)
    if test == "snr":
        z = (mean / safe_std).abs()
        p_value = torch.special.erfc(z / math.sqrt(2.0))  # 2(1 − Φ(|z|))
    else:
        from scipy import stats

        t = (mean / (safe_std / math.sqrt(n))).abs()
        p_value = torch.from_numpy(2.0 * stats.t.sf(t.cpu().numpy(), df=n - 1)).to(mean.device)
    p_value = torch.where(degenerate, torch.ones_like(p_value), p_value)
    return mean, std, p_value.clamp(0.0, 1.0)


@register
class SeedPosterior(Attributor):
    """Scores as a distribution over training seeds: mean, std and a reliability p-value per pair.

    Trains ``n_seeds`` models on all training data (the model passed to
    ``fit`` only stands for the architecture and is not one of them), fits
    a copy of the base attributor to each, and returns an
    :class:`~tdaeval.attributors.base.Attribution` from ``attribute``.

    Parameters
    ----------
    attributor : str or Attributor
        The base attributor: a registry name (with ``attributor_params``) or an
        unfitted instance (deep-copied per seed).
    attributor_params : dict, optional
        Parameters of a base attributor given by name.
    n_seeds : int
        ``S`` >= 2 (the paper uses 10).
    last_k : int
        Average each seed's scores over the last ``k`` checkpoints of its run
        (1: the final model). ``k > 1`` records one checkpoint per epoch.
    n_checkpoints : int
        Checkpoints recorded per run and passed to the base attributor (for
        ``tracin``, ``source``); at least ``last_k`` are recorded when ``last_k > 1``.
    vary : {"both", "init", "order"}
        Which training noise the seeds vary: initialisation and batch order
        (the paper's setting), only the initialisation (batch order fixed) or
        only the batch order (initialisation fixed).
    test : {"t", "snr"}
        The p-value (see :func:`seed_statistics`): ``"t"`` (default), the
        calibrated one-sample t-test over seeds; ``"snr"``, the paper's
        signal-to-noise test, to reproduce the paper (not calibrated: under
        the null it calls far fewer pairs reliable than ``alpha``).
    seed : int
        Seed from which the ``S`` training seeds derive.
    device : str, optional
        Where the models are trained.
    """

    name = "seed_posterior"
    contract_params = {"n_seeds": 2}
    _parameter_constraints = {
        "attributor": [Instance(str, "a registry name"), Instance(Attributor, "an Attributor instance")],
        "attributor_params": [None, Instance(dict)],
        "n_seeds": [Interval(int, 2, None)],
        "last_k": [Interval(int, 1, None)],
        "n_checkpoints": [Interval(int, 0, None)],
        "vary": [Options(VARY)],
        "test": [Options(TESTS)],
        "seed": [Interval(int, 0, None)],
        "device": DEVICE_CONSTRAINT,
    }

    def __init__(
        self,
        attributor: str | Attributor = "grad_dot",
        attributor_params: dict[str, Any] | None = None,
        n_seeds: int = 10,
        last_k: int = 1,
        n_checkpoints: int = 0,
        vary: str = "both",
        test: str = "t",
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        self.template_ = base_attributor(attributor, attributor_params, "SeedPosterior")
        if isinstance(self.template_, (SeedPosterior, Ensemble)):
            raise ConfigError("The 'attributor' parameter of SeedPosterior cannot be an ensemble or another posterior.")
        self.attributor = attributor if isinstance(attributor, str) else self.template_.display_name
        self.attributor_params = dict(attributor_params or {})
        self.n_seeds, self.last_k, self.n_checkpoints = n_seeds, last_k, n_checkpoints
        self.vary, self.test = vary, test
        self.seed = seed
        self.device = device

    @property
    def display_name(self) -> str:
        return self._display_name or f"{self.name}({self.template_.display_name})"

    def training_seeds(self) -> list[tuple[int, int]]:
        """``(init_seed, order_seed)`` of each of the ``S`` runs."""
        fixed = derive_seed("seed-posterior-fixed", self.seed)
        drawn = [derive_seed("seed-posterior", self.seed, s) for s in range(self.n_seeds)]
        if self.vary == "init":
            return [(s, fixed) for s in drawn]
        if self.vary == "order":
            return [(fixed, s) for s in drawn]
        return [(s, s) for s in drawn]

    def _runs(self) -> list[tuple[list[nn.Module], list | None]]:
        """Per seed: the models whose scores are averaged, and the checkpoints given to the base attributor."""
        device = self.device or "cpu"
        everything = torch.arange(len(self.train_))
        keep = max(self.n_checkpoints, self.task_.recipe.epochs if self.last_k > 1 else 0)
        seeds = self.training_seeds()
        if keep == 0 and self.vary == "both":
            stacked = train_models(self.task_, [everything] * len(seeds), [s for s, _ in seeds], device=device)
            return [([set_training_seed(stacked.model(i).eval(), seeds[i][0])], None) for i in range(len(seeds))]
        runs = []
        for init_seed, order_seed in seeds:
            run = train_model(self.task_, self.task_.build_model(init_seed), everything, order_seed, n_checkpoints=keep, device=device)
            # the run's training seed is the one that varies across runs (random draws from it)
            set_training_seed(run.model, order_seed if self.vary == "order" else init_seed)
            if self.last_k > 1:
                if len(run.checkpoints) < self.last_k:
                    raise ConfigError(
                        f"The 'last_k' parameter of SeedPosterior is {self.last_k} but a run of {self.task_.recipe.epochs} "
                        f"epochs records only {len(run.checkpoints)} checkpoints."
                    )
                models = [model_with_params(run.model, c.params, self.display_name).eval() for c in run.checkpoints[-self.last_k :]]
            else:
                models = [run.model.eval()]
            runs.append((models, run.checkpoints or None))
        return runs

    def _fit(self) -> None:
        start = time.perf_counter()
        runs = self._runs()
        training = time.perf_counter() - start
        start = time.perf_counter()
        self.members_: list[list[Attributor]] = []
        for models, run_checkpoints in runs:
            fitted = []
            for model in models:
                member = copy.deepcopy(self.template_)
                member.fit(self.task_, model, self.train_, checkpoints=run_checkpoints)
                fitted.append(member)
            self.members_.append(fitted)
        self.cost_ = {
            "members": sum(len(m) for m in self.members_),
            "training_seconds": training,
            "serving_seconds": time.perf_counter() - start,
            "storage_bytes": sum(p.numel() * p.element_size() for models, _ in runs for m in models for p in m.parameters()),
        }

    def seed_scores(self, test: Data) -> Tensor:
        """``[S, n_test, n_train]`` float64: each seed's scores (its checkpoints averaged)."""
        rows = []
        for fitted in self.members_:
            rows.append(torch.stack([member.attribute(test).double() for member in fitted]).mean(0))
        return torch.stack(rows)

    def _attribute(self, test: Data) -> Attribution:
        start = time.perf_counter()
        stack = self.seed_scores(test)
        mean, std, p_value = seed_statistics(stack, self.test)
        self.cost_["serving_seconds"] += time.perf_counter() - start
        return Attribution(mean=mean, std=std, n_samples=self.n_seeds, p_value=p_value, test=self.test, samples=stack.float())


def seed_posterior(attributor: str | Attributor = "grad_dot", n_seeds: int = 10, last_k: int = 1, **params: Any) -> SeedPosterior:
    """``seed_posterior(attributor, S, last_k)``: a :class:`SeedPosterior` over ``n_seeds`` training seeds."""
    return SeedPosterior(attributor, n_seeds=n_seeds, last_k=last_k, **params)
