"""Weeks without a restart, compressed: small passes fed one by one through ``gsp serve``'s inbox, and after each
one what a long-running station would leak.

``gsp serve`` runs as an operator starts it (its own local ``prefect server`` on 127.0.0.1, SQLite under its
PREFECT_HOME, the registry's demo models) on a Dask cluster that lives as long as it does: by default its own
(``gsp serve --workers 2``: a LocalCluster inside it), or with --workers N an external one (a ``dask
scheduler`` and N single-threaded workers on 127.0.0.1, given as --dask-address); --serve-workers 0 measures
a LocalCluster per run instead. Its TMPDIR is a folder of its own. Each
pass (a 256x256 window of the demo scene, its own pass id) is written into the inbox as ``NAME.part`` and renamed
when complete, as a downlink does; the script waits for the product to be complete and then records, pass by pass:

* latency: from the rename to the product's complete flag (includes gsp serve noticing the file);
* RSS of the ``gsp serve`` process (with its own cluster: its scheduler too), of the Prefect server, of the
  Dask scheduler (external) and of each Dask worker, and of every other process under ``gsp serve`` (flow-run
  subprocesses: none should outlive its run; its resource tracker), their count;
* open file descriptors of ``gsp serve`` and in the whole process tree;
* files left in ``gsp serve``'s TMPDIR, and in the inbox's ``processing/`` folder;
* the Prefect database's size (``prefect.db`` plus its WAL) and its flow-run count.

Goal: RSS of ``gsp serve`` after pass 40 <= 1.1 x after pass 5, no process, descriptor or temporary file left
behind by a pass. Loopback only, bounded in time (--max-minutes; each pass --pass-timeout).

    .venv/bin/python benchmarks/soak.py                      # 40 passes, gsp serve's own cluster (its default)
    .venv/bin/python benchmarks/soak.py --passes 8           # quick look
    .venv/bin/python benchmarks/soak.py --serve-workers 0    # no station cluster: each run starts a LocalCluster
    .venv/bin/python benchmarks/soak.py --workers 2          # an external cluster (dask scheduler + workers)

Results: benchmarks/results/soak.json (one row per pass) and a markdown table on stdout (docs/operations.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import groundstation  # noqa: F401
except ModuleNotFoundError:  # run from a checkout whose editable install predates a package
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import RESULTS, write_result  # noqa: E402

#: The demo scene's rows/cols of each pass's window (256x256: one codec tile of the demo codec).
PASS_SIZE = 256


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_passes(n: int, folder: Path) -> list[Path]:
    """``n`` small passes, each a different window of the demo scene with its own pass id (encoded once)."""
    from groundstation.encode import encode_scene
    from gsp.demo import DEMO_WINDOW, build_demo_scene

    folder.mkdir(parents=True, exist_ok=True)
    row0, col0, _, _ = DEMO_WINDOW
    out = []
    for i in range(n):
        path = folder / f"soak-{i:03d}.gsp"
        if not path.is_file():
            scene = build_demo_scene(folder / "scene.tif", (row0 + 8 * (i % 20), col0 + 8 * (i // 20), PASS_SIZE,
                                                            PASS_SIZE))
            encode_scene(scene, path, pass_id=f"soak-{i:03d}", acquired=f"2024-05-{1 + i % 28:02d}T10:00:00+00:00")
        out.append(path)
    return out


def _tree(pid: int):
    import psutil

    root = psutil.Process(pid)
    return root, root.children(recursive=True)


def _is_server(proc) -> bool:
    try:
        return "server" in proc.cmdline() and any("prefect" in part for part in proc.cmdline())
    except Exception:  # noqa: BLE001 - gone meanwhile
        return False


def start_dask(folder: Path, env: dict, workers: int) -> list[subprocess.Popen]:
    """A Dask scheduler and ``workers`` single-threaded worker processes on 127.0.0.1 (a station's cluster, up
    for weeks like ``gsp serve``); returns [scheduler, worker...] once the scheduler file exists."""
    dask = Path(sys.executable).with_name("dask")
    sched_file = folder / "scheduler.json"
    log = open(folder / "dask.log", "ab")
    procs = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], env=env, stdout=log, stderr=log,
                              start_new_session=True)]
    deadline = time.monotonic() + 120
    while not sched_file.is_file():
        if time.monotonic() > deadline or procs[0].poll() is not None:
            raise RuntimeError(f"the Dask scheduler did not start; see {folder / 'dask.log'}")
        time.sleep(0.5)
    procs.append(subprocess.Popen([str(dask), "worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1",
                                   "--nworkers", str(workers), "--nthreads", "1", "--no-dashboard",
                                   "--memory-limit", "0"], env=env, stdout=log, stderr=log,
                                  start_new_session=True))
    return procs


def _rss_mib(procs) -> float:
    return round(sum(_safe(p, lambda q: q.memory_info().rss, 0) for p in procs) / 2**20, 1)


def dask_sample(procs: list[subprocess.Popen]) -> dict:
    """RSS of the scheduler and of each worker process (the nanny's children), in MiB."""
    import psutil

    sched = psutil.Process(procs[0].pid)
    workers = [c for c in psutil.Process(procs[1].pid).children(recursive=True)]
    return {"scheduler_rss_mib": _rss_mib([sched]),
            "worker_rss_mib": [_rss_mib([w]) for w in sorted(workers, key=lambda w: w.pid)]}


def _is_worker(proc) -> bool:
    """A worker process of ``gsp serve``'s own LocalCluster: a direct child started by multiprocessing."""
    return "multiprocessing.spawn" in " ".join(_safe(proc, lambda q: q.cmdline(), []))


def sample(serve_pid: int, tmpdir: Path, inbox: Path, home: Path) -> dict:
    """RSS (MiB), descriptors and processes of the serve tree, leftover files, database size; the workers of
    ``gsp serve``'s own cluster (its direct children that multiprocessing spawned) as ``worker_rss_mib``."""
    root, children = _tree(serve_pid)
    server = [p for p in children if _is_server(p)]
    server_ids = {p.pid for p in server}
    for p in server:
        server_ids.update(c.pid for c in p.children(recursive=True))
    workers = sorted((p for p in root.children() if _is_worker(p)), key=lambda p: p.pid)
    worker_ids = {p.pid for p in workers}
    others = [p for p in children if p.pid not in server_ids | worker_ids]
    mib = _rss_mib
    fds = lambda procs: sum(_safe(p, lambda q: q.num_fds(), 0) for p in procs)  # noqa: E731
    db = home / "prefect.db"
    db_bytes = sum(f.stat().st_size for f in home.glob("prefect.db*") if f.is_file())
    runs, scheduled = None, None
    if db.is_file():
        import sqlite3

        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            runs = con.execute("select count(*) from flow_run").fetchone()[0]
            scheduled = con.execute("select count(*) from flow_run where state_type = 'SCHEDULED'").fetchone()[0]
    return {"serve_rss_mib": mib([root]), "server_rss_mib": mib([p for p in children if p.pid in server_ids]),
            "other_rss_mib": mib(others), "other_processes": len(others), "serve_fds": fds([root]),
            "tree_fds": fds([root, *children]), "tmp_files": sum(1 for _ in tmpdir.rglob("*")),
            "processing_files": sum(1 for _ in (inbox / "processing").glob("*")) if (inbox / "processing").is_dir()
            else 0, "db_mib": round(db_bytes / 2**20, 2), "flow_runs": runs, "scheduled_runs": scheduled,
            "scheduler_rss_mib": None, "worker_rss_mib": [_rss_mib([w]) for w in workers]}


def _safe(proc, fn, default):
    try:
        return fn(proc)
    except Exception:  # noqa: BLE001 - a process that ended between listing and reading
        return default


def _complete(products: Path, pass_id: str) -> bool:
    from groundstation.product import status

    return any(status(p) == "complete" for p in (products / pass_id).glob("*.zarr"))


def soak(n_passes: int, work: Path, interval: float, pass_timeout: float, max_minutes: float,
         workers: int = 0, serve_workers: int = 2) -> dict:
    passes = make_passes(n_passes, work / "passes")
    station_dir = Path(tempfile.mkdtemp(prefix="gsp-soak-", dir=work))
    home = station_dir / "station"
    inbox, products = home / "inbox", home / "products"
    for sub in ("inbox", "archive", "products", "runs", "weights"):
        (home / sub).mkdir(parents=True)
    station = station_dir / "station.yaml"
    station.write_text(f"station: soak\nroots:\n  home: {home}\n")
    tmpdir, prefect_home = station_dir / "tmp", station_dir / "prefect-home"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(TMPDIR=str(tmpdir), PREFECT_HOME=str(prefect_home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "gsp.cli", "--station", str(station), "serve", "--interval", str(interval),
           "--settle", "0.5"]
    if workers:  # an external long-lived cluster: each pass's run on that cluster
        dask = start_dask(station_dir, env, workers)
        cmd += ["--limit", "1", "--dask-address", json.loads((station_dir / "scheduler.json").read_text())["address"]]
    else:  # gsp serve's own cluster (its default), or with --serve-workers 0 a LocalCluster per run
        dask = []
        cmd += ["--limit", "2", "--workers", str(serve_workers)]
    log = open(station_dir / "serve.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=REPO)
    rows: list[dict] = []
    t_end = time.monotonic() + 60 * max_minutes
    try:
        _say(f"gsp serve started (pid {proc.pid}, log {station_dir / 'serve.log'})")
        for i, src in enumerate(passes, 1):
            if time.monotonic() > t_end:
                _say(f"time is up after {i - 1} passes (--max-minutes {max_minutes:g})")
                break
            pass_id = src.stem
            part = inbox / f"{src.name}.part"
            shutil.copy(src, part)
            os.rename(part, inbox / src.name)
            t0 = time.monotonic()
            while not _complete(products, pass_id):
                if proc.poll() is not None:
                    raise RuntimeError(f"gsp serve exited ({proc.returncode}); see {station_dir / 'serve.log'}")
                if time.monotonic() - t0 > pass_timeout:
                    raise RuntimeError(f"{pass_id} not complete after {pass_timeout:g} s; see the serve log")
                time.sleep(0.5)
            latency = time.monotonic() - t0
            while (inbox / src.name).exists() or (inbox / "processing" / src.name).exists():
                time.sleep(0.5)  # its run moves it to done/ after the product is complete
            time.sleep(2.0)  # let the run's subprocess and its LocalCluster end
            row = {"pass": i, "latency_s": round(latency, 1), **sample(proc.pid, tmpdir, inbox, prefect_home),
                   **(dask_sample(dask) if dask else {})}
            rows.append(row)
            _say(" ".join(f"{k}={v}" for k, v in row.items()))
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # as an operator's Ctrl-C
        try:
            stopped = proc.wait(timeout=60) is not None
        except subprocess.TimeoutExpired:
            stopped = False
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        for p in reversed(dask):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    return {"rows": rows, "stopped_on_sigint": stopped, "station": str(station_dir), "interval_s": interval}


def verdict(rows: list[dict]) -> dict:
    """The goal's figures: RSS growth of ``gsp serve`` from pass 5 to the last, and what the passes left."""
    by = {r["pass"]: r for r in rows}
    ref = by.get(5) or rows[0]
    last = rows[-1]
    return {"passes": len(rows), "serve_rss_ratio_last_vs_5": round(last["serve_rss_mib"] / ref["serve_rss_mib"], 3),
            "server_rss_ratio_last_vs_5": round(last["server_rss_mib"] / ref["server_rss_mib"], 3),
            **({"worker_rss_ratio_last_vs_5": round(max(last["worker_rss_mib"]) / max(ref["worker_rss_mib"]), 3)}
               if last["worker_rss_mib"] and ref["worker_rss_mib"] else {}),
            **({"scheduler_rss_ratio_last_vs_5": round(last["scheduler_rss_mib"] / ref["scheduler_rss_mib"], 3)}
               if last["scheduler_rss_mib"] and ref["scheduler_rss_mib"] else {}),
            "max_other_processes_after_a_pass": max(r["other_processes"] for r in rows),
            "serve_fds_first_last": [rows[0]["serve_fds"], last["serve_fds"]],
            "tmp_files_last": last["tmp_files"], "processing_files_last": last["processing_files"],
            "db_mib_per_pass": round((last["db_mib"] - ref["db_mib"]) / max(1, last["pass"] - ref["pass"]), 3),
            "latency_s_median": sorted(r["latency_s"] for r in rows)[len(rows) // 2]}


def table(rows: list[dict], every: int = 5) -> str:
    cols = ["pass", "latency_s", "serve_rss_mib", "server_rss_mib", "worker_rss_mib", "scheduler_rss_mib",
            "other_processes", "serve_fds", "tree_fds", "tmp_files", "db_mib", "flow_runs", "scheduled_runs"]
    keep = [r for r in rows if r["pass"] in (1, len(rows)) or r["pass"] % every == 0]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in keep]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passes", type=int, default=40)
    ap.add_argument("--interval", type=float, default=10.0, help="watch-inbox safety-net sweep interval, s (default "
                    "10; gsp serve's own default is 600: a pass that lands is taken at once either way)")
    ap.add_argument("--workers", type=int, default=0, help="worker processes of an external Dask cluster (a dask "
                    "scheduler and workers, given to gsp serve as --dask-address; default 0: none, gsp serve's own)")
    ap.add_argument("--serve-workers", type=int, default=2, help="without --workers: gsp serve --workers, the "
                    "worker processes of its own cluster (default 2, its default); 0: a LocalCluster per run")
    ap.add_argument("--pass-timeout", type=float, default=300.0, help="seconds one pass may take (default 300)")
    ap.add_argument("--max-minutes", type=float, default=40.0, help="stop feeding passes after this (default 40)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gsp-soak",
                    help="passes (reused) and the station folder")
    ap.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = ap.parse_args(argv)
    if not 1 <= args.passes <= 1000:
        ap.error(f"--passes {args.passes}: 1 to 1000")
    res = soak(args.passes, args.work, args.interval, args.pass_timeout, args.max_minutes, args.workers,
               args.serve_workers)
    if not res["rows"]:
        print("no pass finished", file=sys.stderr)
        return 1
    res["verdict"] = verdict(res["rows"])
    res["command"] = "benchmarks/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_result(args.out, res)
    print(table(res["rows"]))
    print(json.dumps(res["verdict"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
