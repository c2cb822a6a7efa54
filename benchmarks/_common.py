"""Helpers shared by the benchmark scripts: timing, the machine description, the verdict and the exit status."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def timeit(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Best (minimum) wall-clock seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs.

    The minimum is the least noisy estimate on a shared machine; both sides of
    a comparison must be timed the same way.
    """
    return min(measure(fn, repeat=repeat, warmup=warmup))


def measure(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of each of ``repeat`` runs of ``fn()``, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(times: list[float]) -> float:
    """Median of a list of timings."""
    return statistics.median(times)


def spread(times: list[float]) -> str:
    """``min–max`` of a list of timings, for the noise column of a table."""
    return f"{min(times):.3g}–{max(times):.3g}"


def machine() -> str:
    """One line: CPU model, cores, memory, accelerator, Python and torch versions, torch threads."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout.splitlines():
            if line.startswith("Model name"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    mem = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages * size / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}, {gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads"
    )


def verdict(met: bool | None) -> str:
    """The word of a ``TARGET`` line: ``MET``, ``NOT MET``, or ``NOT CHECKED`` when ``met`` is None."""
    return "NOT CHECKED" if met is None else "MET" if met else "NOT MET"


def exit_code(met: bool | None, strict: bool, error: str | None = None) -> int:
    """A benchmark's exit status: 2 when its numbers are wrong (``error``, printed to stderr as ``ERROR: ...``),
    1 when ``strict`` and its target was not met (or not checked), else 0."""
    if error is not None:
        print(f"ERROR: {error}", file=sys.stderr)
        return 2
    return 1 if strict and not met else 0
