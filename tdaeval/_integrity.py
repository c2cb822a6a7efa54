"""Digests of what attributors are handed but must not change: the explained model, its
checkpoints and the task's data.

Every attributor of a run sees the same model object, checkpoints and data (copying them per
attributor would double memory on large tasks). An attributor that writes into them in place
would silently change every later attributor's numbers, so the runner takes a digest before
the attributors run and checks it after each one (:func:`check_unchanged`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from tdaeval.errors import AttributorError

__all__ = ["state_digests", "check_unchanged"]


def _tensor_digest(tensor: Tensor) -> str:
    t = tensor.detach().to("cpu").contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes of any dtype (bfloat16 and bool too)
    return h.hexdigest()


def state_digests(model: nn.Module, checkpoints: Iterable[Any] = (), data: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``{part: digest}`` for every parameter and buffer of ``model``, every checkpoint tensor and
    the tensors of each :class:`~tdaeval.datasets.Data` in ``data`` (``{"train data": ..., ...}``).

    Parts are named as a user would look for them (``model parameter 'fc.weight'``,
    ``checkpoint 2 'fc.bias'``, ``train data inputs``).
    """
    parameters = {name for name, _ in model.named_parameters()}
    out = {f"model {'parameter' if name in parameters else 'buffer'} {name!r}": _tensor_digest(value)
           for name, value in model.state_dict(keep_vars=True).items()}
    for c, checkpoint in enumerate(checkpoints):
        for name, value in getattr(checkpoint, "params", {}).items():
            out[f"checkpoint {c} {name!r}"] = _tensor_digest(value)
    for label, dataset in (data or {}).items():
        out[f"{label} inputs"] = _tensor_digest(dataset.inputs)
        out[f"{label} targets"] = _tensor_digest(dataset.targets)
    return out


def check_unchanged(before: dict[str, str], after: dict[str, str], attributor: str) -> None:
    """Raise AttributorError naming ``attributor`` and what it changed when the digests differ."""
    changed = [part for part in before if after.get(part) != before[part]]
    changed += [part for part in after if part not in before]
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise AttributorError(
            f"Attributor {attributor!r} modified what every attributor shares ({shown}); later attributors' numbers "
            "would be wrong, so the run stops. Work on a copy (copy.deepcopy(model), data.inputs.clone()) instead."
        )
