"""Seed noise of attribution scores (pure functions of a seed stack ``[S, n_test, n_train]``).

The statistics of the posterior over training seeds (:func:`seed_statistics`:
mean, spread and a p-value per pair; Nguyen, Seo, Oh 2023) and the
cross-seed stability of the scores. :class:`~tdaeval.attributors.seeds.SeedPosterior`
and the seed metrics (:mod:`tdaeval.metrics.reliability`) both call these.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from tdaeval.errors import ConfigError
from tdaeval.functional.correlation import spearman

__all__ = ["TESTS", "TEST_DESCRIPTIONS", "describe_test", "seed_statistics", "rank_stability", "significant_fraction", "topk_jaccard"]

#: The p-value tests :func:`seed_statistics` offers.
TESTS = ("t", "snr")

#: What each p-value test is, in words (results and reports name the test with it).
TEST_DESCRIPTIONS = {
    "t": "one-sample t-test over seeds (calibrated)",
    "snr": "paper's SNR test (not calibrated under the null)",
}

#: Spread below this fraction of ``|mean|`` is float32 round-off of one value, not seed noise.
_ROUNDOFF = 1e-6


def _check_test(test: str) -> None:
    if test not in TESTS:
        raise ConfigError(f"The 'test' parameter must be one of {TESTS}. Got {test!r} instead.")


def describe_test(test: str) -> str:
    """The human-readable name of a p-value test (``"t"`` or ``"snr"``), as results record it."""
    _check_test(test)
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
    _check_test(test)
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
        from scipy import stats  # scipy.stats is slow to import: only when a t-test is asked for

        t = (mean / (safe_std / math.sqrt(n))).abs()
        p_value = torch.from_numpy(2.0 * stats.t.sf(t.cpu().numpy(), df=n - 1)).to(mean.device)
    p_value = torch.where(degenerate, torch.ones_like(p_value), p_value)
    return mean, std, p_value.clamp(0.0, 1.0)


def _pairs(n_samples: int) -> list[tuple[int, int]]:
    if n_samples < 2:
        raise ValueError(f"Cross-seed stability needs at least 2 seeds. Got {n_samples}.")
    return list(itertools.combinations(range(n_samples), 2))


def rank_stability(samples: Tensor) -> Tensor:
    """``[n_test]``: mean over pairs of seeds of the Spearman correlation of their score rows.

    Parameters
    ----------
    samples : Tensor
        ``[S, n_test, n_train]`` scores of ``S`` seeds.
    """
    pairs = _pairs(samples.shape[0])
    return torch.stack([spearman(samples[s], samples[t]) for s, t in pairs]).mean(0)


def topk_jaccard(samples: Tensor, k: int) -> Tensor:
    """``[n_test]``: mean over pairs of seeds of the Jaccard index of their ``k`` highest-scored training points."""
    if not 1 <= k <= samples.shape[-1]:
        raise ValueError(f"k must be in [1, n_train={samples.shape[-1]}]. Got {k}.")
    top = samples.topk(k, dim=-1).indices  # [S, n_test, k]
    n_train = samples.shape[-1]
    member = torch.zeros(*top.shape[:2], n_train, dtype=torch.bool, device=samples.device)
    member.scatter_(-1, top, True)
    values = []
    for s, t in _pairs(samples.shape[0]):
        inter = (member[s] & member[t]).sum(-1).double()
        union = (member[s] | member[t]).sum(-1).double()
        values.append(inter / union)
    return torch.stack(values).mean(0)


def significant_fraction(p_values: Tensor, alpha: float) -> Tensor:
    """``[n_test]``: fraction of each test point's training points with ``p < alpha``.

    Parameters
    ----------
    p_values : Tensor
        ``[n_test, n_train]`` p-values of the train–test pairs.
    alpha : float
        Significance level.
    """
    return (p_values < alpha).double().mean(dim=1)
