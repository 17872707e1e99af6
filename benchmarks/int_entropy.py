"""The ``int`` entropy mode measured: its rate cost, and its integers across CPUs and thread counts.

``rate``: the three registry rate points code RSSCN7 val images (whole 400x400 images, a fixed per-class
subset) in float32 mode (CompressAI as it is: the float prior the integer one approximates) and in int mode;
bpp and PSNR per image, then the Bjontegaard rate difference (int against float32, at equal PSNR, over the
three rate points: a quadratic of log-rate in PSNR, the degree three points allow). Writes
benchmarks/results/int_rate.json.

``xcpu``: int passes are encoded in one process and decoded in others under ``ONEDNN_MAX_CPU_ISA=AVX2`` and
``SSE41`` (the kernels those CPUs run) and this CPU's own, each with 1, 2 and 4 threads, plus the reverse
direction (encoded under AVX2): a real scene (a drone frame crop, ``--scene-size``) with the default codec, and
a high-rate pass (the analysis output scaled up, ``--boost``; its integer prior is quantised here). Per decode: tiles lost, strict retries
(a retry means a witness mismatch: some integer differed), and whether the decoded pixels equal the reference
decode's (float64 synthesis: pixels are then bit-identical exactly when the latents are). Writes
benchmarks/results/int_cross_cpu.json.

    PYTHONPATH=$PWD python benchmarks/int_entropy.py rate --per-class 4
    PYTHONPATH=$PWD python benchmarks/int_entropy.py xcpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_result  # noqa: E402

VAL = ROOT.parent / "shared" / "data" / "rsscn7" / "val"
RATE_POINTS = ["demo-elic-l0008", "demo-elic-l0032", "demo-elic-l0130"]


def bd_rate(rate_ref, psnr_ref, rate_test, psnr_test) -> float:
    """Bjontegaard delta rate in percent (negative: the test codes with fewer bits at equal PSNR)."""
    lr1, lr2 = np.log(rate_ref), np.log(rate_test)
    deg = min(3, len(rate_ref) - 1, len(rate_test) - 1)
    p1, p2 = np.polyfit(psnr_ref, lr1, deg), np.polyfit(psnr_test, lr2, deg)
    lo, hi = max(min(psnr_ref), min(psnr_test)), min(max(psnr_ref), max(psnr_test))
    i1, i2 = np.polyint(p1), np.polyint(p2)
    avg = ((np.polyval(i2, hi) - np.polyval(i2, lo)) - (np.polyval(i1, hi) - np.polyval(i1, lo))) / (hi - lo)
    return float((np.exp(avg) - 1) * 100)


def rate(args) -> int:
    import torch

    from groundstation.codec import TileCodec, load_codec
    from groundstation.images import list_images, load_rgb
    from groundstation.registry import resolve_model

    torch.set_num_threads(1)
    files = list_images(VAL)
    by_class: dict[str, list[Path]] = {}
    for f in files:
        by_class.setdefault(f.parent.name, []).append(f)
    pick = [f for cls in sorted(by_class) for f in sorted(by_class[cls])[: args.per_class]]
    images = [load_rgb(f) for f in pick]
    points = {}
    for name in args.codecs:
        _, ckpt, sha, _ = resolve_model(name, "codec")
        loaded = load_codec(ckpt, sha)
        codecs = {m: TileCodec(loaded, threads=1, entropy=m) for m in ("float32", "int")}
        rows = {m: {"bpp": [], "psnr_db": []} for m in codecs}
        for img in images:
            for m, tc in codecs.items():
                decoded, enc, retried = tc.roundtrip(img)
                assert not retried, f"{name} {m}: a retry on the encoder's own machine"
                mse = np.mean((decoded.astype(np.float64) - img.astype(np.float64)) ** 2)
                rows[m]["bpp"].append(enc.nbytes * 8 / (img.shape[0] * img.shape[1]))
                rows[m]["psnr_db"].append(float(10 * np.log10(255.0**2 / mse)))
        points[name] = {m: {"mean_bpp": float(np.mean(r["bpp"])), "mean_psnr_db": float(np.mean(r["psnr_db"])),
                            "per_image_bpp": r["bpp"]} for m, r in rows.items()}
        f32, it = points[name]["float32"], points[name]["int"]
        print(f"{name}: float32 {f32['mean_bpp']:.4f} bpp {f32['mean_psnr_db']:.3f} dB | int {it['mean_bpp']:.4f} bpp "
              f"{it['mean_psnr_db']:.3f} dB | rate x{it['mean_bpp'] / f32['mean_bpp']:.4f}", flush=True)
    curve = {m: ([points[n][m]["mean_bpp"] for n in args.codecs], [points[n][m]["mean_psnr_db"] for n in args.codecs])
             for m in ("float32", "int")}
    bd = bd_rate(*curve["float32"], *curve["int"])
    print(f"BD-rate of int against float32 over {len(args.codecs)} rate points, {len(images)} images: {bd:+.2f} %")
    write_result(args.out or ROOT / "benchmarks" / "results" / "int_rate.json",
                 {"command": f"benchmarks/int_entropy.py rate --per-class {args.per_class}",
                  "images": [f"{p.parent.name}/{p.name}" for p in pick], "n_images": len(images),
                  "bd_rate_percent_int_vs_float32": bd, "points": points,
                  "note": "whole 400x400 RSSCN7 val images (padded to 448 and cropped back), one thread"})
    return 0


def _gsp(args: list[str], isa: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    env["PYTHONPATH"] = str(ROOT)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gsp.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"gsp {args[0]} under {isa or 'default'}: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout) if "--json" in args else {}
    return {**out, "wall_s": time.perf_counter() - t}


def boosted_codec(folder: Path, boost: float) -> Path:
    """The default codec with its analysis output scaled by ``boost`` (a high rate), and its integer prior
    quantised beside it (``boosted.int.pt``) on four generated images."""
    import re

    import torch

    from groundstation.checkpoints import read_state_dict
    from groundstation.codec import CODEC_ALIGN, _pad_to, _to_tensor, codec_from_state_dict
    from groundstation.intprior import SIDECAR_SUFFIX, quantise
    from groundstation.fileio import sha256_file
    from groundstation.registry import resolve_model
    sys.path.insert(0, str(ROOT / "tests"))
    from synth import smooth_image

    _, ckpt, _, _ = resolve_model(None, "codec")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in read_state_dict(ckpt).tensors.items()}
    last = max(int(m[1]) for k in sd if (m := re.match(r"^g_a\.(\d+)\.weight$", k)))
    for part in ("weight", "bias"):
        sd[f"g_a.{last}.{part}"] = sd[f"g_a.{last}.{part}"] * boost
    path = folder / "boosted.pt"
    torch.save(sd, path)
    loaded = codec_from_state_dict(sd, digest=sha256_file(path), path=str(path))
    with torch.inference_mode():
        latents = [loaded.model.g_a(_pad_to(_to_tensor((smooth_image(256, 256, seed=s).transpose(1, 2, 0) * 255)
                                                       .round().astype(np.uint8), "cpu"), CODEC_ALIGN))
                   for s in range(4)]
    torch.save(quantise(loaded.model, latents, loaded.sha256).state_dict(),
               path.with_suffix("").with_suffix(SIDECAR_SUFFIX))
    return path


def xcpu(args) -> int:
    from decode_determinism import _real_scene  # the 36-tile real scene of the float cross-CPU table

    sys.path.insert(0, str(ROOT / "tests"))
    from synth import write_scene

    from groundstation.product import open_product
    from groundstation.registry import resolve_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, demo, _, _ = resolve_model(None, "codec")
        n = (args.scene_size // 256) ** 2
        passes = [(f"{n}-tile real scene", _real_scene(tmp, args.scene_size), str(demo), 256),
                  (f"high-rate x{args.boost:g}", write_scene(tmp / "hr.tif", args.scene_size // 2,
                                                             args.scene_size // 2, crs="EPSG:32633", seed=5),
                   str(boosted_codec(tmp, args.boost)), 128)]
        for label, scene, codec, tile in passes:
            for enc_isa in (None, "AVX2"):
                pf = tmp / f"{abs(hash((label, enc_isa)))}.gsp"
                enc = _gsp(["encode", str(scene), "-o", str(pf), "--codec", codec, "--tile-size", str(tile),
                            "--entropy", "int"], enc_isa)
                ref = None
                decoders = [(isa, t) for isa in (None, "AVX2", "SSE41") for t in args.threads] if enc_isa is None \
                    else [(None, 1), ("SSE41", 4)]
                for dec_isa, threads in decoders:
                    out = tmp / f"{abs(hash((label, enc_isa, dec_isa, threads)))}.zarr"
                    d = _gsp(["decode", str(pf), "-o", str(out), "--codec", codec, "--json", "--threads",
                              str(threads), "--synthesis", "float64"], dec_isa)
                    pix = open_product(out).decoded.values
                    ref = pix if ref is None else ref
                    row = {"pass": label, "encoded_under": enc_isa or "default", "decoded_under": dec_isa or "default",
                           "threads": threads, "entropy": d["entropy"], "tiles": d["tiles_total"],
                           "bpp": round(d["bpp"], 4), "lost": len(d["lost"]) if isinstance(d["lost"], list)
                           else d["tiles_lost"], "retried": len(d["retried"]),
                           "pixels_equal_reference": bool(np.array_equal(pix, ref)),
                           "encode_wall_s": round(enc["wall_s"], 1), "decode_wall_s": round(d["wall_s"], 1)}
                    rows.append(row)
                    print(f"{label:<22} enc {row['encoded_under']:<7} dec {row['decoded_under']:<7} x{threads}  "
                          f"{row['entropy']}  lost {row['lost']}/{row['tiles']}  retried {row['retried']}  "
                          f"pixels==ref {row['pixels_equal_reference']}  {row['bpp']} bpp", flush=True)
    ok = all(r["lost"] == 0 and r["retried"] == 0 and r["pixels_equal_reference"] for r in rows)
    write_result(args.out or ROOT / "benchmarks" / "results" / "int_cross_cpu.json",
                 {"command": f"benchmarks/int_entropy.py xcpu --boost {args.boost:g} --scene-size {args.scene_size} "
                             f"--threads {' '.join(map(str, args.threads))}", "all_identical": ok,
                  "rows": rows, "note": "pixels compared against the first decode of the same pass (this CPU's "
                  "kernels, 1 thread), float64 synthesis"})
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    r = sub.add_parser("rate", help="BD-rate of int against float32 over the registry's three rate points")
    r.add_argument("--per-class", type=int, default=4, help="val images per class (7 classes)")
    r.add_argument("--codecs", nargs="+", default=RATE_POINTS)
    r.add_argument("--out", default="")
    x = sub.add_parser("xcpu", help="int passes decoded under other CPUs' kernels and thread counts")
    x.add_argument("--boost", type=float, default=4.0)
    x.add_argument("--scene-size", type=int, default=1536, help="real scene side (256 px tiles); the high-rate "
                   "scene is half of it (128 px tiles)")
    x.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    x.add_argument("--out", default="")
    args = p.parse_args(argv)
    return rate(args) if args.part == "rate" else xcpu(args)


if __name__ == "__main__":
    raise SystemExit(main())
