"""``Data``: a dataset held as two tensors (inputs, targets), with a cached content digest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from tdaeval.errors import ConfigError

__all__ = ["Data"]


@dataclass(frozen=True)
class Data:
    """A dataset held as two tensors; also a ``torch.utils.data.Dataset``.

    Attributes
    ----------
    inputs : Tensor
        ``[n, ...]`` features.
    targets : Tensor
        ``[n, ...]`` labels (int64 class ids) or regression targets.

    Notes
    -----
    :meth:`digest` (the data's part of a task's fingerprint, so of every cache
    key) is computed once and kept on this object, keyed by the identity and
    torch's in-place version counter of both tensors: a new ``Data``, or an
    in-place torch operation on either tensor (``data.targets[3] = 1``,
    ``add_``, ...), always gets a fresh digest, so a cached digest cannot go
    stale. Writes that bypass torch's version counter (through ``.numpy()``
    or ``.data``) are not seen: build a new ``Data`` instead. The cached
    digest is never pickled or copied.
    """

    inputs: Tensor
    targets: Tensor
    # (key, digest) of the last digest() call; not a dataclass field (no annotation).
    _digest_cache = None

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, Tensor) or not isinstance(self.targets, Tensor):
            raise ConfigError("Data expects 'inputs' and 'targets' to be torch tensors.")
        if self.inputs.shape[0] != self.targets.shape[0]:
            raise ConfigError(
                f"Data expects as many targets as inputs. Got {self.inputs.shape[0]} inputs "
                f"and {self.targets.shape[0]} targets."
            )

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.targets[index]

    def subset(self, indices: Tensor) -> "Data":
        """The examples at ``indices`` (a 1-D index tensor), in that order."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return Data(self.inputs[indices], self.targets[indices])

    def to(self, device: str | torch.device) -> "Data":
        """Both tensors on ``device``."""
        return Data(self.inputs.to(device), self.targets.to(device))

    def __getstate__(self) -> dict:
        # A copy or an unpickled object has other tensors: it hashes them itself.
        return {k: v for k, v in self.__dict__.items() if k != "_digest_cache"}

    def _digest_key(self) -> tuple | None:
        """Identity and in-place version of both tensors; None where torch keeps no version (inference tensors)."""
        try:
            return tuple((id(t), t._version, t.data_ptr(), tuple(t.shape), t.dtype) for t in (self.inputs, self.targets))
        except RuntimeError:
            return None

    def digest(self) -> str:
        """sha256 of the tensors' bytes, shapes and dtypes (a cache-key part).

        Computed once per state of the tensors (see the class notes): hashing
        200,000 points for every job key would otherwise dominate a run.
        """
        key = self._digest_key()
        cached = self._digest_cache
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        digest = self._compute_digest()
        if key is not None:
            object.__setattr__(self, "_digest_cache", (key, digest))
        return digest

    def _compute_digest(self) -> str:
        h = hashlib.sha256()
        for t in (self.inputs, self.targets):
            t = t.detach().to("cpu").contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()
