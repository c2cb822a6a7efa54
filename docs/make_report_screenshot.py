"""Render the HTML report and screenshot it into ``docs/_static/report.png``.

Usage::

    python docs/make_report_screenshot.py [RESULT.json] [OUT.png]

``RESULT.json`` is a document written by :meth:`tdaeval.suites.SuiteResult.to_json`;
without it a synthetic but realistic result is used (the eight built-in
attributors on ``lds`` and ``mislabel_detection``, with one failure). The HTML
is written beside the screenshot as ``report.html`` in a temporary folder and
captured by headless Chromium (``chromium`` or ``chromium-browser`` on the
``PATH``) in a 1200 × 1600 window.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from tdaeval.metrics.base import MetricResult
from tdaeval.reports import render_html
from tdaeval.suites.result import Entry, SuiteResult

HERE = Path(__file__).resolve().parent

#: name: (mean LDS, mean mislabel AUC or None when it fails, fit s, attribute s)
_SYNTHETIC = {
    "random": (0.00, 0.50, 0.001, 0.002),
    "grad_dot": (0.14, 0.78, 0.21, 0.35),
    "grad_cos": (0.16, 0.74, 0.22, 0.40),
    "tracin": (0.20, 0.83, 1.10, 1.70),
    "influence": (0.27, 0.86, 2.60, 0.90),
    "trak": (0.29, 0.81, 6.80, 0.60),
    "representer": (0.09, None, 0.35, 0.05),
    "similarity": (0.07, 0.61, 0.02, 0.04),
}


def _result(metric: str, mean: float, n: int, spread: float, seed: int, bounds: tuple[float, float]) -> MetricResult:
    generator = torch.Generator().manual_seed(seed)
    per_example = (mean + spread * torch.randn(n, generator=generator, dtype=torch.float64)).clamp(*bounds)
    means = per_example[torch.randint(0, n, (2000, n), generator=generator)].mean(1)
    ci = (float(means.quantile(0.025)), float(means.quantile(0.975)))
    return MetricResult(metric, float(per_example.mean()), ci, per_example, True, 0, bounds, {"n_bootstrap": 2000, "ci_level": 0.95})


def synthetic_result() -> SuiteResult:
    """The eight built-in attributors on ``lds`` (100 test points) and ``mislabel_detection`` (40 flipped points)."""
    entries = []
    for seed, (name, (lds, auc, fit_s, attribute_s)) in enumerate(_SYNTHETIC.items()):
        cost = {"fit_s": fit_s, "attribute_s": attribute_s}
        lds_result = _result("lds", lds, 100, 0.18, seed, (-1.0, 1.0))
        lds_result.provenance.update({"n_subsets": 100, "alpha": 0.5, "n_seeds": 1})
        entries.append(Entry(name, "lds", lds_result, cost))
        if auc is None:
            entries.append(Entry(name, "mislabel_detection", None, cost,
                                 error="AttributorError: RepresenterPoints has no self-influence"))
        else:
            entries.append(Entry(name, "mislabel_detection", _result("mislabel_detection", auc, 40, 0.22, 100 + seed, (0.0, 1.0)), cost))
    task = {"name": "digits_mlp", "n_train": 1000, "n_test": 100, "measurement": "margin",
            "fingerprint": "3f9a1c27e4b05d6f8a21", "config": {"hidden": 64, "flip_fraction": 0.04}}
    provenance = {"tdaeval": "0.1.0", "torch": torch.__version__, "python": "3.11", "git": "0123456789abcdef",
                  "seed": 0, "device": "cpu", "n_checkpoints": 5,
                  "metrics": {"lds": {"n_subsets": 100, "alpha": 0.5}, "mislabel_detection": {"n_bootstrap": 2000}}}
    return SuiteResult(entries=entries, task=task, provenance=provenance)


def screenshot(html_path: Path, png_path: Path, width: int = 1200, height: int = 1600) -> None:
    """Capture ``html_path`` with headless Chromium into ``png_path``."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium (or chromium-browser) is not on the PATH.")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--screenshot={png_path}", f"--window-size={width},{height}", html_path.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )


def main(argv: list[str]) -> None:
    result = SuiteResult.from_json(argv[1]) if len(argv) > 1 else synthetic_result()
    out = Path(argv[2]) if len(argv) > 2 else HERE / "_static" / "report.png"
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "report.html"
        page.write_text(render_html(result), encoding="utf-8")
        screenshot(page, out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main(sys.argv)
