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

from tdaeval.datasets import Data
from tdaeval.errors import AttributorError
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


def _qualified(module: str, parameter: str) -> str:
    return f"{module}.{parameter}" if module else parameter


def _linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    covered = {_qualified(name, p) for name, m in layers for p, _ in m.named_parameters(recurse=False)}
    others = [name for name, _ in model.named_parameters() if name not in covered]
    if others:
        raise AttributorError(
            f"Attributor 'influence' with solver='ekfac' supports models whose parameters all belong to nn.Linear "
            f"layers; these do not: {others[:5]}. Use solver='cg', 'lissa' or 'arnoldi'."
        )
    return layers


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
    model.eval()
    layers = _linear_layers(model)
    device = next(iter(model.parameters())).device
    generator = torch.Generator().manual_seed(seed)
    sampler = getattr(task, "sample_targets", None) if sampled else None
    activations: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def save_input(name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            activations[name] = inputs[0].detach()
            output.retain_grad()
            outputs[name] = output

        return hook

    handles = [m.register_forward_hook(save_input(name)) for name, m in layers]
    stats = {name: {"a": [], "s": []} for name, _ in layers}
    try:
        for start in range(0, len(data), chunk_size):
            x = data.inputs[start : start + chunk_size].to(device)
            y = data.targets[start : start + chunk_size].to(device)
            out = model(x)
            if sampler is not None:
                y = sampler(out.detach(), generator).to(device)
            model.zero_grad(set_to_none=True)
            task.loss(out, y).sum().backward()
            for name, m in layers:
                a = activations[name].reshape(-1, m.in_features)
                if m.bias is not None:
                    a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)], dim=1)
                stats[name]["a"].append(a.double())
                stats[name]["s"].append(outputs[name].grad.reshape(-1, m.out_features).double())
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)

    flat_offsets, position = {}, 0
    for pname, p in model.named_parameters():
        flat_offsets[pname] = (position, p.shape)
        position += p.numel()
    factors = []
    for name, m in layers:
        a = torch.cat(stats[name]["a"])
        s = torch.cat(stats[name]["s"])
        n = a.shape[0]
        _, q_in = torch.linalg.eigh(a.T @ a / n)
        _, q_out = torch.linalg.eigh(s.T @ s / n)
        eigenvalues = ((s @ q_out) ** 2).T @ ((a @ q_in) ** 2) / n  # [out, in(+1)]
        factors.append(
            _LayerFactors(
                weight=_qualified(name, "weight"),
                bias=_qualified(name, "bias") if m.bias is not None else None,
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
