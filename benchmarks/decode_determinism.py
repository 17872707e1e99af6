"""Stress test: does a pass decode to the same symbols on a decoder that is not the encoder?

A mosaic of >= 200 tiles (RSSCN7 val crops when ../shared/data is present, else generated texture) is encoded
as a real pass with ONE torch thread (what the satellite records in the header). The codec's rate is raised by
scaling the analysis transform's output (``--boost``): more and larger symbols, more chances for a scale to sit
on a CDF-table boundary. Each decoder configuration then runs in its own process:

* ``plain``: CompressAI's decompress as a plain pipeline would run it; nothing checks the result, so a tile whose
  decoded symbols differ from the encoder's (measured here with the witness, which plain CompressAI lacks) is a
  **silent corruption**;
* ``gsp``: our decode: witness check, strict one-thread retry on mismatch, ``desync`` when that fails too; a
  silent corruption here would be a tile reported ok whose symbols differ (impossible unless CRC32 collides).

with 1 or 2 threads, NCHW or ``channels_last``, and CUDA where present. Prints a table and writes
benchmarks/results/decode_determinism.json.

    .venv/bin/python benchmarks/decode_determinism.py                  # 224 tiles of 256px, boost 4
    .venv/bin/python benchmarks/decode_determinism.py --tiles 16 --tile-size 128   # quick
    .venv/bin/python benchmarks/decode_determinism.py --cross-cpu      # the cross-CPU table (below)
    .venv/bin/python benchmarks/decode_determinism.py --mode-cost --tiles 24   # cost of each numeric mode (int too)

``--cross-cpu``: passes are encoded in one process and decoded in others that run another CPU's kernels
(``ONEDNN_MAX_CPU_ISA=AVX2`` / ``SSE41``), in both entropy modes (float32: CompressAI as it is; float64: the
deterministic entropy path) and both synthesis modes: the golden pass, a 36-tile real scene (a 1536 px crop of a
drone frame from ../shared/data, generated texture where absent) and a high-rate pass (``--boost``). Per
decode: tiles lost to desync, strict retries, pixel differences against the same pass decoded under this
machine's default kernels (max DN, fraction of values), and ms per tile for encode and decode. Writes
benchmarks/results/cross_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import hashlib, json, sys, time, torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
from groundstation.codec import TileCodec, load_codec
from groundstation.container import PassReader
from groundstation.decode import decode_tile
import numpy as np
reader = PassReader(cfg["pass"])
h = reader.header
loaded = load_codec(cfg["codec"], h.codec.sha256)
tc = TileCodec(loaded, device=cfg["device"], threads=cfg["threads"], channels_last=cfg["channels_last"])
rows = []
t0 = time.perf_counter()
for rec in reader:
    r0, r1, c0, c1 = h.tile_window(rec.tile_index)
    t = time.perf_counter()
    if cfg["mode"] == "plain":
        img, witness = tc.decode(rec.strings, rec.z_hw, rec.y_hw, r1 - r0, c1 - c0)
        status = "ok"  # a plain pipeline has no way to know otherwise
        first_match = witness == rec.witness
        digest = hashlib.sha1(img.tobytes()).hexdigest()
    else:
        rgb, valid, out = decode_tile(tc, rec, h)
        status, first_match = out.status, not out.retried
        digest = hashlib.sha1(np.ascontiguousarray(np.moveaxis(rgb, 0, -1)).tobytes()).hexdigest() if rgb is not None else None
    rows.append({"tile": rec.tile_index, "status": status, "symbols_match_first_try": bool(first_match),
                 "digest": digest, "ms": (time.perf_counter() - t) * 1e3})
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - t0}))
"""


def tile_images(n: int, size: int) -> list[np.ndarray]:
    val = ROOT.parent / "shared" / "data" / "rsscn7" / "val"
    imgs: list[np.ndarray] = []
    if val.is_dir():
        from groundstation.images import list_images, load_rgb

        for path in list_images(val):
            im = load_rgb(path)
            for y, x in ((0, 0), (im.shape[0] - size, im.shape[1] - size)):
                if im.shape[0] >= size and im.shape[1] >= size:
                    imgs.append(im[y : y + size, x : x + size])
            if len(imgs) >= n:
                break
    rng = np.random.default_rng(0)
    while len(imgs) < n:  # generated texture where the development data is absent
        yy, xx = np.mgrid[0:size, 0:size]
        base = 128 + 60 * np.sin(xx / rng.uniform(3, 30)) * np.cos(yy / rng.uniform(3, 30))
        imgs.append(np.clip(np.stack([base] * 3, -1) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8))
    return imgs[:n]


def build_pass(tmp: Path, codec: str, n: int, size: int, boost: float) -> tuple[Path, Path, dict]:
    import rasterio
    import torch
    from rasterio.transform import from_origin

    from groundstation.checkpoints import read_state_dict
    from groundstation.encode import encode_scene
    from groundstation.registry import resolve_model

    _, ckpt, _, _ = resolve_model(codec or None, "codec")
    sd = read_state_dict(ckpt).tensors
    import re

    last = max(int(m[1]) for k in sd if (m := re.match(r"^g_a\.(\d+)\.weight$", k)))  # g_a's last conv
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    sd[f"g_a.{last}.weight"] = sd[f"g_a.{last}.weight"] * boost  # y scaled: finer quantisation, higher rate
    sd[f"g_a.{last}.bias"] = sd[f"g_a.{last}.bias"] * boost
    boosted = tmp / "boosted.pt"
    torch.save(sd, boosted)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    mosaic = np.zeros((rows * size, cols * size, 3), np.uint8)
    for i, im in enumerate(tile_images(rows * cols, size)):
        r, c = divmod(i, cols)
        mosaic[r * size : (r + 1) * size, c * size : (c + 1) * size] = im
    scene = tmp / "stress.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=mosaic.shape[1], height=mosaic.shape[0], count=3,
                       dtype="uint8", crs="EPSG:32633", transform=from_origin(0, 0, 1, 1)) as ds:
        ds.write(np.moveaxis(mosaic, -1, 0))
    torch.set_num_threads(1)
    t = time.perf_counter()
    res = encode_scene(scene, tmp / "stress.gsp", codec=str(boosted), tile_size=size, threads=1, entropy="float32")
    info = {"tiles": res.tiles, "bpp": res.bpp, "encode_s": time.perf_counter() - t}
    return tmp / "stress.gsp", boosted, info


def run_child(cfg: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1] if out.stderr else ''}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


XCHILD = r"""
import json, sys, time, torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(1)
if cfg["op"] == "encode":
    from groundstation.encode import encode_scene
    t = time.perf_counter()
    r = encode_scene(cfg["scene"], cfg["pass"], codec=cfg["codec"], tile_size=cfg["tile"], entropy=cfg["entropy"])
    print(json.dumps({"seconds": time.perf_counter() - t, "tiles": r.tiles, "bpp": r.bpp}))
else:
    import numpy as np
    from groundstation.decode import decode_pass
    from groundstation.product import open_product
    s = decode_pass(cfg["pass"], cfg["out"], codec=cfg["codec"], synthesis=cfg["synthesis"])
    np.save(cfg["out"] + ".npy", open_product(cfg["out"]).decoded.values)
    print(json.dumps({"seconds": s.decode_s, "lost": len(s.lost), "retried": len(s.retried), "tiles": s.tiles_total}))
"""


def _xchild(cfg: dict, isa: str | None) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    out = subprocess.run([sys.executable, "-c", XCHILD, json.dumps(cfg)], capture_output=True, text=True, cwd=ROOT,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{cfg['op']} under {isa or 'default'} failed: {out.stderr[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _real_scene(tmp: Path, size: int = 1536) -> Path:
    import rasterio
    from rasterio.windows import Window

    frames = sorted((ROOT.parent / "shared" / "data" / "scenes" / "drone_frames").glob("*.jpg"))
    out = tmp / "real.tif"
    if frames:
        with rasterio.open(frames[0]) as ds:
            arr = ds.read([1, 2, 3], window=Window(0, 0, size, size))
    else:
        imgs = tile_images(36, 256)
        arr = np.moveaxis(np.concatenate([np.concatenate(imgs[r * 6:(r + 1) * 6], 1) for r in range(6)], 0), -1, 0)
    with rasterio.open(out, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8") as ds:
        ds.write(arr)
    return out


def mode_costs(args) -> int:
    """Encode and decode ms per 256 px tile in each numeric mode, interleaved tile by tile in one process (one
    thread), so that whatever else runs on the machine weighs on every mode alike."""
    import torch

    from _results import write_result

    from groundstation.codec import TileCodec, load_codec
    from groundstation.registry import resolve_model

    torch.set_num_threads(1)
    _, ckpt, sha, _ = resolve_model(args.codec or None, "codec")
    loaded = load_codec(ckpt, sha)
    modes = [("float32", "float32"), ("float64", "float32"), ("float64", "float64"), ("int", "float32")]
    codecs = {m: TileCodec(loaded, threads=1, entropy=m[0], synthesis=m[1]) for m in modes}
    imgs = tile_images(args.tiles, 256)
    for tc in codecs.values():  # warm-up: float64 copies, allocator
        tc.roundtrip(imgs[0])
    enc = {m: 0.0 for m in modes}
    dec = {m: 0.0 for m in modes}
    for im in imgs:
        for m, tc in codecs.items():
            t = time.perf_counter()
            e = tc.encode(im)
            enc[m] += time.perf_counter() - t
            t = time.perf_counter()
            tc.decode_checked(e.strings, e.z_hw, e.y_hw, e.height, e.width, e.witness)
            dec[m] += time.perf_counter() - t
    base = modes[0]
    rows = []
    for m in modes:
        row = {"entropy": m[0], "synthesis": m[1], "encode_ms_per_tile": 1e3 * enc[m] / len(imgs),
               "decode_ms_per_tile": 1e3 * dec[m] / len(imgs), "encode_vs_float32": enc[m] / enc[base],
               "decode_vs_float32": dec[m] / dec[base]}
        rows.append(row)
        print(f"entropy {m[0]}  synthesis {m[1]}: encode {row['encode_ms_per_tile']:.0f} ms/tile "
              f"(x{row['encode_vs_float32']:.2f}), decode {row['decode_ms_per_tile']:.0f} ms/tile "
              f"(x{row['decode_vs_float32']:.2f})", flush=True)
    write_result(args.out if args.out_given else ROOT / "benchmarks" / "results" / "mode_cost.json",
                 {"command": f"benchmarks/decode_determinism.py --mode-cost --tiles {args.tiles}",
                  "tiles": len(imgs), "tile_size": 256, "threads": 1, "rows": rows})
    return 0


def cross_cpu(args) -> int:
    """The cross-CPU table (see the module docstring)."""
    from _results import write_result

    from groundstation.registry import resolve_model

    isas = [None, "AVX2", "SSE41"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, demo, _, _ = resolve_model(args.codec or None, "codec")
        stress_pass, boosted, _ = build_pass(tmp, args.codec, args.tiles, args.tile_size, args.boost)
        stress_scene = tmp / "stress.tif"
        passes = [("golden (committed, float32)", ROOT / "tests" / "golden" / "golden.gsp", None, str(demo), None)]
        real = _real_scene(tmp)
        for entropy in ("float32", "float64"):
            passes.append((f"36-tile real scene, {entropy}", None, real, str(demo), entropy))
            passes.append((f"high-rate x{args.boost:g}, {entropy}", None, stress_scene, str(boosted), entropy))
        for label, passfile, scene, codec, entropy in passes:
            encodes = {}
            for enc_isa in ([None, "AVX2"] if scene is not None else [None]):
                if scene is None:
                    encodes[enc_isa] = (passfile, {"seconds": float("nan"), "tiles": 4, "bpp": float("nan")})
                    continue
                pf = tmp / f"{abs(hash((label, enc_isa)))}.gsp"
                info = _xchild({"op": "encode", "scene": str(scene), "pass": str(pf), "codec": codec,
                                "tile": 256 if "real" in label else args.tile_size, "entropy": entropy}, enc_isa)
                encodes[enc_isa] = (pf, info)
            for enc_isa, (pf, einfo) in encodes.items():
                for synthesis in ("float32", "float64"):
                    ref = None
                    for dec_isa in (isas if enc_isa is None else [None]):
                        out = tmp / f"{abs(hash((label, enc_isa, dec_isa, synthesis)))}.zarr"
                        d = _xchild({"op": "decode", "pass": str(pf), "out": str(out), "codec": codec,
                                     "synthesis": synthesis}, dec_isa)
                        pix = np.load(str(out) + ".npy").astype(np.int16)
                        if ref is None:
                            ref = pix
                        diff = np.abs(pix - ref)
                        row = {"pass": label, "entropy": entropy or "float32", "synthesis": synthesis,
                               "encoded_under": enc_isa or "default", "decoded_under": dec_isa or "default",
                               "tiles": d["tiles"], "bpp": einfo["bpp"], "lost": d["lost"], "retried": d["retried"],
                               "max_dn": int(diff.max()), "values_differing": float((diff > 0).mean()),
                               "encode_ms_per_tile": 1e3 * einfo["seconds"] / d["tiles"],
                               "decode_ms_per_tile": 1e3 * d["seconds"] / d["tiles"]}
                        rows.append(row)
                        print(f"{label:<32} synth {synthesis}  enc {row['encoded_under']:<7} dec {row['decoded_under']:<7}"
                              f" lost {row['lost']:>2}/{row['tiles']:<3} retried {row['retried']:>2}  max {row['max_dn']} DN"
                              f" on {row['values_differing']:.2e}  enc {row['encode_ms_per_tile']:.0f} ms/tile"
                              f"  dec {row['decode_ms_per_tile']:.0f} ms/tile", flush=True)
    write_result(args.out if args.out_given else ROOT / "benchmarks" / "results" / "cross_cpu.json",
                 {"command": "benchmarks/decode_determinism.py --cross-cpu", "boost": args.boost, "rows": rows,
                  "note": "differences are against the same pass decoded under this machine's default kernels "
                          "with the same synthesis mode; the reverse direction is encoded under AVX2"})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cross-cpu", action="store_true", help="the cross-CPU table instead of the stress table")
    p.add_argument("--mode-cost", action="store_true", help="ms per tile of each numeric mode, interleaved")
    p.add_argument("--codec", default="", help="codec name or checkpoint (default: the registry's default)")
    p.add_argument("--tiles", type=int, default=224)
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--boost", type=float, default=4.0, help="scale of the analysis output (raises the rate)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "decode_determinism.json"))
    args = p.parse_args(argv)
    args.out_given = "--out" in (argv if argv is not None else sys.argv)
    if args.cross_cpu:
        return cross_cpu(args)
    if args.mode_cost:
        return mode_costs(args)
    import torch

    configs = [
        {"name": "reference: gsp, 1 thread (the encoder's count)", "mode": "gsp", "threads": 1, "channels_last": False, "device": "cpu"},
        {"name": "plain CompressAI, 2 threads", "mode": "plain", "threads": 2, "channels_last": False, "device": "cpu"},
        {"name": "plain CompressAI, 2 threads, channels_last", "mode": "plain", "threads": 2, "channels_last": True, "device": "cpu"},
        {"name": "gsp, 2 threads (witness + strict retry)", "mode": "gsp", "threads": 2, "channels_last": False, "device": "cpu"},
        {"name": "gsp, 2 threads, channels_last", "mode": "gsp", "threads": 2, "channels_last": True, "device": "cpu"},
    ]
    if torch.cuda.is_available():
        configs += [{"name": "plain CompressAI, CUDA", "mode": "plain", "threads": 1, "channels_last": False, "device": "cuda"},
                    {"name": "gsp, CUDA", "mode": "gsp", "threads": 1, "channels_last": False, "device": "cuda"}]
    with tempfile.TemporaryDirectory() as tmp:
        passfile, codec, info = build_pass(Path(tmp), args.codec, args.tiles, args.tile_size, args.boost)
        print(f"stress pass: {info['tiles']} tiles of {args.tile_size}px at {info['bpp']:.3f} bpp (boost {args.boost}), "
              f"encoded with 1 thread in {info['encode_s']:.0f} s", flush=True)
        results = []
        ref = None
        for cfg in configs:
            res = run_child({**cfg, "pass": str(passfile), "codec": str(codec)})
            if "error" in res:
                print(f"{cfg['name']}: {res['error']}")
                results.append({**cfg, **res})
                continue
            rows = res["rows"]
            if ref is None:
                ref = {r["tile"]: r["digest"] for r in rows}
            mismatched = [r for r in rows if not r["symbols_match_first_try"]]
            # silent corruption: reported ok although the decoded symbols differ from the encoder's. plain
            # CompressAI reports every tile ok; gsp reports ok only after the witness matched (first try or
            # strict retry), so for gsp this counts tiles whose final witness differed yet were reported ok.
            if cfg["mode"] == "plain":
                silent = mismatched
            else:
                silent = [r for r in rows if r["status"] == "ok" and not r.get("final_match", True)]
            summary = {
                **cfg, "tiles": len(rows),
                "desync_first_try": len(mismatched),
                "detected_desyncs": len(mismatched) if cfg["mode"] == "gsp" else 0,
                "recovered_by_strict_retry": sum(1 for r in mismatched if r["status"] == "ok") if cfg["mode"] == "gsp" else 0,
                "reported_desync": sum(1 for r in rows if r["status"] == "desync"),
                "silent_corruptions": len(silent),
                "pixels_equal_reference": sum(1 for r in rows if r["digest"] == ref.get(r["tile"])),
                "ms_per_tile": float(np.mean([r["ms"] for r in rows])),
            }
            results.append(summary)
            print(f"{cfg['name']:<48} desync(first try) {summary['desync_first_try']:>3}  silent {summary['silent_corruptions']:>3}  "
                  f"detected {summary['detected_desyncs']:>3}  recovered {summary['recovered_by_strict_retry']:>3}  "
                  f"reported desync {summary['reported_desync']:>3}  pixels==ref {summary['pixels_equal_reference']:>3}/{len(rows)}  "
                  f"{summary['ms_per_tile']:.0f} ms/tile", flush=True)
    out = {"pass": info, "tile_size": args.tile_size, "boost": args.boost, "codec": args.codec or "registry default",
           "torch": torch.__version__, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
