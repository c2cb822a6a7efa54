"""One seed scheme (:func:`tdaeval.hashing.derive_seed`) that reproduces every seed tdaeval derived before it.

The pinned values were computed with the three separate derivations that
existed before (``groundtruth.jobs.derive_seed``, ``attributors.ensembles._seed_of``
and ``nn.dropout_generator``): a change here changes numbers and cache keys.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tdaeval.attributors.ensembles import _seed_of
from tdaeval.errors import ConfigError
from tdaeval.groundtruth import jobs
from tdaeval.hashing import canonical_json, derive_seed, sha256_json
from tdaeval.nn import dropout_generator


def test_ground_truth_seeds_are_unchanged():
    assert [derive_seed("lds", 0, j, r) for j, r in [(0, 0), (1, 0), (3, 2)]] == [739672169, 310838256, 1400595591]
    assert derive_seed("removal-test-points", 7) == 1980052054
    assert derive_seed("further-order", 123, 4) == 2068577317
    assert jobs.derive_seed is derive_seed  # the old name is the same function


def test_ensemble_member_seeds_are_unchanged():
    assert _seed_of(0, 1) == 369920014183877120
    assert _seed_of("lora-peft", 0, 2) == 939454216977999156
    assert _seed_of("lora", 3, 1, 0) == 632104612809550966
    assert derive_seed("tdaeval-member-dropout", 0, 1, bits=60, encoding="repr") == 369920014183877120


def test_dropout_generator_seeds_are_unchanged():
    assert derive_seed("tdaeval-dropout", 0, bits=128, encoding="text") == 115284092461467834648147636228530675762
    assert derive_seed("tdaeval-dropout", 42, bits=128, encoding="text") == 99708737400751110079869899256970749053
    assert np.random.Generator(dropout_generator(5)).integers(0, 2**31, 3).tolist() == [861365114, 635460894, 1102499424]


def test_cache_key_hash_is_unchanged():
    assert canonical_json({"b": [1, 2.5], "a": None}) == '{"a":null,"b":[1,2.5]}'
    assert sha256_json({"b": [1, 2.5, "x"], "a": None}) == "cacedc786abc936ff5388c20aad7a580a43bd81efb4e8df98d138f3816b04bab"
    from tdaeval.task import sha256_json as from_task

    assert from_task is sha256_json  # still importable from its old home


@pytest.mark.parametrize("bits", [1, 8, 31, 60, 64, 128, 256])
def test_seed_has_the_requested_width_and_is_a_prefix_of_the_digest(bits):
    seeds = [derive_seed("width", i, bits=bits) for i in range(50)]
    assert all(0 <= s < 2**bits for s in seeds)
    digest = hashlib.sha256(canonical_json(["tdaeval-seed", "width", 0]).encode()).hexdigest()
    assert seeds[0] == int(digest[: -(-bits // 4)], 16) % 2**bits
    if bits >= 8:
        assert len(set(seeds)) > 40  # distinct parts give distinct seeds


def test_namespaces_and_parts_separate_seeds():
    assert derive_seed("a", 1) != derive_seed("b", 1)
    assert derive_seed("a", 1, 2) != derive_seed("a", 12)
    assert derive_seed("a", 1) == derive_seed("a", 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": 0}, "'bits' parameter of derive_seed"),
        ({"bits": 257}, "'bits' parameter of derive_seed"),
        ({"bits": True}, "'bits' parameter of derive_seed"),
        ({"encoding": "yaml"}, "'encoding' parameter of derive_seed"),
    ],
)
def test_invalid_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        derive_seed("x", 1, **kwargs)


def test_namespace_must_be_a_string():
    with pytest.raises(ConfigError, match="'namespace' parameter of derive_seed must be a string"):
        derive_seed(3, 1)
