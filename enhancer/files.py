"""Enhancing image files: a 3-band uint8 picture (PNG, JPEG...) or a GeoTIFF of any size, window by window.

The GeoTIFF keeps its profile (CRS, transform, tiling, compression, nodata), colour interpretation and tags; its
invalid pixels are copied unchanged. Used by ``gsp enhance``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from enhancer.inference import check_strength, enhance_mosaic
from groundstation.errors import ConfigError, SceneError
from groundstation.fileio import atomic_path

__all__ = ["GEOTIFF_SUFFIXES", "check_enhance_args", "enhance_file"]

log = logging.getLogger(__name__)

GEOTIFF_SUFFIXES = {".tif", ".tiff"}
_CONVERT_HINT = ("enhancement takes 3-band 8-bit RGB (the decoded product of gsp encode/decode); run gsp "
                 "encode/decode first, or convert, e.g. gdal_translate -ot Byte -scale -b 1 -b 2 -b 3 IN OUT.tif")


def check_enhance_args(core: int, halo: int, temperature: float, strength: float = 1.0, *,
                       names: tuple[str, ...] = ("core", "halo", "temperature", "strength")) -> None:
    """Refuse window, noise and strength settings the network cannot use; ``names``: how the caller calls them."""
    if core < 2 or core % 2 or halo < 0 or halo % 2:
        raise ConfigError(f"{names[0]} {core} / {names[1]} {halo}: both must be even (core >= 2, halo >= 0) so "
                          "that windows start on the Haar 2x2 grid")
    if temperature < 0:
        raise ConfigError(f"{names[2]} {temperature} must be >= 0")
    try:
        check_strength(strength, names[3])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def enhance_file(src: str | Path, dst: str | Path, model, *, seed: int = 0, temperature: float = 1.0,
                 strength: float = 1.0, core: int = 256, halo: int = 32, batch_size: int = 4, device: str = "cpu",
                 progress: bool = False, provenance: Mapping[str, str] | None = None) -> dict:
    """Enhance one 3-band uint8 image file (PNG/JPEG/...) or GeoTIFF into ``dst``; returns a summary dict.

    A GeoTIFF is read and written in windows (:func:`enhancer.inference.enhance_mosaic`), so it never has to
    fit in memory; the output has the input's profile (CRS, transform, tiling, compression, nodata), colour
    interpretation and tags, plus ``GSP_*`` provenance tags (a compressed *striped* input is written tiled
    256x256, the only change); pixels the input marks invalid (nodata, alpha,
    internal mask) are copied unchanged. The file is written beside ``dst`` and renamed over it when complete.
    """
    check_enhance_args(core, halo, temperature, strength)
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise SceneError(f"{src}: no such file")
    if src.resolve() == dst.resolve():
        raise ConfigError(f"output {dst}: must not overwrite the input")
    dst.parent.mkdir(parents=True, exist_ok=True)
    kwargs = dict(core=core, halo=halo, seed=seed, temperature=temperature, strength=strength,
                  batch_size=batch_size, device=device, progress=progress)
    with atomic_path(dst) as tmp:
        if src.suffix.lower() in GEOTIFF_SUFFIXES:
            info = _enhance_geotiff(src, tmp, model, dict(provenance or {}, seed=str(seed),
                                                          temperature=str(temperature), strength=str(strength)),
                                    kwargs)
        else:
            info = _enhance_picture(src, tmp, dst.suffix, model, kwargs)
    return dict(info, out=str(dst))


def _enhance_picture(src: Path, tmp: Path, suffix: str, model, kwargs: dict) -> dict:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(src) as im:
            mode, fmt = im.mode, im.format
            image = np.asarray(im) if mode == "RGB" else None
    except (UnidentifiedImageError, OSError) as exc:
        raise SceneError(f"{src}: not a readable image ({exc}); {_CONVERT_HINT}") from exc
    if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise SceneError(f"{src}: {fmt} image in mode {mode!r}, not 3-band 8-bit RGB; {_CONVERT_HINT}")
    h, w = image.shape[:2]
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    out = np.empty_like(chw)

    def source(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return chw[:, y0:y1, x0:x1]

    def sink(y0: int, y1: int, x0: int, x1: int, block: np.ndarray) -> None:
        out[:, y0:y1, x0:x1] = block

    stats = enhance_mosaic(model, source, sink, (h, w), **kwargs)
    fmt_out = Image.registered_extensions().get(suffix.lower())
    if fmt_out is None:
        raise ConfigError(f"output ...{suffix}: unknown image type; use .png (lossless) or .tif")
    if fmt_out == "JPEG":
        log.warning("writing the enhanced image as JPEG: lossy, it blurs the detail the enhancer adds; prefer PNG")
    Image.fromarray(np.ascontiguousarray(out.transpose(1, 2, 0))).save(tmp, format=fmt_out)
    return {"height": h, "width": w, "georeferenced": False, "windows": stats["windows"], "seconds": stats["seconds"]}


def _enhance_geotiff(src: Path, tmp: Path, model, tags: dict, kwargs: dict) -> dict:
    import numpy as np
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.windows import Window

    try:
        ds = rasterio.open(src)
    except RasterioIOError as exc:
        raise SceneError(f"{src}: not a readable GeoTIFF ({exc})") from exc
    with ds:
        if ds.count != 3 or any(np.dtype(d) != np.uint8 for d in ds.dtypes):
            raise SceneError(f"{src}: {ds.count} band(s) of {', '.join(sorted(set(ds.dtypes)))}, not 3 bands of "
                             f"uint8; {_CONVERT_HINT}")
        h, w = ds.height, ds.width
        profile = ds.profile.copy()
        profile.update(driver="GTiff", count=3, dtype="uint8")
        profile.setdefault("BIGTIFF", "IF_SAFER")
        if profile.get("compress") and not profile.get("tiled"):
            # compressed strips would be rewritten by every core that touches them (the file grows): tile instead
            log.info("%s: compressed and striped; writing the output tiled 256x256 (same CRS, transform, "
                     "compression)", src)
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        has_mask = ds.nodata is not None or any(
            flag != [rasterio.enums.MaskFlags.all_valid] for flag in ds.mask_flag_enums)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.colorinterp = ds.colorinterp
            dst.update_tags(**ds.tags())
            dst.update_tags(**{f"GSP_{k.upper()}": v for k, v in tags.items()})

            def source(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
                return ds.read(window=Window(x0, y0, x1 - x0, y1 - y0))

            def sink(y0: int, y1: int, x0: int, x1: int, block: np.ndarray) -> None:
                win = Window(x0, y0, x1 - x0, y1 - y0)
                if has_mask:
                    invalid = ds.dataset_mask(window=win) == 0
                    if invalid.any():
                        block = block.copy()
                        block[:, invalid] = ds.read(window=win)[:, invalid]
                dst.write(block, window=win)

            stats = enhance_mosaic(model, source, sink, (h, w), **kwargs)
        return {"height": h, "width": w, "georeferenced": ds.crs is not None, "windows": stats["windows"],
                "seconds": stats["seconds"]}
