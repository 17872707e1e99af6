"""Peak memory of encode and decode does not grow with scene size.

Writes synthetic GeoTIFF scenes (windowed, so the generator itself stays small), then encodes and decodes
each in a fresh process that reports its own peak RSS. Prints the peaks side by side and their ratio
(largest scene / smallest scene; target <= 1.3) and writes benchmarks/results/memory_scaling.json.

    .venv/bin/python benchmarks/memory_scaling.py                 # 2048^2 and 8192^2, demo codec
    .venv/bin/python benchmarks/memory_scaling.py --sizes 512 1024 --codec /tmp/tiny.pt   # quick check
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

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
from groundstation.encode import encode_scene
from groundstation.decode import decode_pass
mode, scene, passfile, product, codec, tile = sys.argv[1:7]
codec = codec or None
t = time.perf_counter()
if mode == "encode":
    res = encode_scene(scene, passfile, codec=codec, tile_size=int(tile))
    extra = {"tiles": res.tiles, "bpp": res.bpp}
else:
    s = decode_pass(passfile, product, codec=codec)
    extra = {"tiles_ok": s.tiles_ok}
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t, **extra}))
"""


def write_scene(path: Path, size: int, block: int = 1024) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(400000, 5200000, 10, 10), tiled=True,
                       blockxsize=256, blockysize=256) as ds:
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                yy, xx = np.mgrid[r : r + h, c : c + w]
                base = 128 + 60 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
                data = np.stack([base + 20 * k for k in range(3)]) + rng.normal(0, 8, (3, h, w))
                ds.write(np.clip(data, 0, 255).astype(np.uint8), window=Window(c, r, w, h))


def run(mode: str, scene: Path, passfile: Path, product: Path, codec: str, tile: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(scene), str(passfile), str(product), codec, str(tile)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192], help="square scene sizes in pixels")
    p.add_argument("--codec", default="", help="codec name or checkpoint (default: the registry's default)")
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--steps", nargs="+", default=["encode", "decode"], choices=["encode", "decode"])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "memory_scaling.json"))
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in args.sizes:
            scene, passfile, product = tmp / f"s{size}.tif", tmp / f"s{size}.gsp", tmp / f"s{size}.zarr"
            t = time.perf_counter()
            write_scene(scene, size)
            print(f"{size}x{size}: scene written in {time.perf_counter() - t:.1f} s", flush=True)
            row = {"size": size}
            for step in ("encode", "decode"):  # decode needs the pass, so encode always runs
                if step in args.steps or step == "encode":
                    row[step] = run(step, scene, passfile, product, args.codec, args.tile_size)
                    print(f"{size}x{size}: {step} peak {row[step]['peak_rss_mb']:.0f} MB ({row[step]['seconds']:.0f} s)",
                          flush=True)
            rows.append(row)
    small, large = rows[0], rows[-1]
    ratios = {m: large[m]["peak_rss_mb"] / small[m]["peak_rss_mb"] for m in ("encode", "decode") if m in large}
    print(f"\npeak RSS ratio {large['size']}^2 / {small['size']}^2 (pixels x{(large['size'] / small['size'])**2:.0f}): "
          + ", ".join(f"{m} {r:.3f}" for m, r in ratios.items()) + " (target <= 1.3)")
    result = {"rows": rows, "ratios": ratios, "target": 1.3, "tile_size": args.tile_size,
              "codec": args.codec or "registry default", "passed": all(r <= 1.3 for r in ratios.values())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
