"""Against a real ``prefect server start`` (127.0.0.1, a free port, its own PREFECT_HOME): a process-pass run,
its artifacts and the inbox watcher's deployment are read back through the server's API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.server, pytest.mark.slow]

STARTUP_TIMEOUT_S = 180


@pytest.fixture
def prefect_server(tmp_path, monkeypatch):
    """``prefect server start`` on 127.0.0.1 and a free port, with its own PREFECT_HOME (so its own SQLite
    database), in its own process group; waits for /api/health (up to STARTUP_TIMEOUT_S) and kills the group at
    the end (flows.runtime.local_prefect_server, which ``gsp serve`` uses too)."""
    from flows.runtime import local_prefect_server

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "server-home"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with local_prefect_server(timeout_s=STARTUP_TIMEOUT_S) as url:
        yield url
    with pytest.raises(OSError):  # stopped
        urllib.request.urlopen(f"{url}/health", timeout=2)


def test_flow_run_artifacts_and_deployment_through_a_real_server(prefect_server, tmp_path, flow_pass, tiny_codec,
                                                                 enhancer_ckpts):
    """The operator's view: ``gsp process`` run in its own process (own LocalCluster) with PREFECT_API_URL set;
    then the flow run, its task runs and artifacts are read back through the server's REST API.

    (A separate process because Prefect's event emitter binds to the first API a process talks to, and the
    test process already talks to the test harness.)"""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowFilter, FlowFilterName, \
        FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.inbox import watch_inbox

    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_HOME": str(tmp_path / "client-home")}
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
    out = tmp_path / "products"
    cmd = [sys.executable, "-m", "gsp.cli", "process", str(flow_pass[1]), "-o", str(out), "--codec",
           str(tiny_codec), "--enhancer", str(enhancer_ckpts[1]), "--tiles-per-batch", "3", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res["status"] == "complete" and res["tiles_ok"] == res["tiles_total"]

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        deployment_id = watch_inbox.to_deployment(
            name="inbox-watcher", interval=30,
            parameters={"inbox": str(tmp_path / "inbox"), "products": str(out)}).apply()
        with get_client(sync_client=True) as client:
            (run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["process-pass"])))
            assert run.state.is_completed() and run.parameters["options"]["tiles_per_batch"] == 3
            deadline = time.monotonic() + 60  # task runs are recorded from events, a moment after the fact
            while True:
                tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
                done = [t for t in tasks if t.state and t.state.is_completed()]
                if len(done) == 12 or time.monotonic() > deadline:  # validate + 2 decode + 2 synthesize + 2
                    break  # enhance batches + 2 overview levels (the first split over the 2 workers) + 2 seam sums
                time.sleep(1)
            assert sorted(t.name.rsplit("-", 1)[0] for t in done) == ["build-overviews"] * 3 + ["decode-tiles"] * 2 \
                + ["enhance-windows"] * 2 + ["seam-sums"] * 2 + ["synthesize-windows"] * 2 + ["validate-pass"]
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
                any_=[run.id])))
            by_type = {a.type: a for a in arts}
            assert sorted(by_type) == ["markdown", "progress", "table"]
            assert by_type["markdown"].key == "gsp-flow-pass-1-report" and res["product"] in by_type["markdown"].data
            assert float(by_type["progress"].data) == 100.0
            table = by_type["table"].data
            table = json.loads(table) if isinstance(table, str) else table
            assert len(table) == 2 * res["tiles_total"]

            dep = client.read_deployment(deployment_id)
            assert dep.name == "inbox-watcher" and dep.schedules
            assert dep.schedules[0].schedule.interval.total_seconds() == 30
            assert dep.parameters["inbox"] == str(tmp_path / "inbox")
