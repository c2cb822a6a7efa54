"""Large-n LDS in bounded memory (issue #8): n_train = 200,000 × n_test = 1,000 × M = 100.

Task: ``SyntheticTask`` (32 features, 10 classes, logistic regression). Each
mode runs in a fresh subprocess and reports its wall time and its peak
memory above the level after imports: anonymous memory (``RssAnon``, sampled
every 5 ms: what the process cannot give back) and the resident set
(``ru_maxrss``, which also counts the page cache of the memory-mapped score
file, reclaimable by the kernel):

* ``groundtruth`` — train the 100 subset models (100,000 points each) into a store;
* ``streamed`` — ``tdaeval.evaluate(..., score_chunk=8192)``: grad_dot scores one
  chunk of 8,192 training points at a time into a memory-mapped file; LDS reads it in chunks;
* ``materialised`` — the same without ``score_chunk`` (the full [1,000, 200,000] matrix in memory);
* ``dattri`` — dattri 0.3.0's ``metric.lds`` on the same (materialised) scores and ground truth.

    .venv/bin/python benchmarks/bench_large_n.py [--n-train 200000] [--n-test 1000] [--subsets 100] [--chunk 8192]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def anon_mib() -> float:
    """Anonymous resident memory (RssAnon): what the process holds beyond reclaimable file pages."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class AnonPeak:
    """Samples RssAnon every 5 ms in a thread (the kernel keeps no peak of it)."""

    def __init__(self) -> None:
        import threading

        self.peak = anon_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, anon_mib())
            time.sleep(0.005)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, anon_mib())


def child(args: argparse.Namespace) -> None:
    import torch

    import tdaeval
    from tdaeval.groundtruth import ArtifactStore, LDSSpec, build_lds_groundtruth
    from tdaeval.tasks import SyntheticTask

    task = SyntheticTask(n_train=args.n_train, n_test=args.n_test)
    spec = LDSSpec(n_subsets=args.subsets)
    baseline = peak_mib()
    anon_baseline = anon_mib()
    sampler = AnonPeak()
    start = time.perf_counter()
    out: dict = {"mode": args.mode}
    if args.mode == "groundtruth":
        truth = build_lds_groundtruth(task, spec, ArtifactStore(args.store))
        out["trained"] = truth.provenance["jobs_trained"]
    elif args.mode in ("streamed", "materialised"):
        chunk = args.chunk if args.mode == "streamed" else None
        result = tdaeval.evaluate(task, attributors=["grad_dot"], metrics={"lds": {"n_subsets": args.subsets}},
                                  cache_dir=args.store, score_chunk=chunk)
        out["lds"] = result.get("grad_dot", "lds").value
    elif args.mode == "dattri":
        from dattri.metric import lds as dattri_lds

        from tdaeval.attributors import get
        from tdaeval.suites.runner import train_reference

        truth = build_lds_groundtruth(task, spec, ArtifactStore(args.store))
        model, _ = train_reference(task)
        scores = get("grad_dot").fit(task, model, task.train_data).attribute(task.test_data)
        indices = torch.stack([torch.nonzero(m).flatten() for m in truth.masks])
        corr, _ = dattri_lds(scores.T, (truth.mean_outputs, indices))
        out["lds"] = float(torch.nanmean(corr))
    out["seconds"] = time.perf_counter() - start
    out["anon_peak_mib_above_imports"] = sampler.stop() - anon_baseline
    out["peak_mib_above_imports"] = peak_mib() - baseline
    out["peak_mib_total"] = peak_mib()
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=200_000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--subsets", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=8192)
    parser.add_argument("--store", default=None)
    parser.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--skip-dattri", action="store_true")
    args = parser.parse_args()
    if args.mode:
        child(args)
        return
    store = args.store or tempfile.mkdtemp(prefix="tdaeval-large-n-")
    print(machine())
    print(f"n_train={args.n_train} n_test={args.n_test} M={args.subsets} chunk={args.chunk} store={store}")
    modes = ["groundtruth", "streamed", "materialised"] + ([] if args.skip_dattri else ["dattri"])
    rows = {}
    for mode in modes:
        cmd = [sys.executable, __file__, "--mode", mode, "--n-train", str(args.n_train), "--n-test", str(args.n_test),
               "--subsets", str(args.subsets), "--chunk", str(args.chunk), "--store", store]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent)
        if proc.returncode != 0:
            print(f"{mode}: failed\n{proc.stderr[-2000:]}")
            continue
        rows[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = rows[mode]
        extra = f"  LDS {r['lds']:.4f}" if "lds" in r else ""
        print(f"{mode:<13} {r['seconds']:8.1f} s   anonymous peak +{r['anon_peak_mib_above_imports']:6.0f} MiB   "
              f"RSS peak +{r['peak_mib_above_imports']:6.0f} MiB (total {r['peak_mib_total']:.0f}){extra}")
    if "streamed" in rows and "materialised" in rows:
        s, m = rows["streamed"], rows["materialised"]
        print(f"streamed / materialised anonymous peak memory: {s['anon_peak_mib_above_imports'] / max(m['anon_peak_mib_above_imports'], 1):.2f}; "
              f"same LDS: {abs(s['lds'] - m['lds']) < 1e-9}")
    if "streamed" in rows and "dattri" in rows:
        s, d = rows["streamed"], rows["dattri"]
        print(f"dattri / tdaeval streamed: anonymous peak memory {d['anon_peak_mib_above_imports'] / max(s['anon_peak_mib_above_imports'], 1):.1f}x, "
              f"time {d['seconds'] / s['seconds']:.1f}x")
    bound = (args.n_test + args.subsets) * args.chunk * 8 * 2 / 2**20
    print(f"stated bound for the streamed scoring + LDS (besides data, model and ground truth): "
          f"~2 x (n_test + M) x chunk x 8 bytes = {bound:.0f} MiB")


if __name__ == "__main__":
    main()
