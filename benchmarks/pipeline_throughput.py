"""The pipeline against the reference scripts' loop, on the same passes, same models, same temperature.

In one run, on real pixels (the drone frames in ../shared/data/scenes/drone_frames, 256 px codec tiles):

* **naive loop**, written like the reference scripts: one process, torch's default threads, one tile at a
  time: decode it (CompressAI ELIC through the pass's entropy mode), enhance that tile alone (the plain
  ``INNRSIC.inverse``, NCHW, batch 1, no halo), write it into a GeoTIFF;
* **one-shot** ``gsp process`` (a subprocess: imports, Prefect's ephemeral API, its own LocalCluster of 2
  worker processes x 1 thread), with the time from the command's start to the first decoded chunk on disk;
* **served**: the API (a local ``prefect server``) and the LocalCluster already up, as under ``gsp serve``;
  each pass is one ``process-pass`` flow run in this long-lived process (after a warm-up pass), which gives
  the per-pass latency and time per tile against pass size.

For each pipeline run: speed-up = naive seconds / pipeline seconds, and the overhead over its own model
compute = wall x worker threads / (summed decode + enhance seconds of the tasks) - 1.

    .venv/bin/python benchmarks/pipeline_throughput.py                       # 36 / 192 / 576 tiles
    .venv/bin/python benchmarks/pipeline_throughput.py --sizes 36 --naive 36  # quick look

Passes are encoded once into ``--work`` (reused on the next run). Results: benchmarks/results/pipeline_throughput.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
try:
    import groundstation  # noqa: F401
except ModuleNotFoundError:  # run from a checkout whose editable install predates a package
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import RESULTS, write_result  # noqa: E402

FRAMES = REPO.parent / "shared" / "data" / "scenes" / "drone_frames"
TILE = 256
#: tiles -> (width, height) of the scene cut from the frames (all real pixels; 576 is a 2x2 mosaic of frames)
SIZES = {4: (512, 512), 12: (1024, 768), 36: (1536, 1536), 144: (3072, 3000), 192: (4000, 3000), 576: (6144, 6144)}
GSP = Path(sys.executable).with_name("gsp")


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ passes
def make_scene(tiles: int, out: Path) -> Path:
    """A GeoTIFF without CRS (a pixel grid, as the drone frames are) of the size for ``tiles``."""
    import rasterio

    w, h = SIZES[tiles]
    frames = sorted(FRAMES.glob("*.jpg"))
    if not frames:
        raise SystemExit(f"no drone frames in {FRAMES}: this benchmark needs ../shared/data")
    canvas = np.zeros((3, h, w), np.uint8)
    k = 0
    for y0 in range(0, h, 3000):
        for x0 in range(0, w, 4000):
            with rasterio.open(frames[k % len(frames)]) as ds:
                part = ds.read()
            k += 1
            ph, pw = min(3000, h - y0), min(4000, w - x0)
            canvas[:, y0:y0 + ph, x0:x0 + pw] = part[:, :ph, :pw]
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", tiled=True, blockxsize=256,
                   blockysize=256)
    with rasterio.open(out, "w", **profile) as ds:
        ds.write(canvas)
    return out


def make_pass(tiles: int, work: Path) -> Path:
    """The ``tiles``-tile pass in the default entropy mode for new passes (kept in ``work``, named by the mode,
    so a pass cached under another default is not reused)."""
    from groundstation.container import DEFAULT_ENTROPY

    path = work / f"drone-{tiles}.{DEFAULT_ENTROPY}.pass"
    if path.exists():
        return path
    scene = make_scene(tiles, work / f"drone-{tiles}.tif")
    _say(f"encoding the {tiles}-tile pass (once; kept in {work})")
    subprocess.run([str(GSP), "encode", str(scene), "-o", str(path), "--pass-id", f"drone-{tiles}",
                    "--acquired", "2026-06-01T10:00:00Z", "--entropy", DEFAULT_ENTROPY], check=True,
                   stdout=subprocess.DEVNULL)
    return path


def models(pass_path: Path) -> dict:
    from groundstation.container import PassReader
    from groundstation.registry import load_registry, resolve_model

    header = PassReader(pass_path).header
    _, cpath, _, _ = resolve_model(header.codec.name, "codec")
    ename, epath, esha, _ = resolve_model(None, "enhancer")
    from enhancer.checkpoint import load_enhancer

    _, _, digest = load_enhancer(epath, esha)
    point = load_registry().operating_point(digest)
    return {"codec": str(cpath), "enhancer": ename, "enhancer_path": str(epath),
            "temperature": point.temperature, "strength": point.strength}


# ------------------------------------------------------------------------------------------------ naive loop
def naive_loop(pass_path: Path, out: Path, m: dict, seed: int = 0) -> dict:
    """The reference scripts' loop: per tile, decode, enhance that tile, write it. ``first_tile_s``: seconds
    from its start (models loaded in it) to the first tile decoded."""
    import rasterio
    import torch

    from enhancer.checkpoint import load_enhancer
    from enhancer.inference import enhance_array
    from groundstation.codec import TileCodec, load_codec
    from groundstation.container import PassReader

    t0 = time.perf_counter()
    reader = PassReader(pass_path)
    header = reader.header
    scan = reader.scan()
    codec = TileCodec(load_codec(m["codec"], header.codec.sha256), threads=None, entropy=header.codec.entropy,
                      witness_kind=header.witness, int_prior_sha256=header.codec.int_prior_sha256)
    model, _, _ = load_enhancer(m["enhancer_path"])
    s = header.scene
    profile = dict(driver="GTiff", width=s.width, height=s.height, count=3, dtype="uint8", tiled=True,
                   blockxsize=TILE, blockysize=TILE)
    dec_s = enh_s = 0.0
    first = None
    with rasterio.open(out, "w", **profile) as ds:
        for tile in sorted(scan.records):
            rec = reader.read(tile)
            r0, r1, c0, c1 = header.tile_window(tile)
            a = time.perf_counter()
            rgb, _ = codec.decode(rec.strings, rec.z_hw, rec.y_hw, r1 - r0, c1 - c0)
            b = time.perf_counter()
            first = b - t0 if first is None else first
            enh = enhance_array(model, rgb, seed=seed, temperature=m["temperature"], origin=(r0, c0), fast=False,
                                 strength=m["strength"])
            c = time.perf_counter()
            ds.write(enh.transpose(2, 0, 1), window=rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0))
            dec_s += b - a
            enh_s += c - b
    return {"seconds": time.perf_counter() - t0, "tiles": len(scan.records), "decode_s": dec_s,
            "enhance_s": enh_s, "threads": torch.get_num_threads(), "first_tile_s": first}


# ------------------------------------------------------------------------------------------------ pipeline
def _first_chunk(product_dir: Path, stop: threading.Event, t0: float, found: list) -> None:
    while not stop.is_set():
        for z in product_dir.glob("*/*.zarr/decoded"):
            if any(p.is_file() and not p.name.startswith((".z", "zarr.json")) for p in z.rglob("*")):
                found.append(time.perf_counter() - t0)
                return
        time.sleep(0.05)


class WorkerRSS:
    """Peak resident memory of the Dask worker processes under ``root`` (sampled every 0.25 s while running)."""

    def __init__(self, root: int) -> None:
        self.root, self.peak, self._stop = root, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = psutil.Process(self.root).children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for proc in procs:
                try:
                    if "spawn_main" in " ".join(proc.cmdline()):  # a worker process of a LocalCluster
                        self.peak[proc.pid] = max(self.peak.get(proc.pid, 0), proc.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.25)

    def __enter__(self) -> "WorkerRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def max_mb(self) -> float | None:
        return round(max(self.peak.values()) / 2**20, 1) if self.peak else None


def _pipeline_row(summary: dict, wall: float, threads: int) -> dict:
    t = summary["timings"]
    compute = (t["decode_ms_sum"] + t["enhance_ms_sum"]) / 1e3
    return {"seconds": wall, "tiles": summary["tiles_ok"], "decode_s": t["decode_ms_sum"] / 1e3,
            "enhance_s": t["enhance_ms_sum"] / 1e3, "flow_s": t["total_s"], "threads": threads,
            "overhead": wall * threads / compute - 1.0 if compute else None,
            "s_per_tile": wall / max(1, summary["tiles_ok"]), "version": summary["version"]}


def one_shot(pass_path: Path, out: Path, m: dict, env: dict) -> dict:
    """``gsp process`` as an operator runs it: its own API and cluster."""
    cmd = [str(GSP), "process", str(pass_path), "-o", str(out), "--json", "--temperature", str(m["temperature"])]
    stop, found = threading.Event(), []
    t0 = time.perf_counter()
    watcher = threading.Thread(target=_first_chunk, args=(out, stop, t0, found), daemon=True)
    watcher.start()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with WorkerRSS(proc.pid) as rss:
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"gsp process failed ({proc.returncode}): {stderr[-2000:]}")
    summary = json.loads(stdout[stdout.index("{"):])
    row = _pipeline_row(summary, wall, threads=2)
    row["startup_s"] = found[0] if found else None
    row["worker_peak_rss_mb"] = rss.max_mb
    return row


def served(passes: list[tuple[int, Path]], work: Path, m: dict) -> list[dict]:
    """API and cluster up first; each pass one process-pass run in this process (after a warm-up)."""
    from flows.process_pass import ProcessOptions, run_process_pass

    rows = []
    opts = ProcessOptions(temperature=m["temperature"])
    with station() as addr:
        _say("served: warm-up pass (models loaded into the workers)")
        run_process_pass(passes[0][1], work / "served-warmup", opts, dask_address=addr)
        for tiles, p in passes:
            _say(f"served: {tiles} tiles")
            t0 = time.perf_counter()
            with WorkerRSS(os.getpid()) as rss:
                summary = run_process_pass(p, work / f"served-{tiles}-{time.time_ns()}", opts, dask_address=addr)
            rows.append({"tiles_planned": tiles, **_pipeline_row(summary, time.perf_counter() - t0, threads=2),
                         "worker_peak_rss_mb": rss.max_mb})
    return rows


@contextlib.contextmanager
def station():
    """A station as ``gsp serve`` runs it: a local Prefect server (this process's API) and a LocalCluster, both
    started once and kept for the context; yields the cluster's address."""
    from flows.cluster import dask_address
    from flows.runtime import local_prefect_server

    with local_prefect_server() as url, dask_address() as addr:
        os.environ["PREFECT_API_URL"] = url
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield addr


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--sizes", default="36,192,576", help="pass sizes (tiles) for the served runs: "
                    f"any of {sorted(SIZES)}")
    ap.add_argument("--naive", default="36,192", help="sizes also run by the naive loop and one-shot gsp process")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "gsp-pipeline-bench"),
                    help="where passes (kept) and products (removed) go")
    ap.add_argument("--out", default=str(RESULTS / "pipeline_throughput.json"))
    args = ap.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",")} | {int(s) for s in args.naive.split(",")})
    naive_sizes = [int(s) for s in args.naive.split(",") if s]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    passes = {n: make_pass(n, work) for n in sizes}
    m = models(passes[sizes[0]])
    _say(f"models: codec {m['codec']}, enhancer {m['enhancer']} at T={m['temperature']}")

    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    os.environ.update({k: env[k] for k in ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED")})
    # one untimed run first: Prefect's database is created once per station, not per pass
    subprocess.run([str(GSP), "process", str(passes[sizes[0]]), "-o", str(work / "warmup")], env=env,
                   capture_output=True)

    rows: dict[str, list] = {"naive": [], "one_shot": [], "served": []}
    for n in naive_sizes:  # interleaved per size: naive, then one-shot, so load hits both alike
        _say(f"naive loop: {n} tiles")
        rows["naive"].append({"tiles_planned": n, **naive_loop(passes[n], work / f"naive-{n}.tif", m)})
        _say(f"one-shot gsp process: {n} tiles")
        rows["one_shot"].append({"tiles_planned": n, **one_shot(passes[n], work / f"oneshot-{n}-{time.time_ns()}",
                                                                 m, env)})
    rows["served"] = served([(n, passes[n]) for n in sorted({*sizes})], work, m)

    naive = {r["tiles_planned"]: r["seconds"] for r in rows["naive"]}
    print("\n| pass | naive loop | one-shot gsp process | speed-up | served (per pass) | speed-up | overhead "
          "(one-shot / served) | start-up |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows["one_shot"]:
        n = r["tiles_planned"]
        s = next(x for x in rows["served"] if x["tiles_planned"] == n)
        r["speedup"], s["speedup"] = naive[n] / r["seconds"], naive[n] / s["seconds"]
        print(f"| {n} tiles | {naive[n]:.1f} s | {r['seconds']:.1f} s | {r['speedup']:.2f}x | {s['seconds']:.1f} s | "
              f"{s['speedup']:.2f}x | {r['overhead']:.0%} / {s['overhead']:.0%} | {r['startup_s'] or float('nan'):.1f} s |")
    print("\n| tiles | served s/tile | decode s (sum) | enhance s (sum) | overhead | worker peak RSS |")
    print("|---|---|---|---|---|---|")
    for s in rows["served"]:
        print(f"| {s['tiles']} | {s['s_per_tile']:.3f} | {s['decode_s']:.1f} | {s['enhance_s']:.1f} | "
              f"{s['overhead']:.0%} | {s['worker_peak_rss_mb']} MB |")
    write_result(args.out, {"command": "benchmarks/pipeline_throughput.py " + " ".join(argv or sys.argv[1:]),
                            "models": m, **rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
