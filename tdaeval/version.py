"""The package version, in a module that imports nothing so that every layer can record it.

Kept equal to ``project.version`` in ``pyproject.toml`` (a test checks it).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
