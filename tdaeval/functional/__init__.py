"""Pure tensor math: rank correlations, LDS and bootstrap intervals.

No I/O and no classes here; metrics in :mod:`tdaeval.metrics` wrap these.
"""

from tdaeval.functional.bootstrap import bootstrap_ci, nanmean_ci
from tdaeval.functional.censoring import censored_median, censoring_value, cumulative_flips, first_event_k
from tdaeval.functional.correlation import correlate, cosine, pearson, rankdata, spearman
from tdaeval.functional.detection import average_precision, detection_curve, positive_ranks
from tdaeval.functional.lds import lds, lds_two_way_ci, subset_predictions
from tdaeval.functional.ranking import holm_adjust, paired_bootstrap_differences, pareto_front, rank_intervals
from tdaeval.functional.reliability import rank_stability, significant_fraction, topk_jaccard
from tdaeval.functional.retrieval import (
    category_breakdown,
    hit_at_k,
    precision_at_k,
    quasi_wilson_ci,
    random_dispersion,
    random_hit_at_k,
    random_null,
    random_precision_at_k,
    random_recall_at_k,
    random_reciprocal_rank,
    random_value_pmf,
    recall_at_k,
    reciprocal_rank,
    rerank_candidates,
    sample_random_values,
    topk_inclusion,
)
from tdaeval.functional.topk import topk_cardinality_shares, topk_label_agreement

__all__ = [
    "quasi_wilson_ci", "random_dispersion", "random_null", "random_value_pmf", "sample_random_values",
    "average_precision",
    "correlate",
    "cumulative_flips",
    "significant_fraction",
    "topk_cardinality_shares",
    "topk_label_agreement",
    "bootstrap_ci",
    "censored_median",
    "censoring_value",
    "first_event_k",
    "holm_adjust",
    "paired_bootstrap_differences",
    "pareto_front",
    "rank_intervals",
    "cosine",
    "detection_curve",
    "lds",
    "lds_two_way_ci",
    "nanmean_ci",
    "pearson",
    "positive_ranks",
    "rank_stability",
    "rankdata",
    "spearman",
    "subset_predictions",
    "topk_jaccard",
    "category_breakdown",
    "hit_at_k",
    "precision_at_k",
    "random_hit_at_k",
    "random_precision_at_k",
    "random_recall_at_k",
    "random_reciprocal_rank",
    "recall_at_k",
    "reciprocal_rank",
    "rerank_candidates",
    "topk_inclusion",
]
