"""Score matrices on disk: ``.npy`` files written chunk by chunk and read back memory-mapped.

A ``[n_test, n_train]`` float32 matrix of 1,000 × 200,000 scores is 800 MB;
written here one training-point chunk at a time and memory-mapped for the
metrics, it never has to sit in memory whole. The format is NumPy's ``.npy``
(a fixed header and raw float32 data): nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tdaeval.errors import ConfigError

__all__ = ["write_scores", "open_scores"]


def write_scores(path: str | Path, chunks: Iterable[tuple[int, Tensor]], n_test: int, n_train: int) -> Tensor:
    """Write ``(start, Tensor[n_test, k])`` chunks into ``path`` and return the file memory-mapped.

    Parameters
    ----------
    path : str or Path
        The ``.npy`` file (created or overwritten).
    chunks : iterable of (int, Tensor)
        Column blocks, e.g. from :meth:`tdaeval.attributors.Attributor.attribute_chunks`.
    n_test, n_train : int
        Shape of the whole matrix; every column must be written exactly once.

    Returns
    -------
    Tensor
        ``[n_test, n_train]`` float32 backed by the file (read-only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_test, n_train))
    written = np.zeros(n_train, dtype=bool)
    for start, chunk in chunks:
        chunk = chunk.detach().to("cpu", torch.float32)
        stop = start + chunk.shape[1]
        if chunk.shape[0] != n_test or start < 0 or stop > n_train:
            raise ConfigError(f"write_scores: a chunk of shape {tuple(chunk.shape)} at column {start} does not fit [{n_test}, {n_train}].")
        array[:, start:stop] = chunk.numpy()
        written[start:stop] = True
    array.flush()
    del array
    if not written.all():
        raise ConfigError(f"write_scores: {int((~written).sum())} of {n_train} training columns of {path} were never written.")
    return open_scores(path)


def open_scores(path: str | Path) -> Tensor:
    """A ``.npy`` score matrix memory-mapped read-only as a float32 tensor (pages load on access)."""
    try:
        array = np.load(Path(path), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ConfigError(f"Cannot open the score file {str(path)!r}: {err}.") from None
    if array.ndim != 2 or array.dtype != np.float32:
        raise ConfigError(f"The score file {str(path)!r} holds {array.dtype} {array.shape}; expected float32 [n_test, n_train].")
    import warnings

    with warnings.catch_warnings():  # torch warns that the memmap is read-only; tdaeval never writes to it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)
