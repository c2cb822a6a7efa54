"""Suite files: valid documents load; malformed ones name the file, the key path and what was expected."""

import re

import pytest

from tdaeval.errors import ConfigError
from tdaeval.suites.build import metric_params
from tdaeval.suites.config import builtin_suites, load_suite, parse_suite

VALID = """
task: {name: digits, params: {n_train: 200, n_test: 20}}
attributors:
  - grad_dot
  - {use: "tests.attributors.plugin_example:InputSimilarity", name: mine, params: {scale: 2.0}}
metrics:
  - lds
  - {name: loo, params: {n_removed: 10}}
groundtruth: {n_subsets: 8, alpha: 0.4}
thresholds:
  floors:
    - {attributor: "*", metric: lds, min: 0.0}
"""


def test_valid_suite_fills_defaults_and_passes_groundtruth_to_metrics_that_take_it():
    config = parse_suite(VALID, source="s.yaml")
    assert config.seed == 0 and config.executor == "local" and config.ranking.alpha == 0.05
    assert [a.label for a in config.attributors] == ["grad_dot", "mine"]
    assert metric_params(config, 0) == {"n_subsets": 8, "alpha": 0.4}
    # LOO takes no subsets or alpha; its own params win over the defaults
    assert metric_params(config, 1) == {"n_removed": 10}


def test_toml_suites_read_like_yaml(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[task]\nname = "linear_regression"\n\n[[attributors]]\nuse = "grad_dot"\n\n[[metrics]]\nname = "lds"\n')
    config, folder = load_suite(path)
    assert config.task.name == "linear_regression" and folder == tmp_path


def test_builtin_suites_are_valid():
    assert {"smoke", "standard"} <= set(builtin_suites())
    for name in builtin_suites():
        config, folder = load_suite(name)
        assert folder is None and config.name == name


@pytest.mark.parametrize(
    "text,expected",
    [
        (VALID + "colour: red\n", "s.yaml: colour: unknown key"),
        (VALID.replace("n_subsets: 8", "n_subsets: eight"), "s.yaml: groundtruth.n_subsets: Input should be a valid integer"),
        (VALID.replace("alpha: 0.4", "alpha: 1.5"), "s.yaml: groundtruth.alpha: Input should be less than 1 (got 1.5)"),
        ("attributors: [grad_dot]\nmetrics: [lds]\n", "s.yaml: task: Field required"),
        (VALID.replace("  - grad_dot\n", "  - grad_dott\n"), "s.yaml: attributors.0.use: Unknown attributor 'grad_dott'"),
        (VALID.replace("InputSimilarity", "Missing"),
         "s.yaml: attributors.1.params: Module 'tests.attributors.plugin_example' has no attribute 'Missing'"),
        (VALID.replace("scale: 2.0", "size: 2.0"), "s.yaml: attributors.1.params: Invalid parameters ['size']"),
        (VALID.replace("  - lds\n", "  - ldss\n"), "s.yaml: metrics.0.name: Unknown metric 'ldss'"),
        (VALID.replace("n_removed: 10", "n_removed: 0"), "s.yaml: metrics.1.params:"),
        (VALID.replace("n_train: 200", "n_trian: 200"), "s.yaml: task.params: Invalid parameters ['n_trian'] for task 'digits'"),
        (VALID.replace("metric: lds, min", "metric: auc, min"), "s.yaml: thresholds.floors.0.metric: 'auc' is not a metric of this suite"),
        (VALID.replace("min: 0.0", "below: 0.0"), "s.yaml: thresholds.floors.0.below: unknown key"),
        (VALID.replace("{attributor: \"*\", metric: lds, min: 0.0}", "{attributor: \"*\", metric: lds}"),
         "thresholds.floors.0: give 'min' and/or 'max'"),
        ("task: digits\nattributors: []\nmetrics: [lds]\n", "s.yaml: attributors: List should have at least 1 item"),
        ("task: digits\nattributors: [grad_dot, grad_dot]\nmetrics: [lds]\n", "attributors: attributor names must be unique"),
        ("task: {name: digits, factory: 'a:b'}\nattributors: [grad_dot]\nmetrics: [lds]\n", "s.yaml: task: give exactly one of"),
        ("- just\n- a list\n", "s.yaml: a suite must be a mapping"),
        ("task: [unclosed\n", "s.yaml: not valid YAML at line 2"),
        ("task: digits\nattributors: [grad_dot]\nmetrics: [lds]\nexecutor: slurm\n", "s.yaml: executor: Unknown executor 'slurm'"),
        ("task: digits\nattributors: [grad_dot]\nmetrics: [lds]\nranking: {alpha: 1.5}\n", "s.yaml: ranking.alpha: Input should be less than 1"),
        ("task: digits\nattributors: [grad_dot]\nmetrics: [lds]\ndevice: tpu\n", "s.yaml: device: expected 'cpu'"),
    ],
)
def test_malformed_suites_name_the_key_path(text, expected):
    with pytest.raises(ConfigError) as err:
        parse_suite(text, source="s.yaml")
    assert expected in str(err.value)


def test_missing_file_lists_builtins(tmp_path):
    listed = ", ".join(sorted(builtin_suites()))
    assert {"smoke", "standard", "lm-smoke", "lm-standard", "finetune-dda"} <= set(builtin_suites())
    with pytest.raises(ConfigError, match=rf"does not exist \(built-in suites: {re.escape(listed)}\)"):
        load_suite(tmp_path / "nope.yaml")


def test_groundtruth_defaults_reach_only_ground_truth_parameters():
    config = parse_suite(
        "task: digits\nattributors: [grad_dot]\nmetrics: [lds, seed_reliability, loo]\ngroundtruth: {alpha: 0.3, n_seeds: 2, seed: 4}\n",
        source="s.yaml",
    )
    assert metric_params(config, 0) == {"alpha": 0.3, "n_seeds": 2, "seed": 4}
    assert metric_params(config, 1) == {}  # its 'alpha' is a significance level, its 'seed' the bootstrap's
    assert metric_params(config, 2) == {"n_seeds": 2, "seed": 4}


def test_a_partial_recipe_keeps_the_tasks_own_defaults():
    from tdaeval.suites.config import build_task

    config = parse_suite(
        "task: {name: synthetic, params: {n_train: 100, n_test: 10, recipe: {epochs: 3}}}\nattributors: [grad_dot]\nmetrics: [lds]\n"
    )
    recipe = build_task(config).recipe
    assert (recipe.epochs, recipe.batch_size, recipe.lr) == (3, 512, 0.1)


def test_modules_next_to_the_suite_file_import(tmp_path):
    (tmp_path / "my_local_attributor.py").write_text("def dot(model, train, test):\n    return test.inputs @ train.inputs.T\n")
    (tmp_path / "s.yaml").write_text("task: linear_regression\nattributors: ['my_local_attributor:dot']\nmetrics: [lds]\n")
    config, folder = load_suite(tmp_path / "s.yaml")
    assert config.attributors[0].use == "my_local_attributor:dot" and folder == tmp_path
