"""A controlled setting is one typed field, ``task.setting``; optional task hooks are declared on ``Task``."""

import dataclasses

import pytest
import torch

from tdaeval.errors import ConfigError, TdaevalError
from tdaeval.groundtruth import MaskTruth
from tdaeval.metrics import get_metric
from tdaeval.task import ControlledSetting, Task
from tdaeval.tasks import DigitsTask, LinearRegressionTask, with_flipped_labels, with_grouped_labels, with_shortcut


def test_a_setting_is_one_typed_field_and_stacked_settings_keep_every_record_in_order():
    base = DigitsTask(n_train=80, n_test=10)
    assert base.setting is None and base.transforms == []
    grouped = with_grouped_labels(base, n_groups=2, seed=1)
    assert isinstance(grouped.setting, ControlledSetting) and grouped.setting.kind == "group_labels"
    assert torch.equal(grouped.setting.subclass_train, base.train_data.targets) and grouped.setting.flipped is None
    stacked = with_flipped_labels(grouped, fraction=0.2, seed=3)
    assert [t["kind"] for t in stacked.transforms] == ["group_labels", "flip_labels"]
    assert stacked.setting.record is stacked.transforms[-1] and stacked.setting.history == (grouped.setting.record,)
    assert int(stacked.setting.flipped.sum()) == 16
    assert stacked.setting.subclass_train is grouped.setting.subclass_train  # kept from the earlier setting
    assert base.setting is None and grouped.setting.flipped is None  # the inputs are untouched
    with pytest.raises(dataclasses.FrozenInstanceError):  # frozen
        stacked.setting.flipped = None
    with pytest.raises(ConfigError, match="no field"):
        grouped.setting.then("x", {"kind": "x"}, unknown=torch.zeros(2))


def test_metrics_read_the_setting_and_name_the_function_that_builds_it():
    base = DigitsTask(n_train=80, n_test=10)
    truth = get_metric("mislabel_detection").build_truth(with_flipped_labels(base, fraction=0.1))
    assert isinstance(truth, MaskTruth) and truth.transforms[0]["kind"] == "flip_labels"
    shortcut = get_metric("shortcut_detection").build_truth(with_shortcut(base, shortcut_class=1))
    assert int(shortcut.mask.sum()) > 0
    for name, helper in [("mislabel_detection", "with_flipped_labels"), ("shortcut_detection", "with_shortcut"),
                         ("mixed_datasets", "with_mixed_dataset"), ("subclass_detection", "with_grouped_labels")]:
        with pytest.raises(ConfigError, match=helper):
            get_metric(name).build_truth(base)
        with pytest.raises(ConfigError, match=helper):  # a setting of another kind is no help
            get_metric(name).build_truth(with_flipped_labels(base) if name != "mislabel_detection" else with_grouped_labels(base))


def test_sample_targets_is_declared_on_task():
    digits, linear = DigitsTask(n_train=20, n_test=5), LinearRegressionTask(n_train=20, n_test=5)
    assert digits.supports_sampling and linear.supports_sampling
    drawn = digits.sample_targets(torch.zeros(4, 10), torch.Generator().manual_seed(0))
    assert drawn.shape == (4,) and drawn.dtype == torch.int64

    class NoSampling(LinearRegressionTask):
        sample_targets = Task.sample_targets  # the declared default: no sampling

    task = NoSampling(n_train=20, n_test=5)
    assert not task.supports_sampling
    with pytest.raises(TdaevalError, match="NoSampling cannot sample targets"):
        task.sample_targets(torch.zeros(2, 1), torch.Generator())


def test_training_with_the_recipe_is_declared_on_task():
    digits, linear = DigitsTask(n_train=20, n_test=5), LinearRegressionTask(n_train=20, n_test=5)
    assert digits.trains_with_recipe and not linear.trains_with_recipe  # the ridge task overrides train

    class OwnTraining(DigitsTask):
        def train(self, model, train_indices, seed):
            return model.eval()

    assert not OwnTraining(n_train=20, n_test=5).trains_with_recipe


def test_every_setting_a_suite_can_name_has_its_function():
    from typing import get_args

    from tdaeval.suites.schema import SETTINGS, SettingSpec
    from tdaeval.tasks import controlled

    assert tuple(controlled.SETTING_FUNCTIONS) == SETTINGS == get_args(SettingSpec.model_fields["name"].annotation)
    assert all(function is getattr(controlled, f"with_{name}") for name, function in controlled.SETTING_FUNCTIONS.items())


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_shortcut_class_without_examples_to_use_is_a_config_error(split):
    """Every training example of the class (to carry the trigger) or every test example outside it (to trigger) missing:
    a one-line error naming the parameter, not a torch error from an empty reduction."""
    from tdaeval.data import Data

    task = DigitsTask(model="logreg", n_train=60, n_test=10)
    data = task.train_data if split == "train" else task.test_data
    keep = data.targets != 3 if split == "train" else data.targets == data.targets[0]
    if split == "train":
        task.train_data = Data(data.inputs[keep], data.targets[keep])
        shortcut_class = 3
    else:
        task.test_data = Data(data.inputs[keep], data.targets[keep])
        shortcut_class = int(data.targets[0])
    with pytest.raises(ConfigError, match="'shortcut_class'") as info:
        with_shortcut(task, shortcut_class=shortcut_class)
    assert "\n" not in str(info.value)
