"""Eigenvalue-corrected Kronecker-factored curvature (EK-FAC; George et al. 2018, Grosse et al. 2023).

For every ``nn.Linear`` layer with input activations ``a`` (bias folded in as
a trailing 1) and output gradients ``s``, the Fisher block is approximated in
the eigenbasis of ``A = E[a aᵀ]`` and ``S = E[s sᵀ]`` with corrected
eigenvalues ``Λ = E[(Q_Sᵀ s aᵀ Q_A)²]``, and inverted there:
``(F + λI)⁻¹ g = Q_S [(Q_Sᵀ G Q_A) / (Λ + λ)] Q_Aᵀ``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tdaeval.attributors._linear import collect_linear_factors, linear_layers
from tdaeval.datasets import Data
from tdaeval.task import Task

__all__ = ["EKFACFactors", "LayerFactors", "fit_ekfac", "apply_ekfac_inverse", "apply_ekfac_spectral"]


@dataclass
class LayerFactors:
    """One layer's eigenbases ``Q_A`` (inputs, bias folded in), ``Q_S`` (outputs) and corrected eigenvalues ``[out, in(+1)]``."""

    weight: str  # parameter names
    bias: str | None
    q_in: Tensor  # [in+1, in+1] (or [in, in] without bias)
    q_out: Tensor  # [out, out]
    eigenvalues: Tensor  # [out, in(+1)]


@dataclass
class EKFACFactors:
    """Per-layer eigenbases and corrected eigenvalues, and where each parameter sits in the flat vector."""

    layers: list[LayerFactors]
    offsets: dict[str, tuple[int, torch.Size]]  # parameter name -> (start, shape)
    n_params: int


def fit_ekfac(
    task: Task,
    model: nn.Module | Sequence[nn.Module],
    data: Data,
    *,
    sampled: bool = True,
    seed: int = 0,
    chunk_size: int = 256,
) -> EKFACFactors:
    """Estimate EK-FAC factors of the Fisher of ``task.loss`` at ``model`` over ``data``.

    Parameters
    ----------
    model : nn.Module or sequence of nn.Module
        One model, or several of the same architecture (e.g. the checkpoints of
        a training segment): their factors are averaged — covariances pooled
        before the eigendecomposition, eigenvalues corrected over all of them.
    sampled : bool
        Use targets sampled from the model's predictive distribution
        (``task.sample_targets``) — the Fisher / Gauss–Newton; with False, or
        when the task cannot sample, the observed targets (empirical Fisher).
    """
    models = [model] if isinstance(model, nn.Module) else list(model)
    layers_per_model = [linear_layers(m, strict="Attributor 'influence' with solver='ekfac'") for m in models]
    generator = torch.Generator().manual_seed(seed)
    sampler = getattr(task, "sample_targets", None) if sampled else None
    pooled: dict[str, tuple[list[Tensor], list[Tensor]]] = {name: ([], []) for name, _ in layers_per_model[0]}
    for m, layers in zip(models, layers_per_model):
        collected = collect_linear_factors(
            m,
            layers,
            task.loss,
            data,
            chunk_size=chunk_size,
            targets=(lambda out, y: sampler(out, generator)) if sampler is not None else None,
            per_example=False,
        )
        for name, (a, s) in collected.items():
            pooled[name][0].append(a)
            pooled[name][1].append(s)
    collected = {name: (torch.cat(a), torch.cat(s)) for name, (a, s) in pooled.items()}
    layers = layers_per_model[0]
    model = models[0]

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
            LayerFactors(
                weight=f"{name}.weight" if name else "weight",
                bias=(f"{name}.bias" if name else "bias") if m.bias is not None else None,
                q_in=q_in,
                q_out=q_out,
                eigenvalues=eigenvalues,
            )
        )
    return EKFACFactors(layers=factors, offsets=flat_offsets, n_params=position)


def apply_ekfac_spectral(
    factors: EKFACFactors, vectors: Tensor, transform: Callable[[Tensor, LayerFactors], Tensor]
) -> Tensor:
    """``φ(F_EKFAC) v`` for each row of ``vectors`` ``[k, P]`` (flat, ``named_parameters`` order).

    Parameters
    ----------
    transform : callable
        ``(eigenvalues [out, in(+1)], layer) -> multipliers`` of the same shape:
        ``φ`` applied to the layer's corrected eigenvalues (``1/(λ+d)`` for the
        inverse, ``exp(-cλ)`` for a propagator, ...).
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
        solved = layer.q_out @ (rotated * transform(layer.eigenvalues, layer)) @ layer.q_in.T
        out[:, w_start : w_start + w_size] = solved[:, :, : w_shape[1]].reshape(k, -1).to(vectors.dtype)
        if layer.bias is not None:
            out[:, b_start : b_start + b_shape[0]] = solved[:, :, -1].to(vectors.dtype)
    return out


def layer_damping(layer: LayerFactors, damping: float | None) -> float:
    """``damping``, or ``0.1 ×`` the layer's mean corrected eigenvalue when None (kronfluence's heuristic)."""
    return 0.1 * float(layer.eigenvalues.mean()) if damping is None else float(damping)


def apply_ekfac_inverse(factors: EKFACFactors, vectors: Tensor, damping: float | None) -> Tensor:
    """``(F_EKFAC + damping I)⁻¹ v`` for each row of ``vectors`` ``[k, P]`` (flat, ``named_parameters`` order).

    ``damping=None`` uses ``0.1 ×`` the mean corrected eigenvalue of each layer
    (kronfluence's heuristic).
    """
    return apply_ekfac_spectral(
        factors, vectors, lambda eigenvalues, layer: 1.0 / (eigenvalues + layer_damping(layer, damping))
    )
