"""The Prefect API a run talks to: the server named by ``PREFECT_API_URL``, Prefect's ephemeral API (started
once per process, waiting up to the station's ``orchestration.api_startup_timeout_s``), or a local
``prefect server start`` for served deployments (the ephemeral API runs no scheduler).

The URL is put in the settings context, which prefect-dask ships to every task, so Dask workers report to the
same API instead of each starting an ephemeral server of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Iterator

from groundstation.config import STATION_ENV, load_station, station_path
from groundstation.errors import OrchestrationError

__all__ = ["announce_server", "local_prefect_server", "prefect_api", "server_env", "start_api_early", "station_server"]

#: Where ``gsp serve`` says which Prefect API it uses (in the station's home folder), for one-shot commands.
SERVE_FILE = "serve.json"


def _serve_file():
    from pathlib import Path

    return Path(load_station().roots.home) / SERVE_FILE


@contextlib.contextmanager
def announce_server(url: str) -> Iterator[None]:
    """While ``gsp serve`` runs: write its API URL and pid to the station's ``serve.json``, so that ``gsp process``
    and the other one-shot commands use that server (no start-up, runs in the station's UI); removed on exit."""
    import json

    from groundstation.fileio import write_text_atomic

    path = _serve_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"api_url": url, "pid": os.getpid()}) + "\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def station_server(timeout_s: float = 1.0) -> str | None:
    """The API URL of this station's running ``gsp serve`` (its ``serve.json``, a live pid and a healthy API),
    or None."""
    import json
    import urllib.request

    if "station" in _EARLY:
        return _EARLY["station"]
    url = None
    try:
        info = json.loads(_serve_file().read_text())
        os.kill(int(info["pid"]), 0)
        with urllib.request.urlopen(f"{info['api_url']}/health", timeout=timeout_s) as r:
            url = info["api_url"] if r.status == 200 else None
    except (OSError, ValueError, KeyError, TypeError):
        url = None
    _EARLY["station"] = url
    return url

log = logging.getLogger(__name__)


#: An ephemeral API started ahead of time by :func:`start_api_early` (a Future of its start), or nothing.
_EARLY: dict[str, object] = {}


def start_api_early() -> None:
    """Start Prefect's ephemeral API in the background now, when no PREFECT_API_URL is set, so that it comes up
    while the caller checks the pass and models and starts the Dask cluster; :func:`prefect_api` then waits for
    it (with the same time limit and error). Does nothing when a server is configured or a start is under way."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value() or "start" in _EARLY or station_server():
        return
    from concurrent.futures import ThreadPoolExecutor

    from prefect.server.api.server import SubprocessASGIServer

    timeout = load_station().orchestration.api_startup_timeout_s
    server = SubprocessASGIServer()
    if server.running:
        return
    log.info("starting Prefect's ephemeral API in the background (set PREFECT_API_URL to use a server)")
    pool = ThreadPoolExecutor(1, thread_name_prefix="gsp-prefect-api")
    _EARLY["start"] = pool.submit(server.start, timeout=timeout)
    _EARLY["t0"] = time.monotonic()
    pool.shutdown(wait=False)


@contextlib.contextmanager
def prefect_api(export_env: bool = False, startup_timeout_s: float | None = None) -> Iterator[str]:
    """Yield the API URL the run uses, starting Prefect's ephemeral server when no PREFECT_API_URL is set.

    ``startup_timeout_s``: how long to wait for the ephemeral server (default: the station's
    ``orchestration.api_startup_timeout_s``, 120 s); running out of it is an :class:`OrchestrationError`
    (exit 2) naming that setting and ``PREFECT_API_URL``, never a traceback. ``export_env`` also puts the URL
    into ``os.environ`` (for subprocesses, e.g. runs started by ``prefect.serve``).
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    url = PREFECT_API_URL.value()
    if url:
        yield url
        return
    url = station_server()
    if url:  # gsp serve is running: its server, at once, and the run shows in the station's UI
        log.info("using the station's Prefect server at %s (gsp serve)", url)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
        return
    from prefect.server.api.server import SubprocessASGIServer

    if startup_timeout_s is None:
        startup_timeout_s = load_station().orchestration.api_startup_timeout_s
    server = SubprocessASGIServer()  # the process-wide instance Prefect itself would start
    if not server.running:
        log.info("starting Prefect's ephemeral API (waiting up to %.0f s; set PREFECT_API_URL to use a server)",
                 startup_timeout_s)
    t0 = _EARLY.pop("t0", time.monotonic())
    try:
        early = _EARLY.pop("start", None)
        if early is not None:  # started by start_api_early: wait for it (its own limit is the same setting)
            early.result()
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
    try:  # no "View at http://..." links: the ephemeral API (and its UI) is gone when the command ends
        with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_UI_URL: ""}):
            yield server.api_url
    finally:
        if export_env:
            if before is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = before


def server_env(url: str, tell_ui: bool = True) -> dict[str, str]:
    """The environment of a ``prefect server start`` this station starts at ``url``: this process's, without
    PREFECT_API_URL, plus what the operator has not set:

    * ``PREFECT_SERVER_UI_API_URL`` = ``url`` (``tell_ui``: the server listens where browsers reach it as
      ``url``): the UI's pages call the API there (Prefect's default, port 4200, makes every page of a server
      on another port say "Can't connect to Server API"); on a wildcard address the browser's name for this
      machine is unknown and the operator sets it;
    * retention (station file ``orchestration.keep_runs_days``): Prefect's database vacuum of flow runs that
      ended longer ago (with their logs, artifacts and task runs), besides its default vacuum of old events.
    """
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if tell_ui:
        env.setdefault("PREFECT_SERVER_UI_API_URL", url)
    keep_days = load_station().orchestration.keep_runs_days
    if keep_days is not None:
        env.setdefault("PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED", "events,flow_runs")
        env.setdefault("PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD", str(round(keep_days * 86400)))
    return env


@contextlib.contextmanager
def local_prefect_server(port: int | None = None, timeout_s: float | None = None,
                         host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``prefect server start`` (with its services: the scheduler that an interval schedule needs, which
    the ephemeral API does not run) for the duration of the context; yield its API URL.

    It listens on ``host``: 127.0.0.1 (this machine only) unless told otherwise; for a station network give
    the address to listen on and set ``PREFECT_SERVER_API_AUTH_STRING`` in its environment (docs/operations.md, "Auth"),
    which the server inherits from this process like every other ``PREFECT_SERVER_*`` setting. The server
    runs in its own process group and is stopped with it. Its database is the default one under
    PREFECT_HOME, so runs and artifacts stay visible after a restart.
    """
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    from prefect.settings import PREFECT_HOME

    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # where this process reaches it
    if port is None:
        with socket.socket() as sock:
            sock.bind((local, 0))
            port = sock.getsockname()[1]
    if timeout_s is None:  # a real server starts its services too: give it more than the ephemeral API
        timeout_s = max(180.0, load_station().orchestration.api_startup_timeout_s)
    url = f"http://{local}:{port}/api"
    env = server_env(url, host == local)
    exe = Path(sys.executable).with_name("prefect")
    cmd = [str(exe) if exe.exists() else "prefect", "server", "start", "--host", host, "--port", str(port)]
    log_path = Path(PREFECT_HOME.value()) / f"gsp-prefect-server-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
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
        log.warning("Prefect server (UI and API) at http://%s:%d for as long as this command runs (log %s)%s",
                    local, port, log_path,
                    "" if host == "127.0.0.1" or os.environ.get("PREFECT_SERVER_API_AUTH_STRING") else
                    f"; it listens on {host} WITHOUT authentication: set PREFECT_SERVER_API_AUTH_STRING")
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
