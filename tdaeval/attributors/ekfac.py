"""Eigenvalue-corrected Kronecker-factored curvature (EK-FAC; George et al. 2018, Grosse et al. 2023).

For every ``nn.Linear`` layer with input activations ``a`` (bias folded in as
a trailing 1) and output gradients ``s``, the Fisher block is approximated in
the eigenbasis of ``A = E[a aᵀ]`` and ``S = E[s sᵀ]`` with corrected
eigenvalues ``Λ = E[(Q_Sᵀ s aᵀ Q_A)²]``, and inverted there:
``(F + λI)⁻¹ g = Q_S [(Q_Sᵀ G Q_A) / (Λ + λ)] Q_Aᵀ``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tdaeval.attributors._linear import collect_linear_factors, linear_layers
from tdaeval.datasets import Data
from tdaeval.task import Task

__all__ = ["EKFACFactors", "fit_ekfac", "apply_ekfac_inverse"]


@dataclass
class _LayerFactors:
    weight: str  # parameter names
    bias: str | None
    q_in: Tensor  # [in+1, in+1] (or [in, in] without bias)
    q_out: Tensor  # [out, out]
    eigenvalues: Tensor  # [out, in(+1)]


@dataclass
class EKFACFactors:
    """Per-layer eigenbases and corrected eigenvalues, and where each parameter sits in the flat vector."""

    layers: list[_LayerFactors]
    offsets: dict[str, tuple[int, torch.Size]]  # parameter name -> (start, shape)
    n_params: int


def fit_ekfac(
    task: Task, model: nn.Module, data: Data, *, sampled: bool = True, seed: int = 0, chunk_size: int = 256
) -> EKFACFactors:
    """Estimate EK-FAC factors of the Fisher of ``task.loss`` at ``model`` over ``data``.

    Parameters
    ----------
    sampled : bool
        Use targets sampled from the model's predictive distribution
        (``task.sample_targets``) — the Fisher / Gauss–Newton; with False, or
        when the task cannot sample, the observed targets (empirical Fisher).
    """
    layers = linear_layers(model, strict="Attributor 'influence' with solver='ekfac'")
    generator = torch.Generator().manual_seed(seed)
    sampler = getattr(task, "sample_targets", None) if sampled else None
    collected = collect_linear_factors(
        model,
        layers,
        task.loss,
        data,
        chunk_size=chunk_size,
        targets=(lambda out, y: sampler(out, generator)) if sampler is not None else None,
        per_example=False,
    )

    flat_offsets, position = {}, 0
    for pname, p in model.named_parameters():
        flat_offsets[pname] = (position, p.shape)
        position += p.numel()
    factors = []
    for name, m in layers:
        a, s = (t.double() for t in collected[name])
        n = a.shape[0]
        _, q_in = torch.linalg.eigh(a.T @ a / n)
        _, q_out = torch.linalg.eigh(s.T @ s / n)
        eigenvalues = ((s @ q_out) ** 2).T @ ((a @ q_in) ** 2) / n  # [out, in(+1)]
        factors.append(
            _LayerFactors(
                weight=f"{name}.weight" if name else "weight",
                bias=(f"{name}.bias" if name else "bias") if m.bias is not None else None,
                q_in=q_in,
                q_out=q_out,
                eigenvalues=eigenvalues,
            )
        )
    return EKFACFactors(layers=factors, offsets=flat_offsets, n_params=position)


def apply_ekfac_inverse(factors: EKFACFactors, vectors: Tensor, damping: float | None) -> Tensor:
    """``(F_EKFAC + damping I)⁻¹ v`` for each row of ``vectors`` ``[k, P]`` (flat, ``named_parameters`` order).

    ``damping=None`` uses ``0.1 ×`` the mean corrected eigenvalue of each layer
    (kronfluence's heuristic).
    """
    out = torch.empty_like(vectors)
    k = vectors.shape[0]
    for layer in factors.layers:
        w_start, w_shape = factors.offsets[layer.weight]
        w_size = int(torch.Size(w_shape).numel())
        grad = vectors[:, w_start : w_start + w_size].reshape(k, *w_shape).double()
        if layer.bias is not None:
            b_start, b_shape = factors.offsets[layer.bias]
            bias = vectors[:, b_start : b_start + b_shape[0]].double()
            grad = torch.cat([grad, bias.unsqueeze(2)], dim=2)
        rotated = layer.q_out.T @ grad @ layer.q_in
        layer_damping = 0.1 * float(layer.eigenvalues.mean()) if damping is None else damping
        solved = layer.q_out @ (rotated / (layer.eigenvalues + layer_damping)) @ layer.q_in.T
        out[:, w_start : w_start + w_size] = solved[:, :, : w_shape[1]].reshape(k, -1).to(vectors.dtype)
        if layer.bias is not None:
            out[:, b_start : b_start + b_shape[0]] = solved[:, :, -1].to(vectors.dtype)
    return out
