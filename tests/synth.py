"""Tiny generated test data: GeoTIFF scenes of odd sizes in real CRSs, and small random ELIC checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from groundstation.codec import CodecArch, build_codec

#: A small ELIC (fast on CPU) with CompressAI's layer structure; 5 channel groups like the real one.
TINY_ARCH = CodecArch(N=32, M=64, groups=(8, 8, 16, 16, 16))


def smooth_image(height: int, width: int, bands: int = 3, seed: int = 0) -> np.ndarray:
    """(bands, h, w) float in [0, 1]: smooth gradients plus texture, so a codec has something to code."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for b in range(bands):
        fx, fy = rng.uniform(0.01, 0.05, 2)
        img = 0.5 + 0.3 * np.sin(xx * fx + b) * np.cos(yy * fy - b) + 0.1 * rng.standard_normal((height, width))
        out.append(np.clip(img, 0, 1))
    return np.stack(out).astype(np.float32)


def write_scene(path: Path, height: int, width: int, *, crs: str = "EPSG:32614", dtype: str = "uint8", bands: int = 3,
                nodata: float | None = None, alpha: bool = False, seed: int = 0,
                transform: tuple | None = None, nodata_box: tuple[int, int, int, int] | None = None) -> Path:
    """Write a GeoTIFF; ``nodata_box`` (r0, r1, c0, c1) is filled with nodata (or alpha 0)."""
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    data = smooth_image(height, width, bands, seed)
    if dtype == "uint8":
        arr = (data * 255).round().astype(np.uint8)
    elif dtype == "uint16":
        arr = (data * 4000 + 300).round().astype(np.uint16)
    else:
        arr = (data * 0.6).astype(dtype)
    if nodata_box is not None and nodata is not None:
        r0, r1, c0, c1 = nodata_box
        arr[:, r0:r1, c0:c1] = nodata
    count = bands + (1 if alpha else 0)
    transform = transform or from_origin(500000.0, 4100000.0, 0.3, 0.3)
    profile = dict(driver="GTiff", height=height, width=width, count=count, dtype=arr.dtype, crs=crs,
                   transform=transform, tiled=True, blockxsize=64, blockysize=64)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(arr, indexes=list(range(1, bands + 1)))
        if alpha:
            a = np.full((height, width), 255, np.uint8 if dtype == "uint8" else arr.dtype)
            if nodata_box is not None:
                r0, r1, c0, c1 = nodata_box
                a[r0:r1, c0:c1] = 0
            ds.write(a, indexes=count)
            ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return path


def tiny_codec_checkpoint(path: Path, seed: int = 0, arch: CodecArch = TINY_ARCH) -> Path:
    """A random-init ELIC with filled entropy tables, saved as a raw state dict (the inference format)."""
    torch.manual_seed(seed)
    model = build_codec(arch)
    model.update(force=True)
    torch.save(model.state_dict(), path)
    return path


def write_pngs(folder: Path, specs) -> Path:
    """Smooth RGB PNGs ``folder/<name>.png`` for ``(name, (height, width), seed)`` specs (names may hold a
    sub-folder); returns ``folder``."""
    from PIL import Image

    for name, (h, w), seed in specs:
        target = Path(folder) / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        rgb = (smooth_image(h, w, seed=seed).transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(rgb).save(target)
    return Path(folder)
