"""What the tutorial scripts share: where they write, where the ground truth is cached, how they report their own checks.

Each tutorial defines ``run(cache_dir, out_dir) -> int`` and ends with
``raise SystemExit(main(run))``. Running a tutorial as a script puts this
folder on ``sys.path``, so ``from _common import ...`` needs nothing installed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from tdaeval.suites import SuiteResult

__all__ = ["output_dir", "write_results", "exit_code", "main"]


def output_dir() -> Path:
    """OUTPUT_DIR (the first argument other than ``--full``), else ``$TDAEVAL_TUTORIAL_OUT``, else a new temporary directory."""
    args = [a for a in sys.argv[1:] if a != "--full"]
    if args:
        return Path(args[0])
    if os.environ.get("TDAEVAL_TUTORIAL_OUT"):
        return Path(os.environ["TDAEVAL_TUTORIAL_OUT"])
    return Path(tempfile.mkdtemp(prefix="tdaeval-tutorial-"))


def write_results(result: SuiteResult, out_dir: Path) -> Path:
    """Writes ``result`` to ``out_dir/results.json`` (the folder made if missing) and returns that path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    result.to_json(path)  # the versioned document: values, CIs, per-test values, cost, provenance
    return path


def exit_code(problems: Iterable[str]) -> int:
    """Prints each problem to stderr as ``unexpected: ...``; 1 when there was one (the tutorials' tests read it), else 0."""
    problems = list(problems)
    for problem in problems:
        print(f"unexpected: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(run: Callable[[str, Path], int]) -> int:
    """``run(cache_dir, out_dir)`` with the ground-truth cache in ``$TDAEVAL_CACHE_DIR``, else in a temporary directory removed afterwards."""
    out_dir = output_dir()
    if os.environ.get("TDAEVAL_CACHE_DIR"):
        return run(os.environ["TDAEVAL_CACHE_DIR"], out_dir)
    with tempfile.TemporaryDirectory(prefix="tdaeval-cache-") as cache_dir:
        return run(cache_dir, out_dir)
