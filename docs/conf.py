"""Sphinx configuration for tdaeval.

Build with ``make docs`` (warnings are errors). Only Sphinx itself is needed;
nothing is mocked: tdaeval and its dependencies are imported for real.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

sys.path.insert(0, os.path.abspath(".."))

from tdaeval import __version__ as release  # noqa: E402

project = "tdaeval"
author = "the tdaeval developers"
copyright = "2026, the tdaeval developers"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# Docstrings are numpy style.
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False

# Every automodule in api.rst says which members it documents.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}
autosummary_generate = False

nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = ["_static"]


class SubmoduleExtras(SphinxDirective):
    """``.. tdaeval-submodules:: tdaeval.attributors``

    For every public submodule of the package: a subsection with the
    submodule's docstring and the names in its ``__all__`` that the package
    does not re-export (those are documented once, under the package name).
    Computed at build time, so a name added to a submodule is documented
    without editing ``api.rst``.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        package = importlib.import_module(self.arguments[0])
        exported = set(getattr(package, "__all__", ()))
        lines: list[str] = []
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_"):
                continue
            name = f"{package.__name__}.{info.name}"
            module = importlib.import_module(name)
            extras = [n for n in getattr(module, "__all__", ()) if n not in exported]
            lines += [f"``{name}``", "~" * (len(name) + 4), "", f".. automodule:: {name}"]
            if extras:
                lines.append(f"   :members: {', '.join(extras)}")
            if info.name in exported:
                # The package exports a function of the same name (tdaeval.functional.lds),
                # which owns the name in the index.
                lines.append("   :noindex:")  # spelling accepted by every Sphinx >= 7
            lines.append("")
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source=f"<{self.name}>"), container, self.content_offset)
        return container.children


#: Private methods documented because users implement them.
PLUG_IN_METHODS = {"Attributor._attribute", "Attributor._fit"}


def _document_plug_in_methods(app, what, name, obj, skip, options):
    """Show ``Attributor._attribute`` and ``Attributor._fit`` (not the subclasses' overrides)."""
    if getattr(obj, "__qualname__", None) in PLUG_IN_METHODS:
        return False
    return None


def setup(app):
    app.add_directive("tdaeval-submodules", SubmoduleExtras)
    app.connect("autodoc-skip-member", _document_plug_in_methods)
    return {"parallel_read_safe": True}
