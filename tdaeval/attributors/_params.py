"""Flat parameter vectors and Hessian / Gauss–Newton vector products of the mean training loss (used by influence and TRAK)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from tdaeval.datasets import Data
from tdaeval.task import Task

__all__ = ["FlatParams", "HessianOperator", "GaussNewtonOperator"]


class FlatParams:
    """A model's (tracked) parameters as one flat vector ``[P]``, and back.

    Parameters
    ----------
    model : nn.Module
        Its parameters (in ``named_parameters`` order) are flattened.
    device : str or torch.device, optional
        Where the flat vector lives (default: the model's device).
    names : sequence of str, optional
        The tracked parameters (:mod:`tdaeval.attributors._tracked`), flattened
        in ``named_parameters`` order; the others are frozen, held at the
        model's values in :attr:`frozen`. Default: every parameter.
    """

    def __init__(self, model: nn.Module, device: str | torch.device | None = None, names: Sequence[str] | None = None) -> None:
        self.model = model
        named = dict(model.named_parameters())
        wanted = set(named if names is None else names)
        self.names = [k for k in named if k in wanted]
        self.shapes = [named[k].shape for k in self.names]
        self.sizes = [int(named[k].numel()) for k in self.names]
        device = device or next(iter(named.values())).device
        self.vector = torch.cat([named[k].detach().reshape(-1) for k in self.names]).to(device)
        self.frozen = {k: v.detach().to(device) for k, v in named.items() if k not in wanted}
        self.buffers = {k: v.detach().to(device) for k, v in model.named_buffers()}

    @property
    def n_params(self) -> int:
        return int(self.vector.numel())

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``[P]`` vector → parameter dict (views)."""
        return {k: t.view(s) for k, t, s in zip(self.names, torch.split(flat, self.sizes), self.shapes)}

    def forward(self, flat: Tensor, x: Tensor) -> Tensor:
        """Model outputs at parameters ``flat`` (the frozen ones at :attr:`frozen`) for inputs ``x``."""
        return functional_call(self.model, ({**self.frozen, **self.unflatten(flat)}, self.buffers), (x,))


class HessianOperator:
    """Mean Hessian of the training loss at the model's parameters, applied to batches of vectors.

    ``H = (1/n) Σ_i ∇²L(z_i)`` over ``data`` (all of it, or a seeded sample
    of ``n_samples``). The model is evaluated in its current mode.

    Parameters
    ----------
    task : Task
        Supplies the per-example loss.
    flat : FlatParams
        The parameters to differentiate at.
    data : Data
        Training examples.
    chunk_size : int
        Examples per forward-over-reverse pass.
    vector_chunk : int
        Vectors per ``vmap`` call (bounds memory).
    """

    def __init__(self, task: Task, flat: FlatParams, data: Data, chunk_size: int = 512, vector_chunk: int = 64) -> None:
        self.task, self.flat, self.data = task, flat, data
        self.chunk_size, self.vector_chunk = chunk_size, vector_chunk
        device = flat.vector.device

        def loss_sum(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
            return task.loss(flat.forward(theta, x), y).sum()

        grad_fn = grad(loss_sum)

        def hvp(v: Tensor, x: Tensor, y: Tensor) -> Tensor:
            return jvp(lambda theta: grad_fn(theta, x, y), (flat.vector,), (v,))[1]

        self._hvp = vmap(hvp, in_dims=(0, None, None))
        self._chunks = [
            (data.inputs[s : s + chunk_size].to(device), data.targets[s : s + chunk_size].to(device))
            for s in range(0, len(data), chunk_size)
        ]

    @property
    def n_params(self) -> int:
        return self.flat.n_params

    def __call__(self, vectors: Tensor) -> Tensor:
        """``H @ v`` for each row ``v`` of ``vectors`` ``[k, P]``; returns ``[k, P]``."""
        out = []
        for start in range(0, vectors.shape[0], self.vector_chunk):
            block = vectors[start : start + self.vector_chunk].to(self.flat.vector.dtype)
            total = torch.zeros_like(block)
            for x, y in self._chunks:
                total = total + self._hvp(block, x, y)
            out.append(total / len(self.data))
        return torch.cat(out)

    def dense(self) -> Tensor:
        """The full ``[P, P]`` Hessian (symmetrised)."""
        eye = torch.eye(self.n_params, dtype=self.flat.vector.dtype, device=self.flat.vector.device)
        hessian = self(eye)
        return (hessian + hessian.T) / 2


class GaussNewtonOperator(HessianOperator):
    """Mean Gauss–Newton matrix ``G = (1/n) Σ_i J_iᵀ ∇²_o L(z_i) J_i`` applied to batches of vectors.

    ``J_i`` is the Jacobian of the model outputs w.r.t. the parameters and
    ``∇²_o L`` the Hessian of the loss w.r.t. the outputs. ``G`` is positive
    semi-definite for convex losses (cross-entropy, squared error) and equals
    the Hessian for linear models; parameters as :class:`HessianOperator`.
    """

    def __init__(self, task: Task, flat: FlatParams, data: Data, chunk_size: int = 512, vector_chunk: int = 64) -> None:
        super().__init__(task, flat, data, chunk_size, vector_chunk)

        def gnvp(v: Tensor, x: Tensor, y: Tensor) -> Tensor:
            outputs, pullback = vjp(lambda theta: flat.forward(theta, x), flat.vector)
            _, j_v = jvp(lambda theta: flat.forward(theta, x), (flat.vector,), (v,))
            loss_grad = grad(lambda o: task.loss(o, y).sum())
            _, h_j_v = jvp(loss_grad, (outputs,), (j_v,))
            return pullback(h_j_v)[0]

        self._hvp = vmap(gnvp, in_dims=(0, None, None))
