"""Executors run retraining jobs in batches: ``local`` (in-process), ``process:N`` (spawned workers), ``ray``.

Every executor trains the same batches the same way (:func:`plan_batches`,
:func:`train_batch`), so a job gives the same result wherever it runs. The
driver (the process that calls :meth:`Executor.map`, through
:func:`~tdaeval.groundtruth.jobs.run_jobs`) writes results to the store as
batches finish: a crashed worker loses at most the batches it held.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from tdaeval.errors import ConfigError, TdaevalError
from tdaeval.groundtruth._procs import exit_with_parent
from tdaeval.params import check_int_at_least
from tdaeval.registry import Registry
from tdaeval.task import Task
from tdaeval.training import train_models

if TYPE_CHECKING:  # jobs.py runs jobs on executors; executors only read a job's indices and seed
    from tdaeval.groundtruth.jobs import TrainJob

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "ProcessExecutor", "RayExecutor", "get_executor", "plan_batches", "train_batch"]


def plan_batches(jobs: Sequence[TrainJob], max_models: int) -> list[list[TrainJob]]:
    """Split ``jobs`` into batches trained together: same subset size, at most ``max_models``, in order."""
    by_size: dict[int, list[TrainJob]] = defaultdict(list)
    for job in jobs:
        by_size[int(job.indices.numel())].append(job)
    return [group[i : i + max_models] for group in by_size.values() for i in range(0, len(group), max_models)]


def train_batch(task: Task, indices: Sequence[Tensor], seeds: Sequence[int], device: str = "cpu", num_threads: int | None = None) -> Tensor:
    """Train one model per ``(indices, seed)`` and measure the test split: ``[B, n_test]`` float32 on CPU.

    Module-level so that worker processes (``process``, ``ray``) can run it.
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    stacked = train_models(task, list(indices), list(seeds), device=device)
    return stacked.measure(task).to("cpu", torch.float32)


class Executor(ABC):
    """Runs training jobs in batches and hands results back to the driver.

    Parameters
    ----------
    max_models : int
        Models trained together in one ``vmap`` batch (bounds memory per batch).
    device : str
        Where to train.
    """

    name: ClassVar[str] = "executor"

    def __init__(self, max_models: int = 32, device: str = "cpu") -> None:
        self.max_models = check_int_at_least("max_models", type(self).__name__, max_models, 1)
        self.device = device

    @abstractmethod
    def submit(self, task: Task, batch: Sequence[TrainJob]) -> Future:
        """Start training ``batch``; the future's result is ``[len(batch), n_test]``."""

    def map(self, task: Task, batches: Sequence[Sequence[TrainJob]]) -> Iterator[tuple[list[TrainJob], Tensor]]:
        """``(batch, measurements)`` for every batch, in completion order."""
        pending = {self.submit(task, batch): list(batch) for batch in batches}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                batch = pending.pop(future)
                yield batch, self._result(future, batch)

    def _result(self, future: Future, batch: list[TrainJob]) -> Tensor:
        try:
            return future.result()
        except TdaevalError:
            raise
        except Exception as err:  # noqa: BLE001 - worker failures surface here
            raise TdaevalError(
                f"{self.name} executor: a batch of {len(batch)} jobs failed ({type(err).__name__}: {err}). "
                "Finished batches are stored; run again to resume."
            ) from err

    def shutdown(self) -> None:
        """Release workers (nothing to do for ``local``)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def describe(self) -> dict[str, Any]:
        """Settings for provenance."""
        return {"name": self.name, "max_models": self.max_models, "device": self.device}


class LocalExecutor(Executor):
    """Runs batches in this process, one after another, ``max_models`` models at a time with ``torch.func``."""

    name = "local"

    def submit(self, task: Task, batch: Sequence[TrainJob]) -> Future:
        future: Future = Future()
        try:
            future.set_result(train_batch(task, [j.indices for j in batch], [j.seed for j in batch], self.device))
        except Exception as err:  # noqa: BLE001 - delivered through the future like the other executors
            future.set_exception(err)
        return future

    def map(self, task: Task, batches: Sequence[Sequence[TrainJob]]) -> Iterator[tuple[list[TrainJob], Tensor]]:
        for batch in batches:  # lazily: each batch is stored before the next one trains
            batch = list(batch)
            future = self.submit(task, batch)
            if future.exception() is not None:
                raise future.exception()
            yield batch, future.result()


class ProcessExecutor(Executor):
    """A pool of ``workers`` spawned processes; each trains whole batches.

    Parameters
    ----------
    workers : int
        Worker processes.
    threads_per_worker : int, optional
        torch threads in each worker (default: CPU count // workers, at least 1).
    max_models, device
        As :class:`Executor`.

    Notes
    -----
    The task is sent to the workers, so it must be picklable (built-in tasks
    are; a user's task must be importable). When a worker dies, the pool is
    restarted once and the unfinished batches are submitted again. When the
    driver dies (even by ``kill -9``), every worker exits within a second.
    """

    name = "process"

    def __init__(self, workers: int = 2, max_models: int = 32, device: str = "cpu", threads_per_worker: int | None = None) -> None:
        super().__init__(max_models, device)
        self.workers = check_int_at_least("workers", "ProcessExecutor", workers, 1)
        self.threads_per_worker = threads_per_worker if threads_per_worker is not None else max(1, (os.cpu_count() or 1) // self.workers)
        check_int_at_least("threads_per_worker", "ProcessExecutor", self.threads_per_worker, 1)
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent,  # a driver killed with kill -9 leaves no worker behind
                initargs=(os.getpid(),),
            )
        return self._pool

    def submit(self, task: Task, batch: Sequence[TrainJob]) -> Future:
        return self._ensure_pool().submit(
            train_batch, task, [j.indices for j in batch], [j.seed for j in batch], self.device, self.threads_per_worker
        )

    def map(self, task: Task, batches: Sequence[Sequence[TrainJob]]) -> Iterator[tuple[list[TrainJob], Tensor]]:
        remaining = dict(enumerate(list(b) for b in batches))
        for attempt in (0, 1):
            pending = {self.submit(task, batch): i for i, batch in remaining.items()}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        i = pending.pop(future)
                        if isinstance(future.exception(), BrokenProcessPool):
                            raise BrokenProcessPool("a worker process died")
                        result = self._result(future, remaining[i])
                        yield remaining.pop(i), result
                return
            except BrokenProcessPool:
                self.shutdown()
                if attempt == 1:
                    raise TdaevalError(
                        f"process executor: worker processes died twice; {len(remaining)} batches did not finish. "
                        "Finished batches are stored; run again to resume."
                    ) from None

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "workers": self.workers, "threads_per_worker": self.threads_per_worker}


class RayExecutor(Executor):
    """Runs batches as Ray tasks, on a running cluster (``address``) or a local Ray instance it starts.

    Parameters
    ----------
    address : str, optional
        ``"auto"``, ``"ray://host:10001"``… ; None starts a local instance
        (``num_cpus`` CPUs) unless Ray is already initialised in this process.
    num_cpus_per_job, num_gpus_per_job : float
        Resources of one batch (fractional GPUs share a device).
    num_cpus : int, optional
        CPUs of a local instance started here.
    threads_per_job : int, optional
        torch threads in each task (default: ``max(1, int(num_cpus_per_job))``).
    max_models, device
        As :class:`Executor`; with ``num_gpus_per_job > 0`` the device defaults to ``"cuda"``.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus_per_job: float = 1.0,
        num_gpus_per_job: float = 0.0,
        num_cpus: int | None = None,
        threads_per_job: int | None = None,
        max_models: int = 32,
        device: str | None = None,
    ) -> None:
        super().__init__(max_models, device or ("cuda" if num_gpus_per_job > 0 else "cpu"))
        for name, value in (("num_cpus_per_job", num_cpus_per_job), ("num_gpus_per_job", num_gpus_per_job)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"The {name!r} parameter of RayExecutor must be a number >= 0. Got {value!r} instead.")
        self.address = address
        self.num_cpus_per_job = float(num_cpus_per_job)
        self.num_gpus_per_job = float(num_gpus_per_job)
        self.num_cpus = num_cpus
        self.threads_per_job = threads_per_job or max(1, int(num_cpus_per_job))
        self._started = False
        self._remote = None
        self._task_ref: tuple[Task, Any] | None = None  # the task last put in Ray's object store, and its reference

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError as err:
            raise ConfigError("The 'ray' executor needs Ray: install tdaeval[ray] (pip install 'tdaeval[ray]').") from err
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is not None:
                kwargs["address"] = self.address
            elif self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            try:
                ray.init(**kwargs)
            except Exception as err:  # noqa: BLE001 - connection failures of every kind
                raise TdaevalError(f"ray executor: cannot start or reach Ray at {self.address or 'a local instance'}: {err}") from err
            self._started = True
        if self._remote is None:
            self._remote = ray.remote(train_batch)
        return ray

    def submit(self, task: Task, batch: Sequence[TrainJob]) -> Future:
        ray = self._ray()
        if self._task_ref is None or self._task_ref[0] is not task:
            self._task_ref = (task, ray.put(task))
        ref = self._remote.options(num_cpus=self.num_cpus_per_job, num_gpus=self.num_gpus_per_job).remote(
            self._task_ref[1], [j.indices for j in batch], [j.seed for j in batch], self.device, self.threads_per_job
        )
        return ref.future()

    def shutdown(self) -> None:
        self._task_ref = None
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            self._remote = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "address": self.address, "num_cpus_per_job": self.num_cpus_per_job,
                "num_gpus_per_job": self.num_gpus_per_job}


#: The executors by name; :func:`get_executor` builds them (``"module:Name"`` paths to ``Executor`` subclasses work too).
EXECUTORS: Registry[Executor] = Registry("executor", Executor)
EXECUTORS.register(LocalExecutor)
EXECUTORS.register(ProcessExecutor)
EXECUTORS.register(RayExecutor)


def get_executor(spec: str | Mapping[str, Any] | Executor | None, device: str = "cpu") -> Executor:
    """An executor from a name, a mapping or an instance.

    Parameters
    ----------
    spec : str, dict, Executor or None
        ``None`` or ``"local"``; ``"process:N"`` (N workers); ``"ray"`` (local
        instance or the one already initialised) or ``"ray:ADDRESS"``; a
        ``"module:Name"`` path to an ``Executor`` subclass (built with its
        defaults); or a mapping ``{"name": "process", "workers": 4, "max_models": 16, …}``
        with the constructor's parameters (``name`` may be a ``"module:Name"`` path).
    device : str
        Default device when the spec does not set one.
    """
    if spec is None:
        return LocalExecutor(device=device)
    if isinstance(spec, Executor):
        return spec
    if isinstance(spec, str):
        name, _, arg = spec.partition(":")
        if name == "local" and not arg:
            return LocalExecutor(device=device)
        if name == "process":
            if not arg.isdigit() or int(arg) < 1:
                raise ConfigError(f"Executor {spec!r}: expected 'process:N' with N >= 1 workers, e.g. 'process:2'.")
            return ProcessExecutor(workers=int(arg), device=device)
        if name == "ray":
            return RayExecutor(address=arg or None, device=None if device == "cpu" else device)
        if arg and name not in EXECUTORS:
            return _build_executor(spec, {}, device)
        raise ConfigError(f"Unknown executor {spec!r}. Expected 'local', 'process:N', 'ray', 'ray:ADDRESS' or 'module:Name'.")
    if isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if name is None:
            raise ConfigError(f"An executor mapping needs a 'name': one of {', '.join(EXECUTORS.names())}, or 'module:Name'.")
        return _build_executor(name, params, device)
    raise ConfigError(f"An executor must be a name, a mapping or an Executor. Got {type(spec).__name__}.")


def _build_executor(name: str, params: dict[str, Any], device: str) -> Executor:
    """``EXECUTORS.create(name, **params)``, with ``device`` filled in for executors that take one (Ray picks its own)."""
    cls = EXECUTORS.get_class(name)
    if not issubclass(cls, RayExecutor) and "device" in inspect.signature(cls).parameters:
        params.setdefault("device", device)
    return EXECUTORS.build(cls, name, params)
