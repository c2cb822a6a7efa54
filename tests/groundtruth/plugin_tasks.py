"""Tasks for executor tests; importable by spawned worker processes."""

import os
from pathlib import Path

from tdaeval.tasks import DigitsTask


class CrashOnceTask(DigitsTask):
    """The first worker that trains with it dies (as an OOM kill would); later ones train normally."""

    def __init__(self, marker: str, **params):
        super().__init__(**params)
        self.marker = marker

    def build_model(self, seed):
        marker = Path(self.marker)
        if os.environ.get("TDAEVAL_TEST_WORKER") == "1" and not marker.exists():
            marker.write_text("crashed")
            os._exit(1)
        return super().build_model(seed)


class CountingTask(DigitsTask):
    """Appends ``<pid> <seed>`` to ``$TDAEVAL_TEST_TRAIN_LOG`` for every model it builds: counts trainings across processes."""

    def build_model(self, seed):
        log = os.environ.get("TDAEVAL_TEST_TRAIN_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {seed}\n")
        return super().build_model(seed)


class SleepyTask(DigitsTask):
    """In a worker (``$TDAEVAL_TEST_SLEEPY_DIR`` set), every model build leaves a marker and sleeps 120 s: a long batch."""

    def build_model(self, seed):
        folder = os.environ.get("TDAEVAL_TEST_SLEEPY_DIR")
        if folder:
            Path(folder, f"started-{os.getpid()}").write_text("")
            import time

            time.sleep(120)
        return super().build_model(seed)
