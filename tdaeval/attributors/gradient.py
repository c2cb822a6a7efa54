"""Gradient-similarity attributors: Grad-Dot, Grad-Cos and TracIn.

For models whose parameters all sit in ``nn.Linear`` and ``nn.Conv2d`` layers,
pairwise gradient products use the layer-wise factorisation (input activations
or patches × output gradients, ``tdaeval.attributors._linear``) and never form
``[n, P]`` per-example gradients through autograd; otherwise per-sample
gradients come from ``torch.func.vmap(grad(...))`` in chunks, never from a
Python loop over examples. The test side differentiates the
measurement turned into a "badness" (``-f`` when higher is better), the train
side the training loss, so that a positive dot product means that a gradient
step on the training example improves the test measurement (supports it).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from tdaeval.attributors._linear import (
    LayerGradients,
    Unfactorable,
    collect_gradients,
    factored_dot,
    factored_layers,
    factored_sq_norms,
)
from tdaeval.attributors._tracked import PARAMS_CONSTRAINT, resolve_tracked
from tdaeval.attributors.base import DEVICE_CONSTRAINT, Attributor, register
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError
from tdaeval.params import Boolean, Interval
from tdaeval.task import Task

__all__ = [
    "GradientSet",
    "gradient_set",
    "per_sample_grads",
    "train_loss_grads",
    "test_measurement_grads",
    "GradDot",
    "GradCos",
    "TracIn",
]


def aligned_params(model: nn.Module, params: dict[str, Tensor] | None = None, subset: bool = False) -> dict[str, Tensor]:
    """``params`` (default: the model's own) keyed and ordered as ``model.named_parameters()``.

    Checkpoint parameters may come in any key order (a store hands them back
    sorted); anything that flattens them must follow the model's order, or
    weight blocks are paired with the wrong ones.

    Parameters
    ----------
    model : nn.Module
        Fixes the names and their order.
    params : dict of str to Tensor, optional
        Exactly the model's parameter names, in any order (with ``subset``:
        some of them, the rest held at the model's values).
    subset : bool
        Allow ``params`` to name only some of the model's parameters.

    Returns
    -------
    dict of str to Tensor
        The same tensors, in ``named_parameters`` order.

    Raises
    ------
    AttributorError
        When ``params`` lacks one of the model's parameters or has one the model does not.
    """
    names = [name for name, _ in model.named_parameters()]
    if params is None:
        return dict(model.named_parameters())
    keys = set(params) if isinstance(params, dict) else set()
    if not isinstance(params, dict) or (keys - set(names)) or (not subset and keys != set(names)):
        raise AttributorError(
            f"Checkpoint parameters must be a dict with exactly the model's parameters; missing "
            f"{sorted(set(names) - keys)[:5]}, unexpected {sorted(keys - set(names))[:5]}."
        )
    return {name: params[name] for name in names if name in keys}


def per_sample_grads(
    model: nn.Module, objective, data: Data, *, params: dict[str, Tensor] | None = None, chunk_size: int = 256,
    device: str | torch.device | None = None, tracked: Sequence[str] | None = None, dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Flattened per-example gradients of ``objective(outputs, targets)`` w.r.t. the parameters.

    Parameters
    ----------
    model : nn.Module
        Evaluated in its current mode (put it in eval mode first).
    objective : callable
        ``(outputs [n, ...], targets [n, ...]) -> [n]`` per-example values.
    data : Data
        ``n`` examples.
    params : dict of str to Tensor, optional
        Parameters to differentiate at (default: the model's own), e.g. a
        checkpoint. Without ``tracked``, a subset differentiates those
        parameters only (the rest held at the model's values).
    chunk_size : int
        Examples per ``vmap`` call; bounds memory at ``chunk_size x n_params``.
    device : str or torch.device, optional
        Where to compute (default: the model's device).
    tracked : sequence of str, optional
        Names of the parameters to differentiate (:mod:`tdaeval.attributors._tracked`);
        the others are constants at their values in ``params`` (else the
        model's). Default: those of ``params``, or all.
    dtype : torch.dtype
        Of the result (float32; float64 keeps a float64 model's precision).

    Returns
    -------
    Tensor
        ``[n, n_params]`` (``n_params``: of the differentiated parameters), in
        ``named_parameters`` order.
    """
    device = device or next(iter(model.parameters())).device
    given = aligned_params(model, params, subset=True)  # a subset differentiates those parameters only
    if tracked is None:
        params, frozen = given, {}
    else:
        own = dict(model.named_parameters())
        wanted = set(tracked)
        params = {k: given.get(k, own[k]) for k in own if k in wanted}
        frozen = {k: v for k, v in given.items() if k not in wanted}
    params = {k: v.detach().to(device) for k, v in params.items()}
    frozen = {k: v.detach().to(device) for k, v in frozen.items()}
    buffers = {k: v.detach().to(device) for k, v in model.named_buffers()}

    def one(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(model, ({**frozen, **p}, buffers), (x.unsqueeze(0),))
        return objective(out, y.unsqueeze(0)).sum()

    grad_fn = vmap(grad(one), in_dims=(None, 0, 0))
    chunks = []
    for start in range(0, len(data), chunk_size):
        x = data.inputs[start : start + chunk_size].to(device)
        y = data.targets[start : start + chunk_size].to(device)
        g = grad_fn(params, x, y)
        chunks.append(torch.cat([g[k].reshape(x.shape[0], -1) for k in params], dim=1).to(dtype))
    return torch.cat(chunks)


def train_loss_grads(task: Task, model: nn.Module, data: Data, **kwargs) -> Tensor:
    """Per-example gradients of the training loss, ``[n, n_params]``."""
    return per_sample_grads(model, task.loss, data, **kwargs)


def test_measurement_grads(task: Task, model: nn.Module, data: Data, **kwargs) -> Tensor:
    """Per-example gradients of the measurement oriented as a loss (``-f`` if higher is better)."""
    return per_sample_grads(model, _measurement_objective(task), data, **kwargs)


def _measurement_objective(task: Task):
    sign = -1.0 if task.higher_is_better else 1.0
    return lambda out, y: sign * task.measurement(out, y)


@dataclass
class GradientSet:
    """Per-example gradients of ``n`` examples, dense ``[n, P]`` or per ``nn.Linear`` / ``nn.Conv2d`` layer.

    ``factors`` maps each layer to its :class:`~tdaeval.attributors._linear.LayerGradients`
    (activations × output gradients, or the layer's gradients materialised
    when that is smaller).
    """

    dense: Tensor | None = None
    factors: dict[str, LayerGradients] | None = None

    def dot(self, other: "GradientSet") -> Tensor:
        """``[n_self, n_other]`` inner products of the full gradients."""
        if self.factors is not None and other.factors is not None:
            return factored_dot(self.factors, other.factors)
        return self.dense @ other.dense.T

    def row_dot(self, other: "GradientSet") -> Tensor:
        """``[n]`` inner products of example ``i``'s gradient here and in ``other`` (same examples, same order)."""
        if self.factors is not None and other.factors is not None:
            total = None
            for name, left in self.factors.items():
                right = other.factors[name]
                if left.g is None and right.g is None:  # Σ_{t,t'} (s_t·s'_t')(a_t·a'_t') per example
                    term = (torch.bmm(left.s, right.s.transpose(1, 2)) * torch.bmm(left.a, right.a.transpose(1, 2))).sum((1, 2))
                else:
                    term = (left.materialized() * right.materialized()).sum(1)
                total = term if total is None else total + term
            return total
        left = self.dense if self.dense is not None else torch.cat([g.materialized() for g in self.factors.values()], 1)
        right = other.dense if other.dense is not None else torch.cat([g.materialized() for g in other.factors.values()], 1)
        return (left * right).sum(1)

    def rows(self, start: int, stop: int) -> "GradientSet":
        """The gradients of examples ``start:stop`` (views, no copy)."""
        if self.factors is not None:
            return GradientSet(factors={
                name: LayerGradients(
                    a=None if g.a is None else g.a[start:stop], s=None if g.s is None else g.s[start:stop],
                    g=None if g.g is None else g.g[start:stop],
                )
                for name, g in self.factors.items()
            })
        return GradientSet(dense=self.dense[start:stop])

    def sq_norms(self) -> Tensor:
        """``[n]`` squared gradient norms."""
        if self.factors is not None:
            return factored_sq_norms(self.factors)
        return (self.dense * self.dense).sum(1)


def gradient_set(
    model: nn.Module,
    objective,
    data: Data,
    *,
    params: dict[str, Tensor] | None = None,
    chunk_size: int = 256,
    device: str | torch.device | None = None,
    factorized: bool | None = None,
    tracked: Sequence[str] | None = None,
) -> GradientSet:
    """Per-example gradients of ``objective`` at ``params`` (default: the model's own).

    ``factorized=None`` factors them when every parameter (every ``tracked``
    one) sits in an ``nn.Linear`` layer with batch-first inputs ``[b, in]`` or
    ``[b, T, in]`` or a ``nn.Conv2d`` layer (groups=1, zero padding), each
    called once per forward pass, else computes them densely with
    ``vmap(grad)``; True insists on the factorisation (an error saying why
    otherwise), False never uses it. ``tracked`` names the parameters
    differentiated (default: all), the others held constant.
    """
    if factorized is not False:
        local = model
        if params is not None or device is not None:
            local = copy.deepcopy(model)
            if params is not None:
                local.load_state_dict({**local.state_dict(), **params})
            if device is not None:
                local = local.to(device)
        strict = "factorized=True" if factorized else None
        hint = "Use factorized=None or False (per-sample vmap(grad))."
        layers = factored_layers(local, strict=strict, hint=hint, tracked=None if tracked is None else list(tracked))
        if layers:
            try:
                return GradientSet(factors=collect_gradients(local, layers, objective, data, chunk_size=chunk_size))
            except Unfactorable as why:
                if factorized:
                    raise AttributorError(f"factorized=True: {why}. {hint}") from None
        elif factorized:
            raise AttributorError(f"factorized=True needs at least one nn.Linear or nn.Conv2d layer. {hint}")
    return GradientSet(
        dense=per_sample_grads(model, objective, data, params=params, chunk_size=chunk_size, device=device, tracked=tracked)
    )


class _GradientAttributor(Attributor):
    """Shared by Grad-Dot, Grad-Cos and TracIn: their parameters, per-example gradients, scores chunk by chunk.

    Subclasses implement :meth:`_fit`, :meth:`_prepare_chunks` and :meth:`_attribute_chunk`.
    """

    _parameter_constraints = {
        "chunk_size": [Interval(int, 1, None)],
        "device": DEVICE_CONSTRAINT,
        "factorized": [None, Boolean()],
        "params": PARAMS_CONSTRAINT,
    }

    def __init__(
        self, chunk_size: int = 256, device: str | None = None, factorized: bool | None = None,
        params: str | list[str] = "all",
    ) -> None:
        self.chunk_size = chunk_size
        self.device = device
        self.factorized = factorized
        self.params = params

    def _track(self) -> None:
        """Resolve ``params`` against the fitted model: ``tracked_`` names, or None for every parameter."""
        self.tracked_ = resolve_tracked(self.model_, self.params, f"Attributor {self.display_name!r}")

    def _gradients(self, objective, data: Data, params: dict[str, Tensor] | None = None) -> GradientSet:
        """Per-example gradients of ``objective`` on ``data`` at ``params`` (default: the fitted model's)."""
        return gradient_set(
            self.model_, objective, data, params=params, chunk_size=self.chunk_size, device=self.device,
            factorized=self.factorized, tracked=self.tracked_,
        )

    def _attribute(self, test: Data) -> Tensor:
        return self._attribute_chunk(self._prepare_chunks(test), 0, len(self.train_))


@register
class GradDot(_GradientAttributor):
    """Grad-Dot: ``score(z, z_i) = ∇(-f)(z) · ∇L(z_i)`` at the final model.

    Parameters
    ----------
    chunk_size : int
        Examples per gradient pass.
    device : str, optional
        Where to compute (default: the model's device).
    factorized : bool, optional
        Layer-wise factorisation for models of ``nn.Linear`` / ``nn.Conv2d`` layers (default: when it applies).
    params : {"all", "linear"} or list of str
        Tracked parameters: every parameter (default), the weights and biases
        of the ``nn.Linear`` / ``nn.Conv2d`` layers, or parameter names and
        module-name prefixes; the others are frozen
        (:mod:`tdaeval.attributors._tracked`).
    """

    name = "grad_dot"
    normalize = False

    def _fit(self) -> None:
        self.model_.eval()
        self._track()
        self.train_grads_ = self._gradients(self.task_.loss, self.train_)
        self.train_norms_ = self.train_grads_.sq_norms().sqrt().clamp_min(1e-12) if self.normalize else None

    def _prepare_chunks(self, test: Data) -> tuple[GradientSet, Tensor | None]:
        test_grads = self._gradients(_measurement_objective(self.task_), test)
        return test_grads, test_grads.sq_norms().sqrt().clamp_min(1e-12) if self.normalize else None

    def _attribute_chunk(self, prepared: tuple[GradientSet, Tensor | None], start: int, stop: int) -> Tensor:
        test_grads, test_norms = prepared
        scores = test_grads.dot(self.train_grads_.rows(start, stop))
        if self.normalize:
            scores = scores / test_norms[:, None] / self.train_norms_[None, start:stop]
        return scores

    def self_influence(self, chunk_size: int = 256) -> Tensor:
        """``[n_train]``: each training point's measurement gradient against its own loss gradient, in O(n).

        The diagonal of ``attribute(train)`` without the other pairs (cosine for ``grad_cos``).
        """
        self._require_fitted("self_influence")
        measured = self._gradients(_measurement_objective(self.task_), self.train_)
        values = measured.row_dot(self.train_grads_)
        if self.normalize:
            values = values / measured.sq_norms().sqrt().clamp_min(1e-12) / self.train_norms_
        return values.float().cpu()


@register
class GradCos(GradDot):
    """Grad-Cos: cosine similarity of the Grad-Dot gradients.

    Parameters are those of :class:`GradDot`.
    """

    name = "grad_cos"
    normalize = True


@register
class TracIn(_GradientAttributor):
    """TracIn over checkpoints: ``Σ_c η_c ∇(-f)_c(z) · ∇L_c(z_i)``.

    Needs the checkpoints of the training run (``fit(..., checkpoints=...)``;
    :func:`tdaeval.evaluate` passes those of the reference run); an epoch-0
    checkpoint (``include_initial=True``, lr 0) is skipped.

    Parameters
    ----------
    chunk_size, device, factorized, params
        As :class:`GradDot`.
    """

    name = "tracin"
    requires_checkpoints = True

    def _fit(self) -> None:
        self.model_.eval()
        self._track()
        self.trained_ = [c for _, c in self._trained_checkpoints()]  # epoch 0 (lr 0) adds nothing: skipped
        params = [self._checkpoint_params(k, c) for k, c in self._trained_checkpoints()]  # names checked: a subset is allowed
        self.train_grads_ = [self._gradients(self.task_.loss, self.train_, p) for p in params]

    def _prepare_chunks(self, test: Data) -> list[GradientSet]:
        objective = _measurement_objective(self.task_)
        return [self._gradients(objective, test, checkpoint.params) for checkpoint in self.trained_]

    def _attribute_chunk(self, prepared: list[GradientSet], start: int, stop: int) -> Tensor:
        total = None
        for checkpoint, test_grads, train_grads in zip(self.trained_, prepared, self.train_grads_):
            term = checkpoint.lr * test_grads.dot(train_grads.rows(start, stop))
            total = term if total is None else total + term
        return total
