"""Reading GeoTIFF scenes in windows and turning any band layout into the 8-bit RGB the codec takes.

The rules (recorded in every pass header, so the ground knows what the satellite did):

* **Bands.** ``--bands`` wins when given (1 or 3 one-based band numbers). Otherwise: a scene whose colour
  interpretation says red/green/blue uses those bands (an alpha band becomes the validity mask); a 4-band scene
  without that information is taken as R, G, B, NIR and the NIR band is dropped; any other scene with 3 or more
  bands uses bands 1-3; a 1- or 2-band scene is shown as grey (band 1 in R, G and B).
* **Scaling.** uint8 bands are used as they are. Any other type (uint16, int16, float...) is stretched linearly
  per band from its 2nd to its 98th percentile of *valid* pixels to 0..255 (clipped). Percentiles come from a
  decimated read of at most 1024x1024 pixels (GDAL overviews where the file has them), so the whole scene is
  never in memory.
* **Validity.** A pixel is invalid where GDAL's dataset mask says so (alpha band, nodata value or internal mask)
  or where a float band is NaN. Invalid pixels are sent as 0 and the tile's validity mask travels with its
  record; the product marks them invalid.
"""

from __future__ import annotations

import logging

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .container import BandInfo
from .errors import SceneError

log = logging.getLogger(__name__)

PERCENTILES = (2.0, 98.0)
STATS_MAX_SIDE = 1024
#: GDAL's block cache defaults to 5% of RAM and fills as a large scene is read tile by tile (each block is read
#: once, so caching buys nothing): cap it so encode memory does not grow with scene size.
GDAL_CACHE_MB = 64


@dataclass(frozen=True)
class Scene:
    """An open rasterio dataset plus the band plan; use as a context manager."""

    path: Path
    ds: object  # rasterio DatasetReader
    bands: BandInfo
    env: object = None  # rasterio.Env holding the GDAL cache cap while the scene is open

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc: object) -> None:
        self.ds.close()
        if self.env is not None:
            self.env.__exit__(None, None, None)

    @property
    def width(self) -> int:
        return self.ds.width

    @property
    def height(self) -> int:
        return self.ds.height

    def read_rgb(self, row0: int, row1: int, col0: int, col1: int) -> tuple[np.ndarray, np.ndarray]:
        """(rgb (h, w, 3) uint8, valid (h, w) bool) for one window of the scene."""
        from rasterio.windows import Window

        win = Window(col0, row0, col1 - col0, row1 - row0)
        raw = self.ds.read(self.bands.rgb[0], window=win)
        valid = self.ds.dataset_mask(window=win) > 0
        if np.issubdtype(raw.dtype, np.floating):
            valid &= np.isfinite(raw).all(axis=0)
        return to_uint8(raw, self.bands, valid), valid


def open_scene(path: str | Path, bands: list[int] | None = None, *, require_crs: bool = False) -> Scene:
    """Open a raster GDAL reads (GeoTIFF, JPEG, PNG...) for windowed reading.

    A scene without a CRS (a drone photo, an archive scan) is a *pixel grid*: it is processed with no CRS and
    pixel coordinates, never a made-up one, unless ``require_crs`` (``gsp encode --require-crs``, station
    ``encode.require_crs``) refuses it.
    """
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    path = Path(path)
    if not path.exists():
        raise SceneError(f"{path}: no such scene file")
    env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)
    env.__enter__()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # said once below, in words
            ds = rasterio.open(path)
    except RasterioIOError as exc:
        env.__exit__(None, None, None)
        raise SceneError(f"{path}: not a readable raster ({exc}); expected a GeoTIFF, JPEG, PNG or another "
                         "format GDAL reads") from exc
    try:
        if ds.crs is None:
            if require_crs:
                raise SceneError(f"{path}: has no CRS and this station requires one (--require-crs / station "
                                 "encode.require_crs); assign one (gdal_edit.py -a_srs EPSG:...) or drop the "
                                 "requirement to process it as a pixel grid")
            log.info("%s has no CRS: processed as a pixel grid (no georeferencing; x/y are pixel columns/rows)",
                     path)
        elif ds.transform.is_identity:
            raise SceneError(f"{path}: has a CRS but no geotransform; the product could not be georeferenced. "
                             "Assign one (gdal_edit.py -a_ullr ...)")
        plan = plan_bands(ds, bands)
    except Exception:
        ds.close()
        env.__exit__(None, None, None)
        raise
    return Scene(path=path, ds=ds, bands=plan, env=env)


def plan_bands(ds, bands: list[int] | None = None) -> BandInfo:
    from rasterio.enums import ColorInterp

    count = ds.count
    ci = list(ds.colorinterp)
    if bands:
        if len(bands) not in (1, 3) or any(b < 1 or b > count for b in bands):
            raise SceneError(f"--bands {bands}: give 1 or 3 band numbers between 1 and {count}")
        selection = bands * 3 if len(bands) == 1 else list(bands)
        rule = f"bands {bands} as requested"
    elif count >= 3 and ColorInterp.red in ci and ColorInterp.green in ci and ColorInterp.blue in ci:
        selection = [ci.index(ColorInterp.red) + 1, ci.index(ColorInterp.green) + 1, ci.index(ColorInterp.blue) + 1]
        rule = "red/green/blue from the colour interpretation" + (" (alpha band -> mask)" if ColorInterp.alpha in ci else "")
    elif count == 4:
        selection = [1, 2, 3]
        rule = "4-band scene taken as R, G, B, NIR: bands 1-3, NIR dropped"
    elif count >= 3:
        selection = [1, 2, 3]
        rule = f"{count}-band scene without colour interpretation: bands 1-3"
    else:
        selection = [1, 1, 1]
        rule = "single band shown as grey"
    dtype = np.dtype(ds.dtypes[selection[0] - 1])
    if ColorInterp.alpha in ci:
        mask_source = "alpha band"
    elif ds.nodata is not None:
        mask_source = f"nodata value {ds.nodata}"
    elif np.issubdtype(dtype, np.floating):
        mask_source = "NaN"
    else:
        mask_source = "dataset mask (none: all valid unless GDAL has an internal mask)"
    if dtype == np.uint8:
        return BandInfo(selection=selection, rule=rule, scaling="identity", in_min=[0.0] * 3, in_max=[255.0] * 3,
                        mask_source=mask_source, source_nodata=_nodata(ds))
    lo, hi = _percentiles(ds, selection)
    return BandInfo(selection=selection, rule=rule, scaling="linear", in_min=lo, in_max=hi,
                    mask_source=mask_source, source_nodata=_nodata(ds))


def _nodata(ds) -> float | None:
    return None if ds.nodata is None or np.isnan(ds.nodata) else float(ds.nodata)


def _percentiles(ds, selection: list[int]) -> tuple[list[float], list[float]]:
    scale = max(1.0, max(ds.width, ds.height) / STATS_MAX_SIDE)
    shape = (max(1, int(ds.height / scale)), max(1, int(ds.width / scale)))
    data = ds.read(selection, out_shape=(len(selection), *shape))
    valid = ds.dataset_mask(out_shape=shape) > 0
    lo, hi = [], []
    for band in data:
        ok = valid & np.isfinite(band)
        if not ok.any():
            raise SceneError(f"{ds.name}: band has no valid pixels (all nodata); nothing to encode")
        p_lo, p_hi = np.percentile(band[ok].astype(np.float64), PERCENTILES)
        if p_hi <= p_lo:
            p_hi = p_lo + 1.0
        lo.append(float(p_lo))
        hi.append(float(p_hi))
    return lo, hi


def to_uint8(raw: np.ndarray, bands: BandInfo, valid: np.ndarray) -> np.ndarray:
    """(3, h, w) source values -> (h, w, 3) uint8 by the recorded rule; invalid pixels become fill_value."""
    if bands.scaling == "identity":
        out = raw.astype(np.uint8, copy=False)
    else:
        _, in_min, in_max = bands.rgb
        lo = np.asarray(in_min, np.float32)[:, None, None]
        hi = np.asarray(in_max, np.float32)[:, None, None]
        scaled = (np.nan_to_num(raw.astype(np.float32)) - lo) * (255.0 / (hi - lo))
        out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    out = np.moveaxis(out, 0, -1).copy()
    out[~valid] = bands.fill_value
    return out
