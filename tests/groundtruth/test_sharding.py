"""Sharded and interrupted ground-truth builds end bit-identical to one uninterrupted run."""

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from typer.testing import CliRunner

from tdaeval.cli import app
from tdaeval.errors import ConfigError
from tdaeval.groundtruth import ArtifactStore, LDSSpec, Shard, build_lds_groundtruth
from tdaeval.suites.config import build_task, load_suite
from tdaeval.suites.runner import build_groundtruth

runner = CliRunner()
N_SUBSETS = 24
SUITE = {
    "name": "shards",
    "task": {"name": "digits", "params": {"n_train": 300, "n_test": 20, "recipe": {"epochs": 30}}},
    "attributors": ["random"],
    "metrics": [{"name": "lds", "params": {"n_subsets": N_SUBSETS, "seed": 5}}],
    "executor": {"name": "local", "max_models": 2},
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    return path


@pytest.fixture(scope="module")
def reference(suite, tmp_path_factory):
    """The LDS outputs of one uninterrupted, unsharded build."""
    store = tmp_path_factory.mktemp("reference")
    rows = build_groundtruth(suite, cache_dir=store)
    assert rows[0]["state"] == "complete" and rows[0]["trained"] == N_SUBSETS
    return _outputs(suite, store)


def _outputs(suite, store):
    config, _ = load_suite(suite)
    spec = LDSSpec(n_subsets=N_SUBSETS, seed=5)
    task = build_task(config)
    from tdaeval.groundtruth.sharding import build_mode

    with build_mode(plan_only=True):  # load only: raises if anything were missing
        return build_lds_groundtruth(task, spec, ArtifactStore(store)).outputs


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.Popen([sys.executable, "-m", "tdaeval.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_shards_partition_the_jobs():
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(200)]
    owners = [[Shard(i, 3).owns(k) for i in range(3)] for k in keys]
    assert all(sum(o) == 1 for o in owners) and all(any(o[i] for o in owners) for i in range(3))
    for bad in ("2", "1/0", "3/3", "a/b", "-1/2"):
        with pytest.raises(ConfigError, match="shard"):
            Shard.parse(bad)


@pytest.mark.slow
def test_two_concurrent_shards_equal_one_full_run(suite, reference, tmp_path):
    store = tmp_path / "shared"
    procs = [_cli("groundtruth", "run", str(suite), "--shard", f"{i}/2", "--cache-dir", str(store)) for i in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out + err
    status = runner.invoke(app, ["groundtruth", "status", str(suite), "--cache-dir", str(store)])
    assert status.exit_code == 0 and f"{N_SUBSETS}        0        0  complete" in status.stdout, status.stdout
    assert torch.equal(_outputs(suite, store), reference)


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_is_bit_identical(suite, reference, tmp_path):
    store = tmp_path / "killed"
    rng = random.Random(0)
    targets = sorted(rng.sample(range(2, N_SUBSETS - 2), 3))
    for target in targets:
        proc = _cli("groundtruth", "run", str(suite), "--cache-dir", str(store))
        deadline = time.monotonic() + 300
        while len(list(store.glob("objects/*/*.json"))) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))  # land inside a batch or a write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
    stored = len(list(store.glob("objects/*/*.json")))
    assert targets[-1] <= stored < N_SUBSETS  # killed mid-way, not after the end
    rows = build_groundtruth(suite, cache_dir=store)
    assert rows[0]["stored"] == stored and rows[0]["trained"] == N_SUBSETS - stored  # only the missing jobs
    assert torch.equal(_outputs(suite, store), reference)
    assert ArtifactStore(store).verify() == []
