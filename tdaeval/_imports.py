"""Why a ``"module:Name"`` import failed, in one line: which module, and which folders were searched."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

__all__ = ["import_failure"]


def _installation_roots() -> list[Path]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(p for p in (sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")) if p)
    return [Path(r).resolve() for r in roots]


def _is_installation(folder: Path, roots: list[Path]) -> bool:
    """A folder of the Python installation (standard library, site-packages, zip archives), not the user's own."""
    if folder.suffix == ".zip" or any(part in ("site-packages", "dist-packages") for part in folder.parts):
        return True
    return any(folder == root or root in folder.parents for root in roots)


def searched_folders() -> tuple[list[str], int]:
    """``(user folders, n installation folders)`` of ``sys.path``, in search order ("" is the working directory)."""
    roots = _installation_roots()
    user, n_installed = [], 0
    for entry in sys.path:
        if not isinstance(entry, str) or not os.path.exists(entry or "."):  # path hooks' markers, folders that are gone
            continue
        folder = Path(entry or os.getcwd()).resolve()
        if _is_installation(folder, roots):
            n_installed += 1
        elif str(folder) not in user:
            user.append(str(folder))
    return user, n_installed


def import_failure(module_name: str, err: ImportError) -> str:
    """One line saying why ``import module_name`` raised ``err``.

    When the module itself (or a package above it) is missing, the line names it
    and the folders searched (``sys.path``: the user's folders by name, the
    Python installation's counted). When the module was found but raised while
    importing (a missing dependency, a bad ``from x import y``), it says so and
    quotes the error.
    """
    missing = getattr(err, "name", None)
    parts = module_name.split(".")
    own = {".".join(parts[: i + 1]) for i in range(len(parts))}
    if not isinstance(err, ModuleNotFoundError) or (missing is not None and missing not in own):
        first = (str(err).splitlines() or [""])[0]
        return f"module {module_name!r} was found, but importing it failed: {type(err).__name__}: {first}"
    user, n_installed = searched_folders()
    cwd = str(Path(os.getcwd()).resolve())
    shown = [f"{folder} (the working directory)" if folder == cwd else folder for folder in user]
    where = ", ".join(shown) if shown else "no folder of yours"
    if n_installed:
        where += f"; and {n_installed} folder(s) of the Python installation"
    return f"no module named {missing or module_name!r}; searched: {where}"
