"""Cost of an attributor: wall time and peak memory while it fits and attributes."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import torch

__all__ = ["PeakMemory"]


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class PeakMemory:
    """Peak memory above the starting level while the ``with`` block runs.

    On CPU the process's resident set size is sampled every ``interval``
    seconds by a background thread (torch's CPU allocations bypass Python's
    allocator, so ``tracemalloc`` would miss them); short spikes between
    samples can be missed. On a CUDA device the allocator's own peak
    (``torch.cuda.max_memory_allocated``) is used instead, which is exact.

    Parameters
    ----------
    device : str
        ``"cpu"`` or a CUDA device.
    interval : float
        Sampling period in seconds (CPU).

    Attributes
    ----------
    peak_bytes : int
        Peak increase over the level at entry (0 when memory shrank).
    source : str
        ``"rss"`` or ``"cuda"``.
    """

    def __init__(self, device: str = "cpu", interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_bytes = 0
        self.source = "cuda" if self.device.type == "cuda" else "rss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0
        self._peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        if self.source == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, name="tdaeval-peak-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.source == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_bytes = max(0, int(peak) - int(self._start))
