"""Gradient products of many members at once: stacked parameters, ``vmap``, layer-wise factors.

For ensembles of ``grad_dot`` / ``grad_cos`` over members that share one
architecture whose parameters all sit in ``nn.Linear`` layers with 2-D inputs,
the per-example gradient of layer ``l`` is ``s aᵀ`` (output gradient times the
input with a 1 for the bias), so member ``k``'s scores are
``Σ_l (S_k,l S'_k,lᵀ) ⊙ (A_k,l A'_k,lᵀ)``. The factors of all members come
from one ``vmap`` over the stacked parameters of a forward pass in which each
layer's output gets a zero ``delta`` whose gradient is ``S`` (the loss is a
sum over examples, each depending on its own output only); the products are
batched matrix products over members, in groups small enough for
``memory_budget``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from tdaeval.datasets import Data

__all__ = ["MemberStack", "stack_members", "stack_parameter_sets"]

Factors = dict[str, tuple[Tensor, Tensor]]  # layer -> (A [K, n, in+1], S [K, n, out])


class MemberStack:
    """Members of one architecture, their parameters and buffers stacked on a leading ``[K]`` axis.

    Parameters
    ----------
    template : nn.Module
        One of the members (its modules run the forward pass).
    layers : list of (str, nn.Linear)
        The layers holding every parameter.
    params, buffers : dict of str to Tensor
        ``[K, ...]`` stacked values.
    """

    def __init__(self, template: nn.Module, layers: list[tuple[str, nn.Linear]], params: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
        self.template, self.layers, self.params, self.buffers = template, layers, params, buffers

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def factors(self, objective: Callable[[Tensor, Tensor], Tensor], data: Data, chunk_size: int = 1024) -> Factors:
        """Per member and example: each layer's input (with a bias column of ones) and output gradient."""
        template, layers = self.template, self.layers
        device = next(iter(self.params.values())).device

        def one_member(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor):
            def loss(deltas: dict[str, Tensor]):
                inputs: dict[str, Tensor] = {}
                hooks = []
                for name, module in layers:
                    def hook(mod, args, output, name=name):
                        inputs[name] = args[0]
                        return output + deltas[name]

                    hooks.append(module.register_forward_hook(hook))
                try:
                    outputs = functional_call(template, {**params, **buffers}, (x,))
                finally:
                    for handle in hooks:
                        handle.remove()
                return objective(outputs, y).sum(), inputs

            deltas = {name: x.new_zeros(x.shape[0], module.out_features) for name, module in layers}
            output_grads, inputs = grad(loss, has_aux=True)(deltas)
            return inputs, output_grads

        batched = vmap(one_member, in_dims=(0, 0, None, None))
        chunks: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []
        for start in range(0, len(data), chunk_size):
            x = data.inputs[start : start + chunk_size].to(device)
            y = data.targets[start : start + chunk_size].to(device)
            chunks.append(batched(self.params, self.buffers, x, y))
        out: Factors = {}
        for name, module in layers:
            a = torch.cat([inputs[name] for inputs, _ in chunks], dim=1).float()
            if module.bias is not None:
                a = torch.cat([a, a.new_ones(*a.shape[:2], 1)], dim=-1)
            out[name] = (a, torch.cat([grads[name] for _, grads in chunks], dim=1).float())
        return out

    @staticmethod
    def sq_norms(factors: Factors) -> Tensor:
        """``[K, n]`` squared norms of every member's per-example gradients."""
        return sum((a * a).sum(-1) * (s * s).sum(-1) for a, s in factors.values())

    @staticmethod
    def mean_products(test: Factors, train: Factors, test_norms: Tensor | None = None, train_norms: Tensor | None = None,
                      memory_budget: int = 2**28) -> Tensor:
        """``[n_test, n_train]`` mean over members of the gradient inner products (cosines when norms are given)."""
        first_a, _ = next(iter(test.values()))
        k, n_test = first_a.shape[:2]
        n_train = next(iter(train.values()))[0].shape[1]
        group = max(1, memory_budget // (3 * 4 * n_test * n_train))  # members per step: a few [g, n_test, n_train] floats
        total = first_a.new_zeros(n_test, n_train)
        for start in range(0, k, group):
            members = slice(start, start + group)
            block = None
            for name, (a_test, s_test) in test.items():
                a_train, s_train = train[name]
                term = torch.bmm(s_test[members], s_train[members].transpose(1, 2))
                term *= torch.bmm(a_test[members], a_train[members].transpose(1, 2))
                block = term if block is None else block + term
            if test_norms is not None:
                block = block / test_norms[members, :, None] / train_norms[members, None, :]
            total += block.sum(0)
        return total / k


def stack_members(models: Sequence[nn.Module], example: Tensor) -> MemberStack | None:
    """The members stacked, or None when they cannot be batched this way.

    They can when every member has the same parameter and buffer names and
    shapes, every parameter belongs to an ``nn.Linear`` layer, and every such
    layer sees 2-D inputs (checked with a forward pass on ``example`` ``[1, ...]``).
    """
    template = models[0]
    names = [(n, p.shape) for n, p in template.named_parameters()]
    buffer_names = [(n, b.shape) for n, b in template.named_buffers()]
    for model in models[1:]:
        if [(n, p.shape) for n, p in model.named_parameters()] != names:
            return None
        if [(n, b.shape) for n, b in model.named_buffers()] != buffer_names:
            return None
    layers = _stackable_layers(template, example)
    if layers is None:
        return None
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]) for n, _ in names}
    buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in models]) for n, _ in buffer_names}
    return MemberStack(template, layers, params, buffers)


def stack_parameter_sets(template: nn.Module, parameter_sets: Sequence[dict[str, Tensor]], example: Tensor) -> MemberStack | None:
    """Parameter sets of ``template``'s architecture stacked without building a model for each, or None (as :func:`stack_members`).

    Every set holds all of ``template``'s parameters by name (e.g. checkpoints); the buffers are ``template``'s,
    shared by every set.
    """
    names = [(n, p.shape) for n, p in template.named_parameters()]
    if any(set(params) != {n for n, _ in names} or any(params[n].shape != shape for n, shape in names) for params in parameter_sets):
        return None
    layers = _stackable_layers(template, example)
    if layers is None:
        return None
    device = next(template.parameters()).device
    dtypes = {n: p.dtype for n, p in template.named_parameters()}
    params = {n: torch.stack([params[n].detach().to(device, dtypes[n]) for params in parameter_sets]) for n, _ in names}
    buffers = {n: b.detach().unsqueeze(0).expand(len(parameter_sets), *b.shape).clone() for n, b in template.named_buffers()}
    return MemberStack(template, layers, params, buffers)


def _stackable_layers(template: nn.Module, example: Tensor) -> list[tuple[str, nn.Linear]] | None:
    """The ``nn.Linear`` layers when they hold every parameter and each sees 2-D inputs on ``example``, else None."""
    names = [n for n, _ in template.named_parameters()]
    layers = [(n, m) for n, m in template.named_modules() if isinstance(m, nn.Linear)]
    covered = {f"{n}.{p}" if n else p for n, m in layers for p, _ in m.named_parameters(recurse=False)}
    if not layers or covered != set(names):
        return None
    dims: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: dims.append(args[0].dim())) for _, m in layers]
    try:
        with torch.no_grad():
            template(example.to(next(template.parameters()).device))
    except Exception:  # noqa: BLE001 - an unusual model is simply not batched
        return None
    finally:
        for handle in hooks:
            handle.remove()
    if len(dims) != len(layers) or any(d != 2 for d in dims):
        return None
    return layers
