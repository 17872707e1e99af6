"""``gsp serve``'s console, as an operator sees it in the terminal that runs it: a real ``gsp serve`` (its own
``prefect server``, as without PREFECT_API_URL). A pass that stopped short lands in the inbox: the console and
the sweep's log say at once until when it waits for the rest. A pass that lands gets a process-pass run of its
own. Then Ctrl-C while that pass is in the middle of its run: SIGINT sent to the whole process group (what the terminal does); the exit status, the console (no
traceback, a final line), every process of the group gone (the run, its Dask workers) and the local server
stopped, the pass left claimed for the next start. The tests run in this order, on one ``gsp serve``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import make_pass
from servers import make_station, wait_for

pytestmark = [pytest.mark.server, pytest.mark.slow]

STATION = "console-station"


def _group(pgid: int) -> list[str]:
    """The command lines of the live processes in process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # the fields after the name: state, ppid, pgrp
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160])
    return found


def _drop(src: Path, inbox: Path, name: str, data: bytes | None = None) -> Path:
    """Into the inbox under ``name`` at once (written beside it, then renamed, as a receiver finishes)."""
    tmp = inbox / f"{name}.tmp"
    tmp.write_bytes(src.read_bytes() if data is None else data)
    os.rename(tmp, inbox / name)
    return inbox / name


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_codec, enhancer_ckpts):
    """(home, Popen, stdout path, stderr path, UI URL, the large pass) of a running ``gsp serve``."""
    tmp = tmp_path_factory.mktemp("serve-console")
    home, station = make_station(tmp, STATION, tiny_codec, enhancer_ckpts[0])
    _, big = make_pass(tmp / "passes", tiny_codec, "stop-pass", height=640, width=960)  # 40 tiles of 128 px
    env = {**os.environ, "PREFECT_HOME": str(tmp / "serve-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for var in ("PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "gsp.cli", "--station", str(station), "serve", "--interval", "3600",
           "--codec", str(home / "weights" / "tiny.pt"), "--enhancer", str(home / "weights" / "enh-a.pt"),
           "--tiles-per-batch", "3"]
    out_path, err_path = tmp / "serve.out", tmp / "serve.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, start_new_session=True)
    try:
        first = wait_for("gsp serve's first line", lambda: proc.poll() is None and re.search(
            rf"gsp serve: station {STATION}: 8 deployments .* UI (http://127\.0\.0\.1:\d+)/deployments",
            out_path.read_text(errors="replace")), 300, err_path)
        yield home, proc, out_path, err_path, first.group(1), big
    finally:
        if proc.poll() is None:  # as systemd stops it: SIGTERM, so that it stops the Prefect server it started
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def test_a_pass_that_stopped_short_is_reported_at_once(served, tiny_codec):
    """Renamed without its end-of-pass trailer: the console says until when the watcher waits for the rest
    (stale_after_s after the file's last change), once, and so does the sweep's log."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.events import clock_time

    home, proc, out_path, err_path, ui, big = served
    _, small = make_pass(home.parent / "passes", tiny_codec, "short-pass", height=200, width=300)  # 6 tiles
    cut = _drop(small, home / "inbox", "short-pass.gsp", small.read_bytes()[:-40])  # trailer and a record's end
    until = clock_time(cut.stat().st_mtime + 3600)
    expected = f"inbox: waiting for the rest of short-pass.gsp until {until} (5 of 6 tiles, no end-of-pass trailer)"
    t0 = time.monotonic()
    line = wait_for("the console's line", lambda: proc.poll() is None and [
        x for x in out_path.read_text(errors="replace").splitlines() if x.startswith(expected)], 180, err_path)
    assert time.monotonic() - t0 < 150  # at once: the sweep the file's arrival started, not the hourly one
    with temporary_settings(updates={PREFECT_API_URL: f"{ui}/api"}), get_client(sync_client=True) as client:
        sweeps = [r for r in client.read_flow_runs() if r.name == "sweep inbox"]
        logs = [log.message for log in client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[r.id for r in sweeps])))]
    assert any(m == "Inbox: " + line[0].removeprefix("inbox: ") for m in logs), logs  # the same line, WARNING


@pytest.mark.timeout(1200)
def test_ctrl_c_stops_gsp_serve_cleanly_in_the_middle_of_a_pass(served):
    home, proc, out_path, err_path, ui, big = served
    _drop(big, home / "inbox", "stop-pass.gsp")
    # the pass's run is in the middle: its product's state folder has done markers; the product is incomplete
    wait_for("the pass's product under way", lambda: proc.poll() is None and list(
        (home / "products" / "stop-pass").glob("*.state/*")), 600, err_path)
    children = _group(proc.pid)
    assert any("prefect.engine" in c for c in children), children  # the run's process, in the group
    # the pass has a run of its own, of the process-pass deployment (its page lists it), not a sweep's subflow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: f"{ui}/api"}), get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs() if r.name.startswith("stop-pass")]
        assert len(runs) == 1 and runs[0].parent_task_run_id is None, runs
        assert client.read_deployment(runs[0].deployment_id).name == STATION
        assert client.read_flow(runs[0].flow_id).name == "process-pass"
        assert not [r for r in client.read_flow_runs() if r.name == "sweep inbox" and r.state.is_running()]
    run_name = runs[0].name
    # the pass runs on gsp serve's own cluster (its default: kept between runs), which the console announced
    cluster = re.search(r"^gsp serve: Dask cluster at (tcp://127\.0\.0\.1:\d+): 2 worker processes, kept ",
                        out_path.read_text(errors="replace"), re.M)
    assert cluster, out_path.read_text(errors="replace")
    request = urllib.request.Request(f"{ui}/api/logs/filter", data=b'{"limit": 200}', method="POST",
                                     headers={"Content-Type": "application/json"})
    said = [log["message"] for log in json.load(urllib.request.urlopen(request, timeout=30))]
    assert any(m.startswith(f"Dask cluster at {cluster.group(1)}: 2 workers") for m in said), said
    # the short pass (see above) is still waiting: the console said it once
    time.sleep(4)
    told = [x for x in out_path.read_text(errors="replace").splitlines() if "rest of short-pass.gsp" in x]
    assert len(told) == 1, told

    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals its whole foreground group
    rc = proc.wait(timeout=180)
    stopped_s = time.monotonic() - t0

    out, err = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    assert rc == 0, out + err
    assert "Traceback" not in err and "Traceback" not in out, out + err
    lines = out.strip().splitlines()
    assert any(line.startswith("gsp serve: SIGINT: stopping; no new runs; cancelling 1 run(s) in progress: "
                               f"'{run_name}'") for line in lines), out
    assert lines[-1].startswith(f"gsp serve: stopped (SIGINT); station {STATION} takes no runs"), out
    assert stopped_s < 120, f"stopping took {stopped_s:.0f} s"
    # every process of the group has ended (the run, its Dask scheduler and workers) and the local server too
    wait_for("the group's processes to end", lambda: not _group(proc.pid), 30)
    assert not (home / "serve.json").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{ui}/api/health", timeout=5)
    # the pass stays claimed, its product incomplete: the next start resumes it
    assert (home / "inbox" / "processing" / "stop-pass.gsp").is_file()
    assert not list((home / "inbox").glob("done/stop-pass*"))
