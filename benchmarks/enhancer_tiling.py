"""Tiled vs whole-image enhancement: how far apart are they, per halo?

Enhances a synthetic mosaic once whole and once window by window (enhancer.enhance_mosaic) for each halo,
with the same seeded latent field, and reports the absolute difference in DN (digital numbers, 0-255) and
the time of each. Without --checkpoint the network is enhancer.testing.surrogate_enhancer (random
non-identity weights whose inverse changes the image by a few tens of DN): the numbers then show the
mechanics, not a trained enhancer's seam error; pass a trained checkpoint for that.

    python benchmarks/enhancer_tiling.py --halo 0 8 16 32
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

try:
    import enhancer  # noqa: F401
except ModuleNotFoundError:  # run as a script from a checkout whose editable install predates the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enhancer.checkpoint import load_enhancer
from enhancer.inference import enhance_array, enhance_mosaic
from enhancer.model import EnhancerConfig
from enhancer.testing import surrogate_enhancer
from _results import write_result  # noqa: E402  (benchmarks/, on sys.path as the script's folder)

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "enhancer_tiling.json"
CONFIGS = {"demo": EnhancerConfig.demo, "reference": EnhancerConfig.reference}


def synthetic_mosaic(height: int, width: int, seed: int) -> np.ndarray:
    """Random fields with features of about 250, 40 and 8 pixels plus sensor-like noise: uint8 (3, H, W)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((3, height, width), dtype=np.float32)
    for feature_px, amplitude in ((250, 120.0), (40, 40.0), (8, 20.0)):
        grid = (max(2, height // feature_px), max(2, width // feature_px))
        coarse = torch.from_numpy(rng.random((1, 3, *grid), dtype=np.float32))
        image += amplitude * torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear",
                                                             align_corners=False)[0].numpy()
    image += rng.normal(0.0, 6.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--height", type=int, default=1000, help="mosaic height in pixels")
    parser.add_argument("--width", type=int, default=1300, help="mosaic width in pixels")
    parser.add_argument("--core", type=int, default=256, help="core (chunk) size in pixels, even")
    parser.add_argument("--halo", type=int, nargs="+", default=[32], help="halo(s) in pixels, even")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="demo",
                        help="architecture of the surrogate network (ignored with --checkpoint)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a trained enhancer checkpoint")
    parser.add_argument("--weight-seed", type=int, default=0, help="seed of the surrogate's weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent field z")
    parser.add_argument("--temperature", type=float, default=1.0, help="latent temperature")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per batch")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.checkpoint is not None:
        model, config, sha = load_enhancer(args.checkpoint, device=args.device)
        network = {"checkpoint": str(args.checkpoint), "sha256": sha}
    else:
        config = CONFIGS[args.config]()
        model = surrogate_enhancer(config, seed=args.weight_seed)
        network = {"surrogate": args.config, "weight_seed": args.weight_seed}
    mosaic = synthetic_mosaic(args.height, args.width, seed=1)

    start = time.perf_counter()
    whole = enhance_array(model, mosaic, seed=args.seed, temperature=args.temperature, device=args.device)
    whole_s = time.perf_counter() - start
    changed_dn = float(np.abs(whole.astype(np.int16) - mosaic).mean())
    print(f"{args.height}x{args.width}, {config}, whole image: {whole_s:.2f} s, "
          f"mean |enhanced - input| = {changed_dn:.2f} DN")

    rows = []
    for halo in args.halo:
        out = np.zeros_like(mosaic)

        def source(y0, y1, x0, x1):
            return mosaic[:, y0:y1, x0:x1]

        def sink(y0, y1, x0, x1, block, out=out):
            out[:, y0:y1, x0:x1] = block

        stats = enhance_mosaic(model, source, sink, (args.height, args.width), core=args.core, halo=halo,
                               seed=args.seed, temperature=args.temperature, batch_size=args.batch_size,
                               device=args.device)
        diff = np.abs(out.astype(np.int16) - whole)
        row = {
            "halo_px": halo,
            "core_px": args.core,
            "windows": stats["windows"],
            "max_abs_diff_dn": int(diff.max()),
            "mean_abs_diff_dn": float(diff.mean()),
            "p999_abs_diff_dn": float(np.quantile(diff, 0.999)),
            "frac_values_differing": float((diff > 0).mean()),
            "tiled_s": stats["seconds"],
            "read_overhead": stats["pixels_read"] / (args.height * args.width),
        }
        rows.append(row)
        print(f"halo {halo:3d}: max {row['max_abs_diff_dn']:3d} DN, mean {row['mean_abs_diff_dn']:.5f} DN, "
              f"differing {100 * row['frac_values_differing']:.4f} %, tiled {row['tiled_s']:.2f} s "
              f"(reads {row['read_overhead']:.2f}x the mosaic)")

    result = {
        "benchmark": "enhancer_tiling",
        "mosaic_hw": [args.height, args.width],
        "config": dataclasses.asdict(config),
        "network": network,
        "receptive_radius_px": config.receptive_radius,
        "seed": args.seed,
        "temperature": args.temperature,
        "device": args.device,
        "threads": args.threads,
        "whole_s": whole_s,
        "mean_abs_enhancement_dn": changed_dn,
        "rows": rows,
    }
    write_result(args.output, result)
    return result


if __name__ == "__main__":
    main()
