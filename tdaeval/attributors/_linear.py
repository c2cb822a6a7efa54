"""Per-example gradients of ``nn.Linear`` and ``nn.Conv2d`` layers in factored form.

A layer's per-example weight gradient is ``G_i = S_iᵀ A_i`` ``[out, in']``:
``A_i`` ``[T, in']`` holds the inputs the layer multiplies its weight with, one
row per position ``t`` (bias folded in as a trailing 1, so ``in' = in + 1``),
and ``S_i`` ``[T, out]`` the gradients of the objective w.r.t. the layer's
outputs at those positions. For ``nn.Linear`` on 2-D inputs ``T = 1`` and the
gradient is rank one, ``s aᵀ``; its dot products factor,
``<s aᵀ, s' a'ᵀ> = (s·s')(a·a')``, so pairwise scores never need the ``[n, P]``
gradients. For ``nn.Linear`` on sequences ``[b, T, in]`` the rows of ``A_i``
are the inputs at the ``T`` positions (a padding position, whose output does
not reach the objective, has ``s_it = 0`` and adds nothing). For ``nn.Conv2d`` the rows of ``A_i`` are the ``in·kh·kw`` input
patches (``torch.nn.functional.unfold``, in the order of
``weight.reshape(out, -1)``) at the ``T = H_out·W_out`` output positions, and
``<G_i, G_j> = Σ_{t,t'} (s_it·s_jt')(a_it·a_jt')`` sums over pairs of
positions: per layer we pick the cheaper of that sum (``T²(in'+out)`` per pair)
and materialising ``G_i`` by a batched matmul (``in'·out`` per pair).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdaeval.datasets import Data
from tdaeval.errors import AttributorError

__all__ = [
    "LayerGradients",
    "Unfactorable",
    "chunk_factors",
    "conv_patches",
    "collect_gradients",
    "factored_dot",
    "factored_layers",
    "factored_sq_norms",
    "layer_method",
    "linear_layers",
]

# Largest intermediate (elements) of a pairwise product: bounds the chunks over examples.
_BLOCK_ELEMENTS = 1 << 24

Method = Literal["materialize", "positions"]


class Unfactorable(Exception):
    """The factorisation does not apply to this model / data; the message says why."""


def _qualified(module: str, parameter: str) -> str:
    return f"{module}.{parameter}" if module else parameter


def _conv_problem(module: nn.Conv2d) -> str | None:
    """Why a ``nn.Conv2d`` cannot be factored (None when it can)."""
    if module.groups != 1:
        return f"groups={module.groups} (only groups=1 is supported)"
    if module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} (only 'zeros' is supported)"
    return None


def factored_layers(
    model: nn.Module,
    strict: str | None = None,
    hint: str = "Use solver='cg', 'lissa' or 'arnoldi'.",
    tracked: list[str] | None = None,
) -> list[tuple[str, nn.Linear | nn.Conv2d]] | None:
    """The model's ``nn.Linear`` / ``nn.Conv2d`` layers when they hold every (tracked) parameter, else None.

    ``nn.Conv2d`` layers must have ``groups=1`` and ``padding_mode='zeros'``.

    Parameters
    ----------
    strict : str, optional
        A description of the caller: raise :class:`AttributorError` (naming the
        parameters or the layer, followed by ``hint``) instead of returning None.
    hint : str
        What to do instead, appended to the message.
    tracked : list of str, optional
        Parameter names that are differentiated (the others frozen,
        :mod:`tdaeval.attributors._tracked`); default: all. Only layers with
        tracked parameters are returned, and each must be tracked whole
        (weight and bias, or neither).
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    names = [name for name, _ in model.named_parameters()]
    wanted = set(names if tracked is None else tracked)
    suffix = f" {hint}" if hint else ""
    chosen = []
    for name, m in layers:
        own = [_qualified(name, p) for p, _ in m.named_parameters(recurse=False)]
        kept = [p for p in own if p in wanted]
        if kept and len(kept) < len(own):
            if strict:
                raise AttributorError(
                    f"{strict}: layer {name!r} is only partly tracked ({kept} of {own}); track all of a layer's "
                    f"parameters or none.{suffix}"
                )
            return None
        if kept:
            chosen.append((name, m))
    covered = {_qualified(name, p) for name, m in chosen for p, _ in m.named_parameters(recurse=False)}
    others = [name for name in names if name in wanted and name not in covered]
    if others:
        if strict:
            subject = "models whose parameters" if tracked is None else "tracked parameters that"
            raise AttributorError(
                f"{strict} supports {subject} all belong to nn.Linear or nn.Conv2d layers; these do not: {others[:5]} "
                f"(params='linear' tracks only those layers and freezes the rest).{suffix}"
            )
        return None
    for name, m in chosen:
        problem = _conv_problem(m) if isinstance(m, nn.Conv2d) else None
        if problem:
            if strict:
                raise AttributorError(f"{strict}: nn.Conv2d layer {name!r} has {problem}.{suffix}")
            return None
    return chosen


#: Former name of :func:`factored_layers` (it now accepts ``nn.Conv2d`` too).
linear_layers = factored_layers


def conv_patches(module: nn.Conv2d, x: Tensor) -> Tensor:
    """``[b, T, in·kh·kw]`` input patches of a ``nn.Conv2d`` at its ``T = H_out·W_out`` output positions.

    Columns follow ``module.weight.reshape(out, -1)``, so the layer's output is
    ``patches @ weight.reshape(out, -1).T`` (plus bias) at every position.
    """
    padding = module.padding
    if isinstance(padding, str):
        pads: list[int] = []
        if padding == "same":  # as torch: the odd unit of padding goes right / bottom
            for d, k in reversed(list(zip(module.dilation, module.kernel_size))):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        padding = 0
    cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride)
    return cols.transpose(1, 2)


def _with_bias(a: Tensor, module: nn.Module) -> Tensor:
    if module.bias is None:
        return a
    return torch.cat([a, torch.ones(*a.shape[:-1], 1, dtype=a.dtype, device=a.device)], dim=-1)


def chunk_factors(
    model: nn.Module,
    layers: list[tuple[str, nn.Linear | nn.Conv2d]],
    objective: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    targets: Callable[[Tensor, Tensor], Tensor] | None = None,
    per_example: bool = True,
    bias_column: bool = True,
) -> tuple[dict[str, tuple[Tensor, Tensor]], Tensor]:
    """Layer inputs and output gradients of one batch, grouped by example.

    Parameters
    ----------
    model : nn.Module
        Evaluated in its current mode.
    objective : callable
        ``(outputs, targets) -> [b]`` per-example values; their sum is differentiated.
    x, y : Tensor
        One batch of ``b`` inputs and targets, on the model's device.
    targets : callable, optional
        ``(outputs, targets) -> targets`` replacing ``y`` (e.g. sampled labels).
    per_example : bool
        Group the rows by example: a ``nn.Linear`` input ``[b, in]`` gives
        ``T = 1``, ``[b, T, in]`` (a sequence; further dimensions are flattened
        into ``T``) ``T`` positions. With False, every row of a ``nn.Linear``
        input is its own unit (``m = rows``, ``T = 1``). ``nn.Conv2d`` is always
        grouped by example.
    bias_column : bool
        Append the trailing 1 of layers with a bias to ``a`` (False: the caller does).

    Returns
    -------
    factors : dict
        ``name -> (a [m, T, in(+1)], s [m, T, out])`` with ``m = b`` when grouped
        by example; ``G_i = s_iᵀ a_i`` is unit ``i``'s weight gradient (bias last).
    y : Tensor
        The targets used.

    Raises
    ------
    Unfactorable
        A layer is not called exactly once per forward pass or sees inputs that
        are not batch-first.
    """
    inputs: dict[str, list[Tensor]] = {name: [] for name, _ in layers}
    grads: dict[str, list[Tensor]] = {name: [] for name, _ in layers}

    def keep(name: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            inputs[name].append(args[0].detach())
            if output.requires_grad:
                output.register_hook(lambda g: grads[name].append(g.detach()))

        return hook

    handles = [m.register_forward_hook(keep(name)) for name, m in layers]
    try:
        with torch.enable_grad():
            out = model(x)
            if targets is not None:
                y = targets(out.detach(), y).to(x.device)
            # Differentiating w.r.t. the weights runs the output hooks; nothing accumulates into .grad.
            weights = [m.weight for _, m in layers if m.weight.requires_grad]
            if weights:
                torch.autograd.grad(objective(out, y).sum(), weights, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    b = x.shape[0]
    factors = {}
    for name, m in layers:
        if len(inputs[name]) != 1 or len(grads[name]) != 1:
            raise Unfactorable(
                f"layer {name!r} runs {len(inputs[name])} times per forward pass (with {len(grads[name])} "
                "output gradients); the factorisation needs exactly one call"
            )
        a_in, g_out = inputs[name][0], grads[name][0]
        if isinstance(m, nn.Conv2d):
            if a_in.ndim != 4 or a_in.shape[0] != b:
                raise Unfactorable(
                    f"nn.Conv2d layer {name!r} sees input of shape {tuple(a_in.shape)}, not [{b}, C, H, W]"
                )
            a = conv_patches(m, a_in)
            s = g_out.reshape(b, m.out_channels, -1).transpose(1, 2)
        elif per_example:
            if a_in.ndim < 2 or a_in.shape[0] != b:
                raise Unfactorable(
                    f"nn.Linear layer {name!r} sees input of shape {tuple(a_in.shape)}, "
                    f"not batch-first [{b}, in] or [{b}, positions, in]"
                )
            # [b, in] -> T = 1; [b, T, in] (sequences; more dimensions are flattened into T) -> T positions
            a, s = a_in.reshape(b, -1, m.in_features), g_out.reshape(b, -1, m.out_features)
        else:
            a, s = a_in.reshape(-1, 1, m.in_features), g_out.reshape(-1, 1, m.out_features)
        if a.shape[:2] != s.shape[:2]:
            raise Unfactorable(f"layer {name!r}: {a.shape[1]} input positions but {s.shape[1]} output positions")
        factors[name] = (_with_bias(a, m) if bias_column else a, s)
    return factors, y


@dataclass
class LayerGradients:
    """One layer's per-example weight gradients ``G_i = s_iᵀ a_i`` ``[out, in(+1)]`` of ``n`` examples.

    Held either as factors ``a`` ``[n, T, in(+1)]`` and ``s`` ``[n, T, out]``
    (``T = 1``: rank one) or materialised, ``g`` ``[n, out·in(+1)]`` (the weight
    gradient flattened row-major with the bias gradient as the last column).
    """

    a: Tensor | None = None
    s: Tensor | None = None
    g: Tensor | None = None

    def __len__(self) -> int:
        return (self.g if self.g is not None else self.a).shape[0]

    @property
    def positions(self) -> int:
        """``T``, or 0 when materialised."""
        return 0 if self.a is None else self.a.shape[1]

    def materialized(self, start: int = 0, stop: int | None = None) -> Tensor:
        """``[stop - start, out·in(+1)]`` gradients of examples ``start:stop`` (a batched matmul)."""
        if self.g is not None:
            return self.g[start:stop]
        s, a = self.s[start:stop], self.a[start:stop]
        return torch.bmm(s.transpose(1, 2), a).reshape(s.shape[0], -1)


def layer_method(positions: int, n_in: int, n_out: int) -> Method:
    """The cheaper way to form ``<G_i, G_j>`` for a factored layer: per pair, ``T²(in+out)`` vs ``in·out`` flops."""
    return "positions" if positions * positions * (n_in + n_out) < n_in * n_out else "materialize"


def _storage(positions: int, n_in: int, n_out: int) -> Literal["factors", "materialized"]:
    """Keep the factors (``T(in+out)`` numbers per example) unless ``G`` (``in·out``) is no larger."""
    return "factors" if positions == 1 or positions * (n_in + n_out) < n_in * n_out else "materialized"


def collect_gradients(
    model: nn.Module,
    layers: list[tuple[str, nn.Linear | nn.Conv2d]],
    objective: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    *,
    chunk_size: int = 256,
    storage: Literal["factors", "materialized"] | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, LayerGradients]:
    """Per-example gradients of ``objective`` for every layer, chunk by chunk, in float32 (or ``dtype``).

    Parameters
    ----------
    storage : {"factors", "materialized"}, optional
        How to hold layers with ``T > 1`` positions. Default: per layer the
        smaller of the factors ``n·T·(in'+out)`` and the gradients
        ``n·out·in'``, so such a layer never takes more memory than its dense
        per-example gradients. Rank-one layers (``T = 1``) always keep their
        factors.
    dtype : torch.dtype
        Of the held gradients (float32; float64 keeps a float64 model's precision).

    Raises
    ------
    Unfactorable
        When :func:`chunk_factors` does.
    """
    model.eval()
    device = next(iter(model.parameters())).device
    n = len(data)
    modules = dict(layers)
    out: dict[str, LayerGradients] = {}
    for start in range(0, n, chunk_size):
        x = data.inputs[start : start + chunk_size].to(device)
        y = data.targets[start : start + chunk_size].to(device)
        factors, _ = chunk_factors(model, layers, objective, x, y, bias_column=False)
        stop = start + x.shape[0]
        for name, (a, s) in factors.items():
            t, n_in, n_out = a.shape[1], a.shape[2], s.shape[2]
            has_bias = modules[name].bias is not None
            width = n_in + has_bias
            if name not in out:  # preallocate [n, ...] for the layer in the form chosen
                if t == 1 or (storage or _storage(t, width, n_out)) == "factors":
                    out[name] = LayerGradients(a=a.new_ones(n, t, width, dtype=dtype),
                                               s=s.new_empty(n, t, n_out, dtype=dtype))
                else:
                    out[name] = LayerGradients(g=a.new_empty(n, n_out * width, dtype=dtype))
            held = out[name]
            if held.g is not None:  # G_i = S_iᵀ [A_i, 1]: weight part by a batched matmul, bias part a sum
                g = held.g[start:stop].view(-1, n_out, width)
                s = s.to(dtype)
                g[:, :, :n_in] = torch.bmm(s.transpose(1, 2), a.to(dtype))
                if has_bias:
                    g[:, :, n_in] = s.sum(1)
            else:
                held.a[start:stop, :, :n_in], held.s[start:stop] = a, s
    return out


def _step(per_row: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(per_row, 1))


def _pair_method(left: LayerGradients, right: LayerGradients, method: Method | None) -> Method:
    if left.g is not None or right.g is not None:
        return "materialize"
    if method is not None:
        return method
    return layer_method(left.a.shape[1], left.a.shape[2], left.s.shape[2])


def _layer_dot(left: LayerGradients, right: LayerGradients, method: Method | None) -> Tensor:
    """``[n_left, n_right]`` inner products ``<G_i, G_j>`` of one layer's gradients."""
    if left.positions == 1 and right.positions == 1:  # rank one
        a_l, s_l, a_r, s_r = left.a[:, 0], left.s[:, 0], right.a[:, 0], right.s[:, 0]
        return (s_l @ s_r.T) * (a_l @ a_r.T)
    n_l, n_r = len(left), len(right)
    out = left.g.new_empty(n_l, n_r) if left.g is not None else left.a.new_empty(n_l, n_r)
    if _pair_method(left, right, method) == "materialize":
        width = left.g.shape[1] if left.g is not None else left.a.shape[2] * left.s.shape[2]
        step = _step(width)
        for i in range(0, n_l, step):  # usually one chunk of test gradients, training gradients chunk by chunk
            g_l = left.materialized(i, i + step)
            for j in range(0, n_r, step):
                torch.matmul(g_l, right.materialized(j, j + step).T, out=out[i : i + step, j : j + step])
        return out
    t, n_in, n_out = left.a.shape[1], left.a.shape[2], left.s.shape[2]
    step_l = _step(t * t)
    step_r = _step(min(n_l, step_l) * t * t)
    for i in range(0, n_l, step_l):
        a_l = left.a[i : i + step_l].reshape(-1, n_in)
        s_l = left.s[i : i + step_l].reshape(-1, n_out)
        m = a_l.shape[0] // t
        for j in range(0, n_r, step_r):
            a_r = right.a[j : j + step_r].reshape(-1, n_in)
            s_r = right.s[j : j + step_r].reshape(-1, n_out)
            block = (s_l @ s_r.T) * (a_l @ a_r.T)  # [m·T, k·T]
            out[i : i + m, j : j + step_r] = block.reshape(m, t, -1, t).sum(dim=(1, 3))
    return out


def factored_dot(
    left: dict[str, LayerGradients], right: dict[str, LayerGradients], method: Method | None = None
) -> Tensor:
    """``[n_left, n_right]`` dot products of the full per-example gradients, summed over layers.

    Rank-one layers use ``(S Sᵀ) ⊙ (A Aᵀ)``; others the cheaper of
    materialising ``G`` chunk by chunk and ``Σ_{t,t'}`` over pairs of positions
    (:func:`layer_method`), or ``method`` when given.
    """
    total = None
    for name, grads in left.items():
        term = _layer_dot(grads, right[name], method)
        total = term if total is None else total + term
    return total


def _layer_sq_norms(grads: LayerGradients, method: Method | None) -> Tensor:
    if grads.positions == 1:
        return (grads.s[:, 0] ** 2).sum(1) * (grads.a[:, 0] ** 2).sum(1)
    n = len(grads)
    if grads.g is not None or (method or layer_method(*grads.a.shape[1:], grads.s.shape[2])) == "materialize":
        width = grads.g.shape[1] if grads.g is not None else grads.a.shape[2] * grads.s.shape[2]
        step = _step(width)
        return torch.cat([(grads.materialized(i, i + step) ** 2).sum(1) for i in range(0, n, step)])
    t = grads.a.shape[1]
    step = _step(t * t)
    out = []
    for i in range(0, n, step):
        a, s = grads.a[i : i + step], grads.s[i : i + step]
        out.append((torch.bmm(s, s.transpose(1, 2)) * torch.bmm(a, a.transpose(1, 2))).sum(dim=(1, 2)))
    return torch.cat(out)


def factored_sq_norms(grads: dict[str, LayerGradients], method: Method | None = None) -> Tensor:
    """``[n]`` squared norms of the full per-example gradients."""
    return sum(_layer_sq_norms(g, method) for g in grads.values())
