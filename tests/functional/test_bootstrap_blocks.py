"""The bootstraps draw their [B, n] resamples in row blocks: bounded memory, bit-identical numbers (#14 item 13)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import tdaeval.functional.bootstrap as bootstrap_module
from tdaeval.functional import bootstrap_ci, nanmean_ci
from tdaeval.functional.bootstrap import _row_blocks
from tdaeval.functional.correlation import spearman
from tdaeval.functional.lds import _dense_levels, _multiset_spearman, lds_two_way_ci
from tdaeval.functional.ranking import paired_bootstrap_differences
from tdaeval.metrics.base import MetricResult
from tdaeval.suites.compare import bootstrap_difference

SIZES = [(1, 7), (2, 5), (5, 3), (37, 11), (50, 1000), (2001, 9)]  # (n, B): blocks split unevenly for small block sizes


def result(values):
    values = torch.as_tensor(values, dtype=torch.float64)
    return MetricResult(metric="m", value=float(values.nanmean()), ci=(0.0, 0.0), per_example=values, higher_is_better=True)


@pytest.mark.parametrize("n_cols", [1, 3, 10, 1000])
@pytest.mark.parametrize("n_rows", [0, 1, 2, 3, 7, 2000, 2001])
def test_row_blocks_cover_the_rows_in_order_with_at_least_two_rows_and_the_bound(n_rows, n_cols):
    blocks = _row_blocks(n_rows, n_cols, max_elements=25)
    assert [r for start, stop in blocks for r in range(start, stop)] == list(range(n_rows))
    assert all(stop - start >= 2 for start, stop in blocks) or n_rows == 1
    assert all((stop - start) * n_cols <= max(25 + n_cols, 3 * n_cols) for start, stop in blocks)


def _run_all(n, n_resamples, paired):
    g = torch.Generator().manual_seed(n)
    a, b = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    a[::4] = torch.nan
    out = [bootstrap_ci(b, n_resamples, seed=3), nanmean_ci(a, n_resamples, seed=4),
           bootstrap_difference(result(a), result(b[: max(1, n // 2)]), False, n_resamples, seed=7)]
    if paired:
        out += [paired_bootstrap_differences(torch.stack([a, b, a + 0.1 * b]), n_resamples, seed=5),
                bootstrap_difference(result(a), result(b), True, n_resamples, seed=6)]
    return torch.cat([torch.as_tensor(v, dtype=torch.float64).flatten() for v in _leaves(out)]).nan_to_num(123.0)


@pytest.mark.parametrize("block", [1, 7, 64, 1000])
@pytest.mark.parametrize("n, n_resamples", SIZES)
def test_block_path_is_bit_identical_to_the_one_shot_path(monkeypatch, n, n_resamples, block):
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", 10**15)  # one block: the one-shot path
    one_shot = _run_all(n, n_resamples, paired=False)
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", block)
    assert torch.equal(one_shot, _run_all(n, n_resamples, paired=False))


# The paired bootstrap sums with a matrix product, and MKL rounds the last bits
# differently for another number of rows: blocks are only split where B·n
# exceeds the bound (below it the one block *is* the one-shot path, bit for bit);
# split, the numbers agree to rounding.
@pytest.mark.parametrize("block", [1, 2500, 7001, 50_000])
@pytest.mark.parametrize("n, n_resamples", [(1000, 37), (3001, 20), (20_000, 9)])
def test_paired_block_path_is_bit_identical_to_the_one_shot_path(monkeypatch, n, n_resamples, block):
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", 10**15)
    one_shot = _run_all(n, n_resamples, paired=True)
    monkeypatch.setattr(bootstrap_module, "BLOCK_ELEMENTS", block)
    torch.testing.assert_close(_run_all(n, n_resamples, paired=True), one_shot, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n, n_resamples", [(1, 2000), (8388, 2000), (2**24, 1), (2**12, 2**12)])
def test_sizes_within_the_bound_take_a_single_block(n, n_resamples):
    assert _row_blocks(n_resamples, n) == [(0, n_resamples)]


def _leaves(x):
    if isinstance(x, (tuple, list)):
        for item in x:
            yield from _leaves(item)
    else:
        yield x


def test_bootstrap_ci_matches_the_old_one_shot_formula():
    values = torch.randn(333, dtype=torch.float64)
    g = torch.Generator().manual_seed(9)
    means = values[torch.randint(0, 333, (101, 333), generator=g)].mean(dim=1)
    tail = (1.0 - 0.95) / 2.0
    expected = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    assert bootstrap_ci(values, 101, seed=9) == (float(expected[0]), float(expected[1]))


def _old_lds_two_way_ci(predictions, outputs, n_resamples, level, seed, chunk_elements):
    """Today's one-shot code (before #14), kept as the reference."""
    n_subsets = predictions.shape[0]
    kept = torch.nonzero(torch.isfinite(spearman(predictions, outputs, dim=0))).flatten()
    t = int(kept.numel())
    levels_p, levels_o = _dense_levels(predictions[:, kept]), _dense_levels(outputs[:, kept])
    generator = torch.Generator().manual_seed(seed)
    subset_idx = torch.randint(0, n_subsets, (n_resamples, n_subsets), generator=generator)
    test_idx = torch.randint(0, t, (n_resamples, t), generator=generator)
    weights = torch.zeros(n_resamples, t, dtype=torch.float64).scatter_add_(1, test_idx, torch.ones(n_resamples, t, dtype=torch.float64))
    stats = torch.empty(n_resamples, dtype=torch.float64)
    step = max(1, chunk_elements // (n_subsets * t))
    for start in range(0, n_resamples, step):
        drawn = subset_idx[start:start + step]
        counts = torch.zeros(drawn.shape, dtype=torch.float64).scatter_add_(1, drawn, torch.ones(drawn.shape, dtype=torch.float64))
        r = _multiset_spearman(levels_p, levels_o, counts)
        ok = torch.isfinite(r)
        w = weights[start:start + step] * ok
        total = w.sum(dim=1)
        stats[start:start + step] = torch.where(total > 0, (w * torch.where(ok, r, 0.0)).sum(dim=1) / total.clamp_min(1e-300), torch.nan)
    tail = (1.0 - level) / 2.0
    low, high = torch.nanquantile(stats, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return float(low), float(high)


@pytest.mark.parametrize("chunk", [1, 50, 2**18])
@pytest.mark.parametrize("m, t, n_resamples", [(2, 3, 5), (6, 10, 37), (9, 4, 101)])
def test_lds_two_way_ci_drawn_in_chunks_is_bit_identical_to_one_shot(m, t, n_resamples, chunk):
    g = torch.Generator().manual_seed(m * t)
    predictions = torch.randn(m, t, generator=g, dtype=torch.float64)
    outputs = predictions + torch.randn(m, t, generator=g, dtype=torch.float64)
    got = lds_two_way_ci(predictions, outputs, n_resamples, 0.9, 2, chunk_elements=chunk)
    assert got == _old_lds_two_way_ci(predictions, outputs, n_resamples, 0.9, 2, chunk)


def test_no_bootstrap_draws_more_than_a_block(monkeypatch):
    n, n_resamples = 20_000, 2000  # 4e7 indices: more than 2**24 in one draw
    largest = []
    real_randint = torch.randint

    def spy(*args, **kwargs):
        out = real_randint(*args, **kwargs)
        largest.append(out.numel())
        return out

    monkeypatch.setattr(torch, "randint", spy)
    values = torch.rand(n, dtype=torch.float64)
    bootstrap_ci(values, n_resamples)
    paired_bootstrap_differences(torch.stack([values, values.flip(0)]), n_resamples)
    bootstrap_difference(result(values), result(values[:-1]), False, n_resamples)
    assert largest and max(largest) <= 2**24 + n


SCRIPT = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
    import torch
    from tdaeval.functional import nanmean_ci
    from tdaeval.metrics.base import MetricResult
    from tdaeval.suites.compare import bootstrap_difference
    n, B = 1_000_000, 200
    g = torch.Generator().manual_seed(0)
    make = lambda: MetricResult(metric="m", value=0.5, ci=(0.0, 0.0), per_example=torch.rand(n, generator=g, dtype=torch.float64),
                                higher_is_better=True)
    a, b = make(), make()
    assert all(map(lambda v: v == v, bootstrap_difference(a, b, True, B)[1]))
    assert all(map(lambda v: v == v, bootstrap_difference(a, b, False, B)[1]))
    nanmean_ci(a.per_example, B)
    print("ok")
""")


@pytest.mark.slow
@pytest.mark.timeout(900)  # its own limit: the subprocess alone took 490 s on 2 loaded cores
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_compare_of_a_million_per_example_values_runs_under_3_gb_of_address_space(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=780)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
