"""Where the tasks run: a Dask ``LocalCluster`` (worker processes, so a crash costs one batch; a ``GPU`` resource
per worker when this machine has CUDA) or an existing scheduler's address (many machines).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Iterator

__all__ = ["LOCAL_THREADS", "LOCAL_WORKERS", "STATION_CLUSTER_ENV", "cluster_info", "dask_address",
           "local_cluster_kwargs", "make_task_runner", "prepare_workers", "station_cluster", "task_annotations",
           "warm_workers"]

LOCAL_WORKERS = 2
LOCAL_THREADS = 1
#: A batch whose worker died is retried once on another worker, then reported (KilledWorker): a crash that
#: repeats on the same data must not take every worker down in turn.
LOCAL_ALLOWED_FAILURES = 1
#: The scheduler of the station's own Dask cluster, where ``gsp serve --dask-address`` was given: ``gsp serve``
#: sets it for the runs it starts, so that a pass started from the UI runs there, as the inbox's passes do.
STATION_CLUSTER_ENV = "GSP_DASK_ADDRESS"

log = logging.getLogger(__name__)


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA is simply no GPU
        return 0


def local_cluster_kwargs(n_workers: int = LOCAL_WORKERS, threads_per_worker: int = LOCAL_THREADS, *,
                         gpus: bool = False) -> dict:
    """LocalCluster arguments: worker *processes* (isolation: a crash costs one batch), no fixed ports, one
    retry of a batch whose worker died; with ``gpus`` a ``GPU`` resource per worker."""
    kw: dict[str, Any] = dict(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                              dashboard_address=":0", silence_logs=logging.WARNING,
                              scheduler_kwargs={"allowed_failures": LOCAL_ALLOWED_FAILURES})
    if gpus:
        kw["resources"] = {"GPU": 1}
    return kw


def local_cluster(**kwargs):
    """A LocalCluster with :func:`local_cluster_kwargs`, a ``GPU`` resource per worker when this machine has
    CUDA: looked at when the cluster starts, never when a flow module is imported."""
    from distributed import LocalCluster

    from .access import leave_sigint_to_the_runner

    leave_sigint_to_the_runner()  # in a served run: Ctrl-C in gsp serve's terminal is gsp serve's to handle
    return LocalCluster(**{**kwargs, **({"resources": {"GPU": 1}} if _local_gpus() else {})})


def station_cluster() -> str | None:
    """The station cluster's scheduler address (:data:`STATION_CLUSTER_ENV`), or None: a LocalCluster per run."""
    return os.environ.get(STATION_CLUSTER_ENV) or None


def make_task_runner(address: str | None = None, n_workers: int = LOCAL_WORKERS,
                     threads_per_worker: int = LOCAL_THREADS):
    """A Dask task runner (:class:`~flows.task_runner.StationTaskRunner`) on ``address`` (an existing scheduler)
    or on a new LocalCluster (started by the run)."""
    from .task_runner import StationTaskRunner

    if address:
        return StationTaskRunner(address=address)
    return StationTaskRunner(cluster_class=local_cluster,
                             cluster_kwargs=local_cluster_kwargs(n_workers, threads_per_worker))


@contextlib.contextmanager
def dask_address(address: str | None = None, n_workers: int = LOCAL_WORKERS,
                 threads_per_worker: int = LOCAL_THREADS) -> Iterator[str]:
    """Yield ``address``, or the address of a LocalCluster that lives as long as the context; either way its
    workers import the task modules first (:func:`prepare_workers`)."""
    if address:
        prepare_workers(address)
        yield address
        return
    cluster = local_cluster(**local_cluster_kwargs(n_workers, threads_per_worker))
    try:
        prepare_workers(cluster.scheduler_address)
        yield cluster.scheduler_address
    finally:
        with _quiet_shutdown():
            cluster.close()


@contextlib.contextmanager
def _quiet_shutdown() -> Iterator[None]:
    """While a finished run's LocalCluster closes: a worker process still flushing (Prefect's log and event
    threads) when the nanny's 4 s run out is killed with a WARNING that means nothing to an operator (every
    batch is done and recorded); it is kept off the console (errors still show)."""
    nanny = logging.getLogger("distributed.nanny")
    level = nanny.level
    nanny.setLevel(logging.ERROR)
    try:
        yield
    finally:
        nanny.setLevel(level)


def prepare_workers(address: str) -> None:
    """Register :class:`tasks.workers.TaskModules` on the cluster at ``address``: every worker, present or
    joining later, imports the task modules on its event-loop thread before it runs a task (two threads
    importing them at once can deadlock Python's import locks and kill the worker). Idempotent: a served
    cluster keeps the one registration."""
    from distributed import Client

    from tasks.workers import TaskModules

    with Client(address, set_as_default=False) as client:
        client.register_plugin(TaskModules())


class _Warming:
    """The warm-up tasks of :func:`warm_workers`; :meth:`wait` before the run submits its first batch."""

    def __init__(self, futures: list) -> None:
        self.futures = futures

    def wait(self, timeout: float = 600.0, *, raise_operator_errors: bool = False) -> None:
        """Wait for every worker's warm-up (a task's unpickling must not import the modules the warm-up is
        importing at the same moment). A failed warm-up is only logged (the batches load the models themselves
        and report any error), except, with ``raise_operator_errors``, a GSPError (a checkpoint that does not
        load): raised, so that the run fails with it before anything is written."""
        from groundstation.errors import GSPError

        if not self.futures:
            return
        futures, self.futures = self.futures, []
        deadline = time.monotonic() + timeout
        for fut in futures:  # (distributed.wait would look for a default client, which this one is not)
            with contextlib.suppress(Exception):
                fut.result(timeout=max(0.0, deadline - time.monotonic()))
        for fut in futures:
            if fut.status == "error":
                exc = fut.exception()
                if raise_operator_errors and isinstance(exc, GSPError):
                    raise exc
                log.warning("warming up a worker failed (%s); its batches load the models themselves", exc)


@contextlib.contextmanager
def warm_workers(address: str, codec: tuple[str, str] | None, enhancer: tuple[str, str] | None) -> Iterator[_Warming]:
    """Load the run's models into every worker of ``address`` in the background (one task pinned to each
    worker: :func:`tasks.workers.warm_up`) while the caller goes on (e.g. waits for Prefect's API); the
    caller calls ``.wait()`` on what this yields before the run's first batch. On the way out the warm-ups
    are always waited for, so a run that failed early never tears a cluster down under a loading worker."""
    from distributed import Client

    from tasks.workers import warm_up

    client = Client(address, set_as_default=False)
    warming = _Warming([])
    try:
        for worker in client.scheduler_info(n_workers=-1).get("workers", {}):
            warming.futures.append(client.submit(warm_up, codec, enhancer, pure=False, workers=[worker],
                                                 allow_other_workers=False))
        yield warming
    finally:
        warming.wait(timeout=120)
        client.close()


def _dask_client():
    """The Dask client of the running flow's DaskTaskRunner, or None (another task runner)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None) if ctx else None
    from prefect_dask import DaskTaskRunner

    return runner.client if isinstance(runner, DaskTaskRunner) else None


def cluster_info() -> dict:
    """Workers, threads and GPU resources of the run's Dask cluster (zeros outside Dask)."""
    client = _dask_client()
    if client is None:
        return {"scheduler": None, "workers": 0, "threads": 0, "gpus": 0}
    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {})
    return {
        "scheduler": info.get("address"),
        "workers": len(workers),
        "threads": sum(int(w.get("nthreads", 1)) for w in workers.values()),
        "gpus": int(sum(w.get("resources", {}).get("GPU", 0) for w in workers.values())),
    }


def task_annotations(use_gpu: bool, priority: int = 0):
    """``dask.annotate``: ``resources={"GPU": 1}`` for tasks that should run on a GPU worker, ``priority`` (higher
    runs first among the tasks waiting for a slot) when not 0; a no-op when neither applies."""
    annotations: dict = {}
    if use_gpu:
        annotations["resources"] = {"GPU": 1}
    if priority:
        annotations["priority"] = priority
    if not annotations:
        return contextlib.nullcontext()
    import dask

    return dask.annotate(**annotations)
