"""Names and tags a person can read in the Prefect UI.

Flow runs are named when they start (Prefect calls these functions with the run's validated parameters in
context, after the parameters' root checks, before the flow's body):

* ``process-pass``: ``<pass_id> @ <product version>``, e.g. ``pass-0417 @ demo-elic-l0032-05285ac1__demo-inn-l0032-v3-8c1f...-s0-t0p5-h32``
  (the version names codec, enhancer, seed, temperature and halo: :func:`flows.identity.product_version`);
* ``reprocess-archive``: ``reprocess <archive> [<since>..<until>] -> <enhancer>``;
* ``watch-inbox``: ``sweep <inbox>``;
* ``train-codec``, ``train-enhancer``, ``evaluate`` (the application's jobs, :mod:`gsp.jobs`):
  ``<data> -> <run folder>``, e.g. ``pairs-l0032 -> v4-l0032`` (:func:`job_run_name`).

The same functions add tags to the run: ``station:<name>``, ``codec:<name>`` and ``enhancer:<name>`` (or
``enhancer:none`` for a decoded-only product), so runs can be filtered by station and model. Task runs are
named after their stage and batch in the flow (``decode-tiles-b0003``: :func:`batch_task_name`).

A run whose parameters break a rule (a path outside the station's roots, an unknown option) is named
``refused: <what it was given>`` (``refused: p.gsp``, ``refused: sweep inbox``), and nothing it names is read
to name it; the run then fails with the one line that says why (:func:`flows.access.run_checked`). Naming
never fails a run: when the pass cannot be read here (the flow itself then reports why), the run is named
after the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["batch_task_name", "inbox_run_name", "job_run_name", "pass_label", "pass_run_name", "run_refused",
           "supplement_run_name", "reprocess_run_name", "station_tags"]

log = logging.getLogger(__name__)


def batch_task_name(task_name: str, index: int) -> str:
    """``decode-tiles-b0003``: the task's name and its batch number (the part after the last ``-`` is the
    batch, as Prefect's own ``decode-tiles-5c2`` suffix was)."""
    return f"{task_name}-b{index:04d}"


def station_tags(**models: str | None) -> list[str]:
    """``station:<name>`` and one ``<kind>:<name>`` tag per model given (``none`` for None)."""
    from groundstation.config import load_station

    tags = [f"station:{load_station().station}"]
    tags += [f"{kind}:{name if name else 'none'}" for kind, name in models.items()]
    return tags


def _options(params: dict):
    from .options import ProcessOptions

    opts = params.get("options")
    if opts is None:
        return ProcessOptions()
    return opts if isinstance(opts, ProcessOptions) else ProcessOptions.model_validate(opts)


def pass_label(pass_path: str, options) -> tuple[str, list[str]]:
    """(run name, tags) of a process-pass run, from the run's identity (:func:`flows.identity.resolve_run`,
    without loading a model: the flow does, and fails there when a checkpoint is wrong)."""
    from .identity import pass_header, resolve_run

    plan = resolve_run(pass_header(pass_path), options, load=False)
    return plan.label, station_tags(codec=plan.codec.name, enhancer=plan.enhancer.name if plan.enhancer else None)


def _tag_run(tags: list[str]) -> None:
    """Add ``tags`` to the current flow run (best effort: a name is cosmetic, a run never fails for it)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or ctx.client is None:
        return
    merged = sorted(set(ctx.flow_run.tags or ()) | set(tags))
    try:
        ctx.client.update_flow_run(ctx.flow_run.id, tags=merged)
        ctx.flow_run.tags = merged
    except Exception as exc:  # noqa: BLE001
        log.debug("could not tag flow run %s: %s", ctx.flow_run.id, exc)


def _params() -> dict:
    from prefect.runtime import flow_run

    return dict(flow_run.parameters or {})


def run_refused(params: dict) -> bool:
    """Whether the current flow run's parameters break a rule (:func:`flows.access.validated_or_refused` will
    refuse them): its name then says ``refused: ...`` and names what it was given, without reading it."""
    from prefect.context import FlowRunContext

    from .access import parameters_refused

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow is None:
        return False
    return parameters_refused(ctx.flow, params)


def pass_run_name() -> str:
    """``flow_run_name`` of process-pass (see the module docstring)."""
    params = _params()
    path = str(params.get("pass_path", "pass"))
    if run_refused(params):  # a pass outside the roots is not read, not even its header
        return f"refused: {Path(path).name or path}"
    try:
        name, tags = pass_label(path, _options(params))
    except Exception as exc:  # noqa: BLE001 - the flow reports the real error
        log.debug("naming the run after %s: %s", path, exc)
        return Path(path).name or path
    _tag_run(tags)
    return name


def supplement_run_name() -> str:
    """``flow_run_name`` of apply-supplement: ``<pass_id> + tiles 3,7`` (the supplement's header, read by the one
    pass parser), tagged with the station."""
    params = _params()
    path = str(params.get("supplement_path", "supplement"))
    if run_refused(params):  # a supplement outside the roots is not read to name the run
        return f"refused: {Path(path).name or path}"
    try:
        from .identity import pass_header

        header = pass_header(path)
        tiles = header.supplement.tiles if header.supplement else []
        _tag_run(station_tags())
        return f"{header.pass_id} + tiles {','.join(str(t) for t in tiles) or '?'}"
    except Exception as exc:  # noqa: BLE001 - the flow reports the real error
        log.debug("naming the supplement run after %s: %s", path, exc)
        return Path(path).name or path


def reprocess_run_name() -> str:
    """``flow_run_name`` of reprocess-archive: the archive, the time window and the enhancer."""
    params = _params()
    archive = Path(str(params.get("archive") or "archive")).name
    since, until = params.get("since"), params.get("until")
    window = f" {since or ''}..{until or ''}" if since or until else ""
    if run_refused(params):
        return f"refused: reprocess {archive}{window}"
    try:
        opts = _options(params)
        enhancer = (Path(opts.enhancer).name if opts.enhancer else "default") if opts.enhance else "decoded-only"
        _tag_run(station_tags(codec=opts.codec and Path(opts.codec).name or "pass-header",
                              enhancer=enhancer if opts.enhance else None))
    except Exception as exc:  # noqa: BLE001
        log.debug("naming the reprocess run: %s", exc)
        enhancer = "?"
    return f"reprocess {archive}{window} -> {enhancer}"


def inbox_run_name() -> str:
    """``flow_run_name`` of watch-inbox: ``sweep <inbox>``."""
    params = _params()
    name = f"sweep {Path(str(params.get('inbox') or 'inbox')).name}"
    if run_refused(params):
        return f"refused: {name}"
    try:
        _tag_run(station_tags())
    except Exception as exc:  # noqa: BLE001
        log.debug("tagging the sweep: %s", exc)
    return name


#: Parameters that name what a training or evaluation run reads, in order of preference.
JOB_INPUTS = ("pairs", "images", "data")


def job_run_name() -> str:
    """``flow_run_name`` of train-codec, train-enhancer and evaluate: ``<input folder> -> <run folder>`` (the
    run folder is the flow's own default when ``out`` is not given), tagged with the station."""
    from prefect.runtime import flow_run

    params = _params()
    source = next((params[k] for k in JOB_INPUTS if params.get(k)), None)
    if isinstance(source, (list, tuple)):
        source = ",".join(Path(str(s)).name for s in source) if source else None
    out = params.get("out")
    src = Path(str(source)).name if source and "," not in str(source) else (source or "?")
    name = f"{src} -> {Path(str(out)).name if out else f'(runs)/{flow_run.flow_name}'}"
    if run_refused(params):
        return f"refused: {name}"
    try:
        _tag_run(station_tags())
    except Exception as exc:  # noqa: BLE001
        log.debug("tagging the job: %s", exc)
    return name
