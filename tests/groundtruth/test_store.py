import json

import pytest
import torch

from tdaeval.errors import StoreError
from tdaeval.groundtruth import ArtifactStore, default_cache_dir, job_key

SPEC = {"kind": "test", "seed": 1, "indices": [1, 2, 3]}


def test_roundtrip_and_atomic_layout(tmp_path):
    store = ArtifactStore(tmp_path)
    key = job_key(SPEC)
    assert store.load(key, SPEC) is None and not store.has(key)
    store.save(key, SPEC, {"outputs": torch.arange(5.0)})
    assert store.has(key) and store.keys() == [key]
    assert torch.equal(store.load(key, SPEC)["outputs"], torch.arange(5.0))
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    manifest = json.loads(next(tmp_path.rglob("*.json")).read_text())
    assert manifest["spec"] == SPEC and len(manifest["sha256"]) == 64


def test_manifest_mismatch_is_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    key = job_key(SPEC)
    store.save(key, SPEC, {"outputs": torch.ones(3)})
    with pytest.raises(StoreError, match="Manifest mismatch.*refusing"):
        store.load(key, {**SPEC, "seed": 2})


def test_manifest_mismatch_names_the_keys_that_differ(tmp_path):
    """Changed, stored-only and asked-only keys, nested ones by dotted path, long values truncated."""
    stored = {"kind": "lds", "n_subsets": 64, "seed": 0, "old": 1, "task": {"name": "digits", "hidden": 16}, "note": "x" * 200}
    store = ArtifactStore(tmp_path)
    key = job_key(stored)
    store.save(key, stored, {"outputs": torch.ones(3)})
    asked = {"kind": "lds", "n_subsets": 128, "seed": 0, "new": [1, 2], "task": {"name": "digits", "hidden": 32}, "note": "y" * 200}
    with pytest.raises(StoreError) as info:
        store.load(key, asked)
    message = str(info.value)
    assert "n_subsets: stored 64, asked 128" in message
    assert "task.hidden: stored 16, asked 32" in message
    assert "old: only stored (1)" in message and "new: only asked ([1,2])" in message
    assert "seed" not in message and "kind" not in message and "task.name" not in message
    assert "x" * 40 not in message and "'xxxxxxxx" in message  # truncated
    assert "refusing to reuse it" in message


def test_corrupted_tensor_file_is_detected_and_recomputed(tmp_path):
    store = ArtifactStore(tmp_path)
    key = job_key(SPEC)
    store.save(key, SPEC, {"outputs": torch.ones(100)})
    data = next(tmp_path.rglob("*.safetensors"))
    data.write_bytes(data.read_bytes()[:-40])  # truncated
    with pytest.warns(UserWarning, match="checksum mismatch.*safetensors"):
        assert store.load(key, SPEC) is None
    assert not store.has(key)


def test_interrupted_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    key = job_key(SPEC)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("pathlib.Path.write_text", fail)
    with pytest.raises(StoreError, match="Cannot write"):
        store.save(key, SPEC, {"outputs": torch.ones(3)})
    monkeypatch.undo()
    assert not store.has(key) and store.load(key, SPEC) is None
    assert list(tmp_path.rglob("*.json")) == [] and list(tmp_path.rglob("*.tmp")) == []


def test_relative_paths_resolve_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore("cache/here")
    assert store.root == tmp_path / "cache" / "here"
    monkeypatch.chdir("/")
    store.save(job_key(SPEC), SPEC, {"outputs": torch.ones(1)})
    assert (tmp_path / "cache" / "here" / "objects").is_dir()


def test_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cache directory .* is not writable.*cache_dir"):
        ArtifactStore(blocker / "cache")


def test_default_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TDAEVAL_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("TDAEVAL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "tdaeval"


def test_a_wrong_checksum_in_the_manifest_is_detected_named_and_recomputed(small_digits, tmp_path):
    from tdaeval.groundtruth import LDSSpec, build_lds_groundtruth

    spec = LDSSpec(n_subsets=3)
    store = ArtifactStore(tmp_path)
    first = build_lds_groundtruth(small_digits, spec, store)
    manifest_path = sorted(tmp_path.rglob("*.json"))[0]
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    data = sorted(tmp_path.rglob("*.safetensors"))[1]
    data.write_bytes(data.read_bytes()[:-7])  # and a truncated tensor file of another job
    assert len(store.verify()) == 2
    with pytest.warns(UserWarning) as caught:
        again = build_lds_groundtruth(small_digits, spec, store)
    messages = " ".join(str(w.message) for w in caught)
    assert manifest_path.name in messages and data.name in messages and "recomputing" in messages
    assert again.provenance["jobs_trained"] == 2 and torch.equal(again.outputs, first.outputs)
    assert store.verify() == []


def test_concurrent_writers_of_one_key_never_pair_a_manifest_with_foreign_data(tmp_path):
    import threading

    store = ArtifactStore(tmp_path)
    key = job_key(SPEC)
    values = {0: torch.zeros(50), 1: torch.ones(50)}

    def write(which):
        for _ in range(40):
            store.save(key, SPEC, {"outputs": values[which]})

    threads = [threading.Thread(target=write, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checksum mismatch would warn
        loaded = store.load(key, SPEC)["outputs"]
    assert torch.equal(loaded, values[0]) or torch.equal(loaded, values[1])
    assert store.verify() == []


def test_gc_removes_leftovers_and_unused_artifacts(tmp_path):
    import os
    import time

    store = ArtifactStore(tmp_path)
    key = job_key(SPEC)
    store.save(key, SPEC, {"outputs": torch.ones(3)})
    folder = next((tmp_path / "objects").iterdir())
    orphan = folder / f"{key}.deadbeefdeadbeef.safetensors"
    orphan.write_bytes(b"old data")
    tmp = folder / f".{key}.123.abcd.json.tmp"
    tmp.write_text("{")
    fresh_tmp = folder / f".{key}.456.abcd.json.tmp"
    fresh_tmp.write_text("{")
    old = time.time() - 2 * 3600
    for path in (orphan, tmp):
        os.utime(path, (old, old))
    would, _ = store.gc(dry_run=True)
    assert sorted(would) == sorted([orphan, tmp]) and orphan.exists()
    removed, freed = store.gc()
    assert sorted(removed) == sorted([orphan, tmp]) and freed > 0 and fresh_tmp.exists()  # a writer may still own it
    assert store.load(key, SPEC) is not None
    assert store.gc(unused_days=1)[0] == []  # just used
    manifest = folder / f"{key}.json"
    os.utime(manifest, (old - 2 * 86400, old - 2 * 86400))
    removed, _ = store.gc(unused_days=1)
    assert manifest in removed and not store.has(key)
