"""``--dask-address``: a pass processed on a cluster of separately started processes (``dask scheduler`` and
two ``dask worker`` commands, as on a station's machines), not on a LocalCluster of this process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

DASK = str(Path(sys.executable).with_name("dask"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_processes(tmp_path):
    """A scheduler and two single-thread workers, each its own process (no nanny: the pids are theirs)."""
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    logs = [open(tmp_path / f"dask-{i}.log", "wb") for i in range(3)]
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", ":0"], stdout=logs[0], stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)]
    try:
        time.sleep(1.0)
        for i in (1, 2):
            procs.append(subprocess.Popen([DASK, "worker", address, "--nthreads", "1", "--no-nanny",
                                           "--no-dashboard", "--name", f"station-{i}"], stdout=logs[i],
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            pids = set(client.run(os.getpid).values())
        yield address, pids, {p.pid for p in procs[1:]}
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        for f in logs:
            f.close()


@pytest.mark.slow
def test_a_pass_runs_on_dask_workers_started_as_separate_processes(tmp_path, prefect_harness, dask_processes,
                                                                    flow_pass, tiny_codec, enhancer_ckpts):
    from gsp.cli import main

    address, worker_pids, launched = dask_processes
    assert worker_pids == launched  # the workers are the processes started above, not ours
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["process", str(flow_pass[1]), "-o", str(tmp_path / "out"), "--codec", str(tiny_codec),
                     "--enhancer", str(enhancer_ckpts[0]), "--temperature", "1", "--dask-address", address,
                     "--json"])
    res = json.loads(buf.getvalue())
    assert code == 0 and res["status"] == "complete" and res["tiles_ok"] == res["tiles_total"]
    from groundstation.product import open_product

    ds = open_product(res["product"])
    summary = ds.attrs["gsp_summary"]
    assert summary["cluster"]["scheduler"] == address and summary["cluster"]["workers"] == 2
    assert ds.enhanced.values.any()
    # the run prepared the workers: task modules imported on their event-loop thread before any task
    from distributed import Client

    with Client(address, timeout=60) as client:
        assert _prepared(client) == [True, True]


def _prepared(client) -> list[bool]:
    """Per worker: has it imported every task module? (the check runs there, from an importable module)"""
    from tasks.workers import missing_task_modules

    return [not missing for missing in client.run(missing_task_modules).values()]


def test_a_prepared_cluster_imports_the_task_modules_on_every_worker_even_one_that_joins_later():
    """Two threads importing the task modules at once can deadlock Python's import locks and kill a worker
    (CI saw it): prepare_workers makes each worker import them on its event-loop thread first, and a worker
    that joins later (a restarted one) does the same before it runs anything."""
    from distributed import Client, LocalCluster

    from flows.cluster import prepare_workers

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster.scheduler_address, set_as_default=False) as client:
        assert _prepared(client) == [False]  # a fresh worker has not imported them
        prepare_workers(cluster.scheduler_address)
        prepare_workers(cluster.scheduler_address)  # idempotent: a served cluster is prepared per run
        assert _prepared(client) == [True]
        cluster.scale(2)
        client.wait_for_workers(2, timeout=120)
        assert _prepared(client) == [True, True]
