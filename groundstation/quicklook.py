"""A product's quicklook: a small picture to look at before opening GIS, with the figures that make it readable.

:func:`product_quicklook` draws the product's enhanced mosaic (the decoded one for a decoded-only product) from
its smallest overview level that is still large enough, decimated to at most ``max_side`` pixels, and on it:

* **coordinates**: axes in the product's CRS (longitude/latitude in degrees for a geographic CRS, easting and
  northing in its unit for a projected one; pixel columns and rows for a pixel-grid product or a rotated grid);
* a **scale bar** of a round length (1, 2 or 5 x 10^k m, about a fifth of the width; on a geographic CRS it
  holds at the centre latitude, which its label names; none on a pixel grid);
* the **codec-tile grid**, and the **lost tiles** hatched in red with their numbers (masked pixels are grey);
* a title: the pass, the mosaic, the tiles decoded and lost.

:func:`image_data_uri` turns the picture into a ``data:`` URI small enough for a Prefect markdown artifact
(the UI shows such images; a file path or a URL to the station's disk would not load in the operator's browser).
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fileio import save_figure_atomic
from .footprints import Grid

__all__ = ["MAX_EMBED_BYTES", "QuickLook", "image_data_uri", "product_quicklook", "quicklook_path", "scale_bar"]

#: A data URI longer than this is not embedded in a report artifact (the picture stays a file beside the product).
MAX_EMBED_BYTES = 200_000
#: The colour of lost tiles on the quicklook.
LOST_COLOUR = "#e0301e"


@dataclass
class QuickLook:
    """What :func:`product_quicklook` drew: the file, the mosaic, the overview level and decimation step read,
    the axis labels, the scale bar's label (None: none), the lost tiles marked."""

    path: Path
    array: str
    level: int
    step: int
    xlabel: str
    ylabel: str
    scale: str | None
    lost: list[int] = field(default_factory=list)


def quicklook_path(product: str | Path) -> Path:
    """``<version>.quicklook.png`` beside ``<version>.zarr``."""
    product = Path(product)
    return product.with_name(product.stem + ".quicklook.png")


def scale_bar(width_m: float) -> tuple[float, str]:
    """(length in metres, label) of a round scale bar about a fifth of ``width_m``: 1, 2 or 5 x 10^k m."""
    target = max(width_m / 5.0, 1e-3)
    k = math.floor(math.log10(target))
    length = max(m * 10.0 ** k for m in (1, 2, 5) if m * 10.0 ** k <= target)
    if length >= 1000:
        return length, f"{length / 1000:g} km"
    return length, f"{length:g} m"


def _level(root, max_side: int) -> tuple[int, str]:
    """(level, group path) of the coarsest overview level whose longer side is still >= ``max_side`` (level 0
    when none is, or the product has no pyramid)."""
    best = (0, "")
    for ds in (dict(root.attrs).get("multiscales") or [{}])[0].get("datasets", []):
        if ds["level"] > 0 and max(ds["width"], ds["height"]) >= max_side and ds["level"] > best[0]:
            best = (ds["level"], ds["path"])
    return best


def _axes(grid: Grid) -> tuple[tuple | None, str, str, float | None, str]:
    """(extent for imshow or None for pixel axes, xlabel, ylabel, metres per x unit or None, what the scale bar
    holds for: '' or ' at 41N', the latitude where a degree of longitude has that length)."""
    a, b, c, d, e, f = grid.transform
    if not grid.georeferenced or b or d:  # a pixel grid, or a rotated one: pixel axes
        return None, "column (px)", "row (px)", None, ""
    from pyproj import CRS

    crs = CRS.from_wkt(grid.crs_wkt)
    epsg = crs.to_epsg()
    name = f"EPSG:{epsg}" if epsg else crs.name
    extent = (c, c + a * grid.width, f + e * grid.height, f)
    if crs.is_geographic:
        lat = f + e * grid.height / 2
        return (extent, f"longitude (deg, {name})", f"latitude (deg, {name})",
                111_320.0 * math.cos(math.radians(lat)), f" at {abs(lat):.0f}{'N' if lat >= 0 else 'S'}")
    unit = crs.axis_info[0].unit_name if crs.axis_info else "m"
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    short = {"metre": "m", "US survey foot": "ftUS", "foot": "ft"}.get(unit, unit)
    return extent, f"easting ({short}, {name})", f"northing ({short}, {name})", factor, ""


def product_quicklook(product: str | Path, png: str | Path | None = None, *, lost=(), title: str = "",
                      max_side: int = 800) -> QuickLook:
    """Draw the quicklook of ``product`` (see the module docstring) into ``png`` (default
    :func:`quicklook_path`); ``lost``: the tile numbers to mark (default: the product's ``gsp_tiles`` whose
    status is not ok)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import zarr
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import Patch, Rectangle
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    product = Path(product)
    png = Path(png) if png is not None else quicklook_path(product)
    root = zarr.open_group(str(product), mode="r", use_consolidated=False)
    attrs = dict(root.attrs)
    grid = Grid.from_pass_dict(attrs["gsp_pass"])
    if not lost:
        lost = sorted(int(t) for t, v in (attrs.get("gsp_tiles") or {}).items() if v.get("status") != "ok")
    level, path = _level(root, max_side)
    group = root[path] if path else root
    array = "enhanced" if "enhanced" in group else "decoded"
    h, w = group["valid"].shape
    step = max(1, math.ceil(max(h, w) / max_side))
    rgb = np.moveaxis(np.asarray(group[array][:, ::step, ::step]), 0, -1)
    # 8-bit for imshow: an overview level can hold floats in 0..255, which imshow would clip to 0..1 (white)
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8) if rgb.dtype != np.uint8 else rgb.copy()
    valid = np.asarray(group["valid"][::step, ::step]).astype(bool)
    rgb[~valid] = 128  # nodata and lost tiles: grey under the marks
    extent, xlabel, ylabel, m_per_unit, where = _axes(grid)

    aspect = grid.height / grid.width
    fig_w = 8.0
    fig, ax = plt.subplots(figsize=(fig_w, min(12.0, max(3.0, fig_w * aspect * 0.92 + 1.0))))
    if extent is None:
        ax.imshow(rgb, extent=(0, grid.width, grid.height, 0), interpolation="nearest")
        to_x = lambda col: col  # noqa: E731 - pixel axes
        to_y = lambda row: row  # noqa: E731
    else:
        ax.imshow(rgb, extent=extent, interpolation="nearest")
        a, _, c, _, e, f = grid.transform
        to_x = lambda col: c + a * col  # noqa: E731
        to_y = lambda row: f + e * row  # noqa: E731
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=8)
    for col in range(grid.tile, grid.width, grid.tile):  # the codec-tile grid
        ax.axvline(to_x(col), color="white", lw=0.6, alpha=0.5)
    for row in range(grid.tile, grid.height, grid.tile):
        ax.axhline(to_y(row), color="white", lw=0.6, alpha=0.5)
    for t in lost:
        r0, r1, c0, c1 = grid.tile_window(t)
        x0, x1, y0, y1 = to_x(c0), to_x(c1), to_y(r0), to_y(r1)
        ax.add_patch(Rectangle((min(x0, x1), min(y0, y1)), abs(x1 - x0), abs(y1 - y0), fill=False,
                               edgecolor=LOST_COLOUR, hatch="xx", lw=1.5))
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, str(t), color="white", ha="center", va="center", fontsize=9,
                fontweight="bold", bbox={"facecolor": LOST_COLOUR, "edgecolor": "none", "pad": 1.5})
    scale = None
    if m_per_unit:
        width_m = abs(grid.transform[0]) * grid.width * m_per_unit
        length_m, scale = scale_bar(width_m)
        scale += where
        ax.add_artist(AnchoredSizeBar(ax.transData, length_m / m_per_unit, scale, "lower left", pad=0.5,
                                      color="white", frameon=True, size_vertical=0,
                                      fontproperties=FontProperties(size=9)))
        ax.artists[-1].patch.set(facecolor="black", alpha=0.55, edgecolor="none")
    if lost:
        ax.legend(handles=[Patch(facecolor="none", edgecolor=LOST_COLOUR, hatch="xx",
                                 label=f"lost tile{'s' if len(lost) > 1 else ''} (retransmission)")],
                  loc="upper right", fontsize=8, framealpha=0.8)
    n = grid.n_tiles
    ax.set_title(title or f"{attrs.get('gsp_pass', {}).get('pass_id', product.stem)}: {array}, "
                 f"{n - len(lost)} of {n} tiles decoded" + (f", {len(lost)} lost" if lost else ""), fontsize=10)
    fig.tight_layout()
    save_figure_atomic(fig, png, dpi=100, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return QuickLook(png, array, level, step, xlabel, ylabel, scale, list(lost))


def image_data_uri(png: str | Path, max_bytes: int = MAX_EMBED_BYTES) -> str | None:
    """``data:image/jpeg;base64,...`` of the picture (JPEG, scaled down until the URI fits ``max_bytes``), or
    None when even a small one would not."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    for scale in (1.0, 0.75, 0.5, 0.35):
        out = img if scale == 1.0 else img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                                                  Image.LANCZOS)
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=82, optimize=True)
        uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        if len(uri) <= max_bytes:
            return uri
    return None
