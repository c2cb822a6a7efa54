"""Synthetic results documents for suite, ranking and report tests (no training)."""

import torch

from tdaeval.metrics.base import MetricResult
from tdaeval.suites.result import Entry, SuiteResult


def metric_result(values, metric="lds", higher_is_better=True):
    values = torch.as_tensor(values, dtype=torch.float64)
    finite = values[torch.isfinite(values)]
    mean = float(finite.mean()) if finite.numel() else float("nan")
    sd = float(finite.std()) / max(finite.numel(), 1) ** 0.5 if finite.numel() > 1 else 0.0
    return MetricResult(metric, mean, (mean - 2 * sd, mean + 2 * sd), values, higher_is_better,
                        int((~torch.isfinite(values)).sum()), None, {"seed": 0})


def synthetic_result(per_metric, costs=None, fingerprint="f" * 64, failures=()):
    """``per_metric = {metric: ({attributor: values}, higher_is_better)}``; ``failures`` = [(attributor, metric, reason)]."""
    entries = []
    for metric, (rows, higher) in per_metric.items():
        for name, values in rows.items():
            cost = {"fit_s": (costs or {}).get(name, 1.0), "attribute_s": 0.0}
            entries.append(Entry(name, metric, metric_result(values, metric, higher), cost))
    entries += [Entry(a, m, None, error=reason) for a, m, reason in failures]
    task = {"name": "synthetic", "n_train": 10, "n_test": 40, "measurement": "margin", "fingerprint": fingerprint}
    provenance = {"tdaeval": "test", "torch": torch.__version__, "python": "3", "git": None, "seed": 0, "device": "cpu"}
    return SuiteResult(entries, task, provenance)
