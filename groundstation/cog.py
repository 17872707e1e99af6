"""Cloud-Optimized GeoTIFF export of a product's mosaic (``gsp export PRODUCT --cog OUT.tif``).

One path for every product (Zarr format 2 or the older format 3): the mosaic and ``valid`` are read from the
store with zarr, window by window (chunk-aligned strips, so memory does not grow with the product), into a
tiled GeoTIFF beside the output with ``valid`` as its internal mask; GDAL's COG driver then lays it out as a
COG (512 px tiles, DEFLATE, internal mask, overviews averaged with the mask honoured). The result is checked
with rio-cogeo's validator and renamed over ``OUT`` only then (:func:`groundstation.fileio.atomic_path`):
readers see the old file or the new one, never a torn one.

The COG is RGB (colour interpretation Red, Green, Blue; band descriptions red, green, blue), carries the
product's CRS and affine transform exactly (none for a pixel-grid product) and GDAL's mask is ``valid``
(per-dataset mask, 255 = valid), never a nodata value, so real black pixels stay visible.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import ProductError
from .fileio import atomic_path
from .product import BANDS, arrays, status, zarr_format

log = logging.getLogger(__name__)

#: Pixels per side of a COG tile, and the GDAL block cache while exporting (bounds the memory GDAL uses).
BLOCK = 512
GDAL_CACHE_MB = 256
#: Columns read per window: strips of one chunk row, this wide (a multiple of any tile size), so a window holds
#: at most 3 x tile x STRIP_WIDTH bytes however large the product.
STRIP_WIDTH = 4096


@dataclass(frozen=True)
class CogResult:
    path: str
    array: str
    width: int
    height: int
    crs: str | None
    overviews: list[int]
    bytes: int
    valid_fraction: float

    def as_dict(self) -> dict:
        return asdict(self)


def product_grid(product: str | Path, *, require_complete: bool = True) -> dict:
    """Scene grid of a complete product: width, height, tile (chunk) size, CRS WKT ('' for a pixel grid),
    affine transform, from the pass header the product records. A clear ProductError when it is not usable.

    ``require_complete=False``: for the flow, which exports its product after every batch is written but
    before it marks the product complete (the STAC Item, written next, lists the COG)."""
    import zarr

    product = Path(product)
    if zarr_format(product) is None:
        raise ProductError(f"{product}: no product there (no Zarr store); give the path of a <version>.zarr folder")
    st = status(product)
    if st != "complete" and (require_complete or st is None):
        raise ProductError(f"{product}: the product is {st or 'not marked'} (gsp_status), not complete; run the "
                           "same `gsp process` again to finish it, then export")
    attrs = dict(zarr.open_group(str(product), mode="r").attrs)
    scene = attrs.get("gsp_pass", {}).get("scene")
    tiling = attrs.get("gsp_pass", {}).get("tiling")
    if not scene or not tiling:
        raise ProductError(f"{product}: the product records no pass header (gsp_pass); it was not written by gsp")
    return {"width": int(scene["width"]), "height": int(scene["height"]), "tile": int(tiling["tile_size"]),
            "crs_wkt": scene.get("crs_wkt") or "", "transform": tuple(float(v) for v in scene["transform"][:6]),
            "attrs": attrs}


def _windows(height: int, width: int, tile: int):
    """Chunk-aligned (r0, r1, c0, c1) windows covering the scene: strips one tile high, STRIP_WIDTH wide."""
    step = max(tile, STRIP_WIDTH // tile * tile)
    for r0 in range(0, height, tile):
        for c0 in range(0, width, step):
            yield r0, min(r0 + tile, height), c0, min(c0 + step, width)


def export_cog(product: str | Path, out: str | Path, *, array: str = "enhanced", overviews: bool = True,
               blocksize: int = BLOCK, tags: dict[str, str] | None = None,
               require_complete: bool = True) -> CogResult:
    """Write mosaic ``array`` of a complete ``product`` as a Cloud-Optimized GeoTIFF at ``out`` (atomically).

    ``overviews``: halve (average, mask-aware) until the image fits one ``blocksize`` tile (GDAL's AUTO).
    ``tags``: GDAL metadata items of the file (the flow records the product version and pass uid, see
    :func:`cog_matches`). ``require_complete=False``: see :func:`product_grid`.
    """
    import rasterio
    import rasterio.shutil
    import zarr
    from affine import Affine
    from rasterio.enums import ColorInterp

    grid = product_grid(product, require_complete=require_complete)
    have = arrays(product)
    if array not in have:
        raise ProductError(f"{product} has no array {array!r} (it has {', '.join(have) or 'none'}); "
                           f"choose --array {have[0] if have else 'decoded'}")
    out = Path(out)
    if out.is_dir():
        raise ProductError(f"--cog {out} is a folder; give a file name such as {out / 'product.tif'}")
    h, w, tile = grid["height"], grid["width"], grid["tile"]
    group = zarr.open_group(str(product), mode="r")
    src_arr, valid_arr = group[array], group["valid"]
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", tiled=True, blockxsize=BLOCK,
                   blockysize=BLOCK, compress="DEFLATE", zlevel=1, photometric="RGB", interleave="pixel",
                   BIGTIFF="IF_SAFER")
    if grid["crs_wkt"]:
        profile.update(crs=grid["crs_wkt"], transform=Affine(*grid["transform"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".src.tif")
    os.close(fd)
    n_valid = 0
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=GDAL_CACHE_MB):
            with rasterio.open(staging, "w", **profile) as dst:
                dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
                dst.descriptions = tuple(BANDS)
                if tags:
                    dst.update_tags(**{k: str(v) for k, v in tags.items()})
                for r0, r1, c0, c1 in _windows(h, w, tile):
                    win = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
                    valid = np.asarray(valid_arr[r0:r1, c0:c1])
                    dst.write(np.asarray(src_arr[:, r0:r1, c0:c1]), window=win)
                    dst.write_mask(np.where(valid > 0, 255, 0).astype(np.uint8), window=win)
                    n_valid += int(np.count_nonzero(valid))
            with atomic_path(out) as tmp:
                rasterio.shutil.copy(staging, str(tmp), driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES",
                                     BLOCKSIZE=str(blocksize), OVERVIEWS="AUTO" if overviews else "NONE",
                                     OVERVIEW_RESAMPLING="AVERAGE", BIGTIFF="IF_SAFER")
                _check_cog(tmp)
                with rasterio.open(tmp) as ds:
                    levels = ds.overviews(1)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(staging)
    log.info("%s: %s of %s written as a COG (%dx%d, overviews %s)", out, array, product, w, h, levels or "none")
    return CogResult(path=str(out), array=array, width=w, height=h, crs=grid["crs_wkt"] or None,
                     overviews=list(levels), bytes=out.stat().st_size, valid_fraction=n_valid / (w * h))


def cog_matches(path: str | Path, *, width: int, height: int, tags: dict[str, str]) -> bool:
    """True when ``path`` is a COG that rio-cogeo's validator accepts, of ``width`` x ``height`` pixels, with an
    internal mask and the GDAL metadata ``tags`` (what :func:`export_cog` wrote with them); False otherwise,
    never an error (an unreadable or torn file is simply not a match)."""
    import rasterio
    from rasterio.enums import MaskFlags

    path = Path(path)
    if not path.is_file():
        return False
    try:
        from rio_cogeo.cogeo import cog_validate

        ok, _errors, _warnings = cog_validate(str(path), quiet=True)
        if not ok:
            return False
        with rasterio.open(path) as ds:
            have = ds.tags()
            return ((ds.width, ds.height, ds.count) == (width, height, 3)
                    and ds.mask_flag_enums[0] == [MaskFlags.per_dataset]
                    and all(have.get(k) == str(v) for k, v in tags.items()))
    except Exception:  # noqa: BLE001 - anything unreadable is "no usable COG here": it is written again
        return False


def _check_cog(path: Path) -> None:
    """rio-cogeo's validator on the file about to be published; a ProductError (nothing published) if it fails."""
    from rio_cogeo.cogeo import cog_validate

    ok, errors, _warnings = cog_validate(str(path), quiet=True)
    if not ok:
        raise ProductError(f"the COG written from the product does not validate ({'; '.join(errors)}); "
                           "this is a bug, please report it")
