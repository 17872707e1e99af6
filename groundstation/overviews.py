"""The product's overview pyramid: each mosaic (and ``valid``) at 1/2, 1/4, ... resolution, inside the product.

Layout (GeoZarr-style multiscales, as far as zarr-python 2/3 and xarray allow: each level is a plain Zarr group
that ``xr.open_zarr(p, group="overviews/2", decode_coords="all")`` opens with its own CRS and transform)::

    <p>.zarr/                    level 0: the product itself (decoded, enhanced, valid)
    <p>.zarr/overviews/1/        level 1: half the width and height, same arrays, same chunking (T x T)
    <p>.zarr/overviews/2/        ...
    .zattrs "multiscales"        the list of levels: path, scale factor, size, affine transform, resampling

Level k is made from level k-1 only (2x2 blocks), chunk by chunk: output chunk (r, c) of level k reads the
2T x 2T window (r, c) of level k-1 and is written by exactly one call, so calls of one level run in parallel
(Dask workers, :mod:`tasks.overviews`) and memory does not grow with the product. A pixel of level k is the
mean of its *valid* parents (rounded), and valid when any parent is: nodata never darkens an edge. The pyramid
stops at the first level that fits in one chunk.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .product import ARRAYS, ZARR_FORMAT, georef_dataset, write_gdal_views, zarr_format

GROUP = "overviews"
RESAMPLING = "mean of the valid pixels of each 2x2 block; valid where any is"


def level_sizes(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """(width, height) of levels 1, 2, ...: halved (rounded up) until a level fits in one ``tile`` x ``tile``
    chunk. Empty when the product already does."""
    sizes = []
    w, h = width, height
    while max(w, h) > tile:
        w, h = math.ceil(w / 2), math.ceil(h / 2)
        sizes.append((w, h))
    return sizes


def reduce_2x2(mosaics: dict[str, np.ndarray], valid: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One level down: (3, h, w) uint8 mosaics and their (h, w) mask -> (3, ceil(h/2), ceil(w/2)) and the mask."""
    h, w = valid.shape
    ph, pw = h % 2, w % 2
    v = np.pad(valid > 0, ((0, ph), (0, pw)))
    h2, w2 = v.shape[0] // 2, v.shape[1] // 2
    v4 = v.reshape(h2, 2, w2, 2)
    n = v4.sum(axis=(1, 3), dtype=np.uint16)
    out = {}
    for name, arr in mosaics.items():
        a = np.pad(arr, ((0, 0), (0, ph), (0, pw))).reshape(3, h2, 2, w2, 2).astype(np.uint16)
        s = (a * v4[None].astype(np.uint16)).sum(axis=(2, 4), dtype=np.uint16)
        out[name] = np.where(n > 0, (s + n // 2) // np.maximum(n, 1), 0).astype(np.uint8)
    return out, (n > 0).astype(np.uint8)


def open_levels(product: str | Path, mode: str = "r+"):
    """The product's root group, read from the store itself (not from consolidated metadata, which a finalized
    product has and which does not know levels made after it)."""
    import zarr

    return zarr.open_group(str(product), mode=mode, use_consolidated=False)


def _grid(group) -> dict:
    p = dict(group.attrs)["gsp_pass"]
    return {"width": int(p["scene"]["width"]), "height": int(p["scene"]["height"]),
            "tile": int(p["tiling"]["tile_size"]), "crs_wkt": p["scene"].get("crs_wkt") or "",
            "transform": tuple(float(v) for v in p["scene"]["transform"][:6]),
            "acquisition_time": p.get("acquisition_time")}


def create_levels(product: str | Path, arrays=ARRAYS) -> list[dict]:
    """(Re)create the metadata of every level (data chunks stay unwritten) and the ``multiscales`` attribute;
    returns the levels (level, path, width, height, scale, transform). An earlier, unfinished pyramid is
    replaced."""
    import shutil

    import dask.array as da
    import zarr
    from affine import Affine

    product = Path(product)
    root = open_levels(product)
    g = _grid(root)
    arrays = [a for a in arrays if a in root]
    shutil.rmtree(product / GROUP, ignore_errors=True)
    t = g["tile"]
    levels = [{"level": 0, "path": ".", "width": g["width"], "height": g["height"], "scale": 1,
               "transform": list(g["transform"])}]
    sizes = level_sizes(g["width"], g["height"], t)
    fmt = zarr_format(product) or ZARR_FORMAT  # an older format-3 product resumed by this version stays format 3
    if sizes:
        zarr.open_group(str(product / GROUP), mode="w", zarr_format=fmt)
    for k, (w, h) in enumerate(sizes, start=1):
        aff = Affine(*g["transform"]) * Affine.scale(2 ** k)
        data_vars = {name: (("band", "y", "x"), da.zeros((3, h, w), np.uint8, chunks=(3, t, t)),
                            {"long_name": f"{name} mosaic, overview level {k} (1/{2 ** k})", "units": "1"})
                     for name in arrays}
        data_vars["valid"] = (("y", "x"), da.zeros((h, w), np.uint8, chunks=(t, t)),
                              {"long_name": "valid data mask", "units": "1", "flag_values": [0, 1],
                               "flag_meanings": "nodata_or_lost valid"})
        ds = georef_dataset(w, h, g["crs_wkt"], tuple(aff)[:6], data_vars, g["acquisition_time"])
        for name in ds.data_vars:  # T x T chunks even where a level is smaller: chunk (r, c) is one unit of work
            ds[name].encoding.update({"chunks": (3, t, t) if ds[name].ndim == 3 else (t, t)})
        ds.attrs.update({"gsp_overview_level": k, "gsp_overview_scale": 2 ** k})
        ds.to_zarr(product, group=f"{GROUP}/{k}", mode="w-", compute=False, zarr_format=fmt,
                   consolidated=False)
        levels.append({"level": k, "path": f"{GROUP}/{k}", "width": w, "height": h, "scale": 2 ** k,
                       "transform": list(tuple(aff)[:6])})
    root.attrs["multiscales"] = [{
        "name": "gsp-overviews", "type": "reduce", "resampling_method": "average", "resampling": RESAMPLING,
        "variables": [*arrays, "valid"], "tile": t, "datasets": levels}]
    return levels


def level_chunks(product: str | Path, level: int) -> list[tuple[int, int]]:
    """(row, col) chunk indices of ``level`` (>= 1): the units of work, one writer each."""
    v = open_levels(product, "r")[f"{GROUP}/{level}/valid"]
    t = v.chunks[0]
    return [(r, c) for r in range(math.ceil(v.shape[0] / t)) for c in range(math.ceil(v.shape[1] / t))]


def build_chunk(group, level: int, r: int, c: int, arrays) -> None:
    """Write chunk (r, c) of ``level`` from the 2x2 chunks below it (level ``level - 1``)."""
    src = group if level == 1 else group[f"{GROUP}/{level - 1}"]
    dst = group[f"{GROUP}/{level}"]
    t = dst["valid"].chunks[0]
    r0, c0 = 2 * r * t, 2 * c * t
    r1, c1 = min(r0 + 2 * t, src["valid"].shape[0]), min(c0 + 2 * t, src["valid"].shape[1])
    valid = np.asarray(src["valid"][r0:r1, c0:c1])
    mosaics = {name: np.asarray(src[name][:, r0:r1, c0:c1]) for name in arrays}
    out, v2 = reduce_2x2(mosaics, valid)
    h2, w2 = v2.shape
    dst["valid"][r * t : r * t + h2, c * t : c * t + w2] = v2
    for name, block in out.items():
        dst[name][:, r * t : r * t + h2, c * t : c * t + w2] = block


def build_levels_serial(product: str | Path, arrays=ARRAYS) -> list[dict]:
    """The whole pyramid in this process (``gsp`` without a cluster, tests); the flow runs
    :func:`flows.delivery.build_pyramid` instead."""
    levels = create_levels(product, arrays)
    group = open_levels(product)
    names = [a for a in arrays if a in group]
    for lv in levels[1:]:
        for r, c in level_chunks(product, lv["level"]):
            build_chunk(group, lv["level"], r, c, names)
    write_gdal_views(product, [lv["path"] for lv in levels[1:]])
    return levels
