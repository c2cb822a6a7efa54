"""Adapters: other libraries' attributors behind our interface.

Each adapter module registers its attributors under ``"<library>.<method>"``
names and imports its library only when an attributor is fitted, so importing
tdaeval never needs the extras. A missing library is a
:class:`MissingExtraError` that names the extra to install.
"""

# Importing these registers their attributors; none imports its library here.
from tdaeval.attributors.adapters import captum, dattri, kronfluence, quanda, traker  # noqa: E402,F401
from tdaeval.attributors.adapters._base import AdapterAttributor, MissingExtraError, import_extra, measurement_badness

__all__ = ["AdapterAttributor", "MissingExtraError", "import_extra", "measurement_badness"]
