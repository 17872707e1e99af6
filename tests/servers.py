"""Real servers for the tests (imported as ``servers``; pytest puts tests/ on the path): a throwaway PostgreSQL
cluster, a ``prefect server start`` on SQLite or PostgreSQL, ``gsp serve`` on a station folder, and headless
Chromium. Each skips with the reason where its program is absent."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

#: How long ``prefect server start`` may take on a loaded 2-core machine (it runs migrations first).
STARTUP_TIMEOUT_S = 180
#: Chromium flags: headless, no sandbox (root in CI), nothing fetched from the network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path:
    """The folder of Debian's PostgreSQL programs (``initdb``, ``pg_ctl``, ``createdb``), or a skip."""
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[::-1]), None)
    if not found:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install -y postgresql; .ci/run installs it)")
    return Path(os.path.realpath(found)).parent


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster: ``initdb`` in a fresh folder (as the ``postgres`` user when this process
    is root: PostgreSQL refuses to run as root), trust authentication on 127.0.0.1 and a free port only, a
    database ``prefect``; yields Prefect's connection URL (asyncpg) and removes everything at the end."""
    bindir = postgres_bin()
    as_postgres: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="gsp-test-pg-"))  # under /tmp itself: the postgres user must reach it
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_postgres, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "server.log"), "-w", "-t", "60",
            "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start")
        try:
            run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "prefect")
            yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def prefect_server(home: Path, database_url: str | None = None, **env: str) -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1 and a free port (flows.runtime.local_prefect_server, which ``gsp
    serve`` uses too, so the UI is told its API URL), with its own PREFECT_HOME (its own SQLite database) or
    ``database_url`` (PostgreSQL), and ``env`` (e.g. PREFECT_SERVER_API_AUTH_STRING); yields its API URL."""
    from flows.runtime import local_prefect_server

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(home))
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        if database_url:
            mp.setenv("PREFECT_API_DATABASE_CONNECTION_URL", database_url)
        for key, value in env.items():
            mp.setenv(key, value)
        with local_prefect_server(timeout_s=STARTUP_TIMEOUT_S) as url:
            for key in env:  # only the server has them
                mp.delenv(key)
            mp.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
            yield url


def make_station(folder: Path, name: str, tiny_codec: Path, enhancer: Path) -> tuple[Path, Path]:
    """A station folder (home/inbox, archive, products, runs, weights; the checkpoints in weights) and its
    station file; returns (home, station file)."""
    home = folder / "station"
    for sub in ("inbox", "archive", "products", "runs", "weights"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    station = folder / "station.yaml"
    station.write_text(f"station: {name}\nroots:\n  home: {home}\n")
    shutil.copy(tiny_codec, home / "weights" / "tiny.pt")
    shutil.copy(enhancer, home / "weights" / "enh-a.pt")
    return home, station


@contextlib.contextmanager
def served_station(folder: Path, station: Path, api_url: str, *args: str, **env: str) -> Iterator[subprocess.Popen]:
    """``gsp --station STATION serve`` (the station's tiny codec and enhancer, 3 tiles per batch, ``args``)
    against the server at ``api_url``, in its own process group, its console in ``folder/serve.log``; stopped
    with SIGTERM (as systemd stops it) at the end, then killed if it lingers."""
    home = station.parent / "station"
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(folder / "serve-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env}
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
    cmd = [sys.executable, "-m", "gsp.cli", "--station", str(station), "serve", "--interval", "3600",
           "--codec", str(home / "weights" / "tiny.pt"), "--enhancer", str(home / "weights" / "enh-a.pt"),
           "--tiles-per-batch", "3", *args]
    with open(folder / "serve.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            for sig, wait_s in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue


def wait_for(what: str, fn, timeout_s: float, log_path: Path | None = None):
    """Poll ``fn`` every 2 s until it returns something true; fail with ``what`` and the log's tail."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-4000:] if log_path else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(2)


def chromium_path() -> str:
    """Debian's ``chromium`` (never a browser Playwright would download), or a skip."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium chromium-driver; .ci/run "
                    "installs it)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("Playwright's Python package is not installed (pip install -e '.[test]')")
    return path
