"""Latency from a pass's last byte to its complete product: processed while it arrives, against after it arrived.

One real pass (a drone frame from ../shared/data/scenes/drone_frames, 256 px codec tiles, the default codec;
192 tiles by default) goes through the downlink simulator (:func:`groundstation.downlink.simulate_downlink`)
into an inbox. Measured in one run, on one station started once (a local Prefect server and a LocalCluster of
2 worker processes x 1 thread, models loaded by an untimed warm-up pass, so no start-up is in any latency):

* **(a) complete, then process**: the pass written into the inbox, renamed, and ``process-pass`` started on
  the finished file at once. This is the *best case* of the watcher that waits for complete passes: that one
  also waits for its next sweep (up to one interval, 60 s by default) and for the file to settle. Its latency
  does not depend on the downlink rate (nothing runs before the last byte), so it is measured once.
* **(b) streaming**: ``process-pass`` on ``NAME.part`` while the simulator writes it (the inbox protocol), at a
  *matched* rate (the downlink lasts as long as (a) took to process the pass) and at a rate ``--fast`` times
  faster.
* **(c) reference loop**: the reference scripts' loop (one process, tile by tile: decode with CompressAI,
  enhance with the registry enhancer; :func:`pipeline_throughput.naive_loop`) started when the file is
  complete; its latency is its run time, models loaded in it.

Latency = product complete - last byte (the run summary's ``timeliness``); the first tile decoded is given
from the last byte (negative: during the downlink) and, for (b), from the first byte. The sustained rate is
the pass's tiles over (a)'s processing time and the downlink rate that carries that many tiles a second.
Goals: (b) at the matched rate <= 15 % of (a) and of (c); (b) at the fast rate no worse than (a).

    nice -n 5 .venv/bin/python benchmarks/pass_latency.py               # the 192-tile pass
    .venv/bin/python benchmarks/pass_latency.py --tiles 12 --out /tmp/x.json   # a quick look

Order: warm-up, (a), (b) matched, (c), (b) fast; what is measured so far is written after each step
(``"partial": true``). Passes are encoded once into ``--work`` (reused). Results: benchmarks/results/pass_latency.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import RESULTS, write_result  # noqa: E402
from pipeline_throughput import FRAMES, SIZES, _say, make_pass, models, naive_loop, station  # noqa: E402

WARM_TILES = 4
GOAL_MATCHED = 0.15  # streaming latency at the matched rate, as a fraction of (a)'s and of (c)'s


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _row(summary: dict, first_byte: float, last_byte: float, downlink_s: float | None) -> dict:
    when = summary["timeliness"]
    first = _ts(when["first_tile_decoded"])
    return {"latency_s": round(when["latency_s"], 2), "downlink_s": downlink_s,
            "first_tile_after_first_byte_s": round(first - first_byte, 2),
            "first_tile_after_last_byte_s": round(first - last_byte, 2),
            "tiles_ok": summary["tiles_ok"], "tiles_lost": summary["tiles_lost"], "version": summary["version"],
            "product": summary["product"], "timeliness": when}


def complete_then_process(src: Path, work: Path, opts, addr: str) -> dict:
    """(a): the whole pass into the inbox and renamed, then the run on the finished file at once."""
    from flows.process_pass import run_process_pass
    from groundstation.downlink import simulate_downlink

    dl = simulate_downlink(src, work / "inbox-a")  # as fast as the disk takes it
    summary = run_process_pass(dl.final, work / "products-a", opts, dask_address=addr)
    return _row(summary, first_byte=dl.last_byte, last_byte=dl.last_byte, downlink_s=None)


def streaming(src: Path, work: Path, opts, addr: str, duration_s: float, tag: str) -> dict:
    """(b): the run on ``NAME.part`` while the simulator writes it over ``duration_s`` (in a thread)."""
    from flows.inbox import find_arriving
    from flows.process_pass import run_process_pass
    from groundstation.downlink import simulate_downlink

    inbox = work / f"inbox-{tag}"
    part = inbox / (src.name + ".part")
    out: dict = {}

    def write() -> None:
        try:
            out["result"] = simulate_downlink(src, inbox, duration_s=duration_s)
        except BaseException as exc:  # noqa: BLE001 - reported below
            out["error"] = exc

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    while not find_arriving(inbox) and writer.is_alive():  # as the inbox watcher sees it: a header that parses
        time.sleep(0.01)
    summary = run_process_pass(part if part.exists() else inbox / src.name, work / f"products-{tag}", opts,
                               dask_address=addr)
    writer.join()
    if "error" in out:
        raise out["error"]
    dl = out["result"]
    return {**_row(summary, dl.first_byte, dl.last_byte, downlink_s=dl.seconds),
            "rate_mbit_s": float(f"{dl.bytes * 8 / dl.seconds / 1e6:.4g}") if dl.seconds else None}


@contextlib.contextmanager
def task_stream(addr: str, enabled: bool):
    """Dask's task stream (every task's worker, start and stop) while the context runs, in the yielded list."""
    records: list[dict] = []
    if not enabled:
        yield records
        return
    from distributed import Client, get_task_stream

    with Client(addr) as client, get_task_stream(client=client) as ts:
        yield records
    records.extend(ts.data)


def tail_of(records: list[dict], last_byte: float, complete: float) -> dict:
    """What ran after the last byte: per kind of task (the Dask key's prefix), how many, their worker-busy seconds
    after the last byte, and when the last one ended (from the last byte); the rest up to the product's
    completion is the flow's own work (delivery)."""
    kinds: dict[str, dict] = {}
    rows = []
    for r in records:
        spans = [(x["start"], x["stop"]) for x in r.get("startstops", ()) if x.get("action") == "compute"]
        if not spans:
            continue
        start, stop = min(a for a, _ in spans), max(b for _, b in spans)
        kind = str(r["key"]).split("-")[0].strip("('")
        rows.append({"kind": kind, "worker": r.get("worker"), "start_s": round(start - last_byte, 3),
                     "stop_s": round(stop - last_byte, 3)})
        if stop > last_byte:
            k = kinds.setdefault(kind, {"tasks": 0, "busy_s_after_last_byte": 0.0, "last_stop_s": -1e9})
            k["tasks"] += 1
            k["busy_s_after_last_byte"] += stop - max(start, last_byte)
            k["last_stop_s"] = max(k["last_stop_s"], stop - last_byte)
    last_task = max((r["stop_s"] for r in rows), default=float("nan"))
    return {"after_last_byte": {k: {**v, "busy_s_after_last_byte": round(v["busy_s_after_last_byte"], 2),
                                    "last_stop_s": round(v["last_stop_s"], 2)} for k, v in kinds.items()},
            "last_task_stop_s": round(last_task, 2), "delivery_s": round(complete - last_byte - last_task, 2),
            "tasks": sorted(rows, key=lambda r: r["start_s"])}


def same_product(a: str, b: str) -> bool:
    from groundstation.product import open_product

    import numpy as np

    x, y = open_product(a), open_product(b)
    return all(np.array_equal(x[k].values, y[k].values) for k in ("decoded", "enhanced", "valid"))


def partial(out: str, m: dict, rows: dict) -> None:
    """What is measured so far (a long run on a busy machine may be stopped before the end)."""
    write_result(out, {"partial": True, "models": m, **rows})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--tiles", type=int, default=192, choices=sorted(n for n in SIZES if n > WARM_TILES),
                    help="tiles of the measured pass (a real drone frame cut to that size)")
    ap.add_argument("--fast", type=float, default=10.0, help="the fast downlink: this many times the matched rate")
    ap.add_argument("--matched-s", type=float, default=None,
                    help="downlink duration of the matched rate (default: (a)'s processing time, measured first)")
    ap.add_argument("--core-tiles", type=int, default=None,
                    help="enhancement cores of K x K codec tiles (default: the flow's choice for the cluster)")
    ap.add_argument("--only-matched", action="store_true",
                    help="measure (a) and (b) at the matched rate only, without the loop (c) and the fast rate")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "gsp-pass-latency"),
                    help="where passes (kept) and products (removed at the end) go")
    ap.add_argument("--trace", action="store_true",
                    help="record Dask's task stream during (b) at the matched rate and say what ran after the "
                    "last byte (written as the result's \"trace\")")
    ap.add_argument("--out", default=str(RESULTS / "pass_latency.json"))
    args = ap.parse_args(argv)
    if args.fast <= 1:
        ap.error(f"--fast {args.fast}: must be > 1 (times the matched rate)")
    if args.matched_s is not None and args.matched_s <= 0:
        ap.error(f"--matched-s {args.matched_s}: must be > 0 s")
    if not any(FRAMES.glob("*.jpg")):
        print(f"skipped: no drone frames in {FRAMES} (this benchmark needs ../shared/data)")
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src, warm = make_pass(args.tiles, work), make_pass(WARM_TILES, work)
    m = models(src)
    _say(f"models: codec {m['codec']}, enhancer {m['enhancer']} at T={m['temperature']}")
    os.environ.update({"PREFECT_HOME": str(work / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    os.environ.pop("PREFECT_API_URL", None)
    runs = work / f"runs-{time.time_ns()}"
    runs.mkdir()

    from flows.process_pass import ProcessOptions, run_process_pass

    opts = ProcessOptions(temperature=m["temperature"], core_tiles=args.core_tiles)
    try:
        with station() as addr:
            _say(f"warm-up: a {WARM_TILES}-tile pass (models into the workers, Prefect's database)")
            run_process_pass(warm, runs / "warm-up", opts, dask_address=addr)
            _say(f"(a) complete, then process: {args.tiles} tiles")
            a = complete_then_process(src, runs, opts, addr)
            _say(f"(a) {a['latency_s']} s")
            partial(args.out, m, {"complete_then_process": a})
            matched_s = args.matched_s or a["latency_s"]
            b = {}
            trace: dict = {}
            for tag, dur in (("matched", matched_s), ("fast", matched_s / args.fast))[:1 if args.only_matched else 2]:
                _say(f"(b) streaming, {tag} rate: a {dur:.1f} s downlink")
                with task_stream(addr, args.trace and tag == "matched") as records:
                    b[tag] = streaming(src, runs, opts, addr, dur, tag)
                if records:
                    when = b[tag]["timeliness"]
                    trace = tail_of(records, _ts(when["last_byte"]), _ts(when["product_complete"]))
                    _say(f"(b) {tag}, after the last byte: " + ", ".join(
                        f"{k} {v['tasks']} tasks {v['busy_s_after_last_byte']} s (last ends +{v['last_stop_s']} s)"
                        for k, v in trace["after_last_byte"].items()) + f"; delivery {trace['delivery_s']} s")
                _say(f"(b) {tag}: {b[tag]['latency_s']} s")
                partial(args.out, m, {"complete_then_process": a, "streaming": b})
                # the loop next: the ratios that matter most come first on a busy machine
                if tag == "matched" and not args.only_matched:
                    _say("(c) reference loop on the complete file")
                    loop = naive_loop(src, runs / "loop.tif", m)
                    c = {"latency_s": round(loop["seconds"], 2),
                         "first_tile_after_last_byte_s": round(loop["first_tile_s"], 2),
                         **{k: loop[k] for k in ("tiles", "decode_s", "enhance_s", "threads")}}
                    _say(f"(c) {c['latency_s']} s")
                    partial(args.out, m, {"complete_then_process": a, "streaming": b, "reference_loop": c})
            identical = all(same_product(a["product"], b[t]["product"]) for t in b)
    finally:
        shutil.rmtree(runs, ignore_errors=True)

    if args.only_matched:
        ratio = b["matched"]["latency_s"] / a["latency_s"]
        print(f"\n(a) {a['latency_s']:.1f} s, (b) matched {b['matched']['latency_s']:.1f} s: {ratio:.0%} of (a); "
              f"products identical: {identical}")
        write_result(args.out, {"partial": True, "command": "benchmarks/pass_latency.py " + " ".join(
            argv if argv is not None else sys.argv[1:]), "models": m, "complete_then_process": a, "streaming": b,
            "ratios": {"matched_vs_a": ratio}, "identical_products": identical,
            **({"trace": trace} if args.trace else {})})
        return 0
    size = src.stat().st_size
    tiles = a["tiles_ok"] + a["tiles_lost"]
    tiles_s = tiles / a["latency_s"]
    sustained = {"tiles_per_s": round(tiles_s, 3), "mbit_s": float(f"{tiles_s * size / tiles * 8 / 1e6:.4g}"),
                 "pass_bytes": size, "tiles": tiles}
    goals = {"matched_vs_a": b["matched"]["latency_s"] / a["latency_s"],
             "matched_vs_c": b["matched"]["latency_s"] / c["latency_s"],
             "fast_vs_a": b["fast"]["latency_s"] / a["latency_s"]}
    met = {"matched <= 15% of (a)": goals["matched_vs_a"] <= GOAL_MATCHED,
           "matched <= 15% of (c)": goals["matched_vs_c"] <= GOAL_MATCHED,
           "fast no worse than (a)": goals["fast_vs_a"] <= 1.0}

    print(f"\n{tiles}-tile pass, {size / 1e3:.1f} kB; latency = last byte -> product complete")
    print("\n| downlink | (a) complete, then process | (b) streaming | (c) reference loop | (b)/(a) | (b)/(c) "
          "| first tile decoded, from the last byte (a / b / c) |")
    print("|---|---|---|---|---|---|---|")
    for tag in ("matched", "fast"):
        r = b[tag]
        print(f"| {tag}: {r['rate_mbit_s']:.3g} Mbit/s, {r['downlink_s']:.1f} s | {a['latency_s']:.1f} s | "
              f"{r['latency_s']:.1f} s | {c['latency_s']:.1f} s | {r['latency_s'] / a['latency_s']:.0%} | "
              f"{r['latency_s'] / c['latency_s']:.0%} | {a['first_tile_after_last_byte_s']:+.1f} s / "
              f"{r['first_tile_after_last_byte_s']:+.1f} s / {c['first_tile_after_last_byte_s']:+.1f} s |")
    print(f"\n(a) is the best case of the watcher that waits for complete passes: it also waits up to one sweep "
          f"interval. (a) and (c) start at the last byte: their latency is the same at both rates.")
    print(f"sustained: {sustained['tiles_per_s']} tiles/s (from (a)), a downlink of {sustained['mbit_s']:.3g} Mbit/s")
    print(f"streamed products identical to (a)'s (decoded, enhanced, valid): {identical}")
    for k, v in met.items():
        print(f"goal {k}: {'met' if v else 'NOT met'}")
    command = "benchmarks/pass_latency.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_result(args.out, {"partial": False, "command": command,
                            "models": m, "tiles": tiles, "complete_then_process": a, "streaming": b,
                            "reference_loop": c, "sustained": sustained, "ratios": goals, "goals_met": met,
                            "identical_products": identical, **({"trace": trace} if args.trace else {})})
    return 0


if __name__ == "__main__":
    sys.exit(main())
