"""When the station's roots are in force, and the typed path parameters that enforce them.

**The rule** (one place: :meth:`groundstation.roots.StationRoots.check`): a path parameter must resolve, symlinks
followed, under a root of its kind, or it is a :class:`~groundstation.roots.PathNotAllowed`.

**When** (:func:`roots_in_force`): for every run that a deployment started (the UI's Run button, a schedule,
``prefect deployment run``, an automation, and the subflows of such a run), and for every run when the station
file says ``roots.enforce: always``. A command a local operator types (``gsp process``, ``gsp reprocess``,
``gsp serve --once``) takes any path: whoever has the shell can read and write those files anyway, so a check
there protects nothing, and operators keep processing passes wherever they lie. The people who start runs from
the UI are the ones who have no shell; their parameters are the untrusted input.

**Where**: in the parameters' types. Flow parameters are validated before the run starts (Prefect's
``validate_parameters``), so a refused path fails the run with its message before the flow's body reads or
writes anything; the paths a flow discovers itself (files matched in an archive, passes in an inbox) are checked
with :func:`checked` before they are opened.

A run of a deployment is recognised by ``PREFECT__FLOW_RUN_ID``, which Prefect's runners (``gsp serve``) and
workers (``prefect deploy`` onto a work pool) set in the process they start for it, or by the deployment the
current flow run names.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo

from groundstation.config import load_station, station_path
from groundstation.errors import GSPError
from groundstation.roots import KINDS, PathNotAllowed, StationRoots

__all__ = ["ArchiveDir", "CheckpointFile", "DatasetPath", "InboxDir", "ModelChoice", "PassFile", "PathNotAllowed",
           "ProductsDir", "RunFolder", "RunRefused", "SceneFile", "checked", "checked_model", "from_deployment",
           "leave_sigint_to_the_runner", "parameters_refused",
           "refusal", "roots_in_force", "run_checked", "RunFailed", "validated_or_refused"]

#: Set by Prefect's runners and workers in the process that executes a deployment's flow run.
FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"


def from_deployment() -> bool:
    """True when this process executes a run that a deployment started (or a subflow of one)."""
    if os.environ.get(FLOW_RUN_ENV):
        return True
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return bool(ctx is not None and ctx.flow_run is not None and ctx.flow_run.deployment_id)


def roots_in_force() -> StationRoots | None:
    """The station's roots when paths are restricted now (see the module docstring), else None."""
    station = load_station()
    if station.roots.enforce == "always" or from_deployment():
        return StationRoots.from_config(station.roots, source=f"the station file {station_path()}")
    return None


def checked(param: str, value: str | os.PathLike, kind: str) -> str:
    """``value`` as the run must use it: resolved and checked when the roots are in force, unchanged otherwise."""
    roots = roots_in_force()
    return os.fspath(value) if roots is None else str(roots.check(param, value, kind))


#: Suffixes that make a model option a checkpoint file rather than a registry name (as registry.resolve_model).
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar", ".ckpt")


def checked_model(param: str, value: str | None) -> str | None:
    """A ``codec`` / ``enhancer`` option: registry names pass (the registry is the station's own file); a
    checkpoint given as a file must lie under the weights or runs root when the roots are in force."""
    if value is None:
        return None
    p = Path(value)
    is_file = p.suffix in CHECKPOINT_SUFFIXES or os.sep in value or p.is_absolute()
    if not is_file:
        try:  # noqa: SIM105 - a name resolve_model would take as an existing file, relative to the cwd
            is_file = p.exists()
        except OSError:
            is_file = True
    return checked(param, value, "checkpoint") if is_file else value


def _under(kind: str) -> AfterValidator:
    assert kind in KINDS

    def validate(value: str, info: ValidationInfo) -> str:
        return checked(info.field_name or kind, value, kind)

    return AfterValidator(validate)


#: A pass container to read (process-pass ``pass_path``): under the inbox or the archive.
PassFile = Annotated[str, _under("pass")]
#: Where products are written: under the products root.
ProductsDir = Annotated[str, _under("products")]
#: The folder watch-inbox sweeps: under the inbox root.
InboxDir = Annotated[str, _under("inbox")]
#: The folder reprocess-archive selects passes from: under the archive root.
ArchiveDir = Annotated[str, _under("archive")]
#: A reference scene (``options.reference``): under the archive or the inbox.
SceneFile = Annotated[str, _under("scene")]
#: A checkpoint file read or written by path (a training's start weights, an export): under weights or runs.
CheckpointFile = Annotated[str, _under("checkpoint")]
#: A model by registry name, or a checkpoint file under weights or runs (``checked_model``).
ModelChoice = Annotated[str, AfterValidator(lambda v, info: checked_model(info.field_name or "model", v))]
#: A training or evaluation run's folder (its checkpoints, logs and tables): under the runs root.
RunFolder = Annotated[str, _under("run")]
#: Training images or pairs, evaluation images, a reference-points table: under the archive or the runs root.
DatasetPath = Annotated[str, _under("dataset")]


def refusal(exc: Exception) -> str:
    """One line naming the parameter and the rule it breaks, from what validating a run's parameters raised: a
    root check's message (it names the parameter already) or pydantic's errors (``options.halo: Input should
    be ...``)."""
    from pydantic import ValidationError

    cause = exc
    while cause is not None and not isinstance(cause, (ValidationError, GSPError)):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, GSPError):
        return str(cause).splitlines()[0]
    if isinstance(cause, ValidationError):
        first = cause.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("kwargs", "args"))
        inner = (first.get("ctx") or {}).get("error")
        if isinstance(inner, GSPError):
            return str(inner).splitlines()[0]
        more = f" (and {cause.error_count() - 1} more)" if cause.error_count() > 1 else ""
        return f"parameter {where or '?'}: {first['msg']} (given {str(first.get('input'))[:80]!r}){more}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _validate(fn, parameters: dict) -> dict:
    """``parameters`` validated against ``fn``'s signature (a pydantic model of its parameters, so that errors
    and the root checks name the parameter); unknown names are errors."""
    import inspect
    import typing

    from pydantic import ConfigDict, create_model

    hints = typing.get_type_hints(fn, include_extras=True)
    fields = {name: (hints.get(name, typing.Any), ... if p.default is inspect.Parameter.empty else p.default)
              for name, p in inspect.signature(fn).parameters.items()}
    model = create_model(f"{fn.__name__}_parameters", __config__=ConfigDict(extra="forbid"), **fields)
    checked = model.model_validate(parameters)
    return {name: getattr(checked, name) for name in fields}


class RunRefused(GSPError):
    """A run's parameters broke a rule (the message says which, in one line); the run did nothing."""


class RunFailed(GSPError):
    """A deployment's run stopped on an error the operator can fix (a :class:`GSPError`: a folder that does not
    exist, a file that is no pass...), said in one line."""


class _QuietRefusal(logging.Filter):
    """Drops the traceback Prefect's engine logs for a failed run when the failure is a :class:`RunRefused` or
    :class:`RunFailed`: its one line is logged already (installed on ``prefect.flow_runs`` when this module is
    imported, which a deployment's run does before its engine starts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], (RunRefused, RunFailed)))


logging.getLogger("prefect.flow_runs").addFilter(_QuietRefusal())


def leave_sigint_to_the_runner() -> None:
    """In a process that executes a deployment's run (``gsp serve``'s runner or a worker started it), from its
    main thread: ignore SIGINT from now on, and so do the processes it starts after (Dask workers, process
    pools). Ctrl-C in ``gsp serve``'s terminal reaches every process of its group; ``gsp serve`` cancels its
    runs in order instead (flows.deployments.serve_station, "Stopping"). It starts them with SIGINT blocked,
    which holds until something unblocks it (multiprocessing's resource tracker does, in the thread that starts
    processes first): so this is called before processes are started (:func:`flows.cluster.local_cluster`),
    and at this module's import when that is in the main thread."""
    import signal
    import threading

    if os.environ.get(FLOW_RUN_ENV) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_when_a_finalizer_swallows_sigterm() -> None:
    """In a process that executes a deployment's run: Prefect turns the SIGTERM its runner sends to cancel the
    run into an exception raised wherever the main thread is; raised inside a finalizer (a weakref callback, a
    ``__del__``), Python prints "Exception ignored in ..." with a traceback and drops it, and the run goes on
    until the runner kills it 30 s later. Such a dropped termination is quietly sent again, so that it is
    raised where the run unwinds (closing its Dask cluster)."""
    import signal
    import sys

    if not os.environ.get(FLOW_RUN_ENV):
        return
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        exc = unraisable.exc_value
        if type(exc).__name__ == "TerminationSignal" and type(exc).__module__.startswith("prefect"):
            os.kill(os.getpid(), getattr(exc, "signal", signal.SIGTERM) or signal.SIGTERM)
            return
        previous(unraisable)

    sys.unraisablehook = hook


leave_sigint_to_the_runner()
_stop_when_a_finalizer_swallows_sigterm()


def validated_or_refused(job, parameters: dict):
    """``(parameters, None)`` validated as ``job``'s annotations say (the root-checked paths, the options
    model, the ranges), or ``(None, Failed state)``: one logged line naming the parameter and the rule, which is
    also the run's state message. A flow with ``validate_parameters=False`` calls this first (through
    :func:`run_checked`), so that a refused run says why in one line instead of the engine's traceback."""
    from prefect import get_run_logger
    from prefect.states import Failed

    try:
        return _validate(job.fn, parameters), None
    except Exception as exc:  # noqa: BLE001 - every validation failure is a refusal, said in one line
        message = f"refused: {refusal(exc)}"
        get_run_logger().error(message)
        return None, Failed(message=message, data=RunRefused(message))


def parameters_refused(job, parameters: dict) -> bool:
    """Whether :func:`validated_or_refused` will refuse these parameters (the run-name functions name such a run
    ``refused: ...`` without reading what it names)."""
    try:
        _validate(job.fn, parameters)
    except Exception:  # noqa: BLE001 - any validation failure
        return True
    return False


def run_checked(job, parameters: dict, body):
    """The body of every deployment's flow (``job``, declared with ``validate_parameters=False``):
    ``body(**parameters)`` once they are validated (:func:`validated_or_refused`: refused in one line, nothing
    done). In a run a deployment started, an error the operator can fix that the body raises (a
    :class:`GSPError`: a folder that does not exist, a file that is no pass) also ends the run in one line, its
    state's message ``failed: ...``, instead of the engine's traceback; elsewhere (``gsp`` commands, tests) it is
    raised as it is, for the caller to report."""
    from prefect import get_run_logger
    from prefect.states import Failed

    params, refused = validated_or_refused(job, parameters)
    if refused is not None:
        return refused
    if not from_deployment():
        return body(**params)
    try:
        return body(**params)
    except GSPError as exc:
        message = f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        get_run_logger().error(message)
        return Failed(message=message, data=RunFailed(message))
