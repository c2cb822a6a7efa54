"""The documentation is self-contained: nothing cites a file that is not in the repository.

The methods reference used to be cited as a Markdown file that lived outside
the repository; it is now ``docs/methods.rst`` and is cited as "docs: Methods
§N" (docstrings, plain text) or with ``:doc:``/``:ref:`` (reStructuredText).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from typer.testing import CliRunner

from tdaeval.cli import app

ROOT = Path(__file__).resolve().parents[1]
# Everything a user reads: the package (docstrings, CLI strings, bundled files), the docs, the
# tutorials, the benchmarks, the tests and the top-level files.
SCANNED_DIRS = ("tdaeval", "docs", "tutorials", "benchmarks", "tests")
SCANNED_FILES = ("README.md", "Makefile", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".rst", ".md", ".txt", ".yaml", ".yml", ".toml", ".json", ".cfg", ".html"}
# Written this way so that this file does not cite it either.
OUTSIDE_FILE = "METHODS" + ".md"
# An upper-case document name such as README.md: a file of that name must exist in the repository.
UPPER_CASE_DOC = re.compile(r"\b([A-Z][A-Z0-9_]*\.(?:md|rst|txt))\b")
METHODS_CITATION = re.compile(r"Methods\s+§\s*(\d+)")
METHODS_PAGE = ROOT / "docs" / "methods.rst"


def _text_files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES]
    for top in SCANNED_DIRS:
        for path in sorted((ROOT / top).rglob("*")):
            parts = set(path.relative_to(ROOT).parts)
            if "_build" in parts or "__pycache__" in parts or not path.is_file():
                continue
            if path.suffix in TEXT_SUFFIXES:
                files.append(path)
    return files


def _methods_sections() -> set[str]:
    return set(re.findall(r"^\.\. _methods-(\d+):$", METHODS_PAGE.read_text(encoding="utf-8"), re.M))


def test_no_file_cites_the_methods_file_outside_the_repository():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE_FILE in line
    ]
    assert not offenders, f"{OUTSIDE_FILE} is not in the repository; cite 'docs: Methods §N' instead: {offenders}"


def test_every_cited_upper_case_document_exists_in_the_repository():
    """The same fault for any document: an upper-case Markdown file is cited only when it is shipped."""
    present = set()
    for _folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d != "_build"]
        present.update(names)
    offenders = sorted(
        f"{path.relative_to(ROOT)}:{number}: {name}"
        for path in _text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for name in UPPER_CASE_DOC.findall(line)
        if name not in present
    )
    assert not offenders, f"cited documents that are not in the repository: {offenders}"


def test_methods_page_is_in_the_toctree_with_every_section():
    assert re.search(r"^\s+methods$", (ROOT / "docs" / "index.rst").read_text(encoding="utf-8"), re.M)
    assert _methods_sections() == {str(n) for n in range(8)}


def test_every_methods_citation_names_a_section_of_the_methods_page():
    sections = _methods_sections()
    cited = {
        (str(path.relative_to(ROOT)), section)
        for path in _text_files()
        for section in METHODS_CITATION.findall(path.read_text(encoding="utf-8"))
    }
    assert any(path.startswith("tdaeval") for path, _ in cited)  # the package does cite it
    missing = sorted((path, section) for path, section in cited if section not in sections)
    assert not missing, f"citations of sections that docs/methods.rst does not have: {missing}"
    for ref in re.findall(r":ref:`[^`<]*<methods-(\d+)>`", "".join(
        p.read_text(encoding="utf-8") for p in _text_files() if p.suffix == ".rst"
    )):
        assert ref in sections


def test_tdaeval_ls_cites_the_docs_page():
    res = CliRunner().invoke(app, ["ls"])
    assert res.exit_code == 0, res.output
    assert OUTSIDE_FILE not in res.output
    cited = set(METHODS_CITATION.findall(res.output))
    assert cited and cited <= _methods_sections(), res.output
