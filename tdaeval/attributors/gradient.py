"""Gradient-similarity attributors: Grad-Dot, Grad-Cos and TracIn.

Per-sample gradients come from ``torch.func.vmap(grad(...))`` in chunks, never
from a Python loop over examples. The test side differentiates the
measurement turned into a "badness" (``-f`` when higher is better), the train
side the training loss, so that a positive dot product means that a gradient
step on the training example improves the test measurement (supports it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from tdaeval.attributors.base import Attributor, register
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, check_int_at_least
from tdaeval.task import Task

__all__ = ["per_sample_grads", "train_loss_grads", "test_measurement_grads", "GradDot", "GradCos", "TracIn"]


def per_sample_grads(
    model: nn.Module,
    objective,
    data: Data,
    *,
    params: dict[str, Tensor] | None = None,
    chunk_size: int = 256,
    device: str | torch.device | None = None,
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
        Parameters to differentiate at (default: the model's own), e.g. a checkpoint.
    chunk_size : int
        Examples per ``vmap`` call; bounds memory at ``chunk_size x n_params``.
    device : str or torch.device, optional
        Where to compute (default: the model's device).

    Returns
    -------
    Tensor
        ``[n, n_params]`` float32, parameters in ``named_parameters`` order.
    """
    device = device or next(iter(model.parameters())).device
    params = {k: v.detach().to(device) for k, v in (params or dict(model.named_parameters())).items()}
    buffers = {k: v.detach().to(device) for k, v in model.named_buffers()}

    def one(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return objective(out, y.unsqueeze(0)).sum()

    grad_fn = vmap(grad(one), in_dims=(None, 0, 0))
    chunks = []
    for start in range(0, len(data), chunk_size):
        x = data.inputs[start : start + chunk_size].to(device)
        y = data.targets[start : start + chunk_size].to(device)
        g = grad_fn(params, x, y)
        chunks.append(torch.cat([g[k].reshape(x.shape[0], -1) for k in params], dim=1).float())
    return torch.cat(chunks)


def train_loss_grads(task: Task, model: nn.Module, data: Data, **kwargs) -> Tensor:
    """Per-example gradients of the training loss, ``[n, n_params]``."""
    return per_sample_grads(model, task.loss, data, **kwargs)


def test_measurement_grads(task: Task, model: nn.Module, data: Data, **kwargs) -> Tensor:
    """Per-example gradients of the measurement oriented as a loss (``-f`` if higher is better)."""
    sign = -1.0 if task.higher_is_better else 1.0
    return per_sample_grads(model, lambda out, y: sign * task.measurement(out, y), data, **kwargs)


def _check_chunk_size(chunk_size: int, owner: str) -> int:
    return check_int_at_least("chunk_size", owner, chunk_size, 1)


@register
class GradDot(Attributor):
    """Grad-Dot: ``score(z, z_i) = ∇(-f)(z) · ∇L(z_i)`` at the final model.

    Parameters
    ----------
    chunk_size : int
        Examples per per-sample-gradient call.
    device : str, optional
        Where to compute (default: the model's device).
    """

    name = "grad_dot"
    normalize = False

    def __init__(self, chunk_size: int = 256, device: str | None = None) -> None:
        self.chunk_size = _check_chunk_size(chunk_size, type(self).__name__)
        self.device = device

    def _fit(self) -> None:
        self.model_.eval()
        self.train_grads_ = train_loss_grads(
            self.task_, self.model_, self.train_, chunk_size=self.chunk_size, device=self.device
        )
        if self.normalize:
            self.train_grads_ = _unit_rows(self.train_grads_)

    def _attribute(self, test: Data) -> Tensor:
        test_grads = test_measurement_grads(self.task_, self.model_, test, chunk_size=self.chunk_size, device=self.device)
        if self.normalize:
            test_grads = _unit_rows(test_grads)
        return test_grads @ self.train_grads_.T


def _unit_rows(g: Tensor) -> Tensor:
    return g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)


@register
class GradCos(GradDot):
    """Grad-Cos: cosine similarity of the Grad-Dot gradients.

    Parameters
    ----------
    chunk_size : int
        Examples per per-sample-gradient call.
    device : str, optional
        Where to compute (default: the model's device).
    """

    name = "grad_cos"
    normalize = True


@register
class TracIn(Attributor):
    """TracIn over checkpoints: ``Σ_c η_c ∇(-f)_c(z) · ∇L_c(z_i)``.

    Needs the checkpoints of the training run (``fit(..., checkpoints=...)``;
    :func:`tdaeval.evaluate` passes those of the reference run).

    Parameters
    ----------
    chunk_size : int
        Examples per per-sample-gradient call.
    device : str, optional
        Where to compute (default: the model's device).
    """

    name = "tracin"

    def __init__(self, chunk_size: int = 256, device: str | None = None) -> None:
        self.chunk_size = _check_chunk_size(chunk_size, "TracIn")
        self.device = device

    def _fit(self) -> None:
        if not self.checkpoints_:
            raise AttributorError(
                "Attributor 'tracin' needs checkpoints of the training run: pass checkpoints=[...] to fit() "
                "(tdaeval.training.train_model(..., n_checkpoints=k) records them)."
            )
        self.model_.eval()
        self.train_grads_ = [
            train_loss_grads(self.task_, self.model_, self.train_, params=c.params, chunk_size=self.chunk_size, device=self.device)
            for c in self.checkpoints_
        ]

    def _attribute(self, test: Data) -> Tensor:
        total = None
        for checkpoint, train_grads in zip(self.checkpoints_, self.train_grads_):
            test_grads = test_measurement_grads(
                self.task_, self.model_, test, params=checkpoint.params, chunk_size=self.chunk_size, device=self.device
            )
            term = checkpoint.lr * (test_grads @ train_grads.T)
            total = term if total is None else total + term
        return total
