"""Attributors on the model's last-layer representation: representer points and embedding similarity."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from tdaeval.attributors.base import DEVICE_CONSTRAINT, Attributor, register
from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, ConfigError
from tdaeval.params import Instance

__all__ = ["last_linear", "model_on_device", "penultimate_features", "pool_positions", "Representer", "Similarity"]


def last_linear(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Linear]:
    """The output layer: the module named ``layer``, else the last ``nn.Linear`` in ``model.modules()``."""
    if layer is not None:
        try:
            module = model.get_submodule(layer)
        except AttributeError as err:
            raise AttributorError(f"The model has no submodule named {layer!r} (parameter 'layer').") from err
        if not isinstance(module, nn.Linear):
            raise AttributorError(f"Submodule {layer!r} is a {type(module).__name__}; expected nn.Linear (parameter 'layer').")
        return layer, module
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise AttributorError("The model has no nn.Linear layer; representation attributors need one as output layer.")
    return linears[-1]


def model_on_device(model: nn.Module, device: str | torch.device | None) -> nn.Module:
    """``model`` itself when ``device`` is None or already its device, else a copy moved there (never the caller's)."""
    if device is None:
        return model
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"The 'device' parameter must name a torch device such as 'cpu' or 'cuda:0'. Got {device!r}.") from err
    current = next(iter(model.parameters())).device
    if current == target or (target.index is None and current.type == target.type):
        return model
    return copy.deepcopy(model).to(target)


@torch.no_grad()
def penultimate_features(model: nn.Module, data: Data, layer: str | None = None, chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Inputs of the output layer and the model outputs, in eval mode.

    Returns
    -------
    tuple of Tensor
        features ``[n, d]`` (an output layer applied to one vector per example) or ``[n, T, d]``
        (applied at each of ``T`` positions, as a language model's head), and outputs ``[n, ...]``.

    Raises
    ------
    AttributorError
        When the output layer's input has more than one position axis (``[n, A, B, d]``).
    """
    _, linear = last_linear(model, layer)
    captured: list[Tensor] = []
    handle = linear.register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach()))
    model.eval()
    device = next(iter(model.parameters())).device
    outputs = []
    try:
        for start in range(0, len(data), chunk_size):
            outputs.append(model(data.inputs[start : start + chunk_size].to(device)))
    finally:
        handle.remove()
    features = torch.cat(captured)
    if features.ndim > 3:
        raise AttributorError(
            f"The output layer's input has shape {tuple(features.shape)}; representation attributors expect [n, d] or [n, T, d] "
            "(one position axis)."
        )
    if features.ndim < 3:
        features = features.reshape(len(data), -1)
    return features.float(), torch.cat(outputs)


def pool_positions(features: Tensor, positions: Tensor) -> Tensor:
    """Mean of per-position features over each example's selected positions.

    Parameters
    ----------
    features : Tensor
        ``[n, T, d]``.
    positions : Tensor
        ``[n, T]`` bool, the positions to average (at least one per example).

    Returns
    -------
    Tensor
        ``[n, d]``: ``Σ_t positions[i, t] · features[i, t] / Σ_t positions[i, t]``.

    Raises
    ------
    AttributorError
        When ``positions`` is not a bool ``[n, T]`` tensor, or selects no position of some example.
    """
    if not isinstance(positions, Tensor) or positions.dtype != torch.bool or tuple(positions.shape) != tuple(features.shape[:2]):
        got = f"{positions.dtype} {tuple(positions.shape)}" if isinstance(positions, Tensor) else type(positions).__name__
        raise AttributorError(f"Positions to pool must be a bool tensor [n, T] = {list(features.shape[:2])}; got {got}.")
    counts = positions.sum(1)
    empty = (counts == 0).nonzero().flatten()
    if len(empty):
        raise AttributorError(f"Cannot mean-pool sequence features: {len(empty)} example(s) have no selected position (first: row {int(empty[0])}).")
    mask = positions.to(features.device, features.dtype).unsqueeze(-1)
    return (features * mask).sum(1) / counts.to(features.device, features.dtype).unsqueeze(-1)


class _OutputLayerAttributor(Attributor):
    """Shared by the attributors of the output layer's input embeddings: the layer, the device, the forward passes."""

    _parameter_constraints = {"layer": [None, Instance(str)], "device": DEVICE_CONSTRAINT}

    def __init__(self, layer: str | None = None, device: str | None = None) -> None:
        self.layer, self.device = layer, device

    def _features(self, data: Data) -> tuple[Tensor, Tensor]:
        """Embeddings ``[n, d]`` and outputs ``[n, ...]`` of ``data`` through the fitted model's copy on ``device``."""
        return penultimate_features(self.net_, data, self.layer)

    def _fit(self) -> None:
        self.net_ = model_on_device(self.model_, self.device)

    def _pooled(self, data: Data) -> Tensor:
        """One embedding ``[n, d]`` per example: the output layer's input, mean-pooled over ``task.positions(data)`` when per-position.

        Raises
        ------
        AttributorError
            When the features are ``[n, T, d]`` and the task gives no positions (``Task.positions`` returns None).
        """
        features, _ = self._features(data)
        if features.ndim == 2:
            return features
        positions_of = getattr(self.task_, "positions", None)
        positions = positions_of(data) if positions_of is not None else None
        if positions is None:
            raise AttributorError(
                f"Attributor {self.display_name!r}: the output layer's input is per position, {list(features.shape)} = [n, T, d], "
                f"but task {type(self.task_).__name__} gives no positions to pool it over (Task.positions returned None)."
            )
        return pool_positions(features, positions.to(features.device))


@register
class Similarity(_OutputLayerAttributor):
    """Cosine similarity of last-layer input embeddings (a heuristic: similar = supports).

    When the output layer is applied at every position of a sequence (its input is ``[n, T, d]``,
    a language model's head), an example's embedding is the mean of its per-position inputs over
    the positions ``task.positions(data)`` selects (the language-model task: where the target is
    not ignored, so every predicting position of a training sentence and the answer-predicting
    position of a query); a task whose ``positions`` is None cannot be scored then.

    Parameters
    ----------
    layer : str, optional
        Name of the output ``nn.Linear`` whose input is the embedding (default: the last one).
    device : str, optional
        Where to run the forward passes (default: the model's device; a copy
        of the model is moved, never the caller's).
    """

    name = "similarity"

    def _fit(self) -> None:
        super()._fit()
        self.train_features_ = nn.functional.normalize(self._pooled(self.train_), dim=1)

    def _attribute(self, test: Data) -> Tensor:
        return nn.functional.normalize(self._pooled(test), dim=1) @ self.train_features_.T


@register
class Representer(_OutputLayerAttributor):
    """Representer points (Yeh et al. 2018) on the output layer of the trained model.

    The output ``Φ(x) = W f(x) + b`` decomposes as ``Σ_i α_i f_iᵀ f(x)`` with
    ``α_i = -∂L(z_i)/∂Φ_i / (2λn)``. The score of training point ``i`` for
    test point ``z`` is its contribution to the outputs pushed through the
    measurement: ``(f_iᵀ f_z) · α_i · ∂f(z)/∂Φ``, sign-flipped when lower is
    better. The positive constant ``1/(2λn)`` is dropped. Unlike the paper, the
    output layer is not re-fitted with an L2 penalty first.

    On sequences (the output layer applied at every position: features
    ``f_t ∈ R^d``, outputs ``Φ_t = W f_t + b``, ``[n, T, ...]``) the theorem holds
    per position: the stationary ``W`` is ``-Σ_i Σ_t ∂L(z_i)/∂Φ_{i,t} f_{i,t}ᵀ / (2λn)``,
    so training point ``i``'s share of the test output at position ``s`` is
    ``Σ_t α_{i,t} (f_{i,t}ᵀ f_s(z))``. Pushed through the measurement, the score
    is the sum of the per-position representer terms over every (test position
    ``s``, training position ``t``) pair,
    ``Σ_s Σ_t (f_{i,t}ᵀ f_s(z)) · α_{i,t}ᵀ ∂f(z)/∂Φ_s``: no pooling, and no
    positions needed, since the loss and measurement gradients vanish where
    they ignore a position. On vectors and on sequences alike, the score equals
    the inner product of the output weight's gradients, ``⟨∂f(z)/∂W, -∂L(z_i)/∂W⟩`` (sign-flipped when lower is
    better), i.e. grad-dot restricted to ``W``.

    Parameters
    ----------
    layer, device
        As :class:`Similarity` (``layer``: the output ``nn.Linear``).
    """

    name = "representer"

    def _output_grads(self, outputs: Tensor, targets: Tensor, fn) -> Tensor:
        def one(out: Tensor, y: Tensor) -> Tensor:
            return fn(out.unsqueeze(0), y.unsqueeze(0)).sum()

        return vmap(grad(one))(outputs, targets.to(outputs.device))

    def _per_position(self, features: Tensor, grads: Tensor) -> Tensor:
        """Output gradients ``[n, T, ...]`` as ``[n, T, k]``, checked to be per position like the ``[n, T, d]`` features."""
        if tuple(grads.shape[:2]) != tuple(features.shape[:2]):
            raise AttributorError(
                f"Attributor {self.display_name!r}: the output layer's input is per position, {list(features.shape)} = [n, T, d], "
                f"so the model's output must be that layer's output [n, T, ...]; got {list(grads.shape)}."
            )
        return grads.reshape(*features.shape[:2], -1)

    def _fit(self) -> None:
        super()._fit()
        features, outputs = self._features(self.train_)
        self.train_features_ = features
        alpha = -self._output_grads(outputs, self.train_.targets, self.task_.loss).float()
        self.alpha_ = alpha.reshape(len(self.train_), -1) if features.ndim == 2 else self._per_position(features, alpha)

    def _attribute(self, test: Data) -> Tensor:
        features, outputs = self._features(test)
        sign = 1.0 if self.task_.higher_is_better else -1.0
        d_measure = sign * self._output_grads(outputs, test.targets, self.task_.measurement).float()
        if features.ndim == 3:
            return self._sequence_scores(features, self._per_position(features, d_measure))
        d_measure = d_measure.reshape(len(test), -1)
        kernel = features @ self.train_features_.T  # [n_test, n_train]
        direction = d_measure @ self.alpha_.T  # [n_test, n_train]
        return kernel * direction

    def _sequence_scores(self, features: Tensor, d_measure: Tensor) -> Tensor:
        """``Σ_s Σ_t (f_{i,t}ᵀ f_{q,s}) (α_{i,t}ᵀ g_{q,s})`` ``[n_test, n_train]`` from test features ``[n_test, T, d]`` and
        measurement gradients ``g`` ``[n_test, T, k]``; one test position at a time, skipping positions no query measures."""
        n_train, length, _ = self.train_features_.shape
        train_features = self.train_features_.reshape(n_train * length, -1)  # [(i, t), d]
        alpha = self.alpha_.reshape(n_train * length, -1)  # [(i, t), k]
        scores = torch.zeros(len(features), n_train, dtype=features.dtype, device=features.device)
        for s in range(features.shape[1]):
            rows = (d_measure[:, s] != 0).any(1).nonzero().flatten()
            if len(rows) == 0:
                continue
            kernel = features[rows, s] @ train_features.T  # [rows, (i, t)]
            direction = d_measure[rows, s] @ alpha.T  # [rows, (i, t)]
            scores[rows] += (kernel * direction).reshape(len(rows), n_train, length).sum(-1)
        return scores
