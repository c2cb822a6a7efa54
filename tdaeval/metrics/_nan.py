"""Why a correlation metric's per-example values are NaN: a constant side has no defined correlation."""

from __future__ import annotations

from torch import Tensor

__all__ = ["constant_nan_reason"]


def constant_nan_reason(per_example: Tensor, scores: Tensor, truth: Tensor, dim: int, kind: str = "correlation") -> str | None:
    """A short reason for NaN per-example correlations caused by a constant side, or None.

    Parameters
    ----------
    per_example : Tensor
        The per-example correlations, shape ``[n]``.
    scores : Tensor
        The score side that was correlated, ``n`` vectors along ``dim`` (e.g. ``[M, n]`` with ``dim=0``).
    truth : Tensor
        The ground-truth side, the same shape as ``scores``.
    dim : int
        The dimension the correlation runs over.
    kind : str
        The correlation's name in the reason ("rank correlation", "Pearson correlation").

    Returns
    -------
    str or None
        E.g. ``"scores constant for 40 of 40 test points: rank correlation undefined"``;
        None when no NaN is explained by a constant side.
    """
    nan = per_example.isnan()
    if not bool(nan.any()):
        return None
    n = per_example.numel()
    parts = []
    for side, values in (("scores", scores), ("ground truth", truth)):
        constant = (values.amax(dim=dim) == values.amin(dim=dim)) & nan
        if bool(constant.any()):
            parts.append(f"{side} constant for {int(constant.sum())} of {n} test points")
    if not parts:
        return None
    return f"{'; '.join(parts)}: {kind} undefined"
