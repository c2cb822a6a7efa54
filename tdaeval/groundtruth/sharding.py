"""Sharding and planning of ground-truth builds without a scheduler.

``with build_mode(shard=Shard(i, N)):`` makes every ground-truth builder
train only the jobs whose key falls in shard ``i`` of ``N`` (the store is
shared, e.g. on a network file system); ``with build_mode(plan_only=True):``
trains nothing and counts what is stored and what is missing. In both modes a
builder that cannot assemble its ground truth raises
:class:`IncompleteGroundTruth` after recording its counts.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tdaeval.errors import ConfigError, TdaevalError
from tdaeval.params import check_int_at_least

__all__ = ["Shard", "BuildMode", "IncompleteGroundTruth", "build_mode", "current_mode"]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): owns the jobs whose key hashes to ``index`` modulo ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        check_int_at_least("count", "a shard", self.count, 1)
        if isinstance(self.index, bool) or not isinstance(self.index, int) or not 0 <= self.index < self.count:
            raise ConfigError(f"The shard index must be an integer in [0, {self.count}). Got {self.index!r} instead.")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"i/N"`` → ``Shard(i, N)``, e.g. ``"0/4"`` … ``"3/4"``."""
        index, sep, count = str(text).partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise ConfigError(f"A shard is written 'i/N' with 0 <= i < N, e.g. '0/4'. Got {text!r} instead.")
        return cls(int(index), int(count))

    def owns(self, key: str) -> bool:
        """Whether the job with sha256 ``key`` belongs to this shard (stable on every machine)."""
        return int(key[:16], 16) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class BuildMode:
    """How ground-truth builders behave, and what they counted.

    Attributes
    ----------
    shard : Shard or None
        Train only this shard's jobs.
    plan_only : bool
        Train nothing; count stored and missing jobs.
    counts : list of dict
        One ``{"kind", "jobs", "stored", "trained", "missing"}`` per builder call.
    """

    shard: Shard | None = None
    plan_only: bool = False
    counts: list[dict[str, Any]] = field(default_factory=list)

    def owns(self, key: str) -> bool:
        """Whether this process may train the job ``key``."""
        return not self.plan_only and (self.shard is None or self.shard.owns(key))


class IncompleteGroundTruth(TdaevalError):
    """Raised by a builder in shard or plan mode when jobs of other shards (or all jobs) are still missing."""

    def __init__(self, kind: str, missing: int, total: int) -> None:
        super().__init__(f"{kind}: {missing} of {total} jobs are not in the store yet.")
        self.kind, self.missing, self.total = kind, missing, total


_MODE: contextvars.ContextVar[BuildMode | None] = contextvars.ContextVar("tdaeval_build_mode", default=None)


def current_mode() -> BuildMode | None:
    """The active :class:`BuildMode`, or None for a normal (complete) build."""
    return _MODE.get()


@contextlib.contextmanager
def build_mode(shard: Shard | None = None, plan_only: bool = False) -> Iterator[BuildMode]:
    """Within the block, ground-truth builders shard or only plan (see the module docstring)."""
    mode = BuildMode(shard=shard, plan_only=plan_only)
    token = _MODE.set(mode)
    try:
        yield mode
    finally:
        _MODE.reset(token)
