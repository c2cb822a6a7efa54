"""Per-example gradients of ``nn.Linear`` layers in factored form: input activations × output gradients.

For a layer ``y = W a + b`` the per-example gradient is ``s aᵀ`` (``s`` the
gradient w.r.t. ``y``), with the bias folded in as a trailing 1 of ``a``. Dot
products of such gradients factor: ``<s aᵀ, s' a'ᵀ> = (s·s')(a·a')``, so
pairwise gradient scores never need the ``[n, P]`` per-example gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from tdaeval.datasets import Data
from tdaeval.errors import AttributorError

__all__ = ["linear_layers", "collect_linear_factors", "factored_dot"]


def _qualified(module: str, parameter: str) -> str:
    return f"{module}.{parameter}" if module else parameter


def linear_layers(model: nn.Module, strict: str | None = None) -> list[tuple[str, nn.Linear]] | None:
    """The model's ``nn.Linear`` layers when they hold every parameter, else None.

    With ``strict`` (a description of the caller), raise instead of returning None.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    covered = {_qualified(name, p) for name, m in layers for p, _ in m.named_parameters(recurse=False)}
    others = [name for name, _ in model.named_parameters() if name not in covered]
    if others:
        if strict:
            raise AttributorError(
                f"{strict} supports models whose parameters all belong to nn.Linear layers; these do not: "
                f"{others[:5]}. Use solver='cg', 'lissa' or 'arnoldi'."
            )
        return None
    return layers


def collect_linear_factors(
    model: nn.Module,
    layers: list[tuple[str, nn.Linear]],
    objective: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    *,
    chunk_size: int = 256,
    targets: Callable[[Tensor, Tensor], Tensor] | None = None,
    per_example: bool = True,
) -> dict[str, tuple[Tensor, Tensor]] | None:
    """Input activations (bias folded in) and output gradients of every layer, per example.

    Parameters
    ----------
    objective : callable
        ``(outputs, targets) -> [n]`` per-example values; their sum is differentiated.
    targets : callable, optional
        ``(outputs, targets) -> targets`` replacing the observed targets (e.g. sampled labels).
    per_example : bool
        Require one activation row per example (2-D layer inputs); return None
        when a layer sees more (sequences), where the factorisation is not rank one.

    Returns
    -------
    dict or None
        ``name -> (a [m, in(+1)], s [m, out])`` with ``m = n`` when ``per_example``.
    """
    model.eval()
    device = next(iter(model.parameters())).device
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            inputs[name] = args[0].detach()
            output.retain_grad()
            outputs[name] = output

        return hook

    handles = [m.register_forward_hook(keep(name)) for name, m in layers]
    collected: dict[str, tuple[list[Tensor], list[Tensor]]] = {name: ([], []) for name, _ in layers}
    try:
        with torch.enable_grad():
            for start in range(0, len(data), chunk_size):
                x = data.inputs[start : start + chunk_size].to(device)
                y = data.targets[start : start + chunk_size].to(device)
                out = model(x)
                if targets is not None:
                    y = targets(out.detach(), y).to(device)
                model.zero_grad(set_to_none=True)
                objective(out, y).sum().backward()
                for name, m in layers:
                    if per_example and inputs[name].ndim != 2:
                        return None
                    a = inputs[name].reshape(-1, m.in_features)
                    if m.bias is not None:
                        a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)], dim=1)
                    collected[name][0].append(a)
                    collected[name][1].append(outputs[name].grad.reshape(-1, m.out_features))
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return {name: (torch.cat(a), torch.cat(s)) for name, (a, s) in collected.items()}


def factored_dot(left: dict[str, tuple[Tensor, Tensor]], right: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
    """``[n_left, n_right]`` dot products of the full per-example gradients: ``Σ_layers (S Sᵀ) ⊙ (A Aᵀ)``."""
    total = None
    for name, (a_left, s_left) in left.items():
        a_right, s_right = right[name]
        term = (s_left @ s_right.T) * (a_left @ a_right.T)
        total = term if total is None else total + term
    return total


def factored_sq_norms(factors: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
    """``[n]`` squared norms of the full per-example gradients."""
    return sum((s * s).sum(1) * (a * a).sum(1) for a, s in factors.values())
