"""Eigenvalue-corrected Kronecker-factored curvature (EK-FAC; George et al. 2018, Grosse et al. 2023).

For every ``nn.Linear`` and ``nn.Conv2d`` layer, with input activations ``a``
(for a convolution: the ``in·kh·kw`` input patches at each output position,
as in KFC, Grosse & Martens 2016) with the bias folded in as a trailing 1,
and output gradients ``s``, the Fisher block is approximated in the eigenbasis
of ``A = E[a aᵀ]`` and ``S = E[s sᵀ]`` — both averaged over examples *and*
spatial positions, as kronfluence does — with eigenvalues corrected from the
per-example gradients ``G_i = Σ_t s_it a_itᵀ`` (summed over positions):
``Λ = E_i[(Q_Sᵀ G_i Q_A)²]``, and inverted there:
``(F + λI)⁻¹ g = Q_S [(Q_Sᵀ G Q_A) / (Λ + λ)] Q_Aᵀ``. Whether positions are
summed or averaged in ``A`` and ``S`` only scales them and leaves their
eigenvectors unchanged; the corrected eigenvalues carry the true scale of
``E[vec(G_i) vec(G_i)ᵀ]`` in that basis either way. ``nn.Linear`` layers on
sequences ``[b, T, in]`` are treated like convolutions: ``A`` and ``S`` are
averaged over examples and positions and the eigenvalues corrected from the
per-example gradients ``G_i = Σ_t s_it a_itᵀ`` (as kronfluence does over
tokens), so the curvature is that of the per-example loss (padding
positions have ``s_it = 0``). With tracked parameters
(:mod:`tdaeval.attributors._tracked`) only the tracked layers get factors,
and the flat vectors hold the tracked parameters only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tdaeval.attributors._linear import Unfactorable, chunk_factors, factored_layers
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError
from tdaeval.task import Task

__all__ = ["EKFACFactors", "LayerFactors", "fit_ekfac", "apply_ekfac_inverse", "apply_ekfac_spectral"]


@dataclass
class LayerFactors:
    """One layer's eigenbases ``Q_A`` (inputs, bias folded in), ``Q_S`` (outputs) and corrected eigenvalues ``[out, in(+1)]``.

    For ``nn.Conv2d`` ``in = in_channels·kh·kw``, in the order of ``weight.reshape(out, -1)``.
    """

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


_OWNER = "Attributor 'influence' with solver='ekfac'"


def _factors(model, layers, loss, x, y, targets, owner: str = _OWNER) -> tuple[dict[str, tuple[Tensor, Tensor]], Tensor]:
    try:
        factors, y = chunk_factors(model, layers, loss, x, y, targets=targets)
    except Unfactorable as why:
        raise AttributorError(f"{owner}: {why}.") from None
    return factors, y


def _draw(task: Task, outputs: Tensor, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
    """Targets sampled from the model; on sequences, only at ``task.positions`` (the observed, ignored target elsewhere)."""
    drawn = task.sample_targets(outputs, generator).to(y.device)
    carried = task.positions(Data(x, y))
    return drawn if carried is None else torch.where(carried.to(y.device), drawn, y)


def fit_ekfac(
    task: Task,
    model: nn.Module | Sequence[nn.Module],
    data: Data,
    *,
    sampled: bool = True,
    seed: int = 0,
    chunk_size: int = 256,
    tracked: list[str] | None = None,
    owner: str = _OWNER,
) -> EKFACFactors:
    """Estimate EK-FAC factors of the Fisher of ``task.loss`` at ``model`` over ``data``.

    Two passes over the data: the first accumulates ``A`` and ``S`` (and keeps
    the factors of rank-one layers, ``nn.Linear``, whose correction needs
    nothing more), the second — only for layers with several positions per
    example (``nn.Conv2d``, ``nn.Linear`` on sequences) — accumulates the eigenvalue correction from the
    per-example gradients ``G_i`` rotated into the eigenbases, chunk by chunk,
    with the same targets as the first. Memory: ``chunk_size`` examples' patches
    and gradients, plus ``n · (in + out)`` per ``nn.Linear`` layer.

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
        On a sequence task (``task.positions`` not None) targets are sampled
        only at the positions that carry the loss; elsewhere the observed
        (ignored) target stays, so padding adds nothing.
    tracked : list of str, optional
        The tracked parameters (default: all); they must fill whole
        ``nn.Linear`` / ``nn.Conv2d`` layers. The factors' flat layout
        (``offsets``, ``n_params``) covers them only, in ``named_parameters`` order.
    owner : str
        Who asks, as error messages name it (e.g. ``"Attributor 'influence' with solver='astra'"``).
    """
    models = [model] if isinstance(model, nn.Module) else list(model)
    layers_per_model = [factored_layers(m, strict=owner, tracked=tracked) for m in models]
    generator = torch.Generator().manual_seed(seed)
    sampling = sampled and task.supports_sampling
    names = [name for name, _ in layers_per_model[0]]
    a_sum: dict[str, Tensor] = {}
    s_sum: dict[str, Tensor] = {}
    rows = dict.fromkeys(names, 0)
    rank_one: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in names}  # factors kept for the correction
    later: set[str] = set()  # layers needing the second pass
    used_targets: list[list[Tensor]] = []
    for m, layers in zip(models, layers_per_model):
        m.eval()
        device = next(iter(m.parameters())).device
        used_targets.append([])
        for start in range(0, len(data), chunk_size):
            x = data.inputs[start : start + chunk_size].to(device)
            y = data.targets[start : start + chunk_size].to(device)
            targets = (lambda out, y, x=x: _draw(task, out, x, y, generator)) if sampling else None
            collected, y = _factors(m, layers, task.loss, x, y, targets, owner)
            used_targets[-1].append(y)
            for name, (a, s) in collected.items():
                a2, s2 = a.reshape(-1, a.shape[2]).double(), s.reshape(-1, s.shape[2]).double()
                a_sum[name] = a2.T @ a2 + a_sum.get(name, 0.0)
                s_sum[name] = s2.T @ s2 + s_sum.get(name, 0.0)
                rows[name] += a2.shape[0]
                if a.shape[1] == 1:
                    rank_one[name].append((a[:, 0], s[:, 0]))
                else:
                    later.add(name)
    bases = {}
    for name in names:
        _, q_in = torch.linalg.eigh(a_sum[name] / rows[name])
        _, q_out = torch.linalg.eigh(s_sum[name] / rows[name])
        bases[name] = (q_in, q_out)

    corrected: dict[str, Tensor] = {}
    for name in names:
        if name not in later:
            q_in, q_out = bases[name]
            total, n = 0.0, 0
            for a, s in rank_one[name]:
                a, s = a.double(), s.double()
                total = ((s @ q_out) ** 2).T @ ((a @ q_in) ** 2) + total  # [out, in(+1)]
                n += a.shape[0]
            corrected[name] = total / n
    if later:
        sums = dict.fromkeys(later, 0.0)
        count = 0
        for m, layers, ys in zip(models, layers_per_model, used_targets):
            device = next(iter(m.parameters())).device
            needed = [(name, layer) for name, layer in layers if name in later]
            for start, y in zip(range(0, len(data), chunk_size), ys):
                x = data.inputs[start : start + chunk_size].to(device)
                collected, _ = _factors(m, needed, task.loss, x, y, None, owner)
                for name, (a, s) in collected.items():
                    a, s = a.double(), s.double()
                    q_in, q_out = bases[name]
                    rotated = torch.bmm((s @ q_out).transpose(1, 2), a @ q_in)  # [b, out, in(+1)]: Q_Sᵀ G_i Q_A
                    sums[name] = (rotated**2).sum(0) + sums[name]
                count += x.shape[0]
        for name in later:
            corrected[name] = sums[name] / count

    layers = layers_per_model[0]
    model = models[0]
    flat_offsets, position = {}, 0
    wanted = None if tracked is None else set(tracked)
    for pname, p in model.named_parameters():
        if wanted is None or pname in wanted:
            flat_offsets[pname] = (position, p.shape)
            position += p.numel()
    factors = []
    for name, m in layers:
        q_in, q_out = bases[name]
        factors.append(
            LayerFactors(
                weight=f"{name}.weight" if name else "weight",
                bias=(f"{name}.bias" if name else "bias") if m.bias is not None else None,
                q_in=q_in,
                q_out=q_out,
                eigenvalues=corrected[name],
            )
        )
    return EKFACFactors(layers=factors, offsets=flat_offsets, n_params=position)


def apply_ekfac_spectral(
    factors: EKFACFactors, vectors: Tensor, transform: Callable[[Tensor, LayerFactors], Tensor]
) -> Tensor:
    """``φ(F_EKFAC) v`` for each row of ``vectors`` ``[k, P]`` (flat, ``named_parameters`` order).

    Each layer's block is read as ``[out, in(+1)]``: the weight reshaped to
    ``[out, -1]`` (a conv weight ``[out, in, kh, kw]`` to ``[out, in·kh·kw]``)
    with the bias as the trailing column.

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
        n_out = w_shape[0]
        n_in = w_size // n_out  # a conv weight [out, in, kh, kw] is read as [out, in·kh·kw]
        grad = vectors[:, w_start : w_start + w_size].reshape(k, n_out, n_in).double()
        if layer.bias is not None:
            b_start, b_shape = factors.offsets[layer.bias]
            bias = vectors[:, b_start : b_start + b_shape[0]].double()
            grad = torch.cat([grad, bias.unsqueeze(2)], dim=2)
        rotated = layer.q_out.T @ grad @ layer.q_in
        solved = layer.q_out @ (rotated * transform(layer.eigenvalues, layer)) @ layer.q_in.T
        out[:, w_start : w_start + w_size] = solved[:, :, :n_in].reshape(k, -1).to(vectors.dtype)
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
