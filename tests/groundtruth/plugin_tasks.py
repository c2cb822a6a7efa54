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
