"""Content-addressed artifact store: safetensors + JSON manifest, written atomically.

Layout under the root::

    objects/<key[:2]>/<key>.<sha256[:16]>.safetensors   the tensors, named by their own checksum
    objects/<key[:2]>/<key>.json                        manifest: spec, data file, sha256, version

The tensors are written first under a name derived from their checksum, the
manifest last (temp file + ``os.replace``), so a key is either complete or
absent, and a manifest always names the data it was written with: two
writers of one key (two shards) cannot pair one's manifest with the other's
data. A run killed mid-way resumes by skipping complete keys. A manifest
whose spec differs from the requested one is refused
(:class:`~tdaeval.errors.StoreError`); an unreadable manifest, or tensors whose
checksum does not match it (truncated, altered), are reported with the file
name, removed and recomputed. Loading touches the manifest's modification
time, so ``gc(unused_days=…)`` can prune what no run has used. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor

from tdaeval.errors import StoreError
from tdaeval.task import canonical_json, sha256_json

__all__ = ["ArtifactStore", "default_cache_dir", "job_key"]

STORE_FORMAT = 2
#: Temporary and orphaned files younger than this are left alone by gc (a writer may still be busy).
GC_GRACE_SECONDS = 3600.0


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

    def _folder(self, key: str) -> Path:
        return self.root / "objects" / key[:2]

    def _manifest_path(self, key: str) -> Path:
        return self._folder(key) / f"{key}.json"

    def _data_path(self, key: str, manifest: dict[str, Any] | None) -> Path:
        name = (manifest or {}).get("data") or f"{key}.safetensors"  # format 1 had one fixed name
        return self._folder(key) / Path(str(name)).name

    def has(self, key: str) -> bool:
        """Whether a complete artifact (manifest present) exists for ``key``."""
        return self._manifest_path(key).exists()

    def load(self, key: str, spec: dict[str, Any]) -> dict[str, Tensor] | None:
        """The tensors stored under ``key``, or None when absent or damaged (then removed).

        Raises
        ------
        StoreError
            When the manifest describes a different spec than ``spec``.
        """
        from safetensors.torch import load_file

        manifest_path = self._manifest_path(key)
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            self._discard(key, f"unreadable manifest {manifest_path} ({err})", None)
            return None
        if canonical_json(manifest.get("spec")) != canonical_json(spec):
            raise StoreError(
                f"Manifest mismatch in the cache: {manifest_path} was written for a different job than the one "
                f"requested under key {key[:12]}…; refusing to reuse it. Delete that file or use another cache_dir."
            )
        data_path = self._data_path(key, manifest)
        if not data_path.exists():
            self._discard(key, f"missing tensor file {data_path}", manifest)
            return None
        if _sha256_file(data_path) != manifest.get("sha256"):
            self._discard(key, f"checksum mismatch for {data_path} (truncated or altered, or a wrong checksum in {manifest_path.name})", manifest)
            return None
        try:
            tensors = load_file(str(data_path))
        except Exception as err:  # noqa: BLE001 - any decoding failure means a damaged file
            self._discard(key, f"unreadable tensors {data_path} ({err})", manifest)
            return None
        try:
            os.utime(manifest_path)  # last use, for gc(unused_days=...)
        except OSError:
            pass
        return tensors

    def save(self, key: str, spec: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        """Write ``tensors`` and their manifest atomically under ``key``."""
        from safetensors.torch import save_file

        from tdaeval import __version__

        folder = self._folder(key)
        manifest_path = self._manifest_path(key)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"Cannot write to the cache directory {str(self.root)!r}: {err}.") from err
        tmp_data = folder / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.safetensors.tmp"
        tmp_manifest = folder / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.json.tmp"
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp_data))
            digest = _sha256_file(tmp_data)
            data_name = f"{key}.{digest[:16]}.safetensors"
            os.replace(tmp_data, folder / data_name)
            manifest = {
                "format": STORE_FORMAT,
                "key": key,
                "spec": spec,
                "data": data_name,
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

    def _discard(self, key: str, reason: str, manifest: dict[str, Any] | None) -> None:
        warnings.warn(f"tdaeval cache: {reason}; recomputing.", stacklevel=3)
        self._remove(key, manifest)

    def _remove(self, key: str, manifest: dict[str, Any] | None) -> int:
        freed = 0
        for path in (self._manifest_path(key), self._data_path(key, manifest)):
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                pass
        return freed

    def keys(self) -> list[str]:
        """Keys of all complete artifacts."""
        return sorted(p.stem for p in (self.root / "objects").glob("*/*.json"))

    # -- inspection and maintenance (``tdaeval cache ls|verify|gc``) -------------
    def entries(self) -> list[dict[str, Any]]:
        """One row per manifest: key, kind, task fingerprint, bytes, last use; ``manifest`` None when unreadable."""
        rows = []
        for path in sorted((self.root / "objects").glob("*/*.json")):
            try:
                manifest = json.loads(path.read_text())
                if not isinstance(manifest, dict):
                    raise ValueError
            except (OSError, ValueError):
                manifest = None
            data = self._data_path(path.stem, manifest)
            spec = (manifest or {}).get("spec") or {}
            rows.append({
                "key": path.stem,
                "kind": spec.get("kind", "?") if manifest else "unreadable",
                "task": str(spec.get("task", ""))[:12],
                "bytes": (data.stat().st_size if data.exists() else 0) + path.stat().st_size,
                "last_used": path.stat().st_mtime,
                "manifest": manifest,
            })
        return rows

    def verify(self, repair: bool = False) -> list[str]:
        """Check every artifact (manifest readable, tensor file present, checksum equal).

        Parameters
        ----------
        repair : bool
            Remove damaged artifacts so the next run recomputes them.

        Returns
        -------
        list of str
            One line per damaged artifact, naming the file and the problem.
        """
        problems = []
        for row in self.entries():
            key, manifest = row["key"], row["manifest"]
            manifest_path = self._manifest_path(key)
            if manifest is None:
                problems.append(f"{manifest_path}: unreadable manifest")
            else:
                data = self._data_path(key, manifest)
                if not data.exists():
                    problems.append(f"{data}: missing tensor file (manifest {manifest_path.name})")
                elif _sha256_file(data) != manifest.get("sha256"):
                    problems.append(f"{data}: checksum mismatch with {manifest_path.name} (truncated or altered)")
                else:
                    continue
            if repair:
                self._remove(key, manifest)
        return problems

    def gc(self, unused_days: float | None = None, dry_run: bool = False, grace_seconds: float = GC_GRACE_SECONDS) -> tuple[list[Path], int]:
        """Remove leftovers: temporary files and tensor files no manifest names (older than
        ``grace_seconds``), and with ``unused_days`` every artifact not used for that long.

        Returns
        -------
        tuple
            The removed (or, with ``dry_run``, removable) paths and the bytes they hold.
        """
        now = time.time()
        referenced = set()
        removable: list[Path] = []
        for row in self.entries():
            manifest_path = self._manifest_path(row["key"])
            data = self._data_path(row["key"], row["manifest"])
            if unused_days is not None and now - row["last_used"] > unused_days * 86400:
                removable += [manifest_path, data]
            else:
                referenced.add(data.name)
        for path in (self.root / "objects").glob("*/*"):
            if path in removable or path.suffix == ".json" and not path.name.startswith("."):
                continue
            old = now - path.stat().st_mtime > grace_seconds
            if old and (path.name.endswith(".tmp") or path.suffix == ".safetensors" and path.name not in referenced):
                removable.append(path)
        freed = 0
        for path in removable:
            try:
                freed += path.stat().st_size
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:
                pass
        return removable, freed
