"""``evaluate``: train the reference model, build ground truth, run attributors, compute metrics."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import tempfile
import time
import traceback as _traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tdaeval._integrity import check_unchanged, state_digests
from tdaeval.attributors.base import Attributor, resolve
from tdaeval.attributors.base import get as get_attributor
from tdaeval.attributors.base import names as attributor_names
from tdaeval.errors import ConfigError, TdaevalError, collect_warnings
from tdaeval.groundtruth.executors import Executor, get_executor
from tdaeval.groundtruth.jobs import GROUNDTRUTH_VERSION
from tdaeval.groundtruth.sharding import IncompleteGroundTruth, Shard, build_mode
from tdaeval.groundtruth.store import ArtifactStore, job_key
from tdaeval.metrics.base import Metric, get_metric
from tdaeval.params import check_int_at_least
from tdaeval.scores import write_scores
from tdaeval.suites.build import BuiltSuite, build_suite
from tdaeval.suites.cost import PeakMemory
from tdaeval.suites.progress import Reporter, check_progress, make_reporter
from tdaeval.suites.ranking import ranking_settings
from tdaeval.suites.result import Entry, SuiteResult
from tdaeval.suites.schema import SuiteConfig
from tdaeval.task import Task
from tdaeval.training import Checkpoint, set_training_seed, train_model
from tdaeval.version import __version__

__all__ = ["evaluate", "run_suite", "build_groundtruth", "builtin_attributors", "train_reference"]

#: Attributors the quick start evaluates (every built-in estimator, defaults).
BUILTIN_ATTRIBUTORS = ("random", "grad_dot", "grad_cos", "tracin", "influence", "trak", "representer", "similarity")

Progress = Callable[[str, int, int], None]


def builtin_attributors() -> dict[str, Attributor]:
    """Fresh instances of the built-in attributors, by name."""
    return {name: get_attributor(name) for name in BUILTIN_ATTRIBUTORS if name in attributor_names()}


def train_reference(
    task: Task, seed: int = 0, n_checkpoints: int = 5, device: str = "cpu", store: ArtifactStore | None = None
) -> tuple[torch.nn.Module, list[Checkpoint]]:
    """The model to explain: trained on all training data with ``seed``, plus its checkpoints.

    Tasks that override ``train`` give no intermediate checkpoints; the final
    model is then the only checkpoint (with the recipe's learning rate).
    With a ``store``, the trained weights and checkpoints are kept under a key
    of the task's fingerprint, the seed and ``n_checkpoints``, and loaded
    instead of retrained next time (a controlled setting's transformed task
    has its own fingerprint, so its model is cached separately). A restored
    model and its checkpoints equal a fresh run's, checkpoint parameters in
    the model's ``named_parameters`` order; the model carries ``seed`` as its
    training seed (:func:`tdaeval.training.training_seed`) either way.
    """
    spec = {"kind": "reference_model", "version": GROUNDTRUTH_VERSION, "task": task.fingerprint(), "seed": int(seed),
            "n_checkpoints": int(n_checkpoints)}
    key = job_key(spec)
    attach_store = getattr(task, "attach_store", None)
    if store is not None and callable(attach_store):
        attach_store(store)  # a fine-tuning task (tdaeval.tasks.finetune) caches its base model in the same store
    if store is not None:
        stored = store.load(key, spec)
        if stored is not None:
            restored = _restore_reference(task, seed, stored, device)
            if restored is not None:
                return restored
    model = task.build_model(seed).to(device)
    all_indices = torch.arange(task.n_train)
    if task.trains_with_recipe:
        run = train_model(task, model, all_indices, seed, n_checkpoints=n_checkpoints, device=device)
        model, checkpoints = run.model, run.checkpoints
    else:
        model = set_training_seed(task.train(model, all_indices, seed), seed)
        params = {k: v.detach().clone() for k, v in model.named_parameters()}
        checkpoints = [Checkpoint(epoch=task.recipe.epochs, lr=task.recipe.lr, params=params)]
    if store is not None:
        tensors = {f"final/{k}": v for k, v in model.state_dict().items()}
        for c, checkpoint in enumerate(checkpoints):
            tensors[f"checkpoint{c}/epoch"] = torch.tensor(checkpoint.epoch)
            tensors[f"checkpoint{c}/lr"] = torch.tensor(checkpoint.lr, dtype=torch.float64)
            tensors.update({f"checkpoint{c}/params/{k}": v for k, v in checkpoint.params.items()})
        store.save(key, spec, tensors)
    return model, checkpoints


def _restore_reference(task: Task, seed: int, stored: dict[str, Tensor], device: str) -> tuple[torch.nn.Module, list[Checkpoint]] | None:
    model = task.build_model(seed).to(device)
    state = {k.removeprefix("final/"): v for k, v in stored.items() if k.startswith("final/")}
    try:
        model.load_state_dict(state)
    except RuntimeError:
        return None  # the model factory changed shape without changing the fingerprint: retrain
    model.eval()
    set_training_seed(model, seed)
    # The store hands tensors back in its own (sorted) key order: rebuild each checkpoint's
    # parameters by name, in the model's named_parameters order, as a fresh run records them.
    names = [name for name, _ in model.named_parameters()]
    checkpoints = []
    c = 0
    while f"checkpoint{c}/epoch" in stored:
        prefix = f"checkpoint{c}/params/"
        saved = {k.removeprefix(prefix) for k in stored if k.startswith(prefix)}
        if saved != set(names):
            return None  # checkpoints of another architecture under this key: retrain
        params = {name: stored[prefix + name].to(device) for name in names}
        checkpoints.append(Checkpoint(int(stored[f"checkpoint{c}/epoch"]), float(stored[f"checkpoint{c}/lr"]), params))
        c += 1
    return model, checkpoints


def _resolve_attributors(attributors: Any) -> dict[str, Attributor]:
    if attributors is None:
        return builtin_attributors()
    if isinstance(attributors, (str, Attributor)) or callable(attributors) and not isinstance(attributors, Mapping):
        attributors = [attributors]
    if isinstance(attributors, Mapping):
        resolved = {str(name): resolve(spec, name=str(name)) for name, spec in attributors.items()}
    elif isinstance(attributors, Sequence):
        resolved = {}
        for spec in attributors:
            attributor = resolve(spec)
            if attributor.display_name in resolved:
                raise ConfigError(f"Two attributors are named {attributor.display_name!r}; pass a dict to name them.")
            resolved[attributor.display_name] = attributor
    else:
        raise ConfigError(f"The 'attributors' parameter of evaluate must be a dict, a list or None. Got {type(attributors).__name__}.")
    if not resolved:
        raise ConfigError("The 'attributors' parameter of evaluate is empty; give at least one attributor.")
    return resolved


def _resolve_metrics(metrics: Any) -> list[Metric]:
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    if isinstance(metrics, Mapping):
        return [get_metric(name, **(params or {})) for name, params in metrics.items()]
    resolved = []
    for spec in metrics:
        if isinstance(spec, Metric):
            resolved.append(spec)
        elif isinstance(spec, str):
            resolved.append(get_metric(spec))
        else:
            raise ConfigError(f"Metrics must be names or Metric instances. Got {type(spec).__name__}.")
    if not resolved:
        raise ConfigError("The 'metrics' parameter of evaluate is empty; give at least one metric.")
    return resolved


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]


def _git_hash() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def evaluate(
    task: Task,
    attributors: Mapping[str, Attributor | Callable | str] | Sequence[Attributor | Callable | str] | None = None,
    metrics: Sequence[str | Metric] | Mapping[str, dict] = ("lds",),
    *,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    n_checkpoints: int = 5,
    device: str = "cpu",
    executor: Any = None,
    on_error: str = "raise",
    progress: bool | str | Progress | None = "auto",
    score_chunk: int | None = None,
    scores_dir: str | Path | None = None,
    ranking: Mapping[str, Any] | None = None,
) -> SuiteResult:
    """Evaluate attributors on a task against gold-standard metrics.

    Parameters
    ----------
    task : Task
        What is explained, e.g. ``tdaeval.tasks.DigitsTask()``.
    attributors : dict, list or None
        ``{name: Attributor | function | "registered_name" | "module:Name"}``,
        a list of those, or None for every built-in estimator (``BUILTIN_ATTRIBUTORS``).
        A function is called as ``fn(model, train, test) -> Tensor[n_test, n_train]``.
    metrics : list or dict
        Metric names or instances (``["lds"]``), or ``{name: params}``.
    cache_dir : str or Path, optional
        Ground-truth store (default: the user cache directory).
    seed : int
        Seed of the reference model.
    n_checkpoints : int
        Checkpoints of the reference run kept for TracIn.
    device : str
        Where to train and attribute.
    executor : str or executor, optional
        Runs the retraining jobs (default ``"local"``).
    on_error : {"raise", "record"}
        On an attributor failure, raise, or record "could not run: reason" (with
        its traceback in the entry's ``traceback``) and go on.
    progress : {"auto", True, False} or callable
        ``"auto"``: numbered lines with timings (``[3/10] lds: building ground
        truth``) as INFO records of the ``"tdaeval"`` logger, shown where logging
        shows them (the command line does); ``True``: the same, shown on standard
        error even without a logging set-up; ``False`` or None: none; a callable:
        called as ``progress(stage, done, total)`` instead (:mod:`tdaeval.suites.progress`).
    score_chunk : int, optional
        Stream scores in chunks of this many training points into memory-mapped
        ``.npy`` files (:mod:`tdaeval.scores`) instead of holding each score
        matrix in memory; streaming attributors (``grad_dot``, ``grad_cos``, ``tracin``)
        and LDS then stay within ``O((n_test + M) · score_chunk)`` memory.
    scores_dir : str or Path, optional
        Where those files go (kept); default a temporary folder removed at the end.
    ranking : dict, optional
        Settings of the ranking test (:func:`tdaeval.suites.ranking.ranking_settings`): any of
        ``alpha`` (0.05), ``n_resamples`` (2000), ``correction`` (``"holm"``) and ``seed`` (0).
        The rankings, aggregate ranks and Pareto set are computed once, at the end, and stored
        in the result (:attr:`SuiteResult.rankings`); given settings are also kept in
        ``provenance["ranking"]``.

    Returns
    -------
    SuiteResult
    """
    if not isinstance(task, Task):
        raise ConfigError(f"The 'task' parameter of evaluate must be a tdaeval Task. Got {type(task).__name__}.")
    if on_error not in ("raise", "record"):
        raise ConfigError(f"The 'on_error' parameter of evaluate must be 'raise' or 'record'. Got {on_error!r} instead.")
    check_progress(progress, "evaluate")
    ranking_setup = ranking_settings(ranking, "evaluate")  # checked before the run, used after it
    resolved = _resolve_attributors(attributors)
    metric_objs = _resolve_metrics(metrics)
    store = ArtifactStore(cache_dir)

    if score_chunk is not None:
        check_int_at_least("score_chunk", "evaluate", score_chunk, 1)
        score_root = Path(scores_dir) if scores_dir is not None else Path(tempfile.mkdtemp(prefix="tdaeval-scores-"))
    runner = get_executor(executor, device=device)  # one executor (one Ray connection, one pool) for every metric
    steps = make_reporter(progress, 1 + len(metric_objs) + len(resolved), "evaluate")
    report = steps.update
    try:
        steps.begin("reference model", "training (or loading from the store)")
        report("reference model", 0, 1)
        model, checkpoints = train_reference(task, seed=seed, n_checkpoints=n_checkpoints, device=device, store=store)
        report("reference model", 1, 1)
        steps.end("ready")

        truths = [_logged_truth(steps, metric, task, store, model, device, runner) for metric in metric_objs]

        entries: list[Entry] = []
        # Every attributor shares the model, its checkpoints and the data: one that writes into them
        # in place would change every later attributor's numbers, so the run stops naming it.
        shared = {"train data": task.train_data, "test data": task.test_data}
        shared_before = state_digests(model, checkpoints, shared)
        previous: str | None = None
        for i, (name, attributor) in enumerate(resolved.items()):
            if previous is not None:
                check_unchanged(shared_before, state_digests(model, checkpoints, shared), previous)
            previous = name
            report("attributors", i, len(resolved))
            steps.begin(name, "attributing")
            said: list[str] = []  # what the attributor warned about (a solve that did not converge, ...)
            try:
                with PeakMemory(device) as memory, collect_warnings(said):
                    start = time.perf_counter()
                    attributor.fit(task, model, task.train_data, checkpoints=checkpoints)
                    fit_s = time.perf_counter() - start
                    start = time.perf_counter()
                    if score_chunk is None:
                        scores = attributor.attribute(task.test_data)
                    else:
                        chunks = attributor.attribute_chunks(task.test_data, score_chunk)
                        path = score_root / f"{i:03d}-{_file_safe(name)}.npy"
                        scores = write_scores(path, chunks, task.n_test, task.n_train)
                    attribute_s = time.perf_counter() - start
            except Exception as err:  # noqa: BLE001 - a user attributor may fail in any way
                if on_error == "raise":
                    _reraise(err, f"Attributor {name!r} failed")
                entries.extend(Entry(name, m.name, None, error=_failure(err), traceback=_format_traceback(err), warnings=list(said))
                               for m in metric_objs)
                steps.end(f"could not run: {_failure(err)}")
                continue
            cost = {"fit_s": fit_s, "attribute_s": attribute_s, "peak_memory_bytes": float(memory.peak_bytes)}
            # Ensembles and the seed posterior split their cost further (training, serving, storage).
            cost.update({k: float(v) for k, v in attributor.cost_.items() if isinstance(v, (int, float))})
            for metric, truth in zip(metric_objs, truths):
                # Metrics of the training data itself (mislabel detection) ask the attributor for self-influence.
                said_here = list(said)  # self-influence solves again
                try:
                    with collect_warnings(said_here):
                        result = metric.compute(scores, truth, attributor=attributor)  # read when metric.needs_attributor
                except Exception as err:  # noqa: BLE001 - e.g. a metric that cannot apply to this attributor, or a user metric's bug
                    if on_error == "raise":
                        _reraise(err, f"Metric {metric.name!r} failed on attributor {name!r}")
                    entries.append(Entry(name, metric.name, None, cost, attributor.get_params(), error=_failure(err),
                                         traceback=_format_traceback(err), warnings=said_here))
                    continue
                entries.append(Entry(name, metric.name, result, cost, attributor.get_params(), warnings=said_here))
            steps.end("done", f"fit {fit_s:.2f} s, attribute {attribute_s:.2f} s")
        if previous is not None:
            check_unchanged(shared_before, state_digests(model, checkpoints, shared), previous)
        report("attributors", len(resolved), len(resolved))
    finally:
        steps.close()
        if not isinstance(executor, Executor):
            runner.shutdown()
        if score_chunk is not None and scores_dir is None:
            shutil.rmtree(score_root, ignore_errors=True)

    provenance = {
        "tdaeval": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git": _git_hash(),
        "seed": seed,
        "device": device,
        "n_checkpoints": n_checkpoints,
        "cache_dir": str(store.root),
        "metrics": {m.name: m.get_params() for m in metric_objs},
        "executor": runner.describe(),
        "score_chunk": score_chunk,
    }
    if ranking is not None:
        provenance["ranking"] = {k: ranking_setup[k] for k in ranking}
    metric_names = list(dict.fromkeys(m.name for m in metric_objs))
    entries.sort(key=lambda e: metric_names.index(e.metric))  # metric by metric, as results.json lists them
    result = SuiteResult(entries=entries, task=task.describe(), provenance=provenance)
    result.rank(**ranking_setup)  # once: every report and results.json read these
    return result


def _failure(err: Exception) -> str:
    """The "could not run" reason: tdaeval's own message, or the type and message of any other error."""
    return str(err) if isinstance(err, TdaevalError) else f"{type(err).__name__}: {err}"


def _reraise(err: Exception, context: str) -> None:
    """Raise ``err`` itself when it is tdaeval's own, else a TdaevalError ``"<context>: <Type>: <message>"`` from it."""
    if isinstance(err, TdaevalError):
        raise err
    raise TdaevalError(f"{context}: {_failure(err)}") from err


def _format_traceback(err: BaseException) -> str:
    """The full traceback of ``err`` (with the exceptions it was raised from), as printed by Python."""
    return "".join(_traceback.format_exception(type(err), err, err.__traceback__))


def _logged_truth(steps: Reporter, metric: Metric, task: Task, store: ArtifactStore, model: Any, device: str, executor: Executor) -> Any:
    """:func:`_build_truth` as one numbered progress step."""
    steps.begin(metric.name, "building ground truth")
    truth = _build_truth(metric, task, store, model, device, executor, steps.update)
    steps.end("ground truth ready")
    return truth


def _build_truth(metric: Metric, task: Task, store: ArtifactStore, model: Any, device: str, executor: Executor, report: Progress) -> Any:
    """``metric.build_truth`` with everything the contract offers (the explained model is None unless some metric ``needs_model``)."""
    stage = f"ground truth ({metric.name})"
    progress = lambda done, total: report(stage, done, total)  # noqa: E731
    return metric.build_truth(task, store, model=model, device=device, executor=executor, progress=progress)


def _load_suite(suite: Any, owner: str) -> BuiltSuite:
    """A BuiltSuite as it is, or one built (once) from a SuiteConfig, a suite file or a built-in suite name."""
    if isinstance(suite, BuiltSuite):
        return suite
    if isinstance(suite, (SuiteConfig, str, Path)):
        return build_suite(suite)
    raise ConfigError(f"The 'suite' parameter of {owner} must be a BuiltSuite, a SuiteConfig or a path. Got {type(suite).__name__}.")


def run_suite(
    suite: Any,
    *,
    cache_dir: str | Path | None = None,
    executor: Any = None,
    progress: bool | str | Progress | None = "auto",
) -> SuiteResult:
    """Run a suite: every attributor × metric on its task, failures recorded, not raised.

    Parameters
    ----------
    suite : BuiltSuite, SuiteConfig, str or Path
        A built suite (:func:`~tdaeval.suites.build.build_suite`), used as it is
        (its attributors are fitted in place); or a config, a suite file
        (``.yaml``/``.toml``) or a built-in suite name, built once here.
    cache_dir : str or Path, optional
        Overrides the suite's ``store``.
    executor : str, dict or Executor, optional
        Overrides the suite's ``executor``.
    progress : {"auto", True, False} or callable
        As for :func:`evaluate`: numbered progress lines on the ``"tdaeval"``
        logger, or a callback ``progress(stage, done, total)``.

    Returns
    -------
    SuiteResult
        With the suite (every key, defaults filled in) in ``provenance["suite"]``.
    """
    check_progress(progress, "run_suite")
    built = _load_suite(suite, "run_suite")
    config = built.config
    result = evaluate(
        built.task,
        attributors=built.attributors,
        metrics=built.metrics,
        cache_dir=cache_dir if cache_dir is not None else built.store,
        seed=config.seed,
        n_checkpoints=config.n_checkpoints,
        device=built.device,
        executor=built.executor if executor is None else executor,
        on_error="record",
        ranking=config.ranking.model_dump(mode="json"),
        progress=progress,
        score_chunk=config.score_chunk,
        scores_dir=built.scores_dir,
    )
    result.provenance["suite"] = config.model_dump(mode="json")
    result.provenance["suite_file"] = built.suite_file
    return result


def build_groundtruth(
    suite: Any,
    *,
    shard: Shard | str | None = None,
    plan_only: bool = False,
    cache_dir: str | Path | None = None,
    executor: Any = None,
    progress: bool | str | Progress | None = "auto",
) -> list[dict[str, Any]]:
    """Build (or only count) the ground truth of a suite's metrics, optionally one shard of it.

    Parameters
    ----------
    suite : BuiltSuite, SuiteConfig, str or Path
        A built suite, used as it is, or a config, a suite file or a built-in
        suite name, built once here.
    shard : Shard or str, optional
        ``Shard(i, N)`` or ``"i/N"``: train only the jobs of shard ``i`` into the shared store.
    plan_only : bool
        Train nothing; count stored and missing jobs (``tdaeval groundtruth status``).
    cache_dir : str or Path, optional
        Overrides the suite's ``store``.
    executor : str, dict or Executor, optional
        Overrides the suite's ``executor``.
    progress : {"auto", True, False} or callable
        As for :func:`evaluate`: one numbered step per metric (after the
        reference model, when a metric needs it), or a callback
        ``progress(stage, done, total)``.

    Returns
    -------
    list of dict
        One row per metric: ``metric``, ``jobs``, ``stored``, ``trained``,
        ``missing``, ``state`` (``complete``, ``incomplete`` or ``no retraining``)
        and ``note``.
    """
    built = _load_suite(suite, "build_groundtruth")
    config, task, metrics = built.config, built.task, built.metrics
    check_progress(progress, "build_groundtruth")
    if isinstance(shard, str):
        shard = Shard.parse(shard)
    store = ArtifactStore(cache_dir if cache_dir is not None else built.store)
    needs_model = any(m.needs_model for m in metrics)
    steps = make_reporter(progress, int(needs_model) + len(metrics), "build_groundtruth")
    model = None
    runner = None
    rows = []
    try:
        if needs_model:  # further training starts from the explained model
            steps.begin("reference model", "training (or loading from the store)")
            model, _ = train_reference(task, seed=config.seed, n_checkpoints=config.n_checkpoints, device=config.device, store=store)
            steps.end("ready")
        runner = get_executor(config.executor if executor is None else executor, device=config.device)
        for metric in metrics:
            steps.begin(metric.name, "counting stored ground truth" if plan_only else "building ground truth")
            with build_mode(shard=shard, plan_only=plan_only) as mode:
                try:
                    _build_truth(metric, task, store, model, config.device, runner, steps.update)
                except IncompleteGroundTruth:
                    pass
            total = {k: sum(c[k] for c in mode.counts) for k in ("jobs", "stored", "trained", "missing")}
            state = "no retraining" if not mode.counts else ("complete" if total["missing"] == 0 else "incomplete")
            note = "score-dependent removals are trained when attributors run" if metric.name in ("topk_removal", "flip_test", "brittleness") else ""
            rows.append({"metric": metric.name, **total, "state": state, "note": note})
            steps.end(f"{state}, {total['jobs']} jobs: {total['stored']} stored, {total['trained']} trained, {total['missing']} missing")
    finally:
        steps.close()
        if runner is not None and not isinstance(executor, Executor):
            runner.shutdown()
    return rows
