import pytest
import torch

from tdaeval import attributors
from tdaeval.attributors import Attribution, Attributor, FunctionAttributor, get, names, resolve, validate_scores
from tdaeval.errors import AttributorError, ConfigError
from tests.attributors._contract import refuses


def test_registry_lists_builtins():
    assert {"random", "grad_dot", "grad_cos", "tracin"} <= set(names())
    assert get("grad_dot", chunk_size=8).chunk_size == 8


def test_unknown_name_and_bad_params_are_clear():
    with pytest.raises(ConfigError, match="Unknown attributor 'nope'.*grad_dot"):
        get("nope")
    with pytest.raises(ConfigError, match="attributor 'random'"):
        get("random", sead=1)
    with pytest.raises(ConfigError, match="'chunk_size' parameter of GradDot"):
        get("grad_dot", chunk_size=0)


def test_module_path_class_and_function(small_logreg):
    model = small_logreg.build_model(0)
    cls_based = get("tests.attributors.plugin_example:InputSimilarity", scale=2.0)
    fn_based = get("tests.attributors.plugin_example:input_dot")
    a = cls_based.fit(small_logreg, model, small_logreg.train_data).attribute(small_logreg.test_data)
    b = fn_based.fit(small_logreg, model, small_logreg.train_data).attribute(small_logreg.test_data)
    torch.testing.assert_close(a, 2.0 * b)
    assert fn_based.display_name == "tests.attributors.plugin_example:input_dot"


@pytest.mark.parametrize(
    "path,match",
    [
        ("no_such_module_xyz:Thing", "Cannot import module"),
        ("tests.attributors.plugin_example:Missing", "has no attribute 'Missing'"),
        ("tests.attributors.plugin_example:NOT_CALLABLE", "neither an Attributor subclass nor a function"),
    ],
)
def test_module_path_errors(path, match):
    with pytest.raises(ConfigError, match=match):
        get(path)


def test_resolve_accepts_instances_functions_classes_and_names():
    from tests.attributors.plugin_example import InputSimilarity, input_dot

    assert isinstance(resolve("random"), attributors.RandomAttributor)
    assert isinstance(resolve(InputSimilarity), InputSimilarity)
    wrapped = resolve(input_dot, name="mine")
    assert isinstance(wrapped, FunctionAttributor) and wrapped.display_name == "mine"
    with pytest.raises(ConfigError, match="must be an Attributor"):
        resolve(42, name="x")
    shared = attributors.RandomAttributor()
    renamed = resolve(shared, name="baseline")
    assert renamed.display_name == "baseline" and shared.display_name == "random"


def test_attribute_before_fit_is_an_error():
    with pytest.raises(AttributorError, match="fit"):
        get("random").attribute(None)


@pytest.mark.parametrize(
    "scores,match",
    [
        ([[1.0]], "must return a torch.Tensor"),
        (torch.zeros(3, 2), r"shape \(3, 2\).*expected \[n_test=2, n_train=3\].*transposed"),
        (torch.zeros(2, 4), r"shape \(2, 4\)"),
        (torch.zeros(2, 3, dtype=torch.long), "floating dtype"),
        (torch.tensor([[0.0, float("nan"), 1.0], [0.0, 0.0, float("inf")]]), "2 non-finite"),
    ],
)
def test_validation_names_the_attributor(scores, match):
    with pytest.raises(AttributorError, match="'mine'") as err:
        validate_scores(scores, 2, 3, "mine")
    assert err.match(match)


def test_validation_returns_float32_cpu():
    out = validate_scores(torch.ones(2, 3, dtype=torch.float64, requires_grad=True), 2, 3, "x")
    assert out.dtype == torch.float32 and not out.requires_grad


def test_random_is_seeded_and_centered(small_logreg):
    model = small_logreg.build_model(0)
    a = get("random", seed=1).fit(small_logreg, model, small_logreg.train_data).attribute(small_logreg.test_data)
    b = get("random", seed=1).fit(small_logreg, model, small_logreg.train_data).attribute(small_logreg.test_data)
    assert torch.equal(a, b) and abs(a.mean().item()) < 0.1


def _mean(result):
    """The scores of an attributor's result (an Attribution's mean)."""
    return result.mean if isinstance(result, Attribution) else result


def _contract_attributor(name: str) -> Attributor:
    """A registered attributor for the common tests; adapters whose library is missing are skipped."""
    from tdaeval.attributors.adapters import AdapterAttributor

    cls = type(get(name)) if ":" not in name else None
    if cls is not None and issubclass(cls, AdapterAttributor) and not cls.available():
        pytest.skip(f"{name}: optional library {cls.library!r} not installed (extra {cls.extra!r})")
    return get(name, **cls.contract_params)


# The 3-epoch MLP is far from a minimum: CG meets negative curvature and says so.
@pytest.mark.filterwarnings("ignore:Influence\\(solver='cg'\\)")
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in {"influence", "dattri.influence"} else n for n in names()]
)
def test_every_registered_attributor_meets_the_contract(small_digits, name):
    """Common test over the registry: shape, dtype, finiteness, determinism."""
    from tdaeval.training import train_model

    attributor = _contract_attributor(name)
    if refuses(attributor, small_digits):  # defined on other tasks only (bm25: token sequences); checked on those
        return
    run = train_model(small_digits, small_digits.build_model(0), torch.arange(small_digits.n_train), 0, n_checkpoints=2)
    attributor.fit(small_digits, run.model, small_digits.train_data, checkpoints=run.checkpoints)
    first = _mean(attributor.attribute(small_digits.test_data))
    assert first.shape == (small_digits.n_test, small_digits.n_train), name
    assert first.dtype == torch.float32 and torch.isfinite(first).all(), name
    assert torch.equal(first, _mean(attributor.attribute(small_digits.test_data))), name
    again = _contract_attributor(name).fit(small_digits, run.model, small_digits.train_data, checkpoints=run.checkpoints)
    assert torch.equal(first, _mean(again.attribute(small_digits.test_data))), f"{name}: a fresh instance gives other scores"
    assert isinstance(attributor, Attributor) and repr(attributor).startswith(type(attributor).__name__)


@pytest.mark.parametrize("name", [n for n in names() if n != "random"])  # random: chance level by design
def test_every_registered_attributor_says_a_training_point_supports_its_own_copy(small_logreg, small_digits, name):
    """Orientation on a case with a known answer: a duplicated training point supports its copy."""
    from tdaeval.training import train_model

    attributor = _contract_attributor(name)
    # Attributors that need dropout layers (the dropout ensemble) get the digits MLP, which has them.
    task = small_digits if getattr(attributor, "needs_dropout_layers", False) else small_logreg
    if refuses(attributor, task):
        return
    run = train_model(task, task.build_model(0), torch.arange(task.n_train), 0, n_checkpoints=2)
    copies = torch.arange(0, 40, 4)
    test = task.train_data.subset(copies)
    scores = _mean(attributor.fit(task, run.model, task.train_data, checkpoints=run.checkpoints).attribute(test))
    own = scores[torch.arange(len(copies)), copies]
    assert (own > 0).float().mean() >= 0.9, name
    assert (own >= scores.median(dim=1).values).all(), name


def test_mismatched_test_data_is_a_clear_error(small_logreg):
    from tdaeval.datasets import Data

    model = small_logreg.build_model(0)
    attributor = get("grad_dot").fit(small_logreg, model, small_logreg.train_data)
    with pytest.raises(AttributorError, match="'grad_dot' was fitted on inputs of shape \\[n, 64\\]"):
        attributor.attribute(Data(torch.zeros(3, 10), torch.zeros(3, dtype=torch.long)))


def test_cost_is_declared_empty_and_every_fit_starts_a_fresh_one(small_logreg):
    model = small_logreg.build_model(0)
    attributor = get("random")
    attributor.fit(small_logreg, model, small_logreg.train_data)
    assert attributor.cost_ == {}
    attributor.cost_["serving_seconds"] = 1.0
    assert get("random").fit(small_logreg, model, small_logreg.train_data).cost_ == {}  # not shared between instances
    attributor.fit(small_logreg, model, small_logreg.train_data)
    assert attributor.cost_ == {}  # a new fit, a new record


def _checkpoint_checker(small_logreg) -> Attributor:
    return get("random").fit(small_logreg, small_logreg.build_model(0), small_logreg.train_data)


def test_checkpoint_params_accepts_some_or_all_of_the_models_parameters(small_logreg):
    from tdaeval.training import Checkpoint

    attributor = _checkpoint_checker(small_logreg)
    params = {name: p.detach().clone() for name, p in attributor.model_.named_parameters()}
    some = dict(list(params.items())[:1])
    assert attributor._checkpoint_params(0, Checkpoint(1, 0.1, some)) is some
    assert attributor._checkpoint_params(0, Checkpoint(1, 0.1, params), exact=True) is params
    assert attributor._checkpoint_params(0, params, bare_dict=True) is params
    with pytest.raises(AttributorError, match="'random': checkpoint 0 lacks the model's parameters"):
        attributor._checkpoint_params(0, Checkpoint(1, 0.1, some), exact=True)


@pytest.mark.parametrize(
    "checkpoint,match",
    [
        ({"weight": 1}, "checkpoint 2 must be a tdaeval.training.Checkpoint \\(with a 'params' dict\\). Got dict"),
        (42, "checkpoint 2 must be a tdaeval.training.Checkpoint \\(with a 'params' dict\\). Got int"),
    ],
)
def test_checkpoint_params_names_the_attributor_and_the_checkpoint(small_logreg, checkpoint, match):
    with pytest.raises(AttributorError, match=f"'random': {match}"):
        _checkpoint_checker(small_logreg)._checkpoint_params(2, checkpoint)


def test_checkpoint_params_refuses_parameters_the_model_does_not_have(small_logreg):
    from tdaeval.training import Checkpoint

    with pytest.raises(AttributorError, match="'random': checkpoint 1 holds parameters the model does not have: \\['nope'\\]"):
        _checkpoint_checker(small_logreg)._checkpoint_params(1, Checkpoint(1, 0.1, {"nope": torch.zeros(1)}))
    with pytest.raises(AttributorError, match="must be a tdaeval.training.Checkpoint or a dict of parameters"):
        _checkpoint_checker(small_logreg)._checkpoint_params(1, 42, bare_dict=True)
