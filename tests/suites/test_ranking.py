import torch

from tdaeval.suites.ranking import describe_test, rank_results
from tests.suites.helpers import metric_result, synthetic_result


def _noise(seed, n=60, scale=1.0):
    return scale * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_identical_attributors_tie_and_a_clearly_better_one_ranks_first_alone():
    base = 0.2 + 0.3 * _noise(1)
    result = synthetic_result({"lds": ({"a": base, "a_copy": base.clone(), "best": 0.9 + 0.05 * _noise(2), "worst": -0.5 + 0.3 * _noise(3)}, True)})
    rows = {r.attributor: r for r in result.ranking("lds")}
    assert rows["a"].tied_with == ("a_copy",) and rows["a_copy"].tied_with == ("a",)
    assert (rows["a"].rank_low, rows["a"].rank_high) == (rows["a_copy"].rank_low, rows["a_copy"].rank_high) == (2, 3)
    assert rows["a"].rank == rows["a_copy"].rank == 2.5  # tied attributors share their midrank
    best = rows["best"]
    assert best.rank == best.rank_low == best.rank_high == 1 and best.tied_with == ()
    assert all(r.rank_low > best.rank_high for n, r in rows.items() if n != "best")
    assert rows["worst"].rank_label == "4"


def test_lower_is_better_metrics_rank_the_smallest_first():
    rows = rank_results(["big", "small"], [metric_result(5 + _noise(4), "loss", False), metric_result(_noise(5), "loss", False)])
    assert [r.attributor for r in rows] == ["small", "big"] and rows[0].rank_label == "1"


def test_holm_correction_ties_more_than_no_correction():
    # ten methods with small, similar shifts: raw tests separate some pairs, Holm fewer
    values = {f"m{i}": 0.03 * i + _noise(10 + i, n=40, scale=0.3) for i in range(10)}
    result = synthetic_result({"lds": (values, True)})
    raw = sum(len(r.tied_with) for r in result.ranking("lds", correction="none"))
    holm = sum(len(r.tied_with) for r in result.ranking("lds", correction="holm"))
    assert holm >= raw and holm > 0


def test_aggregate_rank_is_the_mean_over_metrics_and_pareto_flags_the_cheap_and_the_good():
    result = synthetic_result(
        {
            "lds": ({"a": 0.8 + 0.01 * _noise(6), "b": 0.5 + 0.01 * _noise(7), "c": 0.1 + 0.01 * _noise(8)}, True),
            "loss": ({"a": 3 + 0.01 * _noise(9), "b": 1 + 0.01 * _noise(10), "c": 2 + 0.01 * _noise(11)}, False),
        },
        costs={"a": 10.0, "b": 1.0, "c": 5.0},
    )
    agg = {row.attributor: row for row in result.aggregate_ranking()}
    assert agg["a"].mean_rank == (1 + 3) / 2 and agg["b"].mean_rank == (2 + 1) / 2 and agg["c"].mean_rank == (3 + 2) / 2
    assert [row.attributor for row in result.aggregate_ranking()] == ["b", "a", "c"]
    front = {p.attributor: p.on_front for p in result.pareto()}
    assert front == {"a": True, "b": True, "c": False}  # c costs more than b and scores lower


def test_the_test_is_stated():
    assert "Holm" in describe_test() and "0.05" in describe_test() and "paired bootstrap" in describe_test()
