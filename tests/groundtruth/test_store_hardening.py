"""Store hardening (#14): fuzzed manifests and tensor files, keys bound to tensor files, umask-honouring
modes read by another account, claims shared by concurrent runs, gc of dead writers' leftovers, and
workers that exit with a killed driver."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import psutil
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tdaeval.cli import app
from tdaeval.errors import StoreError
from tdaeval.groundtruth import ArtifactStore, LDSSpec, build_lds_groundtruth, job_key, run_jobs
from tdaeval.groundtruth import jobs as jobs_module
from tdaeval.groundtruth import store as store_module
from tdaeval.groundtruth._procs import host_tag, process_start_time
from tdaeval.groundtruth.executors import LocalExecutor

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _spec(i: int) -> dict:
    return {"kind": "train_measure", "version": 1, "task": "ab" * 32, "n_indices": 5,
            "indices_sha256": f"{i:064x}", "seed": 1000 + i, "purpose": "lds"}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A store of four artifacts; returns (root, specs by key, tensors by key)."""
    root = tmp_path_factory.mktemp("pristine")
    store = ArtifactStore(root)
    specs, tensors = {}, {}
    for i in range(4):
        spec = _spec(i)
        key = job_key(spec)
        specs[key] = spec
        tensors[key] = {"outputs": torch.arange(6.0) * (i + 1), "extra": torch.tensor([i])}
        store.save(key, spec, tensors[key])
    return root, specs, tensors


def _copy(root: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(root, dest)
    return dest


def _reported_and_refused(root: Path, specs: dict, tensors: dict) -> tuple[set, set]:
    """Keys `verify` reports, and keys a run's `load` refuses (None or StoreError); loads that succeed must be exact."""
    store = ArtifactStore(root)
    reported = {key for line in store.verify() for key in specs if key in line}
    refused = set()
    for key, spec in specs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                loaded = store.load(key, spec)
            except StoreError:
                loaded = None
        if loaded is None:
            refused.add(key)
        else:  # accepted: exactly the tensors that were saved under this key, never another job's
            assert loaded.keys() == tensors[key].keys() and all(torch.equal(loaded[k], tensors[key][k]) for k in loaded)
    return reported, refused


def _flip(path: Path, rng: random.Random, bits: int = 1) -> None:
    data = bytearray(path.read_bytes())
    for _ in range(bits):
        pos = rng.randrange(len(data) * 8)
        data[pos // 8] ^= 1 << (pos % 8)
    path.write_bytes(bytes(data))


# -- 1. verify reports exactly what a load refuses (fuzzed, every class of file) -------------------
@pytest.mark.parametrize("target,trials", [("*.json", 240), ("*.safetensors", 40)])
def test_bit_flips_verify_reports_exactly_what_a_load_refuses(pristine, tmp_path, target, trials):
    root, specs, tensors = pristine
    rng = random.Random(14)
    damaged_specs = 0
    for trial in range(trials):
        work = _copy(root, tmp_path / "w")
        victims = sorted(work.rglob(f"objects/*/{target}"))
        victim = rng.choice(victims)
        _flip(victim, rng, bits=rng.choice([1, 1, 1, 2, 3]))
        problems = ArtifactStore(work).verify()
        damaged_specs += any("spec" in line for line in problems)
        reported, refused = _reported_and_refused(work, specs, tensors)
        assert reported == refused, (trial, victim.name, problems)
        assert len(refused) <= 1  # one file damaged: never another job's artifact
    if target == "*.json":
        assert damaged_specs > 0  # the class the issue found (a damaged spec) is exercised


def test_truncated_or_emptied_files_are_reported_and_refused_alike(pristine, tmp_path):
    root, specs, tensors = pristine
    rng = random.Random(3)
    for trial in range(30):
        work = _copy(root, tmp_path / "w")
        victim = rng.choice(sorted(work.rglob("objects/*/*.*")))
        victim.write_bytes(victim.read_bytes()[: rng.randrange(0, victim.stat().st_size)])
        reported, refused = _reported_and_refused(work, specs, tensors)
        assert reported == refused and len(refused) == 1, (trial, victim.name)


def test_after_repair_a_run_succeeds_bit_identical(small_digits, tmp_path):
    spec = LDSSpec(n_subsets=3)
    pristine = tmp_path / "pristine"
    first = build_lds_groundtruth(small_digits, spec, ArtifactStore(pristine))
    rng = random.Random(7)
    for trial in range(6):
        work = _copy(pristine, tmp_path / "w")
        manifest = rng.choice(sorted(work.rglob("objects/*/*.json")))
        text = manifest.read_text()
        if trial == 0:  # certainly inside the spec: the seed's first digit
            at = text.index('"seed": ') + len('"seed": ')
            data = bytearray(text.encode())
            data[at] ^= 0x01
            manifest.write_bytes(bytes(data))
        else:
            _flip(manifest, rng)
        res = runner.invoke(app, ["cache", "verify", "--cache-dir", str(work)])
        reported = res.exit_code == 1
        assert res.exit_code in (0, 1), res.output
        if trial == 0:
            assert reported and "spec" in res.stdout, res.output
        res = runner.invoke(app, ["cache", "verify", "--cache-dir", str(work), "--repair"])
        assert res.exit_code == 0, res.output
        again = build_lds_groundtruth(small_digits, spec, ArtifactStore(work))  # no "manifest mismatch" any more
        assert torch.equal(again.outputs, first.outputs)
        assert again.provenance["jobs_trained"] == int(reported)
        assert ArtifactStore(work).verify() == []


# -- 2. a tensor file is bound to its key --------------------------------------------------------
def _two_keys_in_one_folder() -> tuple[dict, dict]:
    first = _spec(100)
    i = 101
    while job_key(_spec(i))[:2] != job_key(first)[:2]:
        i += 1
    return first, _spec(i)


def test_a_manifest_naming_another_jobs_tensor_file_is_refused(tmp_path):
    spec_a, spec_b = _two_keys_in_one_folder()
    key_a, key_b = job_key(spec_a), job_key(spec_b)
    store = ArtifactStore(tmp_path)
    store.save(key_a, spec_a, {"outputs": torch.zeros(4)})
    store.save(key_b, spec_b, {"outputs": torch.ones(4)})
    folder = store._folder(key_a)
    manifest_a = json.loads((folder / f"{key_a}.json").read_text())
    manifest_b = json.loads((folder / f"{key_b}.json").read_text())
    pristine = {p.name: p.read_bytes() for p in folder.iterdir()}

    # (a) B's manifest names A's file with A's checksum
    (folder / f"{key_b}.json").write_text(json.dumps({**manifest_b, "data": manifest_a["data"], "sha256": manifest_a["sha256"]}))
    assert any(key_b in line for line in store.verify())
    with pytest.warns(UserWarning, match="recomputing"):
        assert store.load(key_b, spec_b) is None
    assert torch.equal(store.load(key_a, spec_a)["outputs"], torch.zeros(4))  # A's file survived B's removal

    # (b) A's file copied under B's name, B's manifest updated to its checksum: only the key inside the file tells
    for name, data in pristine.items():
        (folder / name).write_bytes(data)
    forged = f"{key_b}.{manifest_a['sha256'][:16]}.safetensors"
    shutil.copy(folder / manifest_a["data"], folder / forged)
    (folder / f"{key_b}.json").write_text(json.dumps({**manifest_b, "data": forged, "sha256": manifest_a["sha256"]}))
    problems = store.verify()
    assert len(problems) == 1 and "belongs to key" in problems[0] and key_b in problems[0]
    with pytest.warns(UserWarning, match="belongs to key"):
        assert store.load(key_b, spec_b) is None


def test_format_2_files_without_the_key_are_read_format_3_ones_are_not(tmp_path):
    from safetensors.torch import save_file

    from tdaeval.groundtruth.store import _sha256_file

    store = ArtifactStore(tmp_path)
    spec = _spec(7)
    key = job_key(spec)
    folder = store._folder(key)
    folder.mkdir(parents=True)
    tmp = folder / "x.tmp"
    save_file({"outputs": torch.arange(3.0)}, str(tmp))  # as format 2 wrote it: no metadata
    digest = _sha256_file(tmp)
    data = f"{key}.{digest[:16]}.safetensors"
    tmp.rename(folder / data)
    manifest = {"format": 2, "key": key, "spec": spec, "data": data, "sha256": digest, "tensors": ["outputs"], "tdaeval_version": "0.1.0"}
    (folder / f"{key}.json").write_text(json.dumps(manifest))
    assert store.verify() == [] and torch.equal(store.load(key, spec)["outputs"], torch.arange(3.0))
    (folder / f"{key}.json").write_text(json.dumps({**manifest, "format": 3}))  # format 3 must carry its key
    assert len(store.verify()) == 1
    store.save(key, spec, {"outputs": torch.arange(3.0)})  # recomputed: now bound
    assert store.verify() == [] and json.loads((folder / f"{key}.json").read_text())["format"] == 3


# -- 3. workers exit when their driver is killed ---------------------------------------------------
DRIVER = """
import sys
from tdaeval.groundtruth import ArtifactStore, LDSSpec, build_lds_groundtruth
from tdaeval.groundtruth.executors import ProcessExecutor
from tests.groundtruth.plugin_tasks import SleepyTask
with ProcessExecutor(workers=2, max_models=1, threads_per_worker=1) as executor:
    build_lds_groundtruth(SleepyTask(n_train=120, n_test=15), LDSSpec(n_subsets=4), ArtifactStore(sys.argv[1]), executor=executor)
"""


def _alive(processes):
    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.slow
def test_kill_9_of_the_driver_leaves_no_worker_running(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TDAEVAL_TEST_SLEEPY_DIR": str(markers)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / "store")], env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    descendants = []
    try:
        deadline = time.monotonic() + 240
        while len(list(markers.iterdir())) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # until both workers are inside a (120 s) batch
        assert driver.poll() is None and len(list(markers.iterdir())) == 2, "the workers did not start"
        descendants = psutil.Process(driver.pid).children(recursive=True)
        assert len(descendants) >= 2
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
        deadline = time.monotonic() + 10
        while _alive(descendants) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(descendants) == [], f"still running after the driver died: {_alive(descendants)}"
    finally:
        for p in _alive(descendants):
            p.kill()
        if driver.poll() is None:
            driver.kill()


# -- 4. modes follow the umask; another account reads the store ------------------------------------
READER = """
import json, sys
from tdaeval.groundtruth import ArtifactStore
root, key, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for path in __import__("pathlib").Path(root).rglob("*"):
    if path.is_file():
        path.read_bytes()
print(ArtifactStore(root, read_only=True).load(key, spec)["outputs"].tolist())
"""


def _as_nobody() -> list[str] | None:
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    return None


@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)], ids=["022", "002", "077"])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        store = ArtifactStore(tmp_path / "s")
        store.save(job_key(_spec(1)), _spec(1), {"outputs": torch.ones(2)})
        assert store.claim(job_key(_spec(2)))
        try:
            modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "s" / "objects").rglob("*") if p.is_file()}
        finally:
            store.release(job_key(_spec(2)))
    finally:
        os.umask(old)
    assert len(modes) == 3 and set(modes.values()) == {expected}, modes


def test_another_account_reads_a_store_written_under_umask_022(tmp_path):
    prefix = _as_nobody()
    if os.geteuid() != 0 or prefix is None:
        pytest.skip("needs root and setpriv to act as a second account")
    root = Path(tempfile.mkdtemp(prefix="tdaeval-shared-"))
    try:
        root.chmod(0o755)
        old = os.umask(0o022)
        try:
            store = ArtifactStore(root / "store")
            spec = _spec(3)
            store.save(job_key(spec), spec, {"outputs": torch.arange(4.0)})
        finally:
            os.umask(old)
        env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(root)}
        cmd = [*prefix, sys.executable, "-c", READER, str(root / "store"), job_key(spec), json.dumps(spec)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and res.stdout.strip() == "[0.0, 1.0, 2.0, 3.0]", res.stderr[-2000:]
        cli = [*prefix, sys.executable, "-m", "tdaeval.cli", "cache", "verify", "--cache-dir", str(root / "store")]
        res = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and "1 of 1 artifacts intact" in res.stdout, res.stdout + res.stderr[-2000:]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_read_only_store_refuses_writes_clearly(small_digits, tmp_path, monkeypatch):
    ArtifactStore(tmp_path).save(job_key(_spec(1)), _spec(1), {"outputs": torch.ones(2)})
    store = ArtifactStore(tmp_path, read_only=True)
    assert store.load(job_key(_spec(1)), _spec(1)) is not None
    for action in (lambda: store.save(job_key(_spec(2)), _spec(2), {"outputs": torch.ones(2)}),
                   lambda: store.verify(repair=True), lambda: store.gc(), lambda: store.claim(job_key(_spec(2)))):
        with pytest.raises(StoreError, match="opened read-only"):
            action()

    def no_training(*args, **kwargs):
        raise AssertionError("trained before finding that the store is read-only")

    monkeypatch.setattr("tdaeval.groundtruth.executors.train_batch", no_training)
    with pytest.raises(StoreError, match="Cannot train missing jobs: the store .* was opened read-only"):
        run_jobs(small_digits, _jobs(small_digits, 2), store)


# -- 5. claims: concurrent runs share the work ---------------------------------------------------
CONCURRENT = """
import hashlib, json, pathlib, sys, time
from tdaeval.groundtruth import ArtifactStore, LDSSpec, build_lds_groundtruth
from tdaeval.groundtruth.executors import LocalExecutor
from tests.groundtruth.plugin_tasks import CountingTask
task = CountingTask(n_train=120, n_test=15, hidden=16)
store = ArtifactStore(sys.argv[1])
ready, go = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
ready.write_text("")
while not go.exists():
    time.sleep(0.01)
truth = build_lds_groundtruth(task, LDSSpec(n_subsets=8, seed=4), store, executor=LocalExecutor(max_models=2))
print(json.dumps({"trained": truth.provenance["jobs_trained"], "sha": hashlib.sha256(truth.outputs.numpy().tobytes()).hexdigest()}))
"""


@pytest.mark.slow
def test_two_concurrent_runs_train_each_job_once_and_agree(tmp_path):
    from tests.groundtruth.plugin_tasks import CountingTask

    log = tmp_path / "trained.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TDAEVAL_TEST_TRAIN_LOG": str(log)}
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tmp_path / "store"), str(tmp_path / f"ready{i}"), str(tmp_path / "go")],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        for i in range(2)
    ]
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").write_text("")  # both start at once, as two CI jobs on one cache would
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    reference = build_lds_groundtruth(CountingTask(n_train=120, n_test=15, hidden=16), LDSSpec(n_subsets=8, seed=4),
                                      ArtifactStore(tmp_path / "reference"))
    import hashlib

    assert outs[0]["sha"] == outs[1]["sha"] == hashlib.sha256(reference.outputs.numpy().tobytes()).hexdigest()
    seeds = [int(line.split()[1]) for line in log.read_text().splitlines()]
    assert sorted(seeds) == sorted(reference.provenance["training_seeds"][j][0] for j in range(8))  # each job trained once
    assert outs[0]["trained"] + outs[1]["trained"] == 8
    assert list((tmp_path / "store").rglob("*.claim")) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=120)
    return proc.pid


def _write_claim(store: ArtifactStore, key: str, pid: int, host: str | None = None, started=None, age: float = 0.0) -> Path:
    path = store._claim_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": host or host_tag(), "started": started, "time": time.time(), "token": "other"}))
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def _jobs(task, n=4):
    from tdaeval.groundtruth import lds_jobs, subset_masks

    spec = LDSSpec(n_subsets=n, seed=9)
    return [row[0] for row in lds_jobs(task, spec, subset_masks(task.n_train, spec))]


def _no_waiting(monkeypatch):
    def wait():
        raise AssertionError("the run waited for a claim it should have taken over")

    monkeypatch.setattr(jobs_module, "_poll_wait", wait)


@pytest.mark.parametrize("kind", ["dead pid", "reused pid", "other host, not refreshed", "unreadable, old"])
def test_a_stale_claim_is_taken_over_at_once(small_digits, tmp_path, monkeypatch, kind):
    store = ArtifactStore(tmp_path)
    jobs = _jobs(small_digits)
    if kind == "dead pid":
        claim = _write_claim(store, jobs[0].key, _dead_pid())
    elif kind == "reused pid":  # a live pid, but not the process that claimed (another start time)
        claim = _write_claim(store, jobs[0].key, os.getpid(), started=process_start_time(os.getpid()) - 1000)
    elif kind == "other host, not refreshed":
        claim = _write_claim(store, jobs[0].key, 1, host="elsewhere", age=store_module.CLAIM_STALE_SECONDS + 5)
    else:
        claim = store._claim_path(jobs[0].key)
        claim.parent.mkdir(parents=True, exist_ok=True)
        claim.write_bytes(b"\x00{garbage")
        os.utime(claim, (time.time() - 60, time.time() - 60))
    _no_waiting(monkeypatch)
    results, reused, trained = run_jobs(small_digits, jobs, store)
    assert trained == len(jobs) and not claim.exists()


def test_a_live_claim_makes_the_run_train_other_jobs_first_then_wait(small_digits, tmp_path, monkeypatch):
    reference, _, _ = run_jobs(small_digits, _jobs(small_digits), ArtifactStore(tmp_path / "reference"))
    store = ArtifactStore(tmp_path / "shared")
    jobs = _jobs(small_digits)
    claim = _write_claim(store, jobs[0].key, os.getpid(), started=process_start_time(os.getpid()))  # a live run holds it
    waits = []

    def other_run_finishes():  # called only while the run waits for the claimed job
        waits.append([job.key for job in jobs if store.has(job.key)])
        if len(waits) == 2:
            store.save(jobs[0].key, jobs[0].spec, {"outputs": reference[jobs[0].key]})
            claim.unlink()

    monkeypatch.setattr(jobs_module, "_poll_wait", other_run_finishes)
    results, reused, trained = run_jobs(small_digits, jobs, store, executor=LocalExecutor(max_models=1))
    assert trained == len(jobs) - 1 and len(waits) == 2
    assert set(waits[0]) == {job.key for job in jobs[1:]}  # the other jobs were done before waiting
    assert all(torch.equal(results[k], reference[k]) for k in reference)


def test_a_claim_released_without_a_result_is_trained_here(small_digits, tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    jobs = _jobs(small_digits)
    claim = _write_claim(store, jobs[1].key, os.getpid(), started=process_start_time(os.getpid()))
    monkeypatch.setattr(jobs_module, "_poll_wait", claim.unlink)  # the other run gave up
    results, reused, trained = run_jobs(small_digits, jobs, store, executor=LocalExecutor(max_models=1))
    assert trained == len(jobs) and store.verify() == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200), age=st.sampled_from([0.0, 60.0]))
def test_any_claim_file_content_is_handled(tmp_path, content, age):
    store = ArtifactStore(tmp_path)
    key = job_key(_spec(5))
    claim = store._claim_path(key)
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_bytes(content)
    if age:
        os.utime(claim, (time.time() - age, time.time() - age))
    took = store.claim(key)  # never raises
    assert took == (age > 0)  # an unreadable young claim is respected; an old one is taken over
    if took:
        store.release(key)
        assert not claim.exists()
    else:
        claim.unlink()


# -- 6. gc removes a dead writer's temporary files at once ---------------------------------------
WRITER = """
import sys, time, torch
from tdaeval.groundtruth import store as s
def hang(path):
    print("written", flush=True)
    time.sleep(600)
s._sha256_file = hang
s.ArtifactStore(sys.argv[1]).save("ab" * 32, {"kind": "x"}, {"outputs": torch.ones(3)})
"""


def test_gc_removes_the_temporary_files_of_a_killed_writer_at_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "written"
        leftovers = list(tmp_path.rglob("*.tmp"))
        assert len(leftovers) == 1
        assert ArtifactStore(tmp_path).gc(dry_run=True)[0] == []  # the writer is alive: left alone
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
    removed, freed = ArtifactStore(tmp_path).gc()
    assert removed == leftovers and freed > 0 and not leftovers[0].exists()


def test_gc_keeps_live_and_foreign_writers_files_and_removes_dead_claims(tmp_path):
    store = ArtifactStore(tmp_path)
    key = job_key(_spec(1))
    store.save(key, _spec(1), {"outputs": torch.ones(2)})
    folder = store._folder(key)
    live = folder / f".{key}.{host_tag()}.{os.getpid()}.0123abcd.json.tmp"
    foreign = folder / f".{key}.elsewhere.{_dead_pid()}.0123abcd.json.tmp"
    dead = folder / f".{key}.{host_tag()}.{_dead_pid()}.0123abcd.safetensors.tmp"
    legacy = folder / f".{key}.{_dead_pid()}.0123abcd.json.tmp"  # format 2 named no host: the grace period applies
    for path in (live, foreign, dead, legacy):
        path.write_text("{")
    dead_claim = _write_claim(store, job_key(_spec(2)), _dead_pid())
    live_claim = _write_claim(store, job_key(_spec(3)), os.getpid(), started=process_start_time(os.getpid()))
    removed, _ = store.gc()
    assert sorted(removed) == sorted([dead, dead_claim])
    assert all(p.exists() for p in (live, foreign, legacy, live_claim)) and store.verify() == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.text(alphabet="abcdef0123456789.-_xyzAB", min_size=1, max_size=90), max_size=6))
def test_gc_never_touches_young_files_of_unknown_writers_or_intact_artifacts(tmp_path, names):
    store = ArtifactStore(tmp_path)
    key = job_key(_spec(1))
    store.save(key, _spec(1), {"outputs": torch.ones(2)})
    folder = store._folder(key)
    made = []
    for name in names:
        if name in (".", "..") or name.endswith((".json", ".claim")) or (folder / name).exists():
            continue
        (folder / name).write_text("x")
        made.append(folder / name)
    removed, _ = store.gc()
    for path in removed:  # only files that name a dead writer of this host, or stale claims
        match = store_module._TEMP_NAME.match(path.name)
        assert (match and match["host"] == host_tag()) or path.suffix == ".claim", path.name
    assert store.verify() == [] and store.load(key, _spec(1)) is not None
    for path in made:
        path.unlink(missing_ok=True)
