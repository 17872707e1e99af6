"""``gsp process``, ``gsp serve``, ``gsp reprocess`` and ``gsp supplement``: the Prefect + Dask commands.

Thin: each command builds validated :class:`flows.process_pass.ProcessOptions` and calls a flow entry point.
Prefect, Dask and torch are imported only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import json
import sys

from groundstation.errors import ConfigError

from ._common import station

__all__ = ["COMMANDS", "check_inputs", "register"]


def _model_options(p: argparse.ArgumentParser, *, enhancer_required: bool = False) -> None:
    g = p.add_argument_group("models and enhancement")
    g.add_argument("--codec", help="registry name or checkpoint file (default: the codec named in the pass header; "
                   "its sha256 must match the header's)")
    g.add_argument("--enhancer", required=enhancer_required,
                   help="registry name or checkpoint file" + ("" if enhancer_required else
                                                              " (default: the registry's default_enhancer)"))
    if not enhancer_required:
        g.add_argument("--no-enhance", action="store_true",
                       help="write a decoded-only product (no 'enhanced' array)")
    g.add_argument("--seed", type=int, help="seed of the enhancer's latent field (default 0)")
    g.add_argument("--temperature", type=float, help="latent scale, 0 = deterministic (default: the registry's "
                   "operating point for the enhancer's rate point, 0 for an enhancer that is no rate point's)")
    g.add_argument("--strength", type=float, help="fraction of the enhancer's change the product keeps, in (0, 1]: "
                   "decoded + strength x (enhanced - decoded) (default: the registry's operating point for the "
                   "enhancer's rate point, 1 for an enhancer that is no rate point's)")
    g.add_argument("--halo", type=int, help="context pixels around each enhancement window, even (default 32)")
    g.add_argument("--tiles-per-batch", type=int, help="codec tiles per Prefect task (default 8)")
    g.add_argument("--core-tiles", type=int, metavar="K",
                   help="enhancement windows of KxK codec tiles plus the halo (default: chosen per pass and "
                   "cluster, up to 1024 px; bigger cores read less halo, smaller ones leave less work for after "
                   "a streamed pass's last byte)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="auto (default): GPU workers when the Dask cluster offers a GPU resource, else CPU")
    g.add_argument("--synthesis", choices=["float32", "float64"],
                   help="pixel synthesis (default: station decode.synthesis); float64: bit-identical pixels on "
                   "every x86 CPU, about 3x the decode time")
    g.add_argument("--decode-mode", choices=["tile", "mosaic"],
                   help="mosaic (default: station decode.mode): ELIC's synthesis over the stitched latent mosaic, "
                   "no seams at codec-tile boundaries; tile: synthesis per codec tile, as products made before "
                   "the mosaic mode (docs/seams.md)")
    g.add_argument("--mosaic-synthesis", choices=["tuned", "codec"],
                   help="decode mode mosaic: tuned (default) = the synthesis fine-tuned for the latent mosaic where "
                   "the registry names one for the pass's codec; codec = the codec's own synthesis, as mosaic "
                   "products made before (docs/seams.md)")
    g.add_argument("--reference", metavar="SCENE",
                   help="source GeoTIFF: adds PSNR, MS-SSIM and a perceptual distance per tile")
    d = p.add_argument_group("execution")
    d.add_argument("--dask-address", metavar="ADDR",
                   help="scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (default: a LocalCluster "
                   "on this machine)")


def _cog_option(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument("--cog", action="store_true",
                   help=f"also write a Cloud-Optimized GeoTIFF of each new product beside it, {where}PASS_ID/"
                   "VERSION.enhanced.tif (.decoded.tif for a decoded-only product): RGB, 'valid' as its internal "
                   "mask (lost tiles masked), overviews, validated; listed in the product's STAC Item and report")


def register(sub) -> None:
    p = sub.add_parser(
        "process", help="process a pass on Dask under Prefect: product, metrics, report",
        description="Validate PASS, decode it, enhance it and write a versioned Zarr product "
        "OUT_DIR/<pass_id>/<version>.zarr with a metrics table (Parquet) and a markdown report; the run and its "
        "artifacts show in the Prefect UI. A run that was interrupted is resumed; a complete product is left "
        "as it is. PASS may be a NAME.part still being written (a downlink): it is processed while it arrives "
        "and the command returns once the writer renames it (or the pass has not grown for the station's "
        "downlink.stale_after_s). While `gsp serve` runs, its Prefect server is used (no start-up).",
        epilog="Exit status: 0 ok; 3 product written but tiles lost (listed for retransmission); 2 bad input.")
    p.add_argument("pass_file", metavar="PASS", help="pass container file (gsp encode writes one)")
    p.add_argument("-o", "--out", required=True, metavar="OUT_DIR", help="products folder")
    _model_options(p)
    _cog_option(p, "OUT_DIR/")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--json", action="store_true",
                   help="print product and metrics paths, tile counts and timings as JSON")

    s = sub.add_parser(
        "serve", help="serve the station's jobs as Prefect deployments (inbox watcher, process, reprocess, "
        "supplement, export, training, evaluation)",
        description="Serve the eight deployments process-pass, reprocess-archive, watch-inbox, apply-supplement, "
        "export-product, train-codec, train-enhancer and evaluate (named after the station) from this process, so operators start, watch and "
        "rerun them from the Prefect UI. Within a second of a pass "
        "landing in INBOX (and at start, for passes left there) it is claimed and gets a process-pass run of "
        "its own: a pass still arriving (NAME.part with its header) is processed while it arrives; complete "
        "passes (trailer present, unchanged for --settle seconds) once complete; products go to --products and "
        "passes to INBOX/done (or INBOX/failed, with the reason). A pass that stopped short (no trailer) starts "
        "a watch-inbox sweep that says until when it waits; a watch-inbox sweep every --interval seconds is the "
        "safety net. The runs share a Dask cluster kept while this command runs (--workers, "
        "or --dask-address), so a pass finds its models loaded. "
        "Runs from a deployment only take paths under the station's roots (station file, roots). Set "
        "PREFECT_API_URL to use a Prefect server and its UI; without it a local `prefect server start` on --host "
        "lives as long as this command. A server's UI on a port other than 4200 also needs "
        "PREFECT_SERVER_UI_API_URL; see docs/operations.md. Ctrl-C (SIGINT) or SIGTERM stops it cleanly: no new "
        "runs, the runs in progress cancelled (a pass being processed is resumed at the next start), exit status 0.")
    s.add_argument("--inbox", metavar="DIR", help="the inbox to watch (default: the station's inbox root)")
    s.add_argument("--products", metavar="DIR", help="products folder (default: the station's products root)")
    s.add_argument("--archive", metavar="DIR",
                   help="default archive of the reprocess-archive deployment (default: the station's archive root)")
    s.add_argument("--interval", type=float, default=600.0, metavar="S",
                   help="seconds between safety-net sweeps (default 600; a pass that lands is taken at once)")
    s.add_argument("--once", action="store_true", help="run one sweep now, without serving, and exit")
    s.add_argument("--settle", type=float, default=2.0, metavar="S",
                   help="a pass must be unchanged this long before it is touched (default 2)")
    s.add_argument("--stale-after", type=float, default=3600.0, metavar="S",
                   help="process a pass without end-of-pass trailer once unchanged this long (default 3600)")
    s.add_argument("--name", help="name of the deployments (default: the station's name)")
    s.add_argument("--limit", type=int, default=2, metavar="N",
                   help="runs of all deployments at a time (default 2; sweeps: one at a time)")
    s.add_argument("--workers", type=int, default=2, metavar="N",
                   help="Dask worker processes of the station's cluster, started with gsp serve and kept while it "
                   "runs, so each pass finds its models loaded (default 2); 0: each run starts and stops a "
                   "LocalCluster of its own; not used with --dask-address")
    s.add_argument("--host", default="127.0.0.1",
                   help="address the local Prefect server listens on when PREFECT_API_URL is not set "
                   "(default 127.0.0.1; elsewhere set PREFECT_SERVER_API_AUTH_STRING, docs/operations.md 'Auth')")
    _model_options(s)
    s.add_argument("--json", action="store_true", help="with --once: print the sweep's results as JSON")

    u = sub.add_parser(
        "supplement", help="apply a supplement (resent tiles of a pass) to the pass's product(s)",
        description="Complete the product(s) of the pass SUPPLEMENT resends tiles of (same pass uid, under "
        "--products): decode the resent tiles, recompute only the enhancement windows that read them, then update "
        "metrics, report, STAC Item, overviews and COG; the product keeps its version and records the supplement. "
        "Refused, with nothing changed: a supplement of an unknown pass, a duplicate (its tiles are intact "
        "already), one with another codec. The inbox watcher does this by itself for a supplement dropped into "
        "the inbox. Write one with `gsp encode SCENE -o OUT --supplement-of PASS --tiles 3,7`.",
        epilog="Exit status: 0 the product is complete; 3 tiles are still lost; 2 refused or bad input.")
    u.add_argument("supplement", metavar="SUPPLEMENT", help="supplement file (gsp encode --supplement-of writes one)")
    u.add_argument("--products", required=True, metavar="DIR", help="products folder holding the pass's product")
    u.add_argument("--dask-address", metavar="ADDR", help="scheduler of an existing Dask cluster (default: a "
                   "LocalCluster of --workers processes)")
    u.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    u.add_argument("--json", action="store_true", help="print the updated summaries as JSON")

    r = sub.add_parser(
        "reprocess", help="new product versions for archived passes (another enhancer...), skipping done ones",
        description="Select passes under --archive (by --glob and acquisition time) and write products of the "
        "version given by the models and parameters next to the existing ones; complete products are skipped, "
        "interrupted ones resumed.")
    r.add_argument("--archive", required=True, metavar="DIR")
    r.add_argument("--products", required=True, metavar="DIR")
    r.add_argument("--since", metavar="DATE", help="acquired at or after (YYYY-MM-DD or ISO 8601, UTC if no zone)")
    r.add_argument("--until", metavar="DATE", help="acquired before the end of this day / before this time")
    r.add_argument("--glob", default="**/*", metavar="PATTERN", help="files under --archive (default **/*)")
    r.add_argument("--concurrency", type=int, default=2, metavar="N", help="passes processed at once (default 2)")
    _model_options(r, enhancer_required=True)
    _cog_option(r, "in the --products folder: ")
    r.add_argument("--json", action="store_true", help="print one row per pass as JSON")

    d = sub.add_parser(
        "downlink", help="simulate a downlink: write a pass into an inbox record by record at a given rate",
        description="Write PASS into INBOX as NAME.part, record by record (each fsync'd) at --rate Mbit/s or "
        "spread over --duration seconds, then rename it to NAME, as a ground-station receiver does; with "
        "--drop, --corrupt and --cut-after to rehearse losses. A station watching INBOX (gsp serve) processes "
        "the pass while it arrives.")
    d.add_argument("pass_file", metavar="PASS", help="an intact pass container (gsp encode writes one)")
    d.add_argument("inbox", metavar="INBOX", help="the folder to write into (the station's inbox)")
    speed = d.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, metavar="MBIT_S", help="downlink rate in Mbit/s")
    speed.add_argument("--duration", type=float, metavar="S", help="spread the pass over S seconds")
    d.add_argument("--drop", default="", metavar="I,J", help="tiles whose records never arrive")
    d.add_argument("--corrupt", default="", metavar="I,J", help="tiles whose records arrive with bit errors")
    d.add_argument("--cut-after", type=int, metavar="N", help="stop after N records, half way through the next")
    d.add_argument("--no-rename", action="store_true", help="leave the file as NAME.part (a receiver that died)")
    d.add_argument("--name", help="file name in the inbox (default: the pass's own)")


def _tiles(text: str, flag: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give tile numbers separated by commas, e.g. 3,7") from None


def cmd_downlink(args) -> int:
    from groundstation.downlink import simulate_downlink

    res = simulate_downlink(args.pass_file, args.inbox, rate_mbit_s=args.rate, duration_s=args.duration,
                            drop=_tiles(args.drop, "--drop"), corrupt=_tiles(args.corrupt, "--corrupt"),
                            cut_after=args.cut_after, rename=not args.no_rename, name=args.name)
    rate = res.bytes * 8 / 1e6 / res.seconds if res.seconds else float("inf")
    print(f"{res.final or res.part}: {res.records} records, {res.bytes} bytes in {res.seconds:.1f} s "
          f"({rate:.2f} Mbit/s)" + (f"; dropped {list(res.dropped)}" if res.dropped else "")
          + (f"; corrupted {list(res.corrupted)}" if res.corrupted else "")
          + (f"; cut in tile {res.cut}" if res.cut is not None else ""))
    return 0


def _options(args):
    from flows.process_pass import ProcessOptions

    return ProcessOptions.build(
        reference=args.reference, codec=args.codec, enhancer=args.enhancer,
        enhance=not getattr(args, "no_enhance", False), seed=args.seed, temperature=args.temperature,
        strength=args.strength, halo=args.halo, tiles_per_batch=args.tiles_per_batch, core_tiles=args.core_tiles, device=args.device,
        synthesis=getattr(args, "synthesis", None) or station().decode.synthesis,
        decode_mode=getattr(args, "decode_mode", None) or station().decode.mode,
        mosaic_synthesis=getattr(args, "mosaic_synthesis", None), cog=getattr(args, "cog", False) or None)


def _workers(args) -> int:
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be >= 1")
    return args.workers


def check_inputs(args) -> None:
    """Refuse a file that is no pass container (or none at all) at once, before Prefect, Dask and torch are
    imported and started (seconds): only its header is read."""
    from groundstation.container import PassReader

    path = {"process": "pass_file", "supplement": "supplement"}.get(args.command)
    if path:
        PassReader(getattr(args, path))


def cmd_process(args) -> int:
    from flows.access import checked
    from flows.process_pass import run_process_pass

    opts = _options(args)
    # a no-op unless the station file says roots.enforce: always (docs/operations.md, "Who may do what")
    pass_file, out = checked("PASS", args.pass_file, "pass"), checked("--out", args.out, "products")
    res = run_process_pass(pass_file, out, opts, dask_address=args.dask_address, n_workers=_workers(args))
    if args.json:
        keys = ("status", "pass_id", "product", "metrics", "report", "quicklook", "cog", "version", "tiles_total",
                "tiles_ok", "tiles_lost", "lost", "bytes", "bpp", "timings", "timeliness", "decode", "seam_ratio",
                "batches", "devices", "flow_run_id", "exit_code")
        print(json.dumps({k: res.get(k) for k in keys}, indent=2))
    else:
        state = " (already complete, nothing done)" if res["status"] == "already-complete" else ""
        print(f"{res['product']}{state}: {res['tiles_ok']}/{res['tiles_total']} tiles, {res['bpp']:.4f} bpp, "
              f"{res['timings']['total_s']} s")
        print(f"metrics: {res['metrics']}\nreport:  {res['report']}")
        if res.get("quicklook"):
            print(f"picture: {res['quicklook']}")
        if res.get("cog"):
            print(f"cog:     {res['cog']}")
        for d in res["lost"]:
            print(f"  tile {d['tile']}: {d['reason']}: {d['detail']}  -> ask for retransmission")
    return res["exit_code"]


def cmd_serve(args) -> int:
    from flows.deployments import serve_station
    from flows.inbox import run_sweep

    opts = _options(args)
    if args.interval <= 0:
        raise ConfigError(f"--interval {args.interval}: must be > 0 seconds")
    if args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: must be >= 1")
    if args.workers < 0:
        raise ConfigError(f"--workers {args.workers}: must be >= 0 (0: a Dask LocalCluster per run)")
    kw = dict(dask_address=args.dask_address, settle_s=args.settle, stale_after_s=args.stale_after)
    if args.once:
        results = run_sweep(args.inbox, args.products, opts, **kw)
        _print_passes(results, args.json)
        if any(r["status"] != "done" for r in results):
            return 2
        return 3 if any(r.get("tiles_lost") for r in results) else 0
    from gsp.jobs import job_deployments

    serve_station(inbox=args.inbox, products=args.products, archive=args.archive, options=opts,
                  interval=args.interval, name=args.name, limit=args.limit, host=args.host, workers=args.workers,
                  extra_deployments=job_deployments(name=args.name), **kw)
    return 0


def _print_passes(rows: list[dict], as_json: bool) -> None:
    """One line per pass (status, product, error), or the rows as JSON."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['pass']}: {r['status']}" + (f" -> {r['product']}" if r.get("product") else "")
              + (f" ({r['error']})" if r.get("error") else ""))


def cmd_reprocess(args) -> int:
    from flows.reprocess import run_reprocess

    opts = _options(args)
    rows = run_reprocess(args.archive, args.products, opts, since=args.since, until=args.until, glob=args.glob,
                         concurrency=args.concurrency, dask_address=args.dask_address)
    _print_passes(rows, args.json)
    if not args.json:
        print(f"{sum(r['status'] == 'done' for r in rows)} processed, {sum(r['status'] == 'skipped' for r in rows)} "
              f"skipped, {sum(r['status'] == 'failed' for r in rows)} failed", file=sys.stderr)
    if any(r["status"] == "failed" for r in rows):
        return 2
    return 3 if any(r.get("tiles_lost") for r in rows) else 0


def cmd_supplement(args) -> int:
    from flows.access import checked
    from flows.supplement import run_apply_supplement

    sup, products = checked("SUPPLEMENT", args.supplement, "pass"), checked("--products", args.products, "products")
    done = run_apply_supplement(sup, products, dask_address=args.dask_address, n_workers=_workers(args))
    if args.json:
        keys = ("status", "pass_id", "product", "report", "version", "tiles_total", "tiles_ok", "tiles_lost", "lost",
                "supplements", "exit_code")
        print(json.dumps([{k: s.get(k) for k in keys} for s in done], indent=2))
    else:
        for s in done:
            e = s["supplements"][-1]
            print(f"{s['product']}: tiles {', '.join(map(str, e['tiles_ok'])) or 'none'} added, "
                  f"{len(e['windows_recomputed'])} of {e['windows_total']} enhancement windows recomputed; "
                  f"{s['tiles_ok']}/{s['tiles_total']} tiles")
            for d in s["lost"]:
                print(f"  tile {d['tile']}: {d['reason']}: {d['detail']}  -> still lost")
    return max(s["exit_code"] for s in done)


COMMANDS = {"process": cmd_process, "serve": cmd_serve, "reprocess": cmd_reprocess, "supplement": cmd_supplement,
            "downlink": cmd_downlink}
