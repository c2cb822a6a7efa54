"""A user's task factories, importable as ``tests.suites.plugin_tasks:name`` from a suite file."""

from tdaeval.tasks import LinearRegressionTask


class DivergingTask(LinearRegressionTask):
    """Training always fails, as a diverging run of a user's model would."""

    def train(self, model, train_indices, seed):
        raise RuntimeError("loss diverged at step 3")


def diverging(**params):
    return DivergingTask(**params)


def small_linear(n_train: int = 40):
    return LinearRegressionTask(n_train=n_train, n_test=10)
