"""Tracked parameters: which of a model's parameters a gradient-based attributor differentiates.

The gradient attributors (``grad_dot``, ``grad_cos``, ``tracin``),
``influence`` (every solver), ``trak`` and ``source`` / ``fast_source`` take
``params=``:

* ``"all"`` (default): every parameter of the model.
* ``"linear"``: the weights and biases of every ``nn.Linear`` and
  ``nn.Conv2d`` layer (kronfluence's "tracked modules"); embeddings,
  normalisation layers and any other parameter are frozen.
* a list of entries, each a full parameter name (``"blocks.0.mlp.fc.weight"``)
  or a module-name prefix (``"blocks.0.mlp"`` selects every parameter below
  that module: names equal to the entry or starting with ``entry + "."``).
  An entry that selects no parameter is an
  :class:`~tdaeval.errors.AttributorError` naming it and listing the valid
  names.

Frozen parameters are constants: gradients, Hessian / Gauss–Newton products
and EK-FAC factors are taken over the tracked parameters only (the flat
vector holds them in ``named_parameters`` order), the frozen ones keep the
values of the model (or of the checkpoint) being differentiated. So EK-FAC,
ASTRA and Source run on a model with embeddings and LayerNorm when
``params="linear"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from tdaeval.errors import AttributorError
from tdaeval.params import ListOf, Options

__all__ = ["PARAMS_CONSTRAINT", "linear_parameter_names", "resolve_tracked", "params_record"]

#: The constraint of a ``params`` constructor parameter.
PARAMS_CONSTRAINT = [
    Options(("all", "linear")),
    ListOf(str, non_empty=True, description="a non-empty list of parameter names or module-name prefixes"),
]

#: Parameter names listed at most in an error message.
_LISTED = 30


def linear_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters of ``model``'s ``nn.Linear`` and ``nn.Conv2d`` layers, in ``named_parameters`` order."""
    owned = set()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            owned |= {f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)}
    return [name for name, _ in model.named_parameters() if name in owned]


def _matches(entry: str, name: str) -> bool:
    return name == entry or name.startswith(entry + ".")


def resolve_tracked(model: nn.Module, params: str | Sequence[str], owner: str) -> list[str] | None:
    """The tracked parameter names of ``model`` for a ``params`` choice, or None when every parameter is tracked.

    Parameters
    ----------
    model : nn.Module
        Fixes the names and their order (``named_parameters``).
    params : {"all", "linear"} or sequence of str
        The choice (see the module docstring).
    owner : str
        The caller, named in messages (``"Attributor 'grad_dot'"``).

    Returns
    -------
    list of str or None
        Tracked names in ``named_parameters`` order; None for ``"all"`` and for
        any choice that selects every parameter (callers then run their
        untracked code paths, so the numbers are those of ``"all"``).

    Raises
    ------
    AttributorError
        ``"linear"`` on a model without ``nn.Linear`` / ``nn.Conv2d`` parameters,
        or a list entry that selects no parameter (named, with the valid names).
    """
    names = [name for name, _ in model.named_parameters()]
    if isinstance(params, str) and params == "all":
        return None
    if isinstance(params, str) and params == "linear":
        chosen = set(linear_parameter_names(model))
        if not chosen:
            raise AttributorError(f"{owner}: params='linear' but the model has no nn.Linear or nn.Conv2d parameters.")
    else:
        chosen = set()
        for entry in params:
            hits = {name for name in names if _matches(entry, name)}
            if not hits:
                listed = names[:_LISTED] + (["..."] if len(names) > _LISTED else [])
                raise AttributorError(
                    f"{owner}: params entry {entry!r} is neither a parameter name nor a module prefix of the model; "
                    f"its parameters are {listed}."
                )
            chosen |= hits
    tracked = [name for name in names if name in chosen]
    return None if len(tracked) == len(names) else tracked


def params_record(params: Any) -> str:
    """``params`` as ``get_params`` records it: the string, or the ``repr`` of the list (as for any non-scalar parameter)."""
    return params if isinstance(params, str) else repr(params)
