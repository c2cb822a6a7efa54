"""Content-addressed artifact store: safetensors + JSON manifest, written atomically.

Layout under the root::

    objects/<key[:2]>/<key>.<sha256[:16]>.safetensors   the tensors, named by their own checksum; the key in their metadata
    objects/<key[:2]>/<key>.json                        manifest: format, key, spec, data file, sha256, tensor names
    objects/<key[:2]>/<key>.claim                       while a run trains the job: pid, host, start time (JSON)
    objects/<key[:2]>/.<key>.<host>.<pid>.<rand>.*.tmp  a writer's temporary files

The tensors are written first under a name derived from their checksum, the
manifest last (temp file + ``os.replace``), so a key is either complete or
absent, and a manifest always names the data it was written with: two
writers of one key (two shards) cannot pair one's manifest with the other's
data. A run killed mid-way resumes by skipping complete keys. One check
(:meth:`ArtifactStore.verify` and :meth:`ArtifactStore.load` share it) decides
whether an artifact is intact: manifest readable, known format, its key the
file's and the hash of its spec, the tensor file the one named after the key
and checksum, the checksum equal, the key recorded in the tensor file's
metadata (format 3; format 1 and 2 files, written without it, are bound by
their name and checksum only) and the tensor names equal. A damaged artifact
is reported with the file name, removed and recomputed; an intact manifest
whose spec differs from the requested one is refused
(:class:`~tdaeval.errors.StoreError`). Loading touches the manifest's
modification time, so ``gc(unused_days=…)`` can prune what no run has used.
Every file is written with the mode the umask gives (``0o644`` under
``022``), so another account can read the store. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor

from tdaeval.errors import StoreError
from tdaeval.groundtruth._procs import file_mode, host_tag, is_alive, process_start_time
from tdaeval.hashing import canonical_json, sha256_json
from tdaeval.version import __version__

__all__ = ["ArtifactStore", "default_cache_dir", "job_key"]

#: 3: the tensor file records its key (safetensors metadata ``tdaeval_key``); 2: files named by checksum; 1: one fixed name.
STORE_FORMAT = 3
KEY_METADATA = "tdaeval_key"
#: Temporary and orphaned files younger than this are left alone by gc unless their writer is known to be dead.
GC_GRACE_SECONDS = 3600.0
#: A claim whose holder has not refreshed it for this long is stale (the holder refreshes it every CLAIM_HEARTBEAT_SECONDS).
CLAIM_STALE_SECONDS = 600.0
CLAIM_HEARTBEAT_SECONDS = 30.0
#: An unreadable claim (a writer killed while creating it, or damage) is stale after this long.
CLAIM_UNREADABLE_SECONDS = 10.0
_TEMP_NAME = re.compile(r"^\.(?P<key>[^.]+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]+\.(?P<what>\w+)\.tmp$")


def default_cache_dir() -> Path:
    """``$TDAEVAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/tdaeval``, else ``~/.cache/tdaeval``."""
    if os.environ.get("TDAEVAL_CACHE_DIR"):
        return Path(os.environ["TDAEVAL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tdaeval"


#: Longest value shown by :func:`spec_difference`, and most keys it lists.
_DIFF_VALUE_CHARS, _DIFF_KEYS = 40, 8


def _flat_spec(spec: Any, prefix: str = "") -> dict[str, Any]:
    """A spec's leaves by dotted path (nested mappings are walked)."""
    if not isinstance(spec, dict):
        return {prefix or "(spec)": spec}
    out: dict[str, Any] = {}
    for name, value in spec.items():
        path = f"{prefix}.{name}" if prefix else str(name)
        out.update(_flat_spec(value, path) if isinstance(value, dict) and value else {path: value})
    return out


def _short_value(value: Any) -> str:
    text = canonical_json(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= _DIFF_VALUE_CHARS else text[: _DIFF_VALUE_CHARS - 1] + "…"


def spec_difference(stored: Any, asked: Any) -> str:
    """Which keys of two job specs differ: ``"n_subsets: stored 64, asked 128; seed: only asked (1)"``.

    Nested mappings are compared leaf by leaf (dotted paths); long values are
    truncated to 40 characters and at most 8 keys are listed.
    """
    old, new = _flat_spec(stored), _flat_spec(asked)
    parts = []
    for path in sorted(set(old) | set(new)):
        if path not in new:
            parts.append(f"{path}: only stored ({_short_value(old[path])})")
        elif path not in old:
            parts.append(f"{path}: only asked ({_short_value(new[path])})")
        elif canonical_json(old[path]) != canonical_json(new[path]):
            parts.append(f"{path}: stored {_short_value(old[path])}, asked {_short_value(new[path])}")
    if not parts:
        return "the specs differ only in form"
    more = f"; and {len(parts) - _DIFF_KEYS} more" if len(parts) > _DIFF_KEYS else ""
    return "; ".join(parts[:_DIFF_KEYS]) + more


def job_key(spec: dict[str, Any]) -> str:
    """Key of a job: sha256 of the canonical JSON of everything that determines its result."""
    return sha256_json(spec)


def _writer_tag() -> str:
    """``<host>.<pid>.<random>``: names a temporary file after its writer, so gc can tell a dead writer's leftovers."""
    return f"{host_tag()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


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
    read_only : bool
        Only read (load, list, verify without repair): the directory need not be
        writable, e.g. a store another account wrote. Saving, claiming, repair
        and gc raise :class:`~tdaeval.errors.StoreError`.
    """

    def __init__(self, root: str | os.PathLike | None = None, read_only: bool = False) -> None:
        self.root = Path(root if root is not None else default_cache_dir()).expanduser().resolve()
        self.read_only = bool(read_only)
        self._held: dict[str, str] = {}  # claims this instance holds: key -> token
        self._held_lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        if self.read_only:
            return
        try:
            (self.root / "objects").mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-test-"):
                pass
        except OSError as err:
            raise StoreError(
                f"The cache directory {str(self.root)!r} is not writable ({err.strerror or err}). "
                "Pass a writable 'cache_dir' (or set TDAEVAL_CACHE_DIR); to only read a store, open it with read_only=True."
            ) from err

    def check_writable(self, action: str) -> None:
        """Raise :class:`~tdaeval.errors.StoreError` naming ``action`` when the store was opened read-only."""
        if self.read_only:
            raise StoreError(f"Cannot {action}: the store {str(self.root)!r} was opened read-only (read_only=True).")

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

        The artifact is checked as :meth:`verify` checks it (one shared check);
        a damaged one is reported in a warning naming the file, removed (unless
        the store is read-only) and None is returned, so the job is recomputed.

        Raises
        ------
        StoreError
            When the (intact) manifest describes a different spec than ``spec``.
        """
        manifest_path = self._manifest_path(key)
        if not manifest_path.exists():
            return None
        manifest, tensors, problem = self._inspect(key)
        if problem is not None:
            self._discard(key, problem, manifest)
            return None
        if manifest is None or tensors is None:
            return None  # removed meanwhile (another run repaired it)
        if canonical_json(manifest.get("spec")) != canonical_json(spec):
            raise StoreError(
                f"Manifest mismatch in the cache: {manifest_path} was written for a different job than the one "
                f"requested under key {key[:12]}… ({spec_difference(manifest.get('spec'), spec)}); refusing to reuse it. "
                "Delete that file or use another cache_dir."
            )
        if not self.read_only:
            try:
                os.utime(manifest_path)  # last use, for gc(unused_days=...)
            except OSError:
                pass
        return tensors

    def _inspect(self, key: str) -> tuple[dict[str, Any] | None, dict[str, Tensor] | None, str | None]:
        """The one integrity check of an artifact, shared by :meth:`load` and :meth:`verify`.

        Returns
        -------
        tuple
            ``(manifest, tensors, problem)``: ``problem`` is None when the artifact
            is intact (then ``tensors`` holds its tensors), else one line starting
            with the damaged file's path. ``(None, None, None)`` when absent.
        """
        from safetensors import safe_open

        manifest_path = self._manifest_path(key)
        try:
            manifest = json.loads(manifest_path.read_text())
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            return None, None, None
        except (OSError, ValueError) as err:
            return None, None, f"{manifest_path}: unreadable manifest ({err})"
        fmt = manifest.get("format")
        if type(fmt) is not int or not 1 <= fmt <= STORE_FORMAT:
            return manifest, None, f"{manifest_path}: unknown store format {fmt!r} (expected 1 to {STORE_FORMAT})"
        if manifest.get("key") != key:
            return manifest, None, f"{manifest_path}: damaged manifest (it names key {str(manifest.get('key'))[:16]!r}, not its own)"
        if job_key(manifest.get("spec")) != key:
            return manifest, None, f"{manifest_path}: damaged manifest (the sha256 of its spec is not its key)"
        digest = manifest.get("sha256")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            return manifest, None, f"{manifest_path}: damaged manifest (its sha256 {digest!r} is not 64 hex digits)"
        expected = f"{key}.{digest[:16]}.safetensors" if fmt >= 2 else f"{key}.safetensors"
        if manifest.get("data", expected) != expected:
            return manifest, None, f"{manifest_path}: damaged manifest (it names tensor file {manifest.get('data')!r}, not {expected!r})"
        data_path = self._folder(key) / expected
        if not data_path.exists():
            return manifest, None, f"{data_path}: missing tensor file (manifest {manifest_path.name})"
        try:
            actual = _sha256_file(data_path)
        except OSError as err:
            return manifest, None, f"{data_path}: unreadable tensor file ({err.strerror or err})"
        if actual != digest:
            return manifest, None, (
                f"{data_path}: checksum mismatch (the .safetensors file is truncated or altered, "
                f"or {manifest_path.name} holds a wrong checksum)"
            )
        try:
            with safe_open(str(data_path), framework="pt") as f:
                bound = (f.metadata() or {}).get(KEY_METADATA)
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as err:  # noqa: BLE001 - any decoding failure means a damaged file
            return manifest, None, f"{data_path}: unreadable tensors ({err})"
        if bound != key and (bound is not None or fmt >= 3):
            return manifest, None, f"{data_path}: the tensor file belongs to key {str(bound)[:16]!r}, not to {manifest_path.name}"
        if manifest.get("tensors") != sorted(tensors):
            return manifest, None, f"{manifest_path}: damaged manifest (its tensor names differ from those in {data_path.name})"
        return manifest, tensors, None

    def save(self, key: str, spec: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        """Write ``tensors`` and their manifest atomically under ``key``."""
        from safetensors.torch import save_file

        self.check_writable("save")
        folder = self._folder(key)
        manifest_path = self._manifest_path(key)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"Cannot write to the cache directory {str(self.root)!r}: {err}.") from err
        tmp_data = folder / f".{key}.{_writer_tag()}.safetensors.tmp"
        tmp_manifest = folder / f".{key}.{_writer_tag()}.json.tmp"
        mode = file_mode()  # safetensors writes 0600 like mkstemp: give every file the mode the umask gives
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp_data), metadata={KEY_METADATA: key})
            os.chmod(tmp_data, mode)
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
            os.chmod(tmp_manifest, mode)
            os.replace(tmp_manifest, manifest_path)
        except OSError as err:
            raise StoreError(f"Cannot write to the cache directory {str(self.root)!r}: {err}.") from err
        finally:
            for tmp in (tmp_data, tmp_manifest):
                if tmp.exists():
                    tmp.unlink()

    def _discard(self, key: str, reason: str, manifest: dict[str, Any] | None) -> None:
        warnings.warn(f"tdaeval cache: {reason}; recomputing.", stacklevel=3)
        if not self.read_only:
            self._remove(key, manifest)

    def _remove(self, key: str, manifest: dict[str, Any] | None) -> int:
        freed = 0
        data = self._data_path(key, manifest)
        # a damaged manifest may name another job's tensor file: only this key's own file goes with it
        for path in (self._manifest_path(key), *([data] if data.name.startswith(f"{key}.") else [])):
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as err:
                raise StoreError(f"Cannot remove the damaged artifact file {path}: {err.strerror or err}.") from err
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
        """Check every artifact with the check :meth:`load` applies (see the module docstring).

        An artifact reported here is exactly one that a run would refuse to
        reuse; with ``repair`` it is removed, so the next run recomputes it.

        Parameters
        ----------
        repair : bool
            Remove damaged artifacts so the next run recomputes them.

        Returns
        -------
        list of str
            One line per damaged artifact, naming the file and the problem.
        """
        if repair:
            self.check_writable("repair")
        problems = []
        for path in sorted((self.root / "objects").glob("*/*.json")):
            key = path.stem
            manifest, _, problem = self._inspect(key)
            if problem is None:
                continue
            problems.append(problem)
            if repair:
                self._remove(key, manifest)
        return problems

    def gc(self, unused_days: float | None = None, dry_run: bool = False, grace_seconds: float = GC_GRACE_SECONDS) -> tuple[list[Path], int]:
        """Remove leftovers: temporary files and tensor files no manifest names (older than
        ``grace_seconds``, or at once when the temporary file's writer, named in its file
        name, was a process of this host that no longer runs), claims whose holder is
        gone (:meth:`claim`), and with ``unused_days`` every artifact not used for that long.

        Returns
        -------
        tuple
            The removed (or, with ``dry_run``, removable) paths and the bytes they hold.
        """
        if not dry_run:
            self.check_writable("collect garbage")
        now = time.time()
        referenced = set()
        removable: list[Path] = []
        for row in self.entries():
            manifest_path = self._manifest_path(row["key"])
            data = self._data_path(row["key"], row["manifest"])
            if unused_days is not None and now - row["last_used"] > unused_days * 86400:
                removable += [manifest_path] + ([data] if data.name.startswith(f"{row['key']}.") else [])
            else:
                referenced.add(data.name)
        host = host_tag()
        for path in (self.root / "objects").glob("*/*"):
            if path in removable or path.suffix == ".json" and not path.name.startswith("."):
                continue
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            if path.suffix == ".claim" and not path.name.startswith("."):
                if self._claim_is_stale(path, _read_claim(path)[1]):
                    removable.append(path)
                continue
            old = now - mtime > grace_seconds
            if path.name.endswith(".tmp"):
                writer = _TEMP_NAME.match(path.name)
                dead = writer is not None and writer["host"] == host and not is_alive(int(writer["pid"]), not_after=mtime)
                if old or dead:
                    removable.append(path)
            elif old and path.suffix == ".safetensors" and path.name not in referenced:
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

    # -- claims: concurrent runs share the work ----------------------------------
    def _claim_path(self, key: str) -> Path:
        return self._folder(key) / f"{key}.claim"

    def claim(self, key: str) -> bool:
        """Claim job ``key`` for this process before training it; False when another live run holds it.

        The claim is a file ``<key>.claim`` (pid, host, the process's start
        time, a token) created atomically (a hard link of a complete temporary
        file, else ``O_CREAT | O_EXCL``). A claim is stale, and is taken over,
        when its holder is a process of this host that no longer runs (checked
        at once, start time included, so a reused pid does not count), when it
        was not refreshed for ``CLAIM_STALE_SECONDS`` (holders refresh theirs
        every ``CLAIM_HEARTBEAT_SECONDS`` from a background thread), or when it
        is unreadable and older than ``CLAIM_UNREADABLE_SECONDS``. Claims only
        save work: two runs that train one job anyway (a race on a stale claim)
        store identical results.
        """
        self.check_writable("claim a job")
        path = self._claim_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"Cannot write to the cache directory {str(self.root)!r}: {err}.") from err
        token = uuid.uuid4().hex
        record = {"pid": os.getpid(), "host": host_tag(), "started": process_start_time(os.getpid()), "time": time.time(), "token": token}
        for _ in range(3):
            if _create_exclusive(path, json.dumps(record), key):
                with self._held_lock:
                    self._held[key] = token
                    if self._heartbeat is None:
                        self._heartbeat = threading.Thread(target=self._refresh_claims, name="tdaeval-claims", daemon=True)
                        self._heartbeat.start()
                return True
            text, holder = _read_claim(path)
            if text is None:
                continue  # released meanwhile: try again
            if not self._claim_is_stale(path, holder):
                return False
            _take_over(path, text, key)
        return False

    def release(self, key: str) -> None:
        """Give up this process's claim on ``key`` (no-op when it holds none, or another run took it over)."""
        with self._held_lock:
            token = self._held.pop(key, None)
        if token is None:
            return
        path = self._claim_path(key)
        holder = _read_claim(path)[1]
        if holder is not None and holder.get("token") == token:
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def _claim_is_stale(self, path: Path, holder: dict[str, Any] | None) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        if holder is None:
            return age > CLAIM_UNREADABLE_SECONDS
        if age > CLAIM_STALE_SECONDS:
            return True
        return holder["host"] == host_tag() and not is_alive(holder["pid"], holder["started"])

    def _refresh_claims(self) -> None:
        """Heartbeat: touch the claims this instance holds, so other hosts see them as live; ends when none is held."""
        while True:
            time.sleep(CLAIM_HEARTBEAT_SECONDS)
            with self._held_lock:
                keys = list(self._held)
                if not keys:
                    self._heartbeat = None
                    return
            for key in keys:
                try:
                    os.utime(self._claim_path(key))
                except OSError:
                    pass


def _read_claim(path: Path) -> tuple[str | None, dict[str, Any] | None]:
    """``(text, holder)`` of a claim file: text None when absent, holder None when unreadable or malformed."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None, None
    except OSError:
        return "", None
    try:
        holder = json.loads(text)
    except ValueError:
        return text, None
    valid = (
        isinstance(holder, dict)
        and type(holder.get("pid")) is int and holder["pid"] > 0
        and isinstance(holder.get("host"), str)
        and (holder.get("started") is None or type(holder.get("started")) in (int, float))
        and isinstance(holder.get("token"), str)
    )
    return text, ({**holder, "started": holder.get("started")} if valid else None)


def _create_exclusive(path: Path, text: str, key: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists, atomically (a complete file appears or none)."""
    tmp = path.with_name(f".{key}.{_writer_tag()}.claim.tmp")
    try:
        tmp.write_text(text)
        os.chmod(tmp, file_mode())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FAT file systems): exclusive create
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return True
    except OSError as err:
        raise StoreError(f"Cannot write a claim in the cache directory {str(path.parent.parent.parent)!r}: {err}.") from err
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def _take_over(path: Path, seen: str, key: str) -> None:
    """Remove the stale claim ``path`` whose content was ``seen``; a fresh claim moved by a race is put back."""
    tomb = path.with_name(f".{key}.{_writer_tag()}.claim.tmp")
    try:
        os.rename(path, tomb)
    except OSError:
        return  # someone else took it over (or it cannot be moved: then it is not ours to take)
    try:
        if tomb.read_bytes().decode("utf-8", errors="replace") != seen:
            try:
                os.link(tomb, path)  # a claim created after we judged: put it back unless a newer one exists
            except OSError:
                pass
    finally:
        try:
            tomb.unlink()
        except FileNotFoundError:
            pass
