"""Where and how the flows run: the Prefect API, the Dask cluster, GPU slots, and the batch scheduler.

* :func:`prefect_api` - one Prefect API for the flow *and* its Dask workers. With ``PREFECT_API_URL`` set
  (a real ``prefect server start``), nothing to do. Without it, Prefect's ephemeral server is started once in
  this process and its URL put in the settings context, which prefect-dask ships to every task; otherwise
  each worker process would start an ephemeral server of its own.
* :func:`make_task_runner` - ``DaskTaskRunner`` on a new ``LocalCluster`` (2 worker processes x 1 thread by
  default; a ``GPU`` resource per worker when this machine has CUDA) or on an existing scheduler address.
* :func:`dask_address` - a context that yields a scheduler address, starting a LocalCluster for its
  duration when none is given: watcher sweeps and archive reprocessing share one cluster over many passes.
* :func:`gpu_slots` - how many ``GPU`` resources the run's cluster offers (0: everything on CPU).
* :class:`BatchScheduler` - submits batches as their dependencies resolve, keeps a bounded number in flight,
  and turns a failed batch (an exception, or a worker that died) into a recorded failure instead of a failed
  flow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from groundstation.config import STATION_ENV, load_station, station_path
from groundstation.errors import OrchestrationError
from tasks.plan import STAGES, Batch

__all__ = ["BatchScheduler", "LOCAL_WORKERS", "dask_address", "gpu_slots", "local_cluster_kwargs",
           "make_task_runner", "prefect_api"]

LOCAL_WORKERS = 2
LOCAL_THREADS = 1
#: A batch whose worker died is retried once on another worker, then reported (KilledWorker): a crash that
#: repeats on the same data must not take every worker down in turn.
LOCAL_ALLOWED_FAILURES = 1

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ Prefect API
@contextlib.contextmanager
def prefect_api(export_env: bool = False, startup_timeout_s: float | None = None) -> Iterator[str]:
    """Yield the API URL the run uses, starting Prefect's ephemeral server when no PREFECT_API_URL is set.

    ``startup_timeout_s``: how long to wait for the ephemeral server (default: the station's
    ``orchestration.api_startup_timeout_s``, 120 s); running out of it is an :class:`OrchestrationError`
    (exit 2) naming that setting and ``PREFECT_API_URL``, never a traceback. ``export_env`` also puts the URL
    into ``os.environ`` (for subprocesses, e.g. runs started by ``prefect.serve``).
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value()
    if url:
        yield url
        return
    from prefect.server.api.server import SubprocessASGIServer

    if startup_timeout_s is None:
        startup_timeout_s = load_station().orchestration.api_startup_timeout_s
    server = SubprocessASGIServer()  # the process-wide instance Prefect itself would start
    if not server.running:
        log.info("starting Prefect's ephemeral API (waiting up to %.0f s; set PREFECT_API_URL to use a server)",
                 startup_timeout_s)
    t0 = time.monotonic()
    try:
        server.start(timeout=startup_timeout_s)
    except RuntimeError as exc:
        if server.server_process is not None:  # Prefect leaves the half-started server running
            with contextlib.suppress(Exception):
                server.stop()
        raise OrchestrationError(
            f"Prefect's ephemeral API did not start within {startup_timeout_s:g} s ({str(exc).splitlines()[0][:200]}). "
            f"Raise orchestration.api_startup_timeout_s in the station file ({station_path()}; "
            f"gsp --station FILE or ${STATION_ENV} selects another), or start a server once with "
            "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        ) from None
    log.debug("ephemeral Prefect API at %s after %.1f s", server.api_url, time.monotonic() - t0)
    before = os.environ.get("PREFECT_API_URL")
    if export_env:
        os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        if export_env:
            if before is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = before


@contextlib.contextmanager
def local_prefect_server(port: int | None = None, timeout_s: float | None = None) -> Iterator[str]:
    """Run ``prefect server start`` on 127.0.0.1 (with its services: the scheduler that an interval schedule
    needs, which the ephemeral API does not run) for the duration of the context; yield its API URL.

    The server runs in its own process group and is stopped with it. Its database is the default one under
    PREFECT_HOME, so runs and artifacts stay visible after a restart.
    """
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    from prefect.settings import PREFECT_HOME

    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    if timeout_s is None:  # a real server starts its services too: give it more than the ephemeral API
        timeout_s = max(180.0, load_station().orchestration.api_startup_timeout_s)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    exe = Path(sys.executable).with_name("prefect")
    cmd = [str(exe) if exe.exists() else "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    log_path = Path(PREFECT_HOME.value()) / f"gsp-prefect-server-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                err = log_path.read_bytes()[-2000:].decode(errors="replace")
                raise OrchestrationError(f"`prefect server start` exited with status {proc.returncode} (log {log_path}): "
                                         f"{err}")
            if time.monotonic() > deadline:
                raise OrchestrationError(
                    f"`prefect server start` was not healthy at {url} after {timeout_s:.0f} s (log {log_path}). "
                    f"Raise orchestration.api_startup_timeout_s in the station file ({station_path()}), or start "
                    "a server yourself and set PREFECT_API_URL")
            time.sleep(0.5)
        log.warning("Prefect server (UI and API) at http://127.0.0.1:%d for as long as this command runs (log %s)",
                    port, log_path)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log_file.close()


# ------------------------------------------------------------------------------------------------ Dask
def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA is simply no GPU
        return 0


def local_cluster_kwargs(n_workers: int = LOCAL_WORKERS, threads_per_worker: int = LOCAL_THREADS) -> dict:
    """LocalCluster arguments: worker *processes* (isolation: a crash costs one batch), no fixed ports, one
    retry of a batch whose worker died, a ``GPU`` resource per worker when this machine has CUDA."""
    kw: dict[str, Any] = dict(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                              dashboard_address=":0", silence_logs=logging.WARNING,
                              scheduler_kwargs={"allowed_failures": LOCAL_ALLOWED_FAILURES})
    if _local_gpus():
        kw["resources"] = {"GPU": 1}
    return kw


def make_task_runner(address: str | None = None, n_workers: int = LOCAL_WORKERS,
                     threads_per_worker: int = LOCAL_THREADS):
    """A DaskTaskRunner on ``address`` (an existing scheduler) or on a new LocalCluster."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs=local_cluster_kwargs(n_workers, threads_per_worker))


@contextlib.contextmanager
def dask_address(address: str | None = None, n_workers: int = LOCAL_WORKERS,
                 threads_per_worker: int = LOCAL_THREADS) -> Iterator[str]:
    """Yield ``address``, or the address of a LocalCluster that lives as long as the context."""
    if address:
        yield address
        return
    from distributed import LocalCluster

    with LocalCluster(**local_cluster_kwargs(n_workers, threads_per_worker)) as cluster:
        yield cluster.scheduler_address


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


def gpu_slots() -> int:
    return cluster_info()["gpus"]


def gpu_annotation(use_gpu: bool):
    """``dask.annotate(resources={"GPU": 1})`` for tasks that should run on a GPU worker, else a no-op."""
    if not use_gpu:
        return contextlib.nullcontext()
    import dask

    return dask.annotate(resources={"GPU": 1})


# ------------------------------------------------------------------------------------------------ scheduling
class RunInterrupted(RuntimeError):
    """The run was stopped on purpose before finishing (test hook); the next run resumes it."""


@dataclass
class BatchScheduler:
    """Run batches in dependency order with at most ``max_in_flight`` submitted at a time.

    ``submit(batch)`` returns a Prefect future; it is called only when every batch in ``batch.deps`` has
    finished (done or failed), so it can use upstream results. Ready batches of later stages go first
    (evaluate, then enhance, then decode), so enhancement overlaps decoding instead of waiting for all of it.
    ``on_progress(done, total)`` is called after each batch, ``on_failure(batch, why)`` after a batch failed and
    before anything that depends on it is submitted. ``stop_after`` (test hook) stops submitting after
    that many batches have finished in this run, waits for those in flight and raises RunInterrupted.
    """

    submit: Callable[[Batch], Any]
    max_in_flight: int = 4
    on_progress: Callable[[int, int], None] | None = None
    on_failure: Callable[[Batch, str], None] | None = None
    stop_after: int | None = None
    results: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)

    def run(self, batches: list[Batch], already: dict[str, Any]) -> None:
        """``already``: results of batches done by an earlier run (their markers); those are not resubmitted."""
        self.results.update(already)
        total = len(batches)
        pending = [b for b in batches if b.key not in already]
        rank = {stage: i for i, stage in enumerate(reversed(STAGES))}
        pending.sort(key=lambda b: (rank[b.stage], b.index))
        in_flight: dict[Any, Batch] = {}
        done_q: queue.Queue = queue.Queue()
        finished_here = 0
        stopping = False
        self._progress(total)
        while pending or in_flight:
            if not stopping:
                for b in list(pending):
                    if len(in_flight) >= self.max_in_flight:
                        break
                    if all(d in self.results or d in self.failures for d in b.deps):
                        fut = self.submit(b)
                        fut.add_done_callback(done_q.put)
                        in_flight[fut] = b
                        pending.remove(b)
            if not in_flight:
                if stopping:
                    break
                raise RuntimeError(f"batches {[b.key for b in pending]} wait for batches that are not planned")
            fut = done_q.get()
            b = in_flight.pop(fut)
            try:
                self.results[b.key] = fut.result()
            except Exception as exc:  # noqa: BLE001 - the task's error, or a worker that died (KilledWorker)
                self.failures[b.key] = f"{type(exc).__name__}: {str(exc)[:300]}"
                if self.on_failure is not None:  # before any dependent batch is submitted
                    self.on_failure(b, self.failures[b.key])
            self.ran.append(b.key)
            finished_here += 1
            self._progress(total)
            if self.stop_after is not None and finished_here >= self.stop_after:
                stopping = True
        if stopping and (pending or len(self.results) + len(self.failures) < total):
            raise RunInterrupted(f"stopped after {finished_here} batches on request (GSP_TEST_STOP_AFTER_BATCHES); "
                                 "run again to finish")

    def _progress(self, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(len(self.results) + len(self.failures), total)


def hook_value(name: str) -> str | None:
    """Test hooks are environment variables read by the flow process (never by workers)."""
    return os.environ.get(name) or None
