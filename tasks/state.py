"""Durable run state on the shared file system: atomic JSON files, per-batch done markers, locks and claims.

Everything here is plain file-system work (no Prefect), so a worker process, the flow process and a second
watcher on another machine (same shared disk) agree on what is done:

* :func:`write_json_atomic` writes ``path`` through a temporary file in the same folder, ``fsync`` and
  ``os.replace``: a reader sees the old file or the new one, never half of one.
* a **done marker** (``<state>/<stage>-<batch>.json``) is written by the task that did the batch, *after* the
  batch's Zarr chunks were written; it holds the batch's tiles and its small result. A run that finds a marker
  whose tiles match its plan skips that batch and reuses the result; a batch without a marker is redone
  (its chunks are rewritten whole, with the same bytes).
* :class:`ExclusiveLock` is an ``flock`` on a lock file: released by the kernel when its holder dies, so a
  crashed run never leaves a stale lock behind. Two threads holding separate ``open()`` calls exclude each
  other as two processes do.
* :func:`claim` moves a file into a folder with ``os.rename`` (atomic on one file system): of two claimers,
  exactly one succeeds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from pathlib import Path

from groundstation.fileio import fsync_dir
from groundstation.fileio import write_json_atomic as write_json_atomic_
from typing import Any

__all__ = ["ExclusiveLock", "LockHeld", "claim", "read_json", "read_markers", "retry_unless_operator_error",
           "write_json_atomic", "write_marker"]


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file, fsync, rename)."""
    return write_json_atomic_(path, obj, indent=1)


def read_json(path: str | Path) -> Any | None:
    """The JSON in ``path``, or None when it is absent or unreadable (a marker that cannot be read is redone)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def marker_path(state_dir: str | Path, stage: str, batch: int) -> Path:
    return Path(state_dir) / f"{stage}-{batch:05d}.json"


def write_marker(state_dir: str | Path, stage: str, batch: int, tiles: list[int], result: dict) -> Path:
    """Record that ``stage`` batch ``batch`` (covering ``tiles``) is done, with its small ``result``."""
    return write_json_atomic(marker_path(state_dir, stage, batch),
                             {"stage": stage, "batch": batch, "tiles": list(tiles), "result": result})


def read_markers(state_dir: str | Path, stage: str) -> dict[int, dict]:
    """Done markers of one stage: ``{batch: {"stage", "batch", "tiles", "result"}}`` (unreadable ones left out)."""
    out: dict[int, dict] = {}
    folder = Path(state_dir)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob(f"{stage}-*.json")):
        data = read_json(path)
        if isinstance(data, dict) and data.get("stage") == stage and isinstance(data.get("batch"), int):
            out[data["batch"]] = data
    return out


class LockHeld(Exception):
    """The lock is held by another run (``holder`` says who wrote it, when known)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder or 'another process'}")
        self.path = path
        self.holder = holder


class ExclusiveLock:
    """Non-blocking exclusive ``flock`` on ``path`` (created if needed); use as a context manager.

    Raises :class:`LockHeld` on entry when another process (or another open file in this process) holds it.
    The holder's host and pid are written into the file for the operator; the file itself is left in place
    (deleting a lock file races with a process that just opened it).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> "ExclusiveLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                holder = ""
                with contextlib.suppress(OSError):
                    holder = self.path.read_text().strip()
                raise LockHeld(self.path, holder) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ExclusiveLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim(path: str | Path, folder: str | Path) -> Path | None:
    """Move ``path`` into ``folder`` atomically; the new path, or None when someone else moved it first.

    Refuses (returns None) when ``folder`` already has an entry of that name, so a re-sent pass never
    overwrites one that is being processed.
    """
    path, folder = Path(path), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / path.name
    if dest.exists():
        return None
    try:
        os.rename(path, dest)
    except FileNotFoundError:
        return None
    fsync_dir(folder)
    return dest


def retry_unless_operator_error(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry transient failures (I/O...), never a GSPError (bad input or
    configuration: the same call would fail the same way)."""
    from groundstation.errors import GSPError

    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, GSPError)
