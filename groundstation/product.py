"""The Zarr product of a pass: georeferenced uint8 mosaics plus a validity mask.

Layout (one store per pass and product version)::

    decoded   (band, y, x) uint8   chunks (3, T, T) = the codec tiles, so each tile owns whole chunks
    enhanced  (band, y, x) uint8   same chunking (written by the enhancement step)
    valid     (y, x)       uint8   1 = a decoded, valid pixel; 0 = nodata or a lost tile
    x, y                   float64 pixel-centre coordinates
    spatial_ref            CF grid mapping with ``crs_wkt`` and ``GeoTransform`` (rioxarray's convention)

``xr.open_zarr(path, decode_coords="all").rio.crs`` / ``.rio.transform()`` give back the scene's CRS and affine
transform exactly, and product pixel (row, col) is scene pixel (row, col). Writers only ever write whole chunks
(one codec tile or one enhancement core), so concurrent writers never share a chunk.

Status lives in the ``gsp_status`` attribute: ``incomplete`` from creation until every tile was handled, then
``complete`` (set last, after the data and tile table are written).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ProductError

BANDS = ["red", "green", "blue"]


def georef_dataset(width: int, height: int, crs_wkt: str, transform: tuple[float, ...], data_vars: dict):
    """An xarray Dataset with x/y pixel-centre coordinates and a CF ``spatial_ref`` (the one place that does this).

    ``crs_wkt == ""`` (a scene without CRS): a pixel-grid product, ``gsp_grid = "pixel"``, no ``spatial_ref``.
    """
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr
    from affine import Affine

    aff = Affine(*transform[:6])
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    coords = {"band": BANDS}
    if aff.b == 0 and aff.d == 0:  # north-up: 1-D coordinates are exact
        coords["x"] = aff.c + cols * aff.a
        coords["y"] = aff.f + rows * aff.e
    ds = xr.Dataset(data_vars, coords=coords)
    if not crs_wkt:  # a pixel grid: no CRS is written, never a made-up one; x/y are pixel coordinates
        ds.attrs["gsp_grid"] = "pixel"
        for dim, what in (("x", "column"), ("y", "row")):
            if dim in ds.coords:
                ds[dim].attrs.update(long_name=f"pixel {what} (centre)", units="pixel")
        return ds
    ds.attrs["gsp_grid"] = "crs"
    ds = ds.rio.write_crs(crs_wkt)
    ds = ds.rio.write_transform(aff)
    return ds


def create_product(path: str | Path, header, arrays=("decoded", "enhanced"), attrs: dict | None = None) -> None:
    """Create the store's metadata and coordinates; data chunks stay unwritten (read as 0) until filled."""
    import dask.array as da

    path = Path(path)
    if path.exists():
        raise ProductError(f"{path}: already exists; remove it or choose another output path")
    s, t = header.scene, header.tiling.tile_size
    data_vars = {}
    for name in arrays:
        data_vars[name] = (("band", "y", "x"), da.zeros((3, s.height, s.width), dtype=np.uint8, chunks=(3, t, t)))
    data_vars["valid"] = (("y", "x"), da.zeros((s.height, s.width), dtype=np.uint8, chunks=(t, t)))
    ds = georef_dataset(s.width, s.height, s.crs_wkt, s.transform, data_vars)
    for name in ds.data_vars:
        ds[name].encoding.update({"chunks": ds[name].data.chunksize, "fill_value": 0})
    ds.attrs.update({"gsp_status": "incomplete", **_jsonable(attrs or {})})
    ds.to_zarr(path, mode="w-", compute=False, zarr_format=3, consolidated=False)


def open_arrays(path: str | Path):
    import zarr

    return zarr.open_group(str(path), mode="r+")


def write_block(group, name: str, r0: int, c0: int, block: np.ndarray) -> None:
    """Write a (3, h, w) or (h, w) block at (r0, c0); callers own the chunks they write."""
    if block.ndim == 3:
        group[name][:, r0 : r0 + block.shape[1], c0 : c0 + block.shape[2]] = block
    else:
        group[name][r0 : r0 + block.shape[0], c0 : c0 + block.shape[1]] = block


def finalize(path: str | Path, attrs: dict) -> None:
    """Record provenance and mark the product complete (the last write)."""
    import zarr

    g = zarr.open_group(str(path), mode="r+")
    g.attrs.update(_jsonable(attrs))
    g.attrs["gsp_status"] = "complete"
    zarr.consolidate_metadata(str(path))


def status(path: str | Path) -> str | None:
    import zarr

    try:
        return zarr.open_group(str(path), mode="r").attrs.get("gsp_status")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError if hasattr(zarr.errors, "GroupNotFoundError") else FileNotFoundError):
        return None


def open_product(path: str | Path):
    """xarray view with georeferencing decoded (``.rio.crs``, ``.rio.transform()``)."""
    import rioxarray  # noqa: F401
    import xarray as xr

    return xr.open_zarr(str(path), decode_coords="all", consolidated=None)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))
