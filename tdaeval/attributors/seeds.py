"""Seed noise: the posterior of an attributor's scores over training seeds (Nguyen, Seo, Oh 2023; docs: Methods §4).

Each score is a random variable over the noise of training (initialisation
and batch order). :class:`SeedPosterior` trains ``S`` models, attributes with
each (optionally averaging over the last ``k`` checkpoints of each run) and
returns an :class:`~tdaeval.attributors.base.Attribution`: the mean, the
standard deviation and a p-value for every train–test pair. The statistics
themselves are pure functions of :mod:`tdaeval.functional.reliability`
(:func:`seed_statistics`, :func:`describe_test` and ``TESTS`` are re-exported here).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tdaeval.attributors.base import Attributor, register
from tdaeval.attributors.ensembles import Ensemble, WrappingAttributor, parameter_bytes
from tdaeval.datasets import Data
from tdaeval.errors import ConfigError
from tdaeval.functional.reliability import TEST_DESCRIPTIONS, TESTS, describe_test, seed_statistics
from tdaeval.hashing import derive_seed
from tdaeval.params import Interval, Options
from tdaeval.scores import Attribution
from tdaeval.training import set_training_seed, train_model, train_models

__all__ = ["SeedPosterior", "seed_posterior", "seed_statistics", "describe_test", "TESTS", "TEST_DESCRIPTIONS", "VARY"]

VARY = ("both", "init", "order")


@register
class SeedPosterior(WrappingAttributor):
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
        The p-value (see :func:`~tdaeval.functional.reliability.seed_statistics`): ``"t"`` (default), the
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
        **WrappingAttributor._parameter_constraints,
        "n_seeds": [Interval(int, 2, None)],
        "last_k": [Interval(int, 1, None)],
        "n_checkpoints": [Interval(int, 0, None)],
        "vary": [Options(VARY)],
        "test": [Options(TESTS)],
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
        self._keep_base(attributor, attributor_params)
        if isinstance(self.template_, (SeedPosterior, Ensemble)):
            raise ConfigError("The 'attributor' parameter of SeedPosterior cannot be an ensemble or another posterior.")
        self.n_seeds, self.last_k, self.n_checkpoints = n_seeds, last_k, n_checkpoints
        self.vary, self.test = vary, test
        self.seed = seed
        self.device = device

    def training_seeds(self) -> list[tuple[int, int]]:
        """``(init_seed, order_seed)`` of each of the ``S`` runs."""
        fixed = derive_seed("seed-posterior-fixed", self.seed)
        drawn = [derive_seed("seed-posterior", self.seed, s) for s in range(self.n_seeds)]
        if self.vary == "init":
            return [(s, fixed) for s in drawn]
        if self.vary == "order":
            return [(fixed, s) for s in drawn]
        return [(s, s) for s in drawn]

    def _members(self) -> list[tuple[list[nn.Module], list | None]]:
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
                first = len(run.checkpoints) - self.last_k
                models = [self._checkpoint_model(k, run.checkpoints[k], run.model).eval() for k in range(first, len(run.checkpoints))]
            else:
                models = [run.model.eval()]
            runs.append((models, run.checkpoints or None))
        return runs

    def _fit_members(self, runs: list[tuple[list[nn.Module], list | None]]) -> int:
        self.members_: list[list[Attributor]] = [
            [self._fitted_copy(model, run_checkpoints) for model in models] for models, run_checkpoints in runs
        ]
        return sum(len(m) for m in self.members_)

    def _storage_bytes(self, runs: list[tuple[list[nn.Module], list | None]]) -> int:
        return sum(parameter_bytes(model) for models, _ in runs for model in models)

    def seed_scores(self, test: Data) -> Tensor:
        """``[S, n_test, n_train]`` float64: each seed's scores (its checkpoints averaged)."""
        rows = []
        for fitted in self.members_:
            rows.append(torch.stack([member.attribute(test).double() for member in fitted]).mean(0))
        return torch.stack(rows)

    def _attribute(self, test: Data) -> Attribution:
        with self._serving():
            stack = self.seed_scores(test)
            mean, std, p_value = seed_statistics(stack, self.test)
        return Attribution(mean=mean, std=std, n_samples=self.n_seeds, p_value=p_value, test=self.test, samples=stack.float())


def seed_posterior(attributor: str | Attributor = "grad_dot", n_seeds: int = 10, last_k: int = 1, **params: Any) -> SeedPosterior:
    """``seed_posterior(attributor, S, last_k)``: a :class:`SeedPosterior` over ``n_seeds`` training seeds."""
    return SeedPosterior(attributor, n_seeds=n_seeds, last_k=last_k, **params)
