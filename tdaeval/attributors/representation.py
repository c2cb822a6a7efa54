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

__all__ = ["last_linear", "model_on_device", "penultimate_features", "Representer", "Similarity"]


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
        features ``[n, d]`` and outputs ``[n, ...]``.
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
    features = torch.cat(captured).reshape(len(data), -1)
    return features.float(), torch.cat(outputs)


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


@register
class Similarity(_OutputLayerAttributor):
    """Cosine similarity of last-layer input embeddings (a heuristic: similar = supports).

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
        features, _ = self._features(self.train_)
        self.train_features_ = nn.functional.normalize(features, dim=1)

    def _attribute(self, test: Data) -> Tensor:
        features, _ = self._features(test)
        return nn.functional.normalize(features, dim=1) @ self.train_features_.T


@register
class Representer(_OutputLayerAttributor):
    """Representer points (Yeh et al. 2018) on the output layer of the trained model.

    The output ``Φ(x) = W f(x) + b`` decomposes as ``Σ_i α_i f_iᵀ f(x)`` with
    ``α_i = -∂L(z_i)/∂Φ_i / (2λn)``. The score of training point ``i`` for
    test point ``z`` is its contribution to the outputs pushed through the
    measurement: ``(f_iᵀ f_z) · α_i · ∂f(z)/∂Φ``, sign-flipped when lower is
    better. The positive constant ``1/(2λn)`` is dropped. Unlike the paper, the
    output layer is not re-fitted with an L2 penalty first.

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

    def _fit(self) -> None:
        super()._fit()
        features, outputs = self._features(self.train_)
        self.train_features_ = features
        self.alpha_ = -self._output_grads(outputs, self.train_.targets, self.task_.loss).reshape(len(self.train_), -1).float()

    def _attribute(self, test: Data) -> Tensor:
        features, outputs = self._features(test)
        sign = 1.0 if self.task_.higher_is_better else -1.0
        d_measure = sign * self._output_grads(outputs, test.targets, self.task_.measurement).reshape(len(test), -1).float()
        kernel = features @ self.train_features_.T  # [n_test, n_train]
        direction = d_measure @ self.alpha_.T  # [n_test, n_train]
        return kernel * direction
