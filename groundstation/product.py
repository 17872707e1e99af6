"""The Zarr product of a pass: georeferenced uint8 mosaics plus a validity mask, readable by xarray and GDAL.

Layout (one store per pass and product version, **Zarr format 2**)::

    decoded   (band, y, x) uint8   chunks (3, T, T) = the codec tiles, so each tile owns whole chunks
    enhanced  (band, y, x) uint8   same chunking (written by the enhancement step)
    valid     (y, x)       uint8   1 = a decoded, valid pixel; 0 = nodata or a lost tile (CF flag_values 0, 1)
    band                   the band names (red, green, blue) as variable-length UTF-8 strings
    x, y                   float64 pixel-centre coordinates (CF attributes as ``rio.write_coordinate_system``)
    time                   scalar: the pass's acquisition time (UTC)
    spatial_ref            CF grid mapping with ``crs_wkt`` and ``GeoTransform`` (rioxarray's convention)
    overviews/1, /2, ...   the overview pyramid, once the flow built it (:mod:`groundstation.overviews`)

and beside the store, GDAL's view of each mosaic (see below): ``<name>.decoded.vrt``, ``<name>.enhanced.vrt``
for ``<name>.zarr``.

``xr.open_zarr(path, decode_coords="all").rio.crs`` / ``.rio.transform()`` give back the scene's CRS and affine
transform exactly, and product pixel (row, col) is scene pixel (row, col). Writers only ever write whole chunks
(one codec tile or one enhancement core), so concurrent writers never share a chunk.

**Why Zarr format 2, no fill value and a VRT per mosaic** (measured with the pinned stack: rasterio 1.4 with its
bundled GDAL 3.10; ``tests/unit/groundstation/test_product_gdal.py`` holds each finding):

* GDAL 3.10 cannot read Zarr format 3 as zarr-python 3 writes it (``Unsupported codec: bytes``; GDAL reads that
  codec from 3.11 on); it reads format 2, and ``ZARR:"<p>.zarr":/enhanced`` then opens with 3 bands, the CRS
  from ``spatial_ref`` and the transform from the coordinates.
* GDAL reports a Zarr fill value as the band's nodata value: with ``fill_value: 0`` every real black pixel would
  be hidden. The arrays are written with ``fill_value: null`` (format 2 allows it; zarr-python reads unwritten
  chunks of such a uint8 array as 0, and xarray does not turn the arrays into floats), so GDAL reports no nodata.
* GDAL's Zarr driver has no way to name another array as the mask, nor a colour interpretation: it reads no
  attribute for either, and the colour interpretation it stores on request (a PAM ``.aux.xml``) is not read
  back by 3.10. A GDAL VRT is the format GDAL itself defines for exactly this, so each mosaic gets one
  (``<p>.enhanced.vrt`` beside ``<p>.zarr``): the three bands with Red/Green/Blue colour interpretation,
  ``valid`` (scaled 1 -> 255) as the dataset's mask band, and the CRS WKT and GeoTransform written exactly as
  in the pass header (GDAL's own transform from the x/y coordinates agrees only to float rounding). Its sources
  are relative paths to the array folders (``<p>.zarr/enhanced``, ``<p>.zarr/valid``), so the product folder
  can be moved or copied whole. The views lie beside the store, not in it: zarr warns about every object in a
  group that is not an array or group. QGIS, ``gdalinfo`` and rasterio open ``<p>.enhanced.vrt`` as an RGB
  raster with that mask.

Products written before (Zarr format 3) are still read by this module (:func:`status`, :func:`open_product`,
:func:`open_arrays`, ``gsp export``); they have no GDAL view: :func:`gdal_view` says so.

Status lives in the ``gsp_status`` attribute: ``incomplete`` from creation until every tile was handled, then
``complete`` (set last, after the data and tile table are written), with ``gsp_tiles_lost`` beside it (0, or how
many tiles are masked and listed for retransmission: "complete" means every tile was handled, not received).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import numpy as np

from .errors import ProductError
from .fileio import write_text_atomic

BANDS = ["red", "green", "blue"]
ARRAYS = ("decoded", "enhanced")
#: The Zarr format new products are written in (GDAL 3.10, bundled with rasterio 1.4, reads format 2 only).
ZARR_FORMAT = 2
CONVENTIONS = "CF-1.8"

_LONG_NAMES = {
    "decoded": "decoded mosaic: ELIC reconstruction of the downlinked tiles, 8-bit RGB",
    "enhanced": "enhanced mosaic: INN-RSIC enhancement of the decoded mosaic, 8-bit RGB",
}


def georef_dataset(width: int, height: int, crs_wkt: str, transform: tuple[float, ...], data_vars: dict,
                   acquisition_time: str | None = None):
    """An xarray Dataset with x/y pixel-centre coordinates and a CF ``spatial_ref`` (the one place that does this).

    ``crs_wkt == ""`` (a scene without CRS): a pixel-grid product, ``gsp_grid = "pixel"``, no ``spatial_ref``.
    ``acquisition_time`` (ISO 8601) becomes the scalar ``time`` coordinate (UTC).
    """
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr
    from affine import Affine

    aff = Affine(*transform[:6])
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    # object dtype: written as variable-length UTF-8 strings (not numpy's fixed-length UTF-32)
    coords = {"band": ("band", np.array(BANDS, dtype=object), {"long_name": "band name"})}
    if aff.b == 0 and aff.d == 0:  # north-up: 1-D coordinates are exact
        coords["x"] = aff.c + cols * aff.a
        coords["y"] = aff.f + rows * aff.e
    if acquisition_time:
        coords["time"] = ((), _utc_datetime64(acquisition_time),
                          {"standard_name": "time", "long_name": "acquisition time (UTC)", "axis": "T"})
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs["Conventions"] = CONVENTIONS
    if not crs_wkt:  # a pixel grid: no CRS is written, never a made-up one; x/y are pixel coordinates
        ds.attrs["gsp_grid"] = "pixel"
        for dim, what in (("x", "column"), ("y", "row")):
            if dim in ds.coords:
                ds[dim].attrs.update(long_name=f"pixel {what} (centre)", units="pixel")
        return ds
    ds.attrs["gsp_grid"] = "crs"
    ds = ds.rio.write_crs(crs_wkt)
    ds = ds.rio.write_transform(aff)
    if "x" in ds.coords:
        ds = ds.rio.write_coordinate_system()  # standard_name, long_name, units, axis on x and y
    return ds


def _utc_datetime64(iso: str) -> np.datetime64:
    import pandas as pd

    t = pd.Timestamp(iso)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return np.datetime64(t.to_datetime64(), "ns")


def create_product(path: str | Path, header, arrays=ARRAYS, attrs: dict | None = None) -> None:
    """Create the store's metadata, coordinates and GDAL views; data chunks stay unwritten (read as 0) until
    filled."""
    import dask.array as da

    path = Path(path)
    if path.exists():
        raise ProductError(f"{path}: already exists; remove it or choose another output path")
    s, t = header.scene, header.tiling.tile_size
    data_vars = {}
    for name in arrays:
        data_vars[name] = (("band", "y", "x"), da.zeros((3, s.height, s.width), dtype=np.uint8, chunks=(3, t, t)),
                           {"long_name": _LONG_NAMES.get(name, name), "units": "1",
                            "coverage_content_type": "image"})
    data_vars["valid"] = (("y", "x"), da.zeros((s.height, s.width), dtype=np.uint8, chunks=(t, t)),
                          {"long_name": "valid data mask", "units": "1", "flag_values": [0, 1],
                           "flag_meanings": "nodata_or_lost valid", "coverage_content_type": "qualityInformation"})
    ds = georef_dataset(s.width, s.height, s.crs_wkt, s.transform, data_vars, header.acquisition_time)
    for name in ds.data_vars:
        # no fill value (format 2 allows null): GDAL would report a fill value as nodata, hiding black pixels
        ds[name].encoding.update({"chunks": ds[name].data.chunksize})
    ds.attrs.update({"gsp_status": "incomplete", **_jsonable(attrs or {})})
    ds.to_zarr(path, mode="w-", compute=False, zarr_format=ZARR_FORMAT, consolidated=False)
    for name in arrays:
        write_text_atomic(gdal_view_path(path, name),
                          gdal_vrt(path.name, name, s.width, s.height, t, s.crs_wkt, s.transform))


def gdal_view_path(path: str | Path, array: str) -> Path:
    """Where GDAL's view of mosaic ``array`` lies: ``<name>.<array>.vrt`` beside ``<name>.zarr``."""
    path = Path(path)
    stem = path.name[: -len(".zarr")] if path.name.endswith(".zarr") else path.name
    return path.with_name(f"{stem}.{array}.vrt")


def write_gdal_views(path: str | Path, overview_paths: list[str] = ()) -> list[Path]:
    """(Re)write the GDAL views of a product's mosaics, with the overview levels given (their group paths, e.g.
    ``overviews/1``, finest first) as the RGB bands' overviews."""
    import zarr

    path = Path(path)
    if zarr_format(path) != 2:  # GDAL 3.10 reads no format 3: no view for an older product
        return []
    attrs = dict(zarr.open_group(str(path), mode="r", use_consolidated=False).attrs)
    s, t = attrs["gsp_pass"]["scene"], attrs["gsp_pass"]["tiling"]["tile_size"]
    out = []
    for name in arrays(path):
        out.append(write_text_atomic(gdal_view_path(path, name), gdal_vrt(
            path.name, name, s["width"], s["height"], t, s.get("crs_wkt") or "", s["transform"], overview_paths)))
    return out


def gdal_vrt(store: str, name: str, width: int, height: int, block: int, crs_wkt: str, transform,
             overview_paths=()) -> str:
    """GDAL's view of mosaic ``name`` of the store folder ``store`` (the VRT lies beside it): RGB colour
    interpretation, ``valid`` as the mask band (1 -> 255), the CRS WKT and GeoTransform exactly as given (none
    for a pixel grid); ``overview_paths``: groups in the store holding the mosaic at lower resolution (used by
    GDAL for the colour bands; the mask is then read from full resolution)."""
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    store = escape(store)

    def overviews(band: int) -> str:
        return "".join(f'    <Overview>\n      <SourceFilename relativeToVRT="1">{store}/{escape(o)}/{name}'
                       f'</SourceFilename>\n      <SourceBand>{band}</SourceBand>\n    </Overview>\n'
                       for o in overview_paths)

    def source(array: str, band: int, indent: str, scale: bool = False) -> str:
        kind = "ComplexSource" if scale else "SimpleSource"  # ComplexSource: the mask is scaled 1 -> 255
        inner = [f'<SourceFilename relativeToVRT="1">{store}/{array}</SourceFilename>', f"<SourceBand>{band}</SourceBand>",
                 f'<SourceProperties RasterXSize="{width}" RasterYSize="{height}" DataType="Byte" '
                 f'BlockXSize="{block}" BlockYSize="{block}"/>',
                 f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>',
                 f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>']
        if scale:
            inner.append("<ScaleRatio>255</ScaleRatio>")
        return "".join([f"{indent}<{kind}>\n", *(f"{indent}  {x}\n" for x in inner), f"{indent}</{kind}>\n"])

    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n']
    if crs_wkt:  # no dataAxisToSRSAxisMapping: GDAL then uses the traditional GIS order (x = easting/longitude)
        lines.append(f'  <SRS>{escape(crs_wkt)}</SRS>\n')
        lines.append(f'  <GeoTransform>{c!r}, {a!r}, {b!r}, {f!r}, {d!r}, {e!r}</GeoTransform>\n')
    lines.append(f'  <Metadata><MDI key="gsp_array">{name}</MDI></Metadata>\n')
    for i, colour in enumerate(("Red", "Green", "Blue"), start=1):
        lines.append(f'  <VRTRasterBand dataType="Byte" band="{i}">\n'
                     f'    <Description>{BANDS[i - 1]}</Description>\n'
                     f'    <ColorInterp>{colour}</ColorInterp>\n'
                     + source(name, i, "    ")
                     + overviews(i)
                     + '  </VRTRasterBand>\n')
    lines.append('  <MaskBand>\n    <VRTRasterBand dataType="Byte">\n' + source("valid", 1, "      ", scale=True)
                 + '    </VRTRasterBand>\n  </MaskBand>\n')
    lines.append('</VRTDataset>\n')
    return "".join(lines)


def gdal_view(path: str | Path, array: str = "enhanced") -> Path:
    """The VRT through which GDAL (QGIS, rasterio) opens mosaic ``array`` of the product."""
    path = Path(path)
    vrt = gdal_view_path(path, array)
    if vrt.is_file():
        return vrt
    if zarr_format(path) == 3:
        raise ProductError(f"{path} is a Zarr format 3 product (written before GDAL views existed): GDAL 3.10 "
                           f"cannot read it; export a GeoTIFF with `gsp export {path} --cog OUT.tif`")
    raise ProductError(f"{path} has no array {array!r} with a GDAL view (arrays: {', '.join(arrays(path)) or 'none'})")


def zarr_format(path: str | Path) -> int | None:
    """2 or 3 (the store's Zarr format), None where there is no Zarr group."""
    path = Path(path)
    if (path / "zarr.json").is_file():
        return 3
    if (path / ".zgroup").is_file():
        return 2
    return None


def arrays(path: str | Path) -> list[str]:
    """The mosaics (decoded, enhanced) the product holds."""
    path = Path(path)
    return [n for n in ARRAYS if (path / n / ".zarray").is_file() or (path / n / "zarr.json").is_file()]


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
    """Record provenance and mark the product complete (the last write); beside ``gsp_status`` its
    ``gsp_tiles_lost``: how many tiles of ``attrs["gsp_tiles"]`` have no pixels (masked, listed for
    retransmission), so that a complete product with lost tiles says so where its status is read."""
    import zarr

    g = zarr.open_group(str(path), mode="r+")
    g.attrs.update(_jsonable(attrs))
    g.attrs["gsp_tiles_lost"] = sum(1 for t in (attrs.get("gsp_tiles") or {}).values() if t.get("status") != "ok")
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
