"""Which process wrote a file, and is it still alive: host tags, pid liveness, umask.

Used by the store (claims, temporary files) and by the ``process`` executor
(workers that exit when their driver dies). A pid is compared together with
its process's start time, so a pid reused by an unrelated process does not
count as the writer being alive.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import psutil

__all__ = ["host_tag", "process_start_time", "is_alive", "file_mode", "exit_with_parent"]


def host_tag() -> str:
    """This machine's host name, reduced to ``[A-Za-z0-9-]`` (at most 63 characters) so it fits in a file name."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "localhost"


def process_start_time(pid: int) -> float | None:
    """Start time (seconds since the epoch) of process ``pid``, or None when no such process runs."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.Error, ValueError, OverflowError):
        return None


def is_alive(pid: int, started: float | None = None, *, not_after: float | None = None) -> bool:
    """Whether process ``pid`` of this machine is running and is the one that was meant.

    Parameters
    ----------
    pid : int
        Process id on this machine.
    started : float, optional
        The process's start time as recorded by itself (:func:`process_start_time`):
        a running ``pid`` with another start time is a reused pid, not the writer.
    not_after : float, optional
        A time the writer was known to exist (e.g. a file's modification time): a
        running ``pid`` started after it is a reused pid.
    """
    now_started = process_start_time(int(pid))
    if now_started is None:
        return False
    if started is not None and abs(now_started - float(started)) > 1.0:
        return False
    if not_after is not None and now_started > float(not_after) + 1.0:
        return False
    return True


def file_mode() -> int:
    """``0o666`` less the process's umask: the mode ``open()`` gives a new file (used after ``mkstemp``-like writers)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read the umask by setting it and putting it back
    os.umask(mask)
    return 0o666 & ~mask


def exit_with_parent(parent_pid: int, interval: float = 0.25) -> None:
    """Initializer of a worker process: exit as soon as the driver ``parent_pid`` is gone, even after ``kill -9``.

    A daemon thread polls every ``interval`` seconds whether this process's
    parent changed (on POSIX an orphan is re-parented) or the driver no longer
    runs (portable, through psutil; its start time guards against pid reuse).
    """
    own_parent = os.getppid()
    started = process_start_time(parent_pid)

    def watch() -> None:
        while True:
            if os.getppid() != own_parent or started is None or not is_alive(parent_pid, started):
                os._exit(1)
            time.sleep(interval)

    threading.Thread(target=watch, name="tdaeval-exit-with-parent", daemon=True).start()
