"""Every value a run will use is checked at validation: one class of bad input per case, each
refused with a ConfigError that names the file and the key path (``validate`` then exits 2)."""

import copy

import pytest
import torch
import yaml

from tdaeval.errors import ConfigError
from tdaeval.suites.config import check_device, parse_suite

BASE = {
    "task": {"name": "digits", "params": {"n_train": 60, "n_test": 6, "recipe": {"epochs": 1}}},
    "attributors": ["random"],
    "metrics": [{"name": "lds", "params": {"n_subsets": 4}}],
}


def with_change(path, value):
    """BASE with the value at ``path`` (a tuple of keys and indices) replaced."""
    doc = copy.deepcopy(BASE)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def refuse(doc_or_text, key_path, source="bad.yaml"):
    text = doc_or_text if isinstance(doc_or_text, str) else yaml.safe_dump(doc_or_text, allow_unicode=True)
    with pytest.raises(ConfigError) as info:
        parse_suite(text, source=source)
    message = str(info.value)
    assert message.startswith(f"{source}: ") and key_path in message, message
    assert "Traceback" not in message and "\n" not in message.strip(), message
    return message


# (class of input, key path in the message, document)
CASES = [
    ("seed overflows", "seed", with_change(("seed",), 10**20)),
    ("seed as a huge float", "seed", "seed: 1e20\n" + yaml.safe_dump(BASE)),
    ("negative seed", "seed", with_change(("seed",), -1)),
    ("ground-truth subsets overflow", "groundtruth.n_subsets", {**BASE, "groundtruth": {"n_subsets": 10**30}}),
    ("ground-truth seeds that would never finish", "groundtruth.n_seeds", {**BASE, "groundtruth": {"n_seeds": 10**9}}),
    ("metric's own subsets overflow", "metrics.0.params.n_subsets", with_change(("metrics", 0, "params", "n_subsets"), 10**30)),
    ("checkpoints overflow", "n_checkpoints", with_change(("n_checkpoints",), 10**12)),
    ("chunk overflows", "score_chunk", with_change(("score_chunk",), 10**40)),
    ("recipe as a word", "task", with_change(("task", "params", "recipe"), "fast")),
    ("recipe with an unknown field", "task.params", with_change(("task", "params", "recipe"), {"speed": 3})),
    ("negative size", "task.params", with_change(("task", "params", "n_train"), -5)),
    ("model too large to allocate", "task.params", with_change(("task", "params", "hidden"), 10**11)),
    ("data too large to allocate", "task.params", {**BASE, "task": {"name": "synthetic", "params": {"n_train": 10**11}}}),
    ("size as an integer of 5,000 digits", "bad.yaml", "seed: " + "9" * 5000 + "\n" + yaml.safe_dump(BASE)),
    ("factory without names", "task", {**BASE, "task": {"factory": ":"}}),
    ("factory as a relative file path", "task", {**BASE, "task": {"factory": "../x:y"}}),
    ("factory with a path separator", "task", {**BASE, "task": {"factory": "a/b:c"}}),
    ("attributor import path without a name", "attributors.0", with_change(("attributors",), [{"use": "mod:"}])),
    ("attributor import path with a dot module", "attributors.0", with_change(("attributors",), [{"use": ".x:Y"}])),
    ("device unknown", "device", with_change(("device",), "cudaX")),
    ("device tpu", "device", with_change(("device",), "tpu")),
    ("store with a NUL byte", "store", with_change(("store",), "st\x00re")),
    ("baseline empty", "baseline", with_change(("baseline",), "")),
    ("scores_dir with a NUL byte", "scores_dir", with_change(("scores_dir",), "a\x00b")),
    # libyaml refuses the escape itself; the pure-Python loader builds the string and the walk refuses it
    ("name with a lone surrogate", "Unicode", 'name: "bad \\ud800 name"\n' + yaml.safe_dump(BASE)),
    ("attributor label with a lone surrogate", "Unicode",
     yaml.safe_dump({k: v for k, v in BASE.items() if k != "attributors"}) + 'attributors: [{use: random, name: "\\udfff"}]\n'),
]


@pytest.mark.parametrize("what,key_path,doc", CASES, ids=[c[0] for c in CASES])
def test_validation_refuses_each_class_of_bad_value_with_its_key_path(what, key_path, doc):
    refuse(doc, key_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:99"])
def test_cuda_is_refused_where_there_is_none(device):
    message = refuse(with_change(("device",), device), "device")
    assert "not available on this machine" in message and "cpu" in message


def test_devices_beyond_the_visible_gpus_are_refused():
    with pytest.raises(ConfigError, match="not available"):
        check_device(f"cuda:{torch.cuda.device_count() + 99}")
    assert check_device("cpu") == "cpu"


def test_mps_is_refused_where_there_is_none():
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        pytest.skip("this machine has MPS")
    refuse(with_change(("device",), "mps"), "device")


def test_lone_surrogates_are_refused_with_the_key_path_by_the_pure_python_loader(monkeypatch):
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    text = yaml.safe_dump({k: v for k, v in BASE.items() if k != "attributors"}) + 'attributors: [{use: random, name: "\\udfff"}]\n'
    message = refuse(text, "attributors.0.name")
    assert "lone surrogate" in message


def test_the_base_document_is_valid():
    parse_suite(yaml.safe_dump(BASE), source="ok.yaml")
