"""What a worker process keeps between tasks: models loaded once, keyed by checkpoint sha256, and its settings.

A Dask worker runs many batch tasks; loading an ELIC or an enhancer for each would dominate short batches.
The caches below live in the worker process (module globals), so each process loads a given checkpoint once.
The key is the checkpoint's sha256 (plus device): a file replaced on disk under the same name is a new key,
and a file whose bytes do not match the sha256 the flow expects is refused by the loaders.
"""

from __future__ import annotations

import logging

import os
import socket
import threading
from typing import Any, Callable

import torch
from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["TASK_MODULES", "TaskModules", "cached", "get_codec", "get_enhancer", "get_perceptual",
           "import_task_modules", "missing_task_modules", "pick_device", "set_threads", "warm_up", "worker_name"]

#: What a batch task's unpickling and run import. Imported once per worker, on its event-loop thread, before
#: the worker runs anything (:class:`TaskModules`): Python's per-module import locks report a *deadlock* when
#: two threads import modules that import each other (the event loop unpickling a task that imports
#: ``tasks.plan`` -> ``enhancer`` while a task thread's first ``import prefect`` runs its plugin hooks), and the
#: loser sees ``cannot import name ...`` and kills the worker. Seen in CI as a dead worker and a lost batch.
TASK_MODULES = ("prefect", "prefect.task_engine", "prefect_dask", "tasks.state", "tasks.plan", "tasks.decode",
                "tasks.enhance", "tasks.evaluate", "tasks.overviews")

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def cached(key: tuple, load: Callable[[], Any]) -> Any:
    """The object stored under ``key`` in this process, loading it with ``load()`` the first time."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load()
        return _CACHE[key]


def set_threads(n: int) -> None:
    """Torch intra-op threads of this process (a worker shares its cores with the other workers)."""
    if n and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def pick_device(use_gpu: bool) -> str:
    """``cuda`` when the task was given a GPU slot and this process sees one, else ``cpu``.

    A worker started with ``--resources GPU=1`` is expected to see one device (``CUDA_VISIBLE_DEVICES`` set
    per worker, as dask-cuda does), so ``cuda`` means that device.
    """
    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


def device_label(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def get_codec(path: str, sha256: str):
    """The loaded ELIC (``LoadedCodec``) of this checkpoint, on the CPU (entropy decoding is CPU work)."""
    from groundstation.codec import load_codec

    return cached(("codec", sha256), lambda: load_codec(path, sha256))


def get_enhancer(path: str, sha256: str, device: str):
    """The enhancer model of this checkpoint on ``device``, in eval mode."""
    from enhancer.checkpoint import load_enhancer

    return cached(("enhancer", sha256, device), lambda: load_enhancer(path, sha256, device=device)[0])


def get_perceptual(device: str, names: tuple[str, ...] | None = None) -> tuple:
    """The perceptual metrics ``names`` (default: every column of ``PERCEPTUAL_COLUMNS``: LPIPS-Alex, LPIPS-VGG,
    ST-LPIPS-Alex), each loaded once per process, keyed by metric and device."""
    from groundstation.metrics import PERCEPTUAL_COLUMNS, PerceptualMetric

    return tuple(cached(("perceptual", name, device), lambda name=name: PerceptualMetric.auto(device, backend=name))
                 for name in (PERCEPTUAL_COLUMNS if names is None else names))


def import_task_modules() -> list[str]:
    """Import :data:`TASK_MODULES` (a no-op once done); returns the names imported."""
    import importlib

    for name in TASK_MODULES:
        importlib.import_module(name)
    return list(TASK_MODULES)


def missing_task_modules() -> list[str]:
    """The :data:`TASK_MODULES` this process has not imported (empty on a prepared worker)."""
    import sys

    return [name for name in TASK_MODULES if name not in sys.modules]


class TaskModules(WorkerPlugin):
    """A Dask worker plugin that imports the task modules when it is registered, and on every worker that
    joins later (a restarted one too), on the worker's event-loop thread: the thread that unpickles tasks, so
    no task thread can be importing the same modules at that moment. ``flows.cluster`` registers it on every
    cluster a run uses (a LocalCluster or a scheduler's address)."""

    name = "gsp-task-modules"
    idempotent = True

    def setup(self, worker) -> None:  # noqa: ARG002 - the plugin API passes the worker
        import_task_modules()
        quiet_lost_scheduler()


class _LostScheduler(logging.Filter):
    """A worker whose scheduler has gone (the station stopping, or the scheduler's machine down) logs each failed
    heartbeat at ERROR with the connection's traceback; kept as one line without it (what an operator can act on
    is that the scheduler is gone, which the worker's nanny also says)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "heartbeat" in str(record.msg):
            exc = record.exc_info[1]
            record.msg = f"{record.msg} (the scheduler is gone: {type(exc).__name__})"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def quiet_lost_scheduler() -> None:
    """Install :class:`_LostScheduler` on this process's ``distributed.worker`` logger, once."""
    log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _LostScheduler) for f in log.filters):
        log.addFilter(_LostScheduler())


def warm_up(codec: tuple[str, str] | None = None, enhancer: tuple[str, str] | None = None,
            device: str = "cpu") -> dict:
    """Import the task modules and load a run's models (``(path, sha256)`` pairs) into this worker's caches.

    Run once per worker as the cluster comes up (flows.cluster.warm_workers), so that loading overlaps the
    start of Prefect's API instead of delaying each worker's first batch. Returns what it did, with seconds.
    """
    import time

    t0 = time.perf_counter()
    import_task_modules()  # already done by TaskModules on a prepared cluster: then free

    done = []
    if codec is not None:
        get_codec(*codec)
        done.append("codec")
    if enhancer is not None:
        get_enhancer(*enhancer, device)
        done.append("enhancer")
    return {"worker": worker_name(), "loaded": done, "seconds": round(time.perf_counter() - t0, 2)}
