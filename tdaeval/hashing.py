"""Content hashes and derived seeds: the one place tdaeval turns values into digests.

Cache keys are the sha256 of the canonical JSON of everything that determines
a result (:func:`sha256_json`); every seed that tdaeval derives from other
seeds comes from :func:`derive_seed`, so a job or an ensemble member gets the
same seed on every machine, in every process and on every Python version.
This module imports nothing of tdaeval but its errors: any layer may use it.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from tdaeval.errors import ConfigError

__all__ = ["canonical_json", "sha256_json", "derive_seed", "SEED_PREFIX"]

#: First element of the canonical JSON that :func:`derive_seed` hashes (``encoding="json"``).
SEED_PREFIX = "tdaeval-seed"

SeedEncoding = Literal["json", "repr", "text"]


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the input of every cache key."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_json(obj: Any) -> str:
    """sha256 hex digest (64 characters) of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def _payload(namespace: str, parts: tuple[Any, ...], encoding: SeedEncoding) -> str:
    if encoding == "json":
        return canonical_json([SEED_PREFIX, namespace, *parts])
    if encoding == "repr":
        return repr((namespace, *parts))
    if encoding == "text":
        return ":".join([namespace, *map(str, parts)])
    raise ConfigError(f"The 'encoding' parameter of derive_seed must be 'json', 'repr' or 'text'. Got {encoding!r} instead.")


def derive_seed(namespace: str, *parts: Any, bits: int = 31, encoding: SeedEncoding = "json") -> int:
    """A seed in ``[0, 2**bits)`` derived from ``namespace`` and ``parts`` by sha256.

    The seed is the first ``ceil(bits / 4)`` hex digits of the digest, masked
    to ``bits`` bits. New seeds use the default encoding; the two others exist
    only so that values fixed before this function existed stay identical
    (changing them would change numbers and cache keys).

    Parameters
    ----------
    namespace : str
        What the seed is for (``"lds"``, ``"naive-ensemble"`` …); distinct
        namespaces give independent seeds.
    *parts
        The values the seed depends on (integers, strings; JSON-serialisable).
    bits : int
        Width of the seed, 1 to 256 (31 fits every torch and NumPy seed).
    encoding : {"json", "repr", "text"}
        What is hashed: ``"json"``, the canonical JSON of
        ``["tdaeval-seed", namespace, *parts]`` (ground-truth jobs and every
        new seed); ``"repr"``, ``repr((namespace, *parts))`` (ensemble members,
        namespace ``"tdaeval-member-dropout"``, 60 bits); ``"text"``,
        ``"namespace:part:…"`` (dropout masks, namespace ``"tdaeval-dropout"``,
        128 bits).

    Returns
    -------
    int
        The seed, ``0 <= seed < 2**bits``.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 256:
        raise ConfigError(f"The 'bits' parameter of derive_seed must be an integer in [1, 256]. Got {bits!r} instead.")
    if not isinstance(namespace, str):
        raise ConfigError(f"The 'namespace' parameter of derive_seed must be a string. Got {namespace!r} instead.")
    digest = hashlib.sha256(_payload(namespace, parts, encoding).encode()).hexdigest()
    return int(digest[: math.ceil(bits / 4)], 16) & ((1 << bits) - 1)
