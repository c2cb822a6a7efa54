"""The score types: score matrices, :class:`Attribution`, and score matrices on disk.

Scores are a ``[n_test, n_train]`` tensor; a positive score means the training
example supports the test example's measurement (docs: Methods §0). An
attributor may instead return an :class:`Attribution`, which adds the spread
of the scores over training noise; metrics read its ``mean``. This module
imports nothing of tdaeval but its errors, so attributors, metrics and suites
all depend on it rather than on each other.

A ``[n_test, n_train]`` float32 matrix of 1,000 × 200,000 scores is 800 MB;
written here one training-point chunk at a time and memory-mapped for the
metrics, it never has to sit in memory whole. The format is NumPy's ``.npy``
(a fixed header and raw float32 data): nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tdaeval.errors import ConfigError

__all__ = ["Attribution", "write_scores", "open_scores"]


@dataclass(frozen=True)
class Attribution:
    """Scores with their spread over training noise (what :class:`~tdaeval.attributors.seeds.SeedPosterior` returns).

    Metrics given an ``Attribution`` use its ``mean``.

    Attributes
    ----------
    mean : Tensor
        ``[n_test, n_train]`` mean score over samples (seeds).
    std : Tensor
        ``[n_test, n_train]`` sample standard deviation (ddof = 1).
    n_samples : int
        Number of samples (seeds) behind each entry.
    p_value : Tensor
        ``[n_test, n_train]`` p-value of "the score is zero" for each pair.
    test : str
        How ``p_value`` was computed: ``"t"`` (one-sample t-test of the mean,
        ``S − 1`` degrees of freedom; calibrated) or ``"snr"`` (the paper's
        per-draw signal-to-noise test, ``2(1 − Φ(|μ/σ|))``; not calibrated
        under the null). See :func:`tdaeval.attributors.seeds.seed_statistics`.
    samples : Tensor, optional
        ``[S, n_test, n_train]``: the scores of each sample (seed), for
        cross-seed stability metrics.
    """

    mean: Tensor
    std: Tensor
    n_samples: int
    p_value: Tensor
    test: str = "t"
    samples: Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        """``[n_test, n_train]``."""
        return self.mean.shape

    def reliable(self, alpha: float = 0.05) -> Tensor:
        """``[n_test, n_train]`` bool: pairs whose p-value is below ``alpha``."""
        if not 0.0 < alpha < 1.0:
            raise ConfigError(f"The 'alpha' parameter of Attribution.reliable must be in (0, 1). Got {alpha!r} instead.")
        return self.p_value < alpha


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
