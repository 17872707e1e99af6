"""The first run on a new machine: no traceback when Prefect's API is slow to start, and a quiet console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

GOLDEN = REPO / "tests" / "golden" / "golden.gsp"


def _gsp(args: list[str], tmp_path: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, "-m", "gsp.cli", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", ["process", "supplement"])
def test_a_file_that_is_no_pass_is_refused_before_prefect_starts(tmp_path: Path, command: str):
    """Only the header is read: no Prefect API, no Dask cluster, no torch (a second, not twenty)."""
    (tmp_path / "NOT_A_PASS.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    out = ["-o", str(tmp_path / "out")] if command == "process" else ["--products", str(tmp_path / "out")]
    code = ("import sys; from gsp.cli import main; rc = main(sys.argv[1:]); "
            "print(sorted(m for m in ('prefect', 'distributed', 'torch') if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, command, "NOT_A_PASS.png", *out], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "NOT_A_PASS.png: not a pass container" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.strip() == "[]"  # none of them imported
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_api_that_does_not_start_in_time_is_a_clear_exit_2(tmp_path: Path):
    station = tmp_path / "station.yaml"
    station.write_text("orchestration:\n  api_startup_timeout_s: 0.01\n")
    proc = _gsp(["--station", str(station), "process", str(GOLDEN), "-o", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "api_startup_timeout_s" in proc.stderr and "PREFECT_API_URL" in proc.stderr
    assert str(station) in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.zarr"))


@pytest.mark.slow
def test_process_console_shows_the_station_not_the_libraries(tmp_path: Path):
    proc = _gsp(["process", str(GOLDEN), "-o", str(tmp_path / "out"), "--no-enhance"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert "Traceback" not in err and "Warning" not in err  # no library warnings
    # "View at http://127.0.0.1:PORT/...": a link to the ephemeral API, gone when the command ends
    for chatter in ("HTTP Request", "distributed.", "Scheduler at", "Start Nanny", "Finished in state", "View at"):
        assert chatter not in err, chatter
    assert "Pass golden" in err and "4/4 tiles" in proc.stdout
    assert len(err.strip().splitlines()) <= 10, err


def test_the_console_policy_by_verbosity():
    import logging

    from gsp.cli import ConsolePolicy

    def shown(v: int, name: str, level: int, msg: str = "x") -> bool:
        return ConsolePolicy(v).filter(logging.LogRecord(name, level, __file__, 1, msg, None, None))

    assert shown(0, "groundstation.decode", logging.INFO) and not shown(0, "groundstation.decode", logging.DEBUG)
    assert shown(1, "flows.process_pass", logging.DEBUG)
    assert not shown(0, "httpx", logging.INFO) and not shown(1, "distributed.scheduler", logging.INFO)
    assert shown(0, "distributed.worker", logging.WARNING)
    assert not shown(0, "prefect.flow_runs", logging.INFO, "Finished in state Completed()")
    assert shown(2, "httpx", logging.DEBUG) and shown(2, "zarr", logging.DEBUG)
