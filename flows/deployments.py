"""Every job of the station as a Prefect deployment, so operators start, watch and rerun them from the UI.

================== ========================================= ================================================
deployment         flow (entrypoint)                         runs
================== ========================================= ================================================
process-pass/NAME  ``flows/deployments.py:process_pass_job`` one pass -> a product (the Run button; automations;
                                                             ``gsp serve``: each pass that lands in the inbox)
reprocess-archive/ ``flows/reprocess.py:reprocess_archive``  new product versions for an archive
NAME
watch-inbox/NAME   ``flows/inbox.py:watch_inbox``            a sweep of the inbox (each pass a subflow), every
                                                             ``interval`` s: the safety net; when a pass stops
                                                             short: says until when it waits
apply-supplement/  ``flows/deployments.py:apply_supplement_  resent tiles of a pass into its product
NAME               job``
================== ========================================= ================================================

``NAME`` is the station's name (``station`` in the station file), so several stations can share one server.
``gsp serve`` serves all of them from one process (:func:`serve_station`); ``prefect.yaml`` at the repository
root declares the same four for ``prefect deploy`` onto a process work pool.

Parameters are typed (pydantic: :class:`flows.options.ProcessOptions` and the root-checked path types of
:mod:`flows.access`), so the UI's run form validates what an operator types, and every deployment's flow
validates them first (:func:`flows.access.run_checked`): a run whose parameter breaks a rule (a path outside
the station's roots, an unknown option) is refused before it does anything, in one line naming the parameter
and the rule, under a run name that names what it was given (``refused: p.gsp``). Defaults come from the station file
(roots, pixel synthesis) and the model registry (its default enhancer; the temperature and strength stay unset, which mean
the operating point the registry records for the enhancer's rate point).

Training, evaluation and export (train-codec, train-enhancer, evaluate, export-product) are flows of the
application layer (:mod:`gsp.jobs`), which this layer must not import: ``gsp serve`` builds their deployments there
and passes them to :func:`serve_station` (``extra_deployments``), and ``prefect.yaml`` declares them with
entrypoints under ``gsp/``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from prefect import flow

from groundstation.config import load_station
from groundstation.errors import GSPError
from groundstation.roots import StationRoots

from .access import PassFile, ProductsDir, run_checked
from .cluster import LOCAL_WORKERS, STATION_CLUSTER_ENV, make_task_runner, prepare_workers, station_cluster
from .cluster import dask_address as cluster_address
from .events import ProductConsole
from .inbox import InboxTrigger
from .names import pass_run_name, supplement_run_name
from .options import ProcessOptions, station_options
from .process_pass import process_pass

__all__ = ["JOBS", "process_pass_job", "serve_station", "station_deployments"]

#: deployment (flow) name -> entrypoint, as ``prefect.yaml`` names them (file path : flow object).
JOBS = {
    "process-pass": "flows/deployments.py:process_pass_job",
    "reprocess-archive": "flows/reprocess.py:reprocess_archive",
    "watch-inbox": "flows/inbox.py:watch_inbox",
    "apply-supplement": "flows/deployments.py:apply_supplement_job",
}


@flow(name=process_pass.name, task_runner=make_task_runner(station_cluster()), validate_parameters=False,
      flow_run_name=pass_run_name,
      description="Decode, enhance and evaluate one pass into a versioned product (paths under the station's roots).")
def process_pass_job(pass_path: PassFile, out_dir: ProductsDir | None = None,
                     options: ProcessOptions | None = None) -> dict:
    """``process-pass`` as a deployment runs it: the same flow (one run, the same name, artifacts and events),
    with its paths checked against the station's roots before the run starts, and the station's options when
    none are given.

    Args:
        pass_path: the pass container to process, a file under the station's inbox or archive root
        out_dir: products folder, under the station's products root (default: the products root)
        options: what to do with the pass (default: the station's options)
    """
    return run_checked(process_pass_job, {"pass_path": pass_path, "out_dir": out_dir, "options": options},
                       _process_pass_job)


def _process_pass_job(pass_path: str, out_dir: str | None, options: ProcessOptions | None) -> dict:
    """The body of :func:`process_pass_job`. A pass claimed in an inbox (``gsp serve`` started this run for
    it) is processed as the watcher would, under the pass's lock, and moved to ``done/`` or ``failed/``."""
    from .inbox import inbox_claim, process_claimed

    products, options = out_dir or load_station().roots.products, options or station_options()
    if inbox_claim(pass_path) is not None:
        return process_claimed(pass_path, products, options)
    return process_pass.fn(pass_path, products, options)


@flow(name="apply-supplement", task_runner=make_task_runner(station_cluster()), validate_parameters=False,
      flow_run_name=supplement_run_name,
      description="Apply a retransmitted supplement (resent tiles of a pass) to its product(s): decode those "
      "tiles, re-enhance the windows they touch, deliver, mark complete.")
def apply_supplement_job(supplement_path: PassFile, products: ProductsDir | None = None) -> list[dict]:
    """``apply-supplement`` as a deployment runs it (the watcher applies supplements by itself; this is for a
    supplement an operator points at): paths checked against the station's roots before the run starts.

    Args:
        supplement_path: the supplement (resent tiles of a pass), a file under the station's inbox or archive root
        products: products folder holding the pass's product, under the products root (default: that root)
    """
    from .supplement import apply_supplement

    return run_checked(apply_supplement_job, {"supplement_path": supplement_path, "products": products},
                       lambda supplement_path, products: apply_supplement.fn(
                           supplement_path, products or load_station().roots.products))


def _default_options(options: ProcessOptions | None) -> ProcessOptions:
    """The options a deployment offers in its run form: the ones given, else the station's, with the registry's
    default enhancer named when none is (the same model, but the form shows which one runs)."""
    from groundstation.registry import load_registry

    options = options or station_options()
    if options.enhance and options.enhancer is None:
        try:
            options = options.model_copy(update={"enhancer": load_registry().default_enhancer})
        except GSPError:
            pass
    return options


def station_deployments(*, name: str | None = None, inbox: str | Path | None = None,
                        products: str | Path | None = None, archive: str | Path | None = None,
                        options: ProcessOptions | None = None, interval: float = 60.0,
                        dask_address: str | None = None, settle_s: float = 2.0,
                        stale_after_s: float | None = 3600.0) -> list:
    """The station's deployments (``RunnerDeployment``: process-pass, reprocess-archive, watch-inbox with an
    interval schedule as the safety net, apply-supplement). Folders default to the station's roots; folders given
    must lie under them (the runs these deployments start are held to the roots), or a PathNotAllowed says so."""
    from prefect.types.entrypoint import EntrypointType

    from .inbox import watch_inbox
    from .reprocess import reprocess_archive

    station = load_station()
    roots = StationRoots.from_config(station.roots)
    folders = {"inbox": inbox or station.roots.inbox, "products": products or station.roots.products,
               "archive": archive or station.roots.archive}
    folders = {k: str(roots.check(f"--{k}", Path(v).resolve(), k)) for k, v in folders.items()}
    opts = _default_options(options).model_dump()
    name = name or station.station
    tags = ["gsp", f"station:{station.station}"]
    common = dict(name=name, tags=tags, entrypoint_type=EntrypointType.MODULE_PATH)
    return [
        process_pass_job.to_deployment(
            parameters={"out_dir": folders["products"], "options": opts},
            description=f"Process one pass (a file under {folders['inbox']} or {folders['archive']}) into "
            f"{folders['products']}", **common),
        reprocess_archive.to_deployment(
            parameters={"archive": folders["archive"], "products": folders["products"], "options": opts,
                        "dask_address": dask_address},
            description=f"New product versions for the passes under {folders['archive']}", **common),
        watch_inbox.to_deployment(
            interval=interval,  # the safety net: gsp serve takes each pass as soon as it lands (InboxTrigger)
            parameters={"inbox": folders["inbox"], "products": folders["products"], "options": opts,
                        "dask_address": dask_address, "settle_s": settle_s, "stale_after_s": stale_after_s},
            description=f"Process complete passes arriving in {folders['inbox']}", **common),
        apply_supplement_job.to_deployment(
            parameters={"products": folders["products"]},
            description=f"Apply a supplement (resent tiles, a file under {folders['inbox']} or "
            f"{folders['archive']}) to its product in {folders['products']}", **common),
    ]


#: The signals that stop ``gsp serve`` cleanly (Ctrl-C in its terminal; ``systemctl stop``, ``docker stop``, ``kill``).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: How long Prefect's runner lets a cancelled run's process stop before it kills it (its fixed grace period).
CANCEL_GRACE_S = 30
#: How often ``gsp serve`` asks the server for runs to start (Prefect's runner default is 10 s: a run started
#: from the UI's Run button, or a triggered sweep, would wait up to that long before it starts). The query is
#: small; PREFECT_RUNNER_POLL_FREQUENCY, where set, is used instead.
SERVE_POLL_S = 2.0


def serve_station(*, limit: int = 2, host: str = "127.0.0.1", extra_deployments: Sequence = (), say=None,
                  workers: int = LOCAL_WORKERS, **kwargs) -> str | None:
    """Serve :func:`station_deployments`, and the caller's ``extra_deployments`` (``RunnerDeployment``s: ``gsp
    serve`` passes training and evaluation, :func:`gsp.jobs.job_deployments`), from this process until SIGINT
    (Ctrl-C) or SIGTERM (``gsp serve``); returns the signal's name.

    With ``PREFECT_API_URL`` set the deployments, runs, logs, artifacts and events are on that server (its UI);
    without it a local ``prefect server start`` on ``host`` (127.0.0.1 unless told otherwise; a free port, UI
    included) runs as long as this command: Prefect's ephemeral API has no scheduler. ``pause_on_shutdown`` is
    off: a station restarts ``gsp serve`` (systemd, a container) and its inbox schedule must keep running. At
    most ``limit`` runs at a time (sweeps: one at a time, the deployment's own limit). The runs share the
    station's Dask cluster: ``dask_address``, or a LocalCluster of ``workers`` processes that lives as long as
    this command, so a pass finds the task modules imported and its models loaded in every worker (a
    cold LocalCluster costs a 1-tile pass about 14 s: starting, importing, loading); ``workers`` 0: each run
    starts and stops a LocalCluster of its own. ``say`` (default: print) writes the console's lines: what is
    served, one line per pass (:class:`flows.events.ProductConsole`), the stop.

    **Stopping.** SIGINT or SIGTERM: no new runs; the runs in progress are cancelled (each run's process is
    asked to stop and closes its Dask cluster if it started one, or is killed after :data:`CANCEL_GRACE_S`; a
    pass it was processing stays claimed in the inbox and the next start resumes it from its done markers); then
    the inbox trigger, the console, the station's LocalCluster and the local server stop, and one final line says
    so. Ctrl-C in a terminal reaches every process of the
    terminal's process group, the runs' processes and their Dask workers included, which would each die in the
    middle with a traceback: this process blocks SIGINT before it starts any of them, so they inherit it blocked
    and only this process (a thread waiting for it) acts on it; it takes SIGINT also where the shell that
    started it in the background set it to be ignored. A third signal stops this process at once.
    """
    import prefect  # noqa: F401 - its settings first
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from .runtime import announce_server, local_prefect_server

    console = sys.stdout
    say = say or (lambda line: print(line, file=console, flush=True))
    station = load_station()
    inbox, products = kwargs.get("inbox"), kwargs.get("products")
    for flag, given, root in (("--inbox", inbox, station.roots.inbox), ("--products", products, station.roots.products)):
        if given is not None and not Path(given).is_dir():
            raise GSPError(f"{flag} {given}: no such folder")
        if given is None:
            Path(root).mkdir(parents=True, exist_ok=True)  # the station's own folders: created on first start
    # folders outside the roots fail here, before anything starts
    deployments = [*station_deployments(**kwargs), *extra_deployments]
    name = kwargs.get("name") or station.station
    if workers < 0:
        raise GSPError(f"--workers {workers}: must be >= 0 (0: a Dask LocalCluster per run)")
    if kwargs.get("dask_address"):  # the station's cluster: every run started from here uses it (the UI's too)
        prepare_workers(kwargs["dask_address"])
        os.environ[STATION_CLUSTER_ENV] = kwargs["dask_address"]
    stop = _StopSignals()
    runs_output = _RunsOutput(Path(station.roots.home) / STOPPED_RUNS_LOG)
    try:
        with stop, runs_output, contextlib.ExitStack() as stack:
            url = PREFECT_API_URL.value()
            if not url:  # the ephemeral API runs no scheduler: an interval schedule needs a real server
                url = stack.enter_context(local_prefect_server(host=host))
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
            os.environ["PREFECT_API_URL"] = url  # the runs the runner starts are subprocesses
            stack.enter_context(announce_server(url))  # gsp process uses this server while it runs
            if not kwargs.get("dask_address") and workers:  # started after the API is set: workers report to it
                address = stack.enter_context(cluster_address(None, workers))
                os.environ[STATION_CLUSTER_ENV] = address
                stack.callback(os.environ.pop, STATION_CLUSTER_ENV, None)
                deployments = [*station_deployments(**{**kwargs, "dask_address": address}), *extra_deployments]
                say(f"gsp serve: Dask cluster at {address}: {workers} worker processes, kept while this command "
                    "runs (a pass finds its models loaded)")
            stack.callback(ProductConsole(station.station, say).start().stop)

            def registered() -> None:  # the deployments exist: a pass landing now gets its run
                # a pass that lands is claimed at once and gets its own process-pass run
                stack.callback(InboxTrigger(inbox or station.roots.inbox, lambda files: _start_sweep(name),
                                            station=name, dispatch=lambda path: _start_pass(name, path),
                                            settle_s=kwargs.get("settle_s", 2.0),
                                            stale_after_s=kwargs.get("stale_after_s", 3600.0),
                                            products=products or station.roots.products,
                                            options=_default_options(kwargs.get("options"))).start().stop)
                say(f"gsp serve: station {name}: {len(deployments)} deployments ("
                    + ", ".join(d.flow_name for d in deployments) + f"), at most {limit} runs at a time; UI "
                    f"{url.removesuffix('/api')}/deployments; Ctrl-C or SIGTERM stops it")

            _serve_until_stopped(deployments, limit, say, stop, registered, runs_output.divert)
    except _Stopped:  # a stop signal before the runner had started: what had started is stopped
        pass
    said = f"; what the cancelled runs printed while they stopped: {runs_output.path}" if runs_output.written else ""
    say(f"gsp serve: stopped ({stop.first or 'the runner ended'}); station {name} takes no runs until the next "
        f"`gsp serve`{said}")
    return stop.first


#: In the station's home folder: what the runs that ``gsp serve`` cancelled printed while they stopped.
STOPPED_RUNS_LOG = "serve-stopped-runs.log"


class _RunsOutput:
    """The console output of the served runs. Prefect's runner copies each run process's stdout and stderr to
    the ``sys.stdout`` / ``sys.stderr`` objects it finds when it starts the run; inside this context those are
    two of these streams, which write to the console until :meth:`divert` (the stop has begun) and from then on
    to ``path`` (appended; ``written`` says whether anything came): runs cancelled in the middle (a Dask cluster
    closed under running tasks) do not fill the console with their last words. Their logs are in the UI too."""

    class _Stream:
        def __init__(self, owner: "_RunsOutput", stream) -> None:
            self._owner, self._stream = owner, stream

        def write(self, text: str) -> int:
            return (self._owner.target() or self._stream).write(text) if text else 0

        def flush(self) -> None:
            (self._owner.file or self._stream).flush()

        def __getattr__(self, name: str):
            return getattr(self._stream, name)

    def __init__(self, path: Path) -> None:
        self.path, self.file, self.diverted, self.written = path, None, False, False

    def __enter__(self) -> "_RunsOutput":
        self._saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self._Stream(self, sys.stdout), self._Stream(self, sys.stderr)
        return self

    def divert(self) -> None:
        self.diverted = True

    def target(self):
        """The file once diverted (opened at the first write, with a header line), else None: the console."""
        import time

        if not self.diverted:
            return None
        if self.file is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(self.path, "a", encoding="utf-8")
            except OSError:
                return None
            self.file.write(f"---- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} gsp serve (pid {os.getpid()}) stops its "
                            "runs; what they printed from then on:\n")
        self.written = True
        return self.file

    def __exit__(self, *exc) -> None:
        sys.stdout, sys.stderr = self._saved
        if self.file is not None:
            self.file.close()


class _Stopped(BaseException):
    """A stop signal arrived before the runner started (unwinds what had started)."""


class _StopSignals:
    """SIGINT and SIGTERM for ``gsp serve`` (see :func:`serve_station`, "Stopping"), as a context. SIGINT is
    blocked (before any thread or process is started, so all of them inherit the mask) and waited for by a
    thread; SIGTERM gets a handler. Until :meth:`attach` names a callback (the runner has started), a signal
    raises :class:`_Stopped` in the main thread; after, it calls ``callback(name, count)``. ``first``: the first
    signal's name; ``count``: how many came."""

    def __init__(self) -> None:
        import threading

        self.first: str | None = None
        self.count = 0
        self._callback = None
        self._lock = threading.Lock()

    def __enter__(self) -> "_StopSignals":
        import threading
        from multiprocessing import resource_tracker

        # multiprocessing's resource tracker unblocks SIGINT in the thread that first starts it: started now
        resource_tracker.ensure_running()
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        self._forwarding = self._closed = False
        self._before = {signal.SIGINT: signal.signal(signal.SIGINT, self.on_signal),
                        signal.SIGTERM: signal.signal(signal.SIGTERM, self.on_signal)}
        self._thread = threading.Thread(target=self._wait_sigint, name="gsp-serve-sigint", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closed = True
        signal.pthread_kill(self._thread.ident, signal.SIGINT)  # ends the waiting thread
        self._thread.join(timeout=5)
        for sig, handler in self._before.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)

    def _wait_sigint(self) -> None:
        import _thread

        while True:
            signal.sigwait({signal.SIGINT})
            if self._closed:
                return
            if not self._got("SIGINT"):  # before the runner: unwind the main thread where it is
                self._forwarding = True
                _thread.interrupt_main(signal.SIGINT)

    def on_signal(self, signum, frame) -> None:
        """The handler of SIGTERM, and of SIGINT forwarded by the waiting thread (or delivered to the main
        thread where something unblocked it)."""
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self._forwarding:
            self._forwarding = False
            raise _Stopped(name)
        if not self._got(name):
            raise _Stopped(name)

    def _got(self, name: str) -> bool:
        """Count the signal and call the callback; False when there is none yet."""
        with self._lock:
            self.count += 1
            self.first = self.first or name
            callback, count = self._callback, self.count
        if callback is None:
            return False
        callback(name, count)
        return True

    def attach(self, callback) -> None:
        """From now on a signal calls ``callback(name, count)`` (from the waiting thread or a handler)."""
        with self._lock:
            self._callback = callback

    def detach(self) -> None:
        """Signals from now on are counted only (the stop is under way: nothing is interrupted)."""
        self.attach(lambda name, count: None)


def serve_poll_seconds() -> float:
    """How often the runner looks for runs to start and runs to cancel: PREFECT_RUNNER_POLL_FREQUENCY where the
    operator set it, else :data:`SERVE_POLL_S`."""
    return float(os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY") or SERVE_POLL_S)


def _serve_until_stopped(deployments: Sequence, limit: int, say, stop: _StopSignals, registered,
                         on_stopping) -> None:
    """Serve ``deployments`` with a Prefect ``Runner`` (as ``prefect.serve`` does; ``registered()`` is called
    once they exist on the server) until ``stop`` sees a signal; then ``on_stopping()`` is called, the runner stops
    taking runs and cancels the runs in progress (their state says "Runner is shutting down."), waiting for each
    run's process to end. A third signal stops at once."""
    import asyncio
    from datetime import datetime, timezone

    from prefect.runner import Runner

    since = datetime.now(timezone.utc)
    runner = Runner(pause_on_shutdown=False, limit=limit, query_seconds=serve_poll_seconds())
    for deployment in deployments:
        runner.add_deployment(deployment)  # registered on the server now
    registered()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        running = asyncio.ensure_future(runner.start())
        await asyncio.sleep(0)  # runner.start() has installed its own SIGTERM handler: ours is put back
        signal.signal(signal.SIGTERM, stop.on_signal)

        def on_signal(name: str, count: int) -> None:
            if count == 1:
                stopping.set()
            elif count == 2:
                say(f"gsp serve: {name} again: already stopping (a run gets {CANCEL_GRACE_S} s to stop, then it is "
                    "killed); a third signal stops this process at once, leaving runs that have not stopped")
            else:
                running.cancel()

        stop.attach(lambda name, count: loop.call_soon_threadsafe(on_signal, name, count))

        async def stopper() -> None:
            await stopping.wait()
            while not runner.started and not running.done():  # still registering: let it finish first
                await asyncio.sleep(0.2)
            if running.done():
                return
            in_progress = await _runs_in_progress(deployments, since)
            say(f"gsp serve: {stop.first}: stopping; no new runs"
                + (f"; cancelling {len(in_progress)} run(s) in progress: " + ", ".join(in_progress)
                   + " (a pass being processed stays claimed in the inbox: the next start resumes it)"
                   if in_progress else ""))
            try:
                on_stopping()
            finally:
                await runner.astop()

        watcher = asyncio.ensure_future(stopper())
        try:
            await running
        except asyncio.CancelledError:
            if stop.count < 3:
                raise
        finally:
            stop.detach()
            watcher.cancel()

    asyncio.run(serve())


async def _runs_in_progress(deployments: Sequence, since) -> list[str]:
    """Names of the runs of ``deployments`` (by their name: the station's) that are pending or running now and
    started after ``since`` (not a run a killed ``gsp serve`` left running; best effort: [] on any error)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterName, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType

    try:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(
                    any_=sorted({d.name for d in deployments}))),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                    any_=[StateType.RUNNING, StateType.PENDING]))))
        return [f"'{r.name}'" for r in runs if r.start_time is None or r.start_time >= since]
    except Exception:  # noqa: BLE001 - the list is a courtesy; stopping goes on
        return []


def _start_sweep(name: str) -> None:
    """A run of the station's watch-inbox deployment, now (not waiting for it)."""
    from prefect.deployments import run_deployment

    run_deployment(f"watch-inbox/{name}", timeout=0)


def _start_pass(name: str, path: Path) -> str:
    """A run of the station's process-pass deployment for the claimed pass ``path``, now (not waiting for it);
    its id."""
    from prefect.deployments import run_deployment

    return str(run_deployment(f"process-pass/{name}", parameters={"pass_path": str(path)}, timeout=0).id)
