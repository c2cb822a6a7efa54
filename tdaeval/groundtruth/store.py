"""Content-addressed artifact store: safetensors + JSON manifest, written atomically.

Layout under the root::

    objects/<key[:2]>/<key>.safetensors   the tensors
    objects/<key[:2]>/<key>.json          manifest: spec, sha256 of the tensors, version

The manifest is written last (temp file + ``os.replace``), so a key is either
complete or absent; a run killed mid-way resumes by skipping complete keys.
A manifest whose spec differs from the requested one is refused
(:class:`~tdaeval.errors.StoreError`); a tensor file whose checksum does not
match is reported, removed and recomputed. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor

from tdaeval.errors import StoreError
from tdaeval.task import canonical_json, sha256_json

__all__ = ["ArtifactStore", "default_cache_dir", "job_key"]

STORE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$TDAEVAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/tdaeval``, else ``~/.cache/tdaeval``."""
    if os.environ.get("TDAEVAL_CACHE_DIR"):
        return Path(os.environ["TDAEVAL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tdaeval"


def job_key(spec: dict[str, Any]) -> str:
    """Key of a job: sha256 of the canonical JSON of everything that determines its result."""
    return sha256_json(spec)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ArtifactStore:
    """Stores job results keyed by the hash of their spec.

    Parameters
    ----------
    root : str or Path, optional
        Cache directory (default :func:`default_cache_dir`); relative paths are
        resolved against the current directory once, at construction.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root if root is not None else default_cache_dir()).expanduser().resolve()
        try:
            (self.root / "objects").mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-test-"):
                pass
        except OSError as err:
            raise StoreError(
                f"The cache directory {str(self.root)!r} is not writable ({err.strerror or err}). "
                "Pass a writable 'cache_dir' (or set TDAEVAL_CACHE_DIR)."
            ) from err

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / "objects" / key[:2]
        return folder / f"{key}.safetensors", folder / f"{key}.json"

    def has(self, key: str) -> bool:
        """Whether a complete artifact (manifest present) exists for ``key``."""
        return self._paths(key)[1].exists()

    def load(self, key: str, spec: dict[str, Any]) -> dict[str, Tensor] | None:
        """The tensors stored under ``key``, or None when absent or damaged (then removed).

        Raises
        ------
        StoreError
            When the manifest describes a different spec than ``spec``.
        """
        from safetensors.torch import load_file

        data_path, manifest_path = self._paths(key)
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as err:
            self._discard(key, f"unreadable manifest {manifest_path} ({err})")
            return None
        if canonical_json(manifest.get("spec")) != canonical_json(spec):
            raise StoreError(
                f"Manifest mismatch in the cache: {manifest_path} was written for a different job than the one "
                f"requested under key {key[:12]}…; refusing to reuse it. Delete that file or use another cache_dir."
            )
        if not data_path.exists() or _sha256_file(data_path) != manifest.get("sha256"):
            self._discard(key, f"checksum mismatch for {data_path}")
            return None
        try:
            return load_file(str(data_path))
        except Exception as err:  # noqa: BLE001 - any decoding failure means a damaged file
            self._discard(key, f"unreadable tensors {data_path} ({err})")
            return None

    def save(self, key: str, spec: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        """Write ``tensors`` and their manifest atomically under ``key``."""
        from safetensors.torch import save_file

        from tdaeval import __version__

        data_path, manifest_path = self._paths(key)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_data = data_path.with_name(f".{data_path.name}.{os.getpid()}.tmp")
        tmp_manifest = manifest_path.with_name(f".{manifest_path.name}.{os.getpid()}.tmp")
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp_data))
            digest = _sha256_file(tmp_data)
            os.replace(tmp_data, data_path)
            manifest = {
                "format": STORE_FORMAT,
                "key": key,
                "spec": spec,
                "sha256": digest,
                "tensors": sorted(tensors),
                "tdaeval_version": __version__,
            }
            tmp_manifest.write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
            os.replace(tmp_manifest, manifest_path)
        except OSError as err:
            raise StoreError(f"Cannot write to the cache directory {str(self.root)!r}: {err}.") from err
        finally:
            for tmp in (tmp_data, tmp_manifest):
                if tmp.exists():
                    tmp.unlink()

    def _discard(self, key: str, reason: str) -> None:
        warnings.warn(f"tdaeval cache: {reason}; recomputing.", stacklevel=3)
        for path in self._paths(key):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def keys(self) -> list[str]:
        """Keys of all complete artifacts."""
        return sorted(p.stem for p in (self.root / "objects").glob("*/*.json"))
