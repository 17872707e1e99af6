"""Overview pyramid building: time and peak memory for products of different sizes (memory must stay flat).

Synthesizes each product directly (random ``enhanced`` pixels, a random ``valid`` mask, 256 px chunks, Zarr
format 2, written chunk by chunk so the generator stays small), then builds its pyramid
(:func:`groundstation.overviews.build_levels_serial`: level k from level k-1, chunk by chunk; the flow runs
the same chunks as Dask tasks) in a fresh process that reports its own peak RSS. Prints the peaks and their
ratio (largest / smallest; target <= 1.3) and writes benchmarks/results/overview_build.json.

    .venv/bin/python benchmarks/overview_build.py                  # 4096^2 and 16384^2
    .venv/bin/python benchmarks/overview_build.py --sizes 1024 2048  # quick check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SYNTH = r"""
import sys, numpy as np, zarr
from groundstation.product import create_product
path, size, tile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

class H:  # the parts of a pass header create_product reads
    class scene:
        width = height = size
        crs_wkt = 'PROJCS["WGS 84 / UTM zone 33N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",15],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH],AUTHORITY["EPSG","32633"]]'
        transform = (10.0, 0.0, 400000.0, 0.0, -10.0, 5200000.0)
    class tiling:
        tile_size = tile
    acquisition_time = "2024-05-01T10:00:00+00:00"

pass_attrs = {"scene": {"width": size, "height": size, "crs_wkt": H.scene.crs_wkt, "transform": list(H.scene.transform)},
              "tiling": {"tile_size": tile}, "acquisition_time": H.acquisition_time, "pass_id": "bench"}
create_product(path, H, arrays=("enhanced",), attrs={"gsp_pass": pass_attrs})
g = zarr.open_group(path, mode="r+")
rng = np.random.default_rng(0)
for r in range(0, size, tile):
    for c in range(0, size, tile):
        h, w = min(tile, size - r), min(tile, size - c)
        g["enhanced"][:, r:r + h, c:c + w] = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
        g["valid"][r:r + h, c:c + w] = (rng.random((h, w)) > 0.02).astype(np.uint8)
"""

BUILD = r"""
import json, resource, sys, time
from groundstation.overviews import build_levels_serial
t = time.perf_counter()
levels = build_levels_serial(sys.argv[1], arrays=("enhanced",))
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t, "levels": len(levels) - 1,
                  "smallest": [levels[-1]["width"], levels[-1]["height"]]}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384], help="square product sizes in pixels")
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "overview_build.json"))
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        for size in args.sizes:
            product = Path(tmp) / f"p{size}.zarr"
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", SYNTH, str(product), str(size), str(args.tile_size)], cwd=ROOT,
                           check=True)
            synth_s = time.perf_counter() - t
            out = subprocess.run([sys.executable, "-c", BUILD, str(product)], capture_output=True, text=True,
                                 cwd=ROOT, check=True)
            row = {"size": size, "synthesize_s": round(synth_s, 1), **json.loads(out.stdout.strip().splitlines()[-1])}
            row["mpix_per_s"] = round(size * size / 1e6 / row["seconds"], 2)
            rows.append(row)
            print(f"{size}x{size}: {row['levels']} levels, {row['seconds']:.1f} s ({row['mpix_per_s']} Mpx/s), "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
            import shutil

            shutil.rmtree(product, ignore_errors=True)
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak RSS ratio {rows[-1]['size']}^2 / {rows[0]['size']}^2: {ratio:.3f} (target <= 1.3)")
    result = {"rows": rows, "peak_rss_ratio": round(ratio, 3), "target": 1.3, "passed": ratio <= 1.3,
              "tile_size": args.tile_size, "arrays": ["enhanced", "valid"],
              "command": "benchmarks/overview_build.py --sizes " + " ".join(map(str, args.sizes))}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
