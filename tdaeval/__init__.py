"""tdaeval: evaluate training data attribution methods against gold standards.

Scores are ``[n_test, n_train]``; a positive score means the training example
supports the test example's measurement. Optional backends are imported only
inside their adapters, so ``import tdaeval`` stays light.
"""

from tdaeval.datasets import Data
from tdaeval.errors import AttributorError, ConfigError, StoreError, TdaevalError
from tdaeval.suites import SuiteResult, evaluate
from tdaeval.task import Task, TrainRecipe
from tdaeval.version import __version__

__all__ = [
    "AttributorError",
    "ConfigError",
    "Data",
    "StoreError",
    "SuiteResult",
    "Task",
    "TdaevalError",
    "TrainRecipe",
    "__version__",
    "evaluate",
]
