"""``watch-inbox``: take every pass that lands in an inbox folder, while it arrives or once complete, exactly once.

Inbox layout (all on one file system, so renames are atomic)::

    INBOX/              passes arrive here; writers write NAME.part and rename it to NAME when complete
    INBOX/.streams/     NAME/: a pass being processed while it arrives (claimed by one watcher)
    INBOX/processing/   claimed complete passes (os.rename: of two watchers, exactly one wins)
    INBOX/done/         processed: the product is complete (lost tiles, if any, are in its report)
    INBOX/failed/       could not be processed (bad header, unknown codec...), with NAME.error.txt
    INBOX/.locks/       one flock per pass name while a watcher claims or processes it

**While it arrives.** A ``NAME.part`` whose header is complete and valid is claimed (``.streams/NAME``) and
processed at once: ``process-pass`` decodes records as they land and finishes when the writer renames the file
(or writes the end-of-pass trailer, or stops for ``stale_after_s``); then ``NAME`` goes to ``done/``.

**Once complete.** A pass that was not taken while arriving is **ready** when its name does not end in
``.part``, it has not changed for ``settle_s`` seconds, its header parses and it ends with the end-of-pass
trailer. A pass without a trailer is left alone until it has not changed for ``stale_after_s`` seconds (a
downlink cut short for good), then processed with its missing tiles reported for retransmission; every sweep
that finds it says so at WARNING ("waiting for the rest of NAME until 14:05 UTC") and emits
``gsp.pass.waiting``, which ``gsp serve``'s console prints once.

**Supplements.** A pass whose header marks it as a supplement (resent tiles), or whose pass uid already has a
complete product here with lost tiles that it carries intact records of, is applied to that product
(:mod:`flows.supplement`, the product's own options) instead of being processed as a new pass; refused ones
(unknown pass, duplicate, another codec) go to ``failed/`` with the reason, like other bad passes.

**Who processes a claimed pass.** Under ``gsp serve`` (:class:`InboxTrigger` with ``dispatch``) the pass's own
``process-pass`` run, started by the trigger as it claims the pass and recorded in ``.locks/NAME.run``; that
run processes it and moves it (:func:`process_claimed`). Otherwise (``gsp serve --once``, a ``watch-inbox``
run: the safety net) a sweep, each pass a ``process-pass`` subflow; a sweep leaves a pass to its own run while
that run is still to start (:func:`dispatched_run`).

**Exactly once.** Every claim and every run of a pass holds the lock of its name in ``.locks/``: a watcher claims
a ready pass by renaming it into ``processing/`` (a second watcher's rename finds no file and moves on), or an
arriving one by creating ``.streams/NAME`` (a second mkdir fails), and processes a claimed pass only while
holding its lock and only if it is still there; moving it to ``done/`` happens under the same lock. A watcher
that dies leaves its claim with the lock released by the kernel: the next sweep takes it over and the
product's done markers make it resume where it stopped. Processing itself is idempotent (a complete product
returns at once), which covers the last gap (a crash between completing the product and moving the pass).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from groundstation.config import load_station
from groundstation.container import PassReader
from groundstation.errors import GSPError, PassFormatError
from groundstation.fileio import write_text_atomic
from tasks.state import ExclusiveLock, LockHeld, claim

from .access import InboxDir, PathNotAllowed, ProductsDir, checked, run_checked
from .arrivals import PART, final_name
from .cluster import dask_address as cluster_address
from .cluster import make_task_runner
from .events import clock_time, emit_pass_waiting
from .names import inbox_run_name
from .options import station_options
from .runtime import prefect_api
from .identity import pass_header, resolve_run
from .process_pass import ProcessOptions, process_pass
from .supplement import apply_supplement, is_supplement

__all__ = ["InboxTrigger", "Waiting", "claim_new", "claim_stream", "dispatch_claimed", "dispatched_run", "find_arriving",
           "find_ready", "inbox_claim", "process_claimed", "run_sweep", "sweep_inbox", "watch_inbox"]

PROCESSING, DONE, FAILED, LOCKS, STREAMS = "processing", "done", "failed", ".locks", ".streams"
SKIP_SUFFIXES = (".part", ".tmp", ".error.txt")


def _candidates(inbox: Path) -> list[Path]:
    """Complete files in the inbox that no watcher streams."""
    streams = inbox / STREAMS
    return sorted(p for p in inbox.iterdir()
                  if p.is_file() and not p.name.startswith(".") and not p.name.endswith(SKIP_SUFFIXES)
                  and not (streams / p.name).exists())


def find_arriving(inbox: str | Path) -> list[Path]:
    """``NAME.part`` files whose header has arrived whole and parses, that no watcher streams yet (passes, not
    supplements)."""
    inbox = Path(inbox)
    out = []
    for p in sorted(inbox.glob(f"*{PART}")):
        if p.name.startswith(".") or (inbox / STREAMS / final_name(p).name).exists():
            continue
        try:
            header = pass_header(p)
        except (PassFormatError, OSError):
            continue  # the header is still arriving (or the file is no pass: the complete file will say)
        if header.supplement is None:  # resent tiles are few: applied once complete
            out.append(p)
    return out


def _locked(inbox: Path, name: str) -> ExclusiveLock | None:
    """The lock of pass ``name`` (held), or None when another watcher holds it."""
    try:
        return ExclusiveLock(inbox / LOCKS / f"{name}.lock").acquire()
    except LockHeld:
        return None


def claim_stream(part: Path, inbox: Path, on_claim=None) -> bool:
    """Claim an arriving pass (``.streams/NAME``) under its lock; False when another watcher has it.
    ``on_claim(part)`` is called once claimed, still under the lock (``gsp serve`` starts its run there)."""
    name = final_name(part).name
    lock = _locked(inbox, name)
    if lock is None:
        return False
    try:
        if not part.exists():  # renamed meanwhile: the complete path takes it
            return False
        try:
            (inbox / STREAMS).mkdir(exist_ok=True)
            (inbox / STREAMS / name).mkdir()
        except FileExistsError:
            return False
        if on_claim is not None:
            on_claim(part)
        return True
    finally:
        lock.release()


class Waiting(str):
    """Why a file is left alone for now (a str). For a pass that stopped short (its header and some records are
    there, its end-of-pass trailer is not): ``until``, the POSIX time at which it is processed with the tiles it
    has unless the rest comes first (None: never, ``stale_after_s`` is off), and ``tiles`` (received, total).
    For a file that is no readable pass: ``unreadable``, and ``until``, when it goes to ``failed/``."""

    until: float | None = None
    tiles: tuple[int, int] | None = None
    unreadable: bool = False

    @property
    def said(self) -> bool:
        """Worth telling the operator at once (not a file that is merely settling)."""
        return self.tiles is not None or self.unreadable


def _unreadable(name: str, exc: Exception, mtime: float, stale_after_s: float | None) -> Waiting:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if stale_after_s is None:
        why = Waiting(f"{name} is not a readable pass ({first}); left alone in case it is still being written "
                      "(stale_after_s is off)")
    else:
        why = Waiting(f"{name} is not a readable pass ({first}); left alone until "
                      f"{clock_time(mtime + stale_after_s)} in case it is still being written, then moved to "
                      "failed/ with the reason")
        why.until = mtime + stale_after_s
    why.unreadable = True
    return why


def _stopped_short(name: str, scan, mtime: float, stale_after_s: float | None) -> Waiting:
    received, total = len(scan.records), scan.header.tiling.n_tiles
    if stale_after_s is None:
        why = Waiting(f"waiting for the rest of {name} ({received} of {total} tiles, no end-of-pass trailer); "
                      "stale_after_s is off: it waits until the rest comes")
    else:
        why = Waiting(f"waiting for the rest of {name} until {clock_time(mtime + stale_after_s)} ({received} of "
                      f"{total} tiles, no end-of-pass trailer): then it is processed with the tiles it has, the "
                      "missing ones listed for retransmission, unless the rest comes first")
        why.until = mtime + stale_after_s
    why.tiles = (received, total)
    return why


def find_ready(inbox: str | Path, settle_s: float = 2.0, stale_after_s: float | None = 3600.0,
               now: float | None = None) -> tuple[list[Path], dict[str, str]]:
    """(passes ready to claim, {name: why another file is left alone for now (a :class:`Waiting`)})."""
    inbox = Path(inbox)
    now = time.time() if now is None else now
    ready, waiting = [], {}
    for path in _candidates(inbox):
        try:
            st = path.stat()
        except FileNotFoundError:  # claimed by another watcher meanwhile
            continue
        age = now - st.st_mtime
        if age < settle_s:
            waiting[path.name] = Waiting(f"changed {age:.1f} s ago (still being written?)")
            continue
        try:
            scan = PassReader(path).scan()
        except PassFormatError as exc:
            if stale_after_s is not None and age < stale_after_s:
                waiting[path.name] = _unreadable(path.name, exc, st.st_mtime, stale_after_s)
                continue
            ready.append(path)  # processing reports the error and moves it to failed/
            continue
        except FileNotFoundError:
            continue
        if not scan.trailer and (stale_after_s is None or age < stale_after_s):
            waiting[path.name] = _stopped_short(path.name, scan, st.st_mtime, stale_after_s)
            continue
        ready.append(path)
    return ready, waiting


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / path.name
    if dest.exists():  # the same name processed before: keep both
        dest = folder / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
    os.rename(path, dest)
    return dest


def _logger():
    """The run's logger inside a flow run, else this module's (``gsp serve``'s inbox trigger)."""
    import logging

    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("gsp.inbox")


def claim_new(inbox: Path, settle_s: float = 2.0, stale_after_s: float | None = 3600.0,
              on_claim=None) -> tuple[list[Path], dict[str, str]]:
    """Claim what is ready in ``inbox``: complete passes (renamed into ``processing/``) and arriving ones
    (``.streams/NAME``); a file resolving outside the station's roots goes to ``failed/`` unread. Returns (the
    passes claimed now: ``processing/NAME`` or ``NAME.part``, {name: why another file is left alone}).
    ``on_claim(path)`` is called for each, under the pass's lock (``gsp serve`` starts the pass's run there)."""
    log = _logger()
    processing = inbox / PROCESSING
    processing.mkdir(exist_ok=True)
    (inbox / LOCKS).mkdir(exist_ok=True)
    for path in _candidates(inbox):
        _refuse_outside_roots(path, inbox)  # before find_ready reads a header through a symlink
    ready, waiting = find_ready(inbox, settle_s, stale_after_s)
    claimed: list[Path] = []
    for path in ready:
        lock = _locked(inbox, path.name)
        if lock is None:
            continue  # another watcher claims or streams it
        try:
            if not (inbox / STREAMS / path.name).exists() and (dest := claim(path, processing)) is not None:
                log.info("Inbox: claimed %s", path.name)
                claimed.append(Path(dest))
                if on_claim is not None:
                    on_claim(Path(dest))
        finally:
            lock.release()
    for part in find_arriving(inbox):
        if not _refuse_outside_roots(part, inbox) and claim_stream(part, inbox, on_claim):
            log.info("Inbox: %s is arriving: processing it while it does", final_name(part).name)
            claimed.append(part)
    return claimed, waiting


def sweep_inbox(inbox: str | Path, products: str | Path, options: ProcessOptions | None = None, *,
                dask_address: str | None = None, settle_s: float = 2.0,
                stale_after_s: float | None = 3600.0) -> list[dict]:
    """One sweep: claim ready passes, then process every pass in ``processing/`` that no one else holds and
    whose own process-pass run (one ``gsp serve`` started for it) is not about to start.

    Runs inside a flow (``process-pass`` runs as a subflow per pass). One Dask cluster serves the whole sweep:
    ``dask_address``, or a LocalCluster started only when there is something to process.
    """
    log = get_run_logger()
    inbox, products = Path(inbox), Path(products)
    if not inbox.is_dir():
        raise GSPError(f"--inbox {inbox}: no such folder")
    _, waiting = claim_new(inbox, settle_s, stale_after_s)
    for name, why in waiting.items():
        if getattr(why, "said", False):  # stopped short, or no pass: said plainly, and to gsp serve's console
            log.warning("Inbox: %s", why)
            emit_pass_waiting(inbox, name, why, why.until, why.tiles)
        else:
            log.info("Inbox: leaving %s alone for now: %s", name, why)
    results: list[dict] = []
    runs = _SubflowRuns(dask_address)
    try:
        for path, streaming in claimed_passes(inbox):
            lock = _locked(inbox, path.name)
            if lock is None:
                continue  # another watcher is on it
            try:
                own_run = dispatched_run(inbox, path.name)
                if own_run:
                    log.info("Inbox: %s is left to its own run %s", path.name, own_run)
                    continue
                results.extend(_take_claimed(path, streaming, inbox, products, options, runs, stale_after_s))
            finally:
                lock.release()
    finally:
        runs.close()
    return results


def claimed_passes(inbox: Path) -> list[tuple[Path, bool]]:
    """Every claimed pass: (``processing/NAME``, False) and (``INBOX/NAME`` of ``.streams/NAME``, True)."""
    processing = inbox / PROCESSING
    claimed = [(p, False) for p in sorted(processing.iterdir()) if p.is_file()] if processing.is_dir() else []
    if (inbox / STREAMS).is_dir():
        claimed += [(inbox / d.name, True) for d in sorted((inbox / STREAMS).iterdir()) if d.is_dir()]
    return claimed


def _take_claimed(path: Path, streaming: bool, inbox: Path, products: Path, options: ProcessOptions | None,
                  runs, stale_after_s: float | None) -> list[dict]:
    """Process a claimed pass, its lock held: ``path`` is ``processing/NAME``, or ``INBOX/NAME`` of a streamed
    one. [] when there is nothing to do (gone, refused, a stream waiting for its writer's rename)."""
    if streaming:
        path = _stream_source(path, inbox)
    try:
        if path is None or not path.exists():  # finished by another watcher just before we got the lock
            return []
        if _refuse_outside_roots(path, inbox):
            return []
        if streaming:
            finished = _stream_finished(path, inbox, products, options, stale_after_s)
            if finished is not None:  # processed while it arrived: only the move to done/ may be left
                return finished
        return [_process_one(path, inbox, products, options, runs, stale_after_s)]
    finally:
        if streaming:
            _release_stream(inbox, path)


class _SubflowRuns:
    """How a sweep runs a pass: process-pass (or apply-supplement) as a subflow on one Dask cluster for the
    whole sweep (``dask_address``, or a LocalCluster started at the first pass)."""

    keep_going = True  # an unexpected error leaves the pass claimed for the next sweep; the sweep goes on

    def __init__(self, dask_address: str | None) -> None:
        self.dask_address, self._ctx, self._runner = dask_address, None, None

    def runner(self):
        if self._runner is None:
            self._ctx = cluster_address(self.dask_address)
            self._runner = make_task_runner(self._ctx.__enter__())
        return self._runner

    def process(self, path: Path, products: Path, options: ProcessOptions | None) -> dict:
        return process_pass.with_options(task_runner=self.runner())(str(path), str(products), options)

    def supplement(self, path: Path, products: Path) -> list[dict]:
        return apply_supplement.with_options(task_runner=self.runner())(str(path), str(products))

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)


class _OwnRun:
    """How a pass's own process-pass run processes it: in that run (its flow's task runner), and an error ends
    the run (failed/ or, for an unexpected one, left claimed for a sweep)."""

    keep_going = False

    @staticmethod
    def process(path: Path, products: Path, options: ProcessOptions | None) -> dict:
        return process_pass.fn(str(path), str(products), options)

    @staticmethod
    def supplement(path: Path, products: Path) -> list[dict]:
        return apply_supplement.fn(str(path), str(products))


#: ``.locks/NAME.run``: the id of the process-pass run ``gsp serve`` started for a pass it claimed.
RUN_RECORD = ".run"
#: A run started for a claimed pass that is still pending after this long has lost its process.
PENDING_TOO_LONG_S = 300.0


def dispatch_claimed(path: Path, inbox: Path, start) -> None:
    """Under the lock of the pass ``path`` just claimed: ``start(path)`` starts its own run (``gsp serve``: a
    run of the station's process-pass deployment) and returns the run's id, recorded in ``.locks/NAME.run`` so
    that a sweep leaves the pass to that run. A run that cannot be started leaves the pass claimed: the next
    sweep takes it."""
    name = final_name(path).name
    try:
        run_id = start(path)
    except Exception as exc:  # noqa: BLE001 - the sweep is the safety net
        _logger().warning("Inbox: no run could be started for %s (%s: %s); the next sweep takes it", name,
                          type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return
    write_text_atomic(inbox / LOCKS / f"{name}{RUN_RECORD}", f"{run_id}\n")


def dispatched_run(inbox: Path, name: str) -> str | None:
    """The run ``gsp serve`` started for the claimed pass ``name`` (its name and state) while that run is still
    to start; None when there is none, or it ended, or it is running with the pass's lock free (its process
    died: a running pass's run holds the lock throughout), so the caller takes the pass over. Called with the
    pass's lock held."""
    from datetime import datetime, timezone
    from uuid import UUID

    record = inbox / LOCKS / f"{name}{RUN_RECORD}"
    try:
        run_id = UUID(record.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
    except ObjectNotFound:
        record.unlink(missing_ok=True)
        return None
    except Exception as exc:  # noqa: BLE001 - cannot tell: leave the pass to its run this time
        return f"{run_id} (its state unknown: {type(exc).__name__})"
    state = run.state
    if state is None or state.type not in (StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED):
        return None
    if state.type == StateType.PENDING and (datetime.now(timezone.utc) - state.timestamp).total_seconds() > \
            PENDING_TOO_LONG_S:
        return None
    return f"'{run.name}' ({state.name})"


def inbox_claim(path: str | Path) -> tuple[Path, bool] | None:
    """(inbox, streaming) when ``path`` is a pass claimed in an inbox (``INBOX/processing/NAME``, or
    ``INBOX/NAME.part`` / ``INBOX/NAME`` with ``INBOX/.streams/NAME``), else None."""
    path = Path(path)
    if path.parent.name == PROCESSING and (path.parent.parent / LOCKS).is_dir():
        return path.parent.parent, False
    if (path.parent / STREAMS / final_name(path).name).is_dir():
        return path.parent, True
    return None


def process_claimed(path: str | Path, products: str | Path, options: ProcessOptions | None) -> dict:
    """A claimed pass's own run (``process-pass`` started by ``gsp serve`` for ``processing/NAME`` or an
    arriving ``NAME.part``): processed in this run under the pass's lock, then moved to ``done/`` (or
    ``failed/`` with the reason, and the run fails in one line). A pass another watcher holds or already
    finished is left alone."""
    path, products = Path(path), Path(products)
    inbox, streaming = inbox_claim(path)
    name = final_name(path).name
    stale_after_s = load_station().downlink.stale_after_s
    log = get_run_logger()
    lock = _locked(inbox, name)
    if lock is None:
        log.info("Inbox: another watcher is processing %s: nothing to do here", name)
        return {"pass": name, "status": "elsewhere"}
    try:
        target = inbox / name if streaming else path
        results = _take_claimed(target, streaming, inbox, products, options, _OwnRun, stale_after_s)
    finally:
        (inbox / LOCKS / f"{name}{RUN_RECORD}").unlink(missing_ok=True)
        lock.release()
    if not results:
        log.info("Inbox: %s was already processed (or is waiting for its writer's rename): nothing to do", name)
        return {"pass": name, "status": "nothing to do"}
    result = results[0]
    if result["status"] == "failed":
        raise GSPError(f"{name} {'refused' if result.get('supplement') else 'could not be processed'}: "
                       f"{result['error']}; moved to {Path(result['moved_to']).parent}")
    return result


def _stream_finished(path: Path, inbox: Path, products: Path, options: ProcessOptions | None,
                     stale_after_s: float | None) -> list[dict] | None:
    """A claimed pass whose run, while it arrived, already completed its product (it ended with the trailer):
    no second run. Renamed by its writer since (or a ``.part`` gone stale): moved to ``done/``, one result;
    still waiting for the rename: nothing to do, no result. None when its product is not complete (a run
    finishes it)."""
    import zarr

    from groundstation.product import status

    try:
        paths = resolve_run(pass_header(path), options or station_options(), products, load=False).paths
    except (GSPError, OSError):
        return None  # the run reports it
    if status(paths.product) != "complete":
        return None
    if path.name.endswith(PART) and (stale_after_s is None or time.time() - path.stat().st_mtime < stale_after_s):
        return []
    summary = dict(zarr.open_group(str(paths.product), mode="r").attrs).get("gsp_summary") or {}
    dest = _move(path, inbox / DONE)
    _logger().info("Inbox: %s: its product %s was made while it arrived; moved to %s", path.name,
                          paths.product, dest.parent)
    return [{"pass": final_name(path).name, "status": "done", "product": str(paths.product),
             "report": str(paths.report), "tiles_lost": summary.get("tiles_lost", 0),
             "exit_code": summary.get("exit_code", 0), "already_complete": True, "moved_to": str(dest)}]


def _stream_source(name: Path, inbox: Path) -> Path | None:
    """The file of a streamed pass: still ``NAME.part``, or ``NAME`` once renamed; None (and the claim dropped)
    when neither is there any more (processed and moved by an earlier run)."""
    for p in (name.with_name(name.name + PART), name):
        if p.exists():
            return p
    _release_stream(inbox, name)
    return None


def _release_stream(inbox: Path, path: Path | None) -> None:
    """Drop the stream claim of ``path``'s pass once it is no longer in the inbox (done, failed or gone)."""
    if path is None:
        return
    name = final_name(path).name
    if not (inbox / name).exists() and not (inbox / (name + PART)).exists():
        try:
            (inbox / STREAMS / name).rmdir()
        except OSError:
            pass


def _refuse_outside_roots(path: Path, inbox: Path) -> bool:
    """When the station's roots are in force, move a file that resolves outside them (a symlink out of the
    inbox) to ``failed/`` unread, with its reason; True when it was refused."""
    try:
        checked("inbox file", path, "pass")
    except PathNotAllowed as exc:
        try:
            dest = _move(path, inbox / FAILED)
        except FileNotFoundError:  # claimed or refused by another watcher meanwhile
            return True
        write_text_atomic(dest.with_name(dest.name + ".error.txt"), f"{type(exc).__name__}: {exc}\n")
        _logger().error("Inbox: %s refused, nothing read (%s); moved to %s", path.name, exc, dest.parent)
        return True
    return False


def _process_one(path: Path, inbox: Path, products: Path, options: ProcessOptions | None, runs,
                 stale_after_s: float | None = None) -> dict:
    """Process (or apply, a supplement) the claimed pass ``path`` the way ``runs`` says (:class:`_SubflowRuns`:
    a sweep's subflow; :class:`_OwnRun`: the pass's own run), then move it to ``done/`` or ``failed/``."""
    log = get_run_logger()
    if is_supplement(path, products):
        return _apply_supplement(path, inbox, products, runs)
    try:
        summary = runs.process(path, products, options)
    except GSPError as exc:
        dest = _move(final_name(path) if final_name(path).exists() else path, inbox / FAILED)
        write_text_atomic(dest.with_name(dest.name + ".error.txt"), f"{type(exc).__name__}: {exc}\n")
        log.error("Inbox: %s could not be processed (%s); moved to %s", path.name, exc, dest.parent)
        return {"pass": path.name, "status": "failed", "error": str(exc), "moved_to": str(dest)}
    except Exception as exc:  # noqa: BLE001 - left in processing/: the next sweep resumes it
        log.error("Inbox: processing %s stopped (%s: %s); it stays in processing/ and the next sweep resumes it",
                  path.name, type(exc).__name__, exc)
        if not runs.keep_going:
            raise
        return {"pass": path.name, "status": "interrupted", "error": f"{type(exc).__name__}: {exc}"}
    done_path = final_name(path) if final_name(path).exists() else path  # a stream: renamed by its writer
    if done_path.name.endswith(PART) and (stale_after_s is None or time.time() - done_path.stat().st_mtime
                                          < stale_after_s):
        # ended by its trailer: the writer renames it next; the claim stays and a later sweep moves it
        log.info("Inbox: %s -> %s (%d of %d tiles); left in the inbox until its writer renames it",
                 final_name(path).name, summary["product"], summary["tiles_ok"], summary["tiles_total"])
        return {"pass": final_name(path).name, "status": "done", "product": summary["product"],
                "report": summary["report"], "tiles_lost": summary["tiles_lost"], "exit_code": summary["exit_code"],
                "already_complete": summary["status"] == "already-complete", "moved_to": None}
    dest = _move(done_path, inbox / DONE)
    log.info("Inbox: %s -> %s (%d of %d tiles); moved to %s", done_path.name, summary["product"],
             summary["tiles_ok"], summary["tiles_total"], dest.parent)
    return {"pass": done_path.name, "status": "done", "product": summary["product"], "report": summary["report"],
            "tiles_lost": summary["tiles_lost"], "exit_code": summary["exit_code"],
            "already_complete": summary["status"] == "already-complete", "moved_to": str(dest)}


def _apply_supplement(path: Path, inbox: Path, products: Path, runs) -> dict:
    """Resent tiles of a pass that has a product here: complete that product (flows/supplement.py) with the
    product's own options; refused (unknown pass, duplicate, other codec...) -> ``failed/`` with the reason."""
    log = get_run_logger()
    try:
        done = runs.supplement(path, products)
    except GSPError as exc:
        dest = _move(path, inbox / FAILED)
        write_text_atomic(dest.with_name(dest.name + ".error.txt"), f"{type(exc).__name__}: {exc}\n")
        log.error("Inbox: supplement %s refused (%s); moved to %s", path.name, exc, dest.parent)
        return {"pass": path.name, "status": "failed", "supplement": True, "error": str(exc),
                "moved_to": str(dest)}
    except Exception as exc:  # noqa: BLE001 - left in processing/: the next sweep applies it again
        log.error("Inbox: applying supplement %s stopped (%s: %s); it stays in processing/ and the next sweep "
                  "applies it again", path.name, type(exc).__name__, exc)
        if not runs.keep_going:
            raise
        return {"pass": path.name, "status": "interrupted", "supplement": True,
                "error": f"{type(exc).__name__}: {exc}"}
    dest = _move(path, inbox / DONE)
    for s in done:
        log.info("Inbox: supplement %s -> %s (%d of %d tiles now); moved to %s", path.name, s["product"],
                 s["tiles_ok"], s["tiles_total"], dest.parent)
    return {"pass": path.name, "status": "done", "supplement": True, "product": done[0]["product"],
            "products": [s["product"] for s in done], "report": done[0]["report"],
            "tiles_lost": max(s["tiles_lost"] for s in done), "exit_code": max(s["exit_code"] for s in done),
            "already_complete": False, "moved_to": str(dest)}


@flow(name="watch-inbox", validate_parameters=False, flow_run_name=inbox_run_name)
def watch_inbox(inbox: InboxDir | None = None, products: ProductsDir | None = None,
                options: ProcessOptions | None = None, dask_address: str | None = None,
                settle_s: Annotated[float, Field(ge=0)] = 2.0,
                stale_after_s: Annotated[float | None, Field(gt=0)] = 3600.0) -> list[dict]:
    """Process every complete new pass in ``inbox`` once (see the module docstring), products in ``products``.

    ``inbox`` / ``products`` default to the station's roots, ``options`` to the model defaults with the
    station's pixel synthesis; from a deployment they must lie under the station's roots (``flows.access``),
    and so must every file the sweep picks up (a symlink out of the inbox is moved to ``failed/`` unread).

    Args:
        inbox: the folder passes arrive in, under the inbox root (default: that root)
        products: products folder, under the products root (default: that root)
        options: what to do with each pass (default: the station's options)
        dask_address: scheduler of an existing Dask cluster (default: a LocalCluster per pass)
        settle_s: a pass must be unchanged this many seconds before it is touched
        stale_after_s: process a pass without end-of-pass trailer once unchanged this long (None: never)
    """
    return run_checked(watch_inbox, dict(locals()), _watch)


def _watch(inbox, products, options, dask_address, settle_s, stale_after_s) -> list[dict]:
    """The body of :func:`watch_inbox`, its parameters validated."""
    roots = load_station().roots
    inbox, products = inbox or roots.inbox, products or roots.products
    options = options or station_options()
    results = sweep_inbox(inbox, products, options, dask_address=dask_address, settle_s=settle_s,
                          stale_after_s=stale_after_s)
    get_run_logger().info("Inbox sweep: %d passes processed, %d failed, %d interrupted",
                          sum(r["status"] == "done" for r in results), sum(r["status"] == "failed" for r in results),
                          sum(r["status"] == "interrupted" for r in results))
    return results


def run_sweep(inbox: str | Path | None, products: str | Path | None, options: ProcessOptions | None = None,
              **kwargs) -> list[dict]:
    """One watcher sweep without a deployment (``gsp serve --once``); None: the station's roots."""
    with prefect_api():
        return watch_inbox(inbox and str(inbox), products and str(products), options, **kwargs)


#: How often gsp serve's trigger looks again at an inbox where only passes that stopped short wait (a file
#: that lands, or grows under a new name, is looked at at once).
STALLED_RECHECK_S = 30.0


class InboxTrigger:
    """``gsp serve``'s eyes on the inbox: a daemon thread lists it every ``poll_s`` seconds (a ``stat`` of one
    folder: no load) and emits the Prefect event ``gsp.inbox.arrived`` naming what landed.

    With ``dispatch`` (``gsp serve``): when a file lands, and every ``recheck_s`` (default ``poll_s``) while
    files wait in the inbox (settling, a header still arriving; every 30 s where only passes that stopped short
    wait), it claims what is ready (:func:`claim_new`) and calls ``dispatch(path)`` under each claimed pass's
    lock, which starts that pass's own process-pass run (:func:`dispatch_claimed`): one run per pass, listed
    under that deployment; at its start, a pass left claimed from before whose run is gone gets a new run (it
    resumes from the product's done markers). It calls ``sweep(names)`` (a watch-inbox run, whose log and
    event say until when it waits) when a pass stops short. Without ``dispatch``: ``sweep`` on everything new,
    and at its start when the inbox holds anything. The interval sweep stays the safety net;
    two at once are safe (exactly once, see the module docstring)."""

    def __init__(self, inbox: str | Path, sweep, *, poll_s: float = 0.5, station: str = "", dispatch=None,
                 settle_s: float = 2.0, stale_after_s: float | None = 3600.0, recheck_s: float | None = None,
                 products: str | Path | None = None, options: ProcessOptions | None = None) -> None:
        import contextvars
        import threading

        self.inbox, self.sweep, self.poll_s, self.station = Path(inbox), sweep, poll_s, station
        # every poll while files wait (a claim that finds nothing reads a few headers): a pass is claimed within
        # poll_s of settling
        self.dispatch, self.settle_s, self.stale_after_s = dispatch, settle_s, stale_after_s
        self.recheck_s = poll_s if recheck_s is None else recheck_s
        self.products, self.options = products, options
        self._stop = threading.Event()
        # what is there when the station starts counts as new (passes that landed while it was down, passes it
        # had claimed when it stopped): taken at once instead of at the first scheduled sweep
        self._seen: set[str] = set()
        self._left = {f"{PROCESSING}/{n}" for n in self._listing(self.inbox / PROCESSING)} | {
            f"{STREAMS}/{n}" for n in self._listing(self.inbox / STREAMS, dirs=True)}
        self._next_check = 0.0
        self._stalled: set[str] = set()
        # the creator's Prefect settings (the API URL gsp serve uses) hold in the thread; without them a sweep
        # and the event would go to an ephemeral API of the thread's own
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._loop,),
                                       name="gsp-inbox-trigger", daemon=True)

    def _names(self) -> set[str]:
        return {n for n in self._listing(self.inbox)
                if not n.startswith(".") and not n.endswith((".tmp", ".error.txt"))}

    @staticmethod
    def _listing(folder: Path, dirs: bool = False) -> set[str]:
        try:
            return {e.name for e in os.scandir(folder) if (e.is_dir() if dirs else e.is_file())}
        except OSError:
            return set()

    def start(self) -> "InboxTrigger":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            names = self._names()
            new = sorted((names - self._seen) | self._left)
            left, self._seen, self._left = sorted(self._left), names, set()
            if self.dispatch is None:
                if new:
                    self._call(self.sweep, new)
            else:
                if left:  # claims left from before: each whose run is gone gets a run of its own again
                    self._call(self._resume, left)
                now = time.monotonic()
                if set(new) - set(left) or (names and now >= self._next_check):
                    self._next_check = now + self.recheck_s
                    self._call(self._claim, new)
            if new:
                self._emit(new)

    def _resume(self, left: list[str]) -> None:
        """At start: every claim left from before whose run is gone is taken again (:meth:`_retake`)."""
        for path, streaming in claimed_passes(self.inbox):
            self._retake(path, streaming)

    def _finish_streams(self) -> None:
        """Passes processed while they arrived that their writer has renamed since (:meth:`_retake`)."""
        for path, streaming in claimed_passes(self.inbox):
            if streaming and path.exists():
                self._retake(path, streaming)

    def _retake(self, path: Path, streaming: bool) -> None:
        """A claimed pass that no run is on (its lock free, no run of its own still to start): a stream whose
        writer renamed it after its run completed the product (the run ended at the end-of-pass trailer) is
        moved to ``done/`` here, without a run; any other gets a run again (it resumes from the product's done
        markers)."""
        lock = _locked(self.inbox, path.name)
        if lock is None:
            return  # its run (or another watcher) is on it, and moves the pass at its end
        try:
            source = _stream_source(path, self.inbox) if streaming else path
            if source is None or not source.exists() or dispatched_run(self.inbox, path.name):
                return
            if streaming and source == path and self.products is not None and _stream_finished(
                    path, self.inbox, Path(self.products), self.options, self.stale_after_s) is not None:
                _release_stream(self.inbox, path)
                return
            _logger().info("Inbox: %s is claimed but no run is on it: a run resumes it", path.name)
            dispatch_claimed(source, self.inbox, self.dispatch)
        finally:
            lock.release()

    def _claim(self, new: list[str]) -> None:
        self._finish_streams()
        _, waiting = claim_new(self.inbox, self.settle_s, self.stale_after_s,
                               lambda path: dispatch_claimed(path, self.inbox, self.dispatch))
        stalled = {name for name, why in waiting.items() if getattr(why, "said", False)}
        if waiting and len(stalled) == len(waiting):  # only stalled or unreadable files wait: no hurry to look again
            self._next_check = time.monotonic() + STALLED_RECHECK_S
        if stalled - self._stalled:  # stopped short, or no pass: a sweep says until when it waits (log, console)
            self.sweep(sorted(stalled - self._stalled))
        self._stalled = stalled

    def _call(self, action, names: list[str]) -> None:
        import logging

        try:
            action(names)
        except Exception as exc:  # noqa: BLE001 - the interval sweep is the safety net
            logging.getLogger(__name__).warning(
                "Inbox: %s arrived but could not be taken now (%s: %s); the next scheduled sweep takes it",
                ", ".join(names), type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")

    def _emit(self, new: list[str]) -> None:
        import logging

        if os.environ.get("PREFECT_API_URL"):  # a station's server: the event shows in its event feed
            try:
                from prefect.events import emit_event

                emit_event("gsp.inbox.arrived", resource={"prefect.resource.id": f"gsp.inbox.{self.station}",
                                                          "gsp.station": self.station}, payload={"files": new})
            except Exception as exc:  # noqa: BLE001 - an event is a courtesy
                logging.getLogger(__name__).debug("inbox event not sent: %s", exc)
