"""What one Prefect task costs the flow process on Dask: prefect-dask's runner against the station's.

In one run, on one LocalCluster (2 worker processes x 1 thread, as a one-shot run starts) and one temporary
Prefect API: a flow submits ``--tasks`` no-op tasks, ``--rounds`` times with each runner, alternating. For each
runner: the flow process's CPU seconds per task (all its threads: serialising the context, tokenising,
pickling; ``resource.getrusage``) and the wall seconds per task. On a 2-core machine the flow process's CPU is
taken from the workers, so it is the number that matters for a pass's time.

    .venv/bin/python benchmarks/task_overhead.py            # 40 tasks x 3 rounds per runner, ~1 min

Results: benchmarks/results/task_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import flows  # noqa: F401
except ModuleNotFoundError:  # run from a checkout whose editable install predates a package
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import RESULTS, write_result  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=40, help="tasks per flow run (default 40)")
    ap.add_argument("--rounds", type=int, default=3, help="flow runs per runner, alternating (default 3)")
    ap.add_argument("--out", default=str(RESULTS / "task_overhead.json"))
    args = ap.parse_args()

    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="gsp-bench-prefect-"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from distributed import LocalCluster
    from prefect import flow, task
    from prefect.testing.utilities import prefect_test_harness
    from prefect_dask import DaskTaskRunner

    from flows.task_runner import StationTaskRunner

    @task
    def noop(i: int) -> int:
        return i

    def run(runner_cls, address: str) -> dict:
        @flow(task_runner=runner_cls(address=address))
        def many(n: int) -> dict:
            cpu, wall = _cpu(), time.perf_counter()
            futures = [noop.submit(i) for i in range(n)]
            submitted = _cpu() - cpu
            assert [f.result() for f in futures] == list(range(n))
            return {"cpu_s": _cpu() - cpu, "submit_cpu_s": submitted, "wall_s": time.perf_counter() - wall}
        return many(args.tasks)

    runners = {"prefect-dask": DaskTaskRunner, "station": StationTaskRunner}
    rows: dict[str, list[dict]] = {k: [] for k in runners}
    with prefect_test_harness(server_startup_timeout=90):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
            for name, cls in runners.items():  # warm-up: imports on the workers, the API's first writes
                run(cls, cluster.scheduler_address)
            for r in range(args.rounds):
                for name, cls in runners.items():
                    rows[name].append(run(cls, cluster.scheduler_address))
                    print(f"round {r + 1} {name:13s} " + "  ".join(f"{k} {v:.2f}" for k, v in rows[name][-1].items()),
                          flush=True)

    per_task = {name: {k: statistics.median(x[k] for x in v) / args.tasks * 1e3 for k in v[0]}
                for name, v in rows.items()}
    base, new = per_task["prefect-dask"], per_task["station"]
    print(f"\nper task, median of {args.rounds} runs of {args.tasks} tasks (ms):")
    for k in base:
        print(f"  {k:13s} prefect-dask {base[k]:6.1f}  station {new[k]:6.1f}  ratio {new[k] / base[k]:.2f}")
    write_result(args.out, {"command": "benchmarks/task_overhead.py " + " ".join(sys.argv[1:]), "tasks": args.tasks,
                            "rounds": args.rounds, "per_task_ms": per_task, "runs": rows,
                            "ratio_station_over_prefect_dask": {k: new[k] / base[k] for k in base}})


if __name__ == "__main__":
    main()
