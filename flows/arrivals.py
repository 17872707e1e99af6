"""Where a run's tile records come from: a complete pass file, or one still being written by the downlink.

A *feed* tells the stages (:meth:`flows.stages.TileStages.stream`) which intact records have arrived since it
was last asked and whether the pass has ended; once it has, :attr:`info` holds what one scan of the finished
file finds (the lost tiles with their reasons, the notes, the trailer), so a pass processed while it arrives and
the same file processed afterwards are judged alike.

* :class:`CompleteFile`: a finished container (everything arrives at once).
* :class:`ArrivingFile`: ``NAME.part`` while a writer appends to it (the inbox protocol: the writer renames it
  to ``NAME`` when done). The pass ends with the rename, with the end-of-pass trailer, or when the file has
  not grown for ``stale_after_s`` seconds; until then a record that is damaged or has not come is not
  declared lost (a later copy may still come). A file that has not grown for :data:`STALL_NOTICE_S` seconds is
  said to be waiting, once per stall: a WARNING in the run's log and the event ``gsp.pass.waiting``
  ("waiting for the rest of NAME until 14:05 UTC"), which ``gsp serve``'s console prints. Records are read through a hard link in the product's state
  folder, so the workers' path stays valid when the writer renames the file.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

from groundstation.container import PassHeader, RecordScanner, read_header
from groundstation.errors import PassFormatError
from tasks.plan import PassInfo, pass_info, read_pass_info

__all__ = ["ArrivingFile", "CompleteFile", "arriving_path", "final_name", "open_feed"]

PART = ".part"
#: A pass arriving into the inbox that has not grown for this long is reported as waiting for the rest.
STALL_NOTICE_S = 30.0


def final_name(path: str | Path) -> Path:
    """``NAME`` for ``NAME.part`` (what the writer renames it to), else the path itself."""
    p = Path(path)
    return p.with_name(p.name[: -len(PART)]) if p.name.endswith(PART) else p


def arriving_path(path: str | Path) -> Path | None:
    """The growing file when ``path`` names one that is still being written (``NAME.part`` that exists), else
    None: then the pass is complete (under its final name when the writer has renamed it meanwhile)."""
    p = Path(path)
    return p if p.name.endswith(PART) and p.exists() else None


def utc(ts: float) -> str:
    """A POSIX time as ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


class CompleteFile:
    """A finished pass container: every intact record at the first poll."""

    def __init__(self, info: PassInfo) -> None:
        self.info = info
        self.path = info.path
        self._given = False
        self.timeline = {"last_byte": utc(Path(info.path).stat().st_mtime)}

    @property
    def header(self) -> PassHeader:
        return self.info.header

    def poll(self) -> tuple[dict[int, tuple[int, int]], bool]:
        if self._given:
            return {}, True
        self._given = True
        return dict(self.info.records), True


class ArrivingFile:
    """A pass container that a writer is still appending to (see the module docstring).

    ``watch``: the ``NAME.part`` path whose disappearance (the writer's rename) ends the pass; ``link``: where
    to make the stable hard link the workers read."""

    def __init__(self, watch: str | Path, link: str | Path, stale_after_s: float = 3600.0) -> None:
        self.watch = Path(watch)
        self.path = str(link)
        link = Path(link)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        try:
            os.link(self.watch, link)
        except FileNotFoundError:  # renamed meanwhile: the finished file under its final name
            os.link(final_name(self.watch), link)
        with open(link, "rb") as f:
            self.header, start = read_header(f, str(self.watch))
        self.scanner = RecordScanner(link, self.header, start)
        self.stale_after_s = stale_after_s
        self.info: PassInfo | None = None
        self._seen: set[int] = set()
        self._size, self._grown_at = -1, time.monotonic()
        self._told_stall = False
        self.ended_by = ""
        self.timeline = {"header_seen": utc(time.time())}

    def poll(self) -> tuple[dict[int, tuple[int, int]], bool]:
        if self.info is not None:
            return {}, True
        renamed = not self.watch.exists()  # before the scan: every byte was written before the rename
        res = self.scanner.advance(final=False)
        if res.size != self._size:
            self._size, self._grown_at, self._told_stall = res.size, time.monotonic(), False
        if renamed:
            self.ended_by = f"renamed to {final_name(self.watch).name}"
        elif res.trailer:
            self.ended_by = "end-of-pass trailer"
        elif time.monotonic() - self._grown_at >= self.stale_after_s:
            self.ended_by = f"no growth for {self.stale_after_s:g} s"
        ended = bool(self.ended_by)
        if ended:
            res = self.scanner.advance(final=True)
            self.info = pass_info(str(final_name(self.watch)), res)
            self.timeline["last_byte"] = utc(Path(self.path).stat().st_mtime)
        new = {t: r for t, r in res.records.items() if t not in self._seen}
        self._seen |= set(new)
        if not ended and not self._told_stall and time.monotonic() - self._grown_at >= STALL_NOTICE_S:
            self._told_stall = True
            self._tell_stall()
        return new, ended

    def _tell_stall(self) -> None:
        """The file stopped growing a while ago: say until when the run waits for the rest (see the module
        docstring); never fails the run."""
        from .events import clock_time, emit_pass_waiting

        name = final_name(self.watch).name
        quiet = time.monotonic() - self._grown_at
        until = time.time() + max(0.0, self.stale_after_s - quiet)
        total = self.header.tiling.n_tiles
        message = (f"waiting for the rest of {name} until {clock_time(until)} ({len(self._seen)} of {total} tiles "
                   f"received, nothing new for {quiet:.0f} s): then it ends with the tiles it has, the missing ones "
                   "listed for retransmission, unless the rest comes first")
        try:
            from prefect import get_run_logger

            get_run_logger().warning("%s", message)
        except Exception:  # noqa: BLE001 - outside a run (tests): the event still goes out
            pass
        emit_pass_waiting(self.watch.parent, name, message, until, (len(self._seen), total))

    @property
    def received(self) -> int:
        return len(self._seen)


def open_feed(pass_path: str | Path, link: Path, info: PassInfo | None, stale_after_s: float):
    """The feed of a run: :class:`ArrivingFile` for a ``.part`` still being written, else :class:`CompleteFile`
    (``info``: its scan)."""
    growing = arriving_path(pass_path)
    if growing is not None:
        try:
            return ArrivingFile(growing, link, stale_after_s)
        except FileNotFoundError:
            pass  # renamed between the check and the link: complete
    if info is None:  # it was arriving when the run began and has been renamed since: the finished file
        final = final_name(pass_path)
        if not final.is_file():
            raise PassFormatError(f"{pass_path}: no such pass container")
        info = read_pass_info(final)
    return CompleteFile(info)
