"""``gsp serve`` stopped with Ctrl-C while it processes a pass, as an operator does in its terminal: a real
``gsp serve`` (its own ``prefect server``, as without PREFECT_API_URL), a pass dropped into the inbox, SIGINT
sent to the whole process group (what the terminal does) while the pass's run is in the middle; then the exit
status, the console (no traceback, a final line), every process of the group gone (the run, its Dask workers)
and the local server stopped, the pass left claimed for the next start."""

from __future__ import annotations

import contextlib
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


def _group(pgid: int) -> list[str]:
    """The command lines of the live processes in process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # the fields after the name: state, ppid, pgrp
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160])
    return found


@pytest.mark.timeout(1200)
def test_ctrl_c_stops_gsp_serve_cleanly_in_the_middle_of_a_pass(tmp_path, tiny_codec, enhancer_ckpts):
    home, station = make_station(tmp_path, "stop-station", tiny_codec, enhancer_ckpts[0])
    _, pass_file = make_pass(tmp_path / "passes", tiny_codec, "stop-pass", height=640, width=960)  # 40 tiles
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "serve-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for var in ("PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "gsp.cli", "--station", str(station), "serve", "--interval", "3600",
           "--codec", str(home / "weights" / "tiny.pt"), "--enhancer", str(home / "weights" / "enh-a.pt"),
           "--tiles-per-batch", "3"]
    out_path, err_path = tmp_path / "serve.out", tmp_path / "serve.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, start_new_session=True)
    try:
        def console() -> str:
            return out_path.read_text(errors="replace") + err_path.read_text(errors="replace")

        def alive():
            assert proc.poll() is None, console()[-4000:]
            return True

        served = wait_for("gsp serve's first line", lambda: alive() and re.search(
            r"gsp serve: station stop-station: 8 deployments .* UI (http://127\.0\.0\.1:\d+)/deployments",
            out_path.read_text(errors="replace")), 300, err_path)
        ui = served.group(1)
        shutil.copy(pass_file, home / "inbox" / "stop-pass.gsp.tmp")
        os.rename(home / "inbox" / "stop-pass.gsp.tmp", home / "inbox" / "stop-pass.gsp")
        # the pass's run is in the middle: its product exists, and is not complete
        wait_for("the pass's product under way", lambda: alive() and list(
            (home / "products" / "stop-pass").glob("*.state/*")), 600, err_path)
        children = _group(proc.pid)
        assert any("prefect.engine" in c for c in children), children  # the run's process, in the group

        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals its whole foreground group
        rc = proc.wait(timeout=180)
        stopped_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    out, err = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    assert rc == 0, out + err
    assert "Traceback" not in err and "Traceback" not in out, out + err
    lines = out.strip().splitlines()
    assert any(line.startswith("gsp serve: SIGINT: stopping; no new runs; cancelling 1 run(s) in progress: "
                               "'sweep inbox'") for line in lines), out
    assert lines[-1].startswith("gsp serve: stopped (SIGINT); station stop-station takes no runs"), out
    assert stopped_s < 120, f"stopping took {stopped_s:.0f} s"
    # every process of the group has ended (the run, its Dask scheduler and workers) and the local server too
    wait_for("the group's processes to end", lambda: not _group(proc.pid), 30)
    assert not (home / "serve.json").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{ui}/api/health", timeout=5)
    # the pass stays claimed, its product incomplete: the next start resumes it
    assert (home / "inbox" / "processing" / "stop-pass.gsp").is_file()
    assert not list((home / "inbox").glob("done/*"))
