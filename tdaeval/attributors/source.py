"""Source and FAST-Source: influence unrolled over segments of the training trajectory (Bae et al. 2024).

The trajectory's checkpoints are split into ``L`` segments. Segment ``ℓ``
has curvature ``H̄_ℓ`` (EK-FAC of the training loss, averaged over its
checkpoints), mean gradient ``ḡ_ℓ(z_i)`` of each training example over its
checkpoints, effective learning rate ``η̄_ℓ = lr / (1 − momentum)`` and
``K_ℓ`` optimiser steps. Including ``z_i`` in training moves the final
parameters by ``−(1/N) Σ_ℓ [Π_{ℓ'>ℓ} exp(−η̄_ℓ' K_ℓ' H̄_ℓ')] (I − exp(−η̄_ℓ K_ℓ H̄_ℓ)) H̄_ℓ⁻¹ ḡ_ℓ(z_i)``,
so the score (positive = supports) is

``τ(z, z_i) = (1/N) g(z)ᵀ Σ_ℓ [Π_{ℓ'>ℓ} exp(−c_ℓ' H̄_ℓ')] φ_ℓ(H̄_ℓ) ḡ_ℓ(z_i)``,
``φ_ℓ(λ) = (1 − exp(−c_ℓ λ)) / λ``, ``c_ℓ = η̄_ℓ K_ℓ``,

with ``g(z)`` the gradient of the test measurement oriented as a loss at the
final model. Every matrix function acts on EK-FAC eigenvalues, in each
segment's own Kronecker eigenbasis, so nothing ``P × P`` is formed. ``L = 1``
with ``c → ∞`` is EK-FAC influence without damping; a finite ``c`` damps
small eigenvalues on its own (``φ(0) = c``), so Source has no damping
parameter. FAST-Source computes each segment's curvature and gradients once, at
the segment's averaged weights, instead of at every checkpoint.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from tdaeval.attributors._linear import factored_layers
from tdaeval.attributors._tracked import PARAMS_CONSTRAINT, resolve_tracked
from tdaeval.attributors.base import DEVICE_CONSTRAINT, Attributor, register
from tdaeval.attributors.ekfac import EKFACFactors, apply_ekfac_spectral, fit_ekfac
from tdaeval.attributors.gradient import aligned_params, test_measurement_grads, train_loss_grads
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError
from tdaeval.params import Boolean, Interval

__all__ = ["Source", "FastSource", "SourceSegment", "source_propagate"]


class SourceSegment:
    """One segment of the trajectory: its curvature, step scale and where its gradients are taken.

    Attributes
    ----------
    factors : EKFACFactors
        EK-FAC curvature averaged over the segment.
    scale : float
        ``c = η̄ K``: effective learning rate times optimiser steps.
    params : list of dict of str to Tensor
        Parameters at which the training gradients are averaged.
    epochs : tuple of int
        First (exclusive) and last epoch the segment spans.
    """

    def __init__(self, factors: EKFACFactors, scale: float, params: list[dict[str, Tensor]], epochs: tuple[int, int]) -> None:
        self.factors, self.scale, self.params, self.epochs = factors, scale, params, epochs


def _phi(eigenvalues: Tensor, scale: float) -> Tensor:
    """``(1 − exp(−c λ)) / λ``, equal to ``c`` at ``λ = 0``."""
    small = eigenvalues.abs() * scale < 1e-12
    safe = torch.where(small, torch.ones_like(eigenvalues), eigenvalues)
    return torch.where(small, torch.full_like(eigenvalues, scale), -torch.expm1(-scale * safe) / safe)


def source_propagate(segments: list[SourceSegment], test_grads: Tensor, weight_decay: float = 0.0) -> list[Tensor]:
    """Per segment, the test-side vector ``w_ℓ = φ_ℓ(H̄_ℓ) Π_{ℓ'>ℓ} exp(−c_ℓ' H̄_ℓ') g``.

    Parameters
    ----------
    segments : list of SourceSegment
        In training order.
    test_grads : Tensor
        ``[k, P]`` test gradients ``g`` at the final model.
    weight_decay : float
        Added to every eigenvalue (the L2 term's curvature).

    Returns
    -------
    list of Tensor
        ``[k, P]`` per segment, in training order; ``τ = (1/N) Σ_ℓ w_ℓ · ḡ_ℓ``.
    """
    carried = test_grads.double()
    out: list[Tensor] = []
    for segment in reversed(segments):
        c = segment.scale
        out.append(apply_ekfac_spectral(segment.factors, carried, lambda lam, _l: _phi(lam + weight_decay, c)))
        carried = apply_ekfac_spectral(segment.factors, carried, lambda lam, _l: torch.exp(-c * (lam + weight_decay)))
    return out[::-1]


@register
class Source(Attributor):
    """Source (Bae et al. 2024): segment-wise unrolled influence over the training trajectory.

    Needs the checkpoints of the training run (``fit(..., checkpoints=...)``,
    e.g. ``train_model(..., n_checkpoints=6).checkpoints``; an epoch-0 checkpoint,
    ``include_initial=True``, is the first segment's start and changes nothing,
    since every segment ends at a trained checkpoint) and a model whose
    (tracked) parameters all sit in ``nn.Linear`` / ``nn.Conv2d`` layers
    (EK-FAC curvature): on a model with embeddings or LayerNorm, use
    ``params="linear"``.

    Parameters
    ----------
    n_segments : int
        ``L``, segments the checkpoints are split into (contiguous, as equal
        as possible). Fewer checkpoints than segments → one segment per
        checkpoint, with a warning.
    sampled : bool
        EK-FAC with targets sampled from the model (Fisher) when the task can
        sample them, else observed targets (empirical Fisher).
    momentum : float, optional
        Heavy-ball momentum β of the run; the effective learning rate is
        ``lr / (1 − β)``. Default: the task recipe's.
    steps_per_epoch : int, optional
        Optimiser steps per epoch. Default: ``ceil(n_train / batch_size)`` from the recipe.
    chunk_size : int
        Examples per gradient pass.
    seed : int
        Seed of the sampled targets.
    device : str, optional
        Where to compute (default: the model's device).
    params : {"all", "linear"} or list of str
        Tracked parameters (:mod:`tdaeval.attributors._tracked`): every
        parameter (default), the weights and biases of the ``nn.Linear`` /
        ``nn.Conv2d`` layers, or parameter names and module-name prefixes.
        Curvature, propagation and gradients are over the tracked ones; the
        frozen ones keep each checkpoint's values.
    """

    name = "source"
    requires_checkpoints = True
    contract_params = {"n_segments": 2}
    _average_weights = False
    _parameter_constraints = {
        "n_segments": [Interval(int, 1, None)],
        "sampled": [Boolean()],
        "momentum": [None, Interval(float, 0, 1, closed="left")],
        "steps_per_epoch": [None, Interval(int, 1, None)],
        "chunk_size": [Interval(int, 1, None)],
        "seed": [Interval(int, 0, None)],
        "device": DEVICE_CONSTRAINT,
        "params": PARAMS_CONSTRAINT,
    }

    def __init__(
        self,
        n_segments: int = 3,
        sampled: bool = True,
        momentum: float | None = None,
        steps_per_epoch: int | None = None,
        chunk_size: int = 256,
        seed: int = 0,
        device: str | None = None,
        params: str | list[str] = "all",
    ) -> None:
        self.n_segments, self.sampled, self.momentum = n_segments, sampled, momentum
        self.steps_per_epoch, self.chunk_size, self.seed, self.device = steps_per_epoch, chunk_size, seed, device
        self.params = params

    def _fit(self) -> None:
        checkpoints = self._checkpoints()
        for k, checkpoint in enumerate(checkpoints):  # every checkpoint holds exactly the model's parameters, by name
            self._checkpoint_params(k, checkpoint, exact=True)
        owner = f"Attributor {self.display_name!r}"
        self.tracked_ = resolve_tracked(self.model_, self.params, owner)
        factored_layers(self.model_, strict=f"{owner} (EK-FAC curvature)", hint="", tracked=self.tracked_)
        self.model_.eval()
        recipe = self.task_.recipe
        momentum = recipe.momentum if self.momentum is None else self.momentum
        steps = self.steps_per_epoch or math.ceil(len(self.train_) / recipe.batch_size)
        self.weight_decay_ = float(recipe.weight_decay)
        # The epoch-0 checkpoint (train_model(..., include_initial=True); a FineTuneTask's base model) is where the
        # first segment starts, not a segment: no step led there (lr 0.0). Segments always start at epoch 0 and take
        # their curvature, gradients and lr at the checkpoints that end their steps, so it adds nothing.
        trained = sorted((c for c in checkpoints if c.epoch > 0), key=lambda c: c.epoch)
        if not trained:
            raise AttributorError(
                f"Attributor {self.display_name!r}: needs a checkpoint after at least one epoch of training; "
                f"got epochs {sorted(c.epoch for c in checkpoints)}."
            )
        checkpoints = trained
        n_segments = min(self.n_segments, len(checkpoints))
        if n_segments < self.n_segments:
            warnings.warn(
                f"{self.display_name}: {len(checkpoints)} checkpoint(s) after epoch 0 for n_segments={self.n_segments}; "
                f"using {n_segments} segment(s).",
                stacklevel=3,
            )
        self.segments_: list[SourceSegment] = []
        previous_epoch = 0
        for group in np.array_split(np.arange(len(checkpoints)), n_segments):
            members = [checkpoints[i] for i in group]
            last_epoch = members[-1].epoch
            if last_epoch <= previous_epoch:
                raise AttributorError(
                    f"Attributor {self.display_name!r}: checkpoints must come from distinct epochs; "
                    f"got epochs {[c.epoch for c in checkpoints]}."
                )
            lr = float(np.mean([c.lr for c in members]))
            scale = lr / (1.0 - momentum) * (last_epoch - previous_epoch) * steps
            # by name, in the model's order: checkpoints restored from a store come in its key order
            try:
                params = [aligned_params(self.model_, c.params) for c in members]
            except AttributorError as err:
                raise AttributorError(f"Attributor {self.display_name!r}: {err}") from None
            if self._average_weights:
                params = [{k: torch.stack([p[k] for p in params]).mean(0) for k in params[0]}]
            models = [self._model_at(p) for p in params]
            factors = fit_ekfac(
                self.task_, models, self.train_, sampled=self.sampled, seed=self.seed, chunk_size=self.chunk_size,
                tracked=self.tracked_, owner=f"Attributor {self.display_name!r} (EK-FAC curvature)",
            )
            self.segments_.append(SourceSegment(factors, scale, params, (previous_epoch, last_epoch)))
            previous_epoch = last_epoch

    def _model_at(self, params: dict[str, Tensor]) -> torch.nn.Module:
        import copy

        model = copy.deepcopy(self.model_)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name not in params:
                    raise AttributorError(f"Attributor {self.display_name!r}: checkpoint lacks parameter {name!r}.")
                p.copy_(params[name])
        return model.eval()

    def _attribute(self, test: Data) -> Tensor:
        test_grads = test_measurement_grads(
            self.task_, self.model_, test, chunk_size=self.chunk_size, device=self.device, tracked=self.tracked_
        )
        vectors = source_propagate(self.segments_, test_grads, self.weight_decay_)
        n = len(self.train_)
        scores = torch.zeros(len(test), n, dtype=torch.float64)
        for segment, w in zip(self.segments_, vectors):
            w = w / (n * len(segment.params))
            for params in segment.params:
                for start in range(0, n, self.chunk_size):
                    chunk = self.train_.subset(torch.arange(start, min(start + self.chunk_size, n)))
                    grads = train_loss_grads(
                        self.task_, self.model_, chunk, params=params, chunk_size=self.chunk_size, device=self.device,
                        tracked=self.tracked_,
                    )
                    scores[:, start : start + len(chunk)] += (w.to(grads.device) @ grads.double().T).cpu()
        return scores.float()


@register
class FastSource(Source):
    """FAST-Source: Source with each segment's curvature and gradients taken at its averaged weights.

    Parameters are those of :class:`Source`; the cost is one EK-FAC fit and one
    gradient pass per segment instead of per checkpoint.
    """

    name = "fast_source"
    _average_weights = True
