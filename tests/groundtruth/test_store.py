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
