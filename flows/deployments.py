"""Every job of the station as a Prefect deployment, so operators start, watch and rerun them from the UI.

================== ========================================= ================================================
deployment         flow (entrypoint)                         runs
================== ========================================= ================================================
process-pass/NAME  ``flows/deployments.py:process_pass_job`` one pass -> a product (the Run button; automations)
reprocess-archive/ ``flows/reprocess.py:reprocess_archive``  new product versions for an archive
NAME
watch-inbox/NAME   ``flows/inbox.py:watch_inbox``            new passes in the inbox, while they arrive: a run
                                                             as soon as a file lands, and every ``interval`` s
apply-supplement/  ``flows/deployments.py:apply_supplement_  resent tiles of a pass into its product
NAME               job``
================== ========================================= ================================================

``NAME`` is the station's name (``station`` in the station file), so several stations can share one server.
``gsp serve`` serves all of them from one process (:func:`serve_station`); ``prefect.yaml`` at the repository
root declares the same four for ``prefect deploy`` onto a process work pool.

Parameters are typed (pydantic: :class:`flows.options.ProcessOptions` and the root-checked path types of
:mod:`flows.access`), so the UI's run form validates what an operator types, and a run from a deployment is
refused before it starts when a path lies outside the station's roots. Defaults come from the station file
(roots, pixel synthesis) and the model registry (its default enhancer; the temperature stays unset, which means
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
from collections.abc import Sequence
from pathlib import Path

from prefect import flow

from groundstation.config import load_station
from groundstation.errors import GSPError
from groundstation.roots import StationRoots

from .access import PassFile, ProductsDir, validated_or_refused
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


@flow(name=process_pass.name, task_runner=process_pass.task_runner, validate_parameters=False,
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
    params, refused = validated_or_refused(process_pass_job, {"pass_path": pass_path, "out_dir": out_dir,
                                                              "options": options})
    if refused:
        return refused
    out = params["out_dir"] or load_station().roots.products
    return process_pass.fn(params["pass_path"], out, params["options"] or station_options())


@flow(name="apply-supplement", task_runner=process_pass.task_runner, validate_parameters=False,
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

    params, refused = validated_or_refused(apply_supplement_job, {"supplement_path": supplement_path,
                                                                  "products": products})
    if refused:
        return refused
    return apply_supplement.fn(params["supplement_path"], params["products"] or load_station().roots.products)


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
            interval=interval,  # the safety net: gsp serve starts a sweep as soon as a file lands (InboxTrigger)
            parameters={"inbox": folders["inbox"], "products": folders["products"], "options": opts,
                        "dask_address": dask_address, "settle_s": settle_s, "stale_after_s": stale_after_s},
            description=f"Process complete passes arriving in {folders['inbox']}", **common),
        apply_supplement_job.to_deployment(
            parameters={"products": folders["products"]},
            description=f"Apply a supplement (resent tiles, a file under {folders['inbox']} or "
            f"{folders['archive']}) to its product in {folders['products']}", **common),
    ]


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def serve_station(*, limit: int = 2, host: str = "127.0.0.1", extra_deployments: Sequence = (), **kwargs) -> None:
    """Serve :func:`station_deployments`, and the caller's ``extra_deployments`` (``RunnerDeployment``s: ``gsp
    serve`` passes training and evaluation, :func:`gsp.jobs.job_deployments`), from this process until
    interrupted (``gsp serve``).

    With ``PREFECT_API_URL`` set the deployments, runs, logs, artifacts and events are on that server (its UI);
    without it a local ``prefect server start`` on ``host`` (127.0.0.1 unless told otherwise; a free port, UI
    included) runs as long as this command: Prefect's ephemeral API has no scheduler. ``pause_on_shutdown`` is
    off: a station restarts ``gsp serve`` (systemd, a container) and its inbox schedule must keep running. At
    most ``limit`` runs at a time (sweeps: one at a time, the deployment's own limit); each run starts its own
    Dask LocalCluster unless the deployment names a cluster.
    """
    import prefect
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from .runtime import announce_server, local_prefect_server

    station = load_station()
    inbox, products = kwargs.get("inbox"), kwargs.get("products")
    for flag, given, root in (("--inbox", inbox, station.roots.inbox), ("--products", products, station.roots.products)):
        if given is not None and not Path(given).is_dir():
            raise GSPError(f"{flag} {given}: no such folder")
        if given is None:
            Path(root).mkdir(parents=True, exist_ok=True)  # the station's own folders: created on first start
    # folders outside the roots fail here, before anything starts
    deployments = [*station_deployments(**kwargs), *extra_deployments]
    with contextlib.ExitStack() as stack:
        url = PREFECT_API_URL.value()
        if not url:  # the ephemeral API runs no scheduler: an interval schedule needs a real server
            url = stack.enter_context(local_prefect_server(host=host))
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        os.environ["PREFECT_API_URL"] = url  # the runs prefect.serve starts are subprocesses
        stack.enter_context(announce_server(url))  # gsp process uses this server while it runs
        # a SIGTERM (systemd, `timeout`, a container stop) unwinds this stack too, so the server started above stops
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        name = kwargs.get("name") or station.station
        trigger = InboxTrigger(inbox or station.roots.inbox, lambda files: _start_sweep(name), station=name).start()
        stack.callback(trigger.stop)
        stack.callback(ProductConsole(station.station, lambda line: print(line, flush=True)).start().stop)
        prefect.serve(*deployments, pause_on_shutdown=False, limit=limit)


def _start_sweep(name: str) -> None:
    """A run of the station's watch-inbox deployment, now (not waiting for it)."""
    from prefect.deployments import run_deployment

    run_deployment(f"watch-inbox/{name}", timeout=0)
