"""Where a product and its tiles lie on the Earth: tile bounds, the valid footprint, the lost tiles as GeoJSON.

Coordinates in EPSG:4326 are (longitude, latitude) in degrees, as GeoJSON (RFC 7946) and STAC want them. Edges
are densified before they are transformed (a straight tile edge in UTM is a curve in degrees), so bounds and
polygons enclose what they describe. Antimeridian-crossing scenes are not split (a station scene rarely
crosses it; such a footprint's longitudes run past 180 instead).

A **pixel-grid** product (a scene without CRS, ``crs_wkt == ""``) has no place on the Earth: its tiles have
bounds in pixel coordinates only, their EPSG:4326 columns are NaN, its footprint geometry is None (``null`` in
STAC and GeoJSON) and the lost-tile features carry their pixel window with a null geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: Points per tile edge when a tile's bounds are transformed to EPSG:4326.
EDGE_POINTS = 11
#: The valid footprint is traced on the ``valid`` mask reduced (any-valid) to at most this many cells a side.
FOOTPRINT_CELLS = 512


@dataclass(frozen=True)
class Grid:
    """The scene grid of a pass/product: size, codec tile size, CRS WKT ('' = pixel grid), affine transform."""

    width: int
    height: int
    tile: int
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]

    @classmethod
    def from_header(cls, header) -> "Grid":
        s = header.scene
        return cls(s.width, s.height, header.tiling.tile_size, s.crs_wkt, tuple(float(v) for v in s.transform[:6]))

    @classmethod
    def from_pass_dict(cls, d: dict) -> "Grid":
        """From a product's ``gsp_pass`` attribute (the pass header as JSON)."""
        s, t = d["scene"], d["tiling"]
        return cls(int(s["width"]), int(s["height"]), int(t["tile_size"]), s.get("crs_wkt") or "",
                   tuple(float(v) for v in s["transform"][:6]))

    @property
    def georeferenced(self) -> bool:
        return bool(self.crs_wkt)

    @property
    def tiles_x(self) -> int:
        return math.ceil(self.width / self.tile)

    @property
    def tiles_y(self) -> int:
        return math.ceil(self.height / self.tile)

    @property
    def n_tiles(self) -> int:
        return self.tiles_x * self.tiles_y

    def tile_window(self, index: int) -> tuple[int, int, int, int]:
        """(row0, row1, col0, col1), as :meth:`groundstation.container.PassHeader.tile_window`."""
        r, c = divmod(index, self.tiles_x)
        r0, c0 = r * self.tile, c * self.tile
        return r0, min(r0 + self.tile, self.height), c0, min(c0 + self.tile, self.width)

    def to_crs(self, cols, rows) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (col, row) -> the product's CRS coordinates (pixel coordinates themselves for a pixel grid)."""
        a, b, c, d, e, f = self.transform
        cols, rows = np.asarray(cols, np.float64), np.asarray(rows, np.float64)
        return a * cols + b * rows + c, d * cols + e * rows + f

    @cached_property
    def _to_lonlat(self):
        from pyproj import CRS, Transformer

        return Transformer.from_crs(CRS.from_wkt(self.crs_wkt), CRS.from_epsg(4326), always_xy=True)

    def to_lonlat(self, cols, rows) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (col, row) -> (lon, lat) in degrees (EPSG:4326); NaN for a pixel grid."""
        if not self.georeferenced:
            nan = np.full(np.shape(cols), np.nan)
            return nan, nan.copy()
        x, y = self.to_crs(cols, rows)
        lon, lat = self._to_lonlat.transform(x, y)
        return np.asarray(lon, np.float64), np.asarray(lat, np.float64)

    def crs_bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the whole scene in the product's CRS."""
        x, y = self.to_crs([0, self.width, 0, self.width], [0, 0, self.height, self.height])
        return float(x.min()), float(y.min()), float(x.max()), float(y.max())


def _edge_points(r0, r1, c0, c1, n: int = EDGE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(cols, rows) of points along the rectangles' edges: arrays (k, 4n) for k rectangles."""
    t = np.linspace(0.0, 1.0, n)
    r0, r1, c0, c1 = (np.asarray(v, np.float64)[:, None] for v in (r0, r1, c0, c1))
    cols = np.concatenate([c0 + (c1 - c0) * t, np.broadcast_to(c1, (len(c0), n)), c1 - (c1 - c0) * t,
                           np.broadcast_to(c0, (len(c0), n))], axis=1)
    rows = np.concatenate([np.broadcast_to(r0, (len(r0), n)), r0 + (r1 - r0) * t, np.broadcast_to(r1, (len(r0), n)),
                           r1 - (r1 - r0) * t], axis=1)
    return cols, rows


def tile_bounds(grid: Grid, tiles=None, *, batch: int = 8192) -> dict[int, dict[str, float]]:
    """Bounds of each tile (default: every tile): ``crs_*`` in the product's CRS (pixel coordinates for a pixel
    grid) and ``lon_*``/``lat_*`` in EPSG:4326 (NaN for a pixel grid), keyed by tile index. Vectorised in
    batches, so thousands of tiles cost one transformer and a few array operations."""
    tiles = list(range(grid.n_tiles) if tiles is None else tiles)
    out: dict[int, dict[str, float]] = {}
    for i in range(0, len(tiles), batch):
        part = tiles[i : i + batch]
        win = np.array([grid.tile_window(t) for t in part], np.float64).reshape(-1, 4)
        cols, rows = _edge_points(win[:, 0], win[:, 1], win[:, 2], win[:, 3])
        x, y = grid.to_crs(cols, rows)
        lon, lat = grid.to_lonlat(cols, rows)
        cols_ = {"crs_xmin": x.min(1), "crs_ymin": y.min(1), "crs_xmax": x.max(1), "crs_ymax": y.max(1)}
        if grid.georeferenced:
            cols_.update(lon_min=lon.min(1), lat_min=lat.min(1), lon_max=lon.max(1), lat_max=lat.max(1))
        else:
            cols_.update({k: np.full(len(part), np.nan) for k in ("lon_min", "lat_min", "lon_max", "lat_max")})
        for j, t in enumerate(part):
            out[t] = {k: float(v[j]) for k, v in cols_.items()}
    return out


def _ring_to_lonlat(grid: Grid, ring, step: float) -> list[list[float]]:
    """A closed ring in pixel coordinates -> densified (every ``step`` px at most) [lon, lat] positions."""
    cols, rows = [], []
    for (c0, r0), (c1, r1) in zip(ring[:-1], ring[1:]):
        n = max(1, int(math.ceil(max(abs(c1 - c0), abs(r1 - r0)) / step)))
        t = np.arange(n) / n
        cols.append(c0 + (c1 - c0) * t)
        rows.append(r0 + (r1 - r0) * t)
    cols.append([ring[-1][0]])
    rows.append([ring[-1][1]])
    lon, lat = grid.to_lonlat(np.concatenate(cols), np.concatenate(rows))
    return [[round(float(a), 9), round(float(b), 9)] for a, b in zip(lon, lat)]


def rectangle_geometry(grid: Grid, r0: int, r1: int, c0: int, c1: int) -> dict | None:
    """GeoJSON Polygon (EPSG:4326) of a pixel window; None for a pixel grid."""
    if not grid.georeferenced:
        return None
    ring = [(c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)]
    lonlat = _ring_to_lonlat(grid, ring, max(1.0, max(r1 - r0, c1 - c0) / 8))
    return {"type": "Polygon", "coordinates": [_oriented(lonlat, ccw=True)]}


def valid_footprint(group, grid: Grid, *, cells: int = FOOTPRINT_CELLS) -> dict | None:
    """GeoJSON geometry (EPSG:4326) of where ``valid`` is 1, traced on the mask reduced to at most ``cells``
    cells a side (a cell counts when any of its pixels is valid, so the footprint encloses every valid pixel and
    exceeds it by less than one cell). Read one chunk row at a time: memory does not grow with the product.
    None for a pixel grid or a product without a valid pixel."""
    import rasterio.features
    from affine import Affine

    if not grid.georeferenced:
        return None
    factor = 1
    while max(grid.width, grid.height) / factor > cells and factor < grid.tile and grid.tile % (factor * 2) == 0:
        factor *= 2
    coarse = np.zeros((math.ceil(grid.height / factor), math.ceil(grid.width / factor)), np.uint8)
    valid = group["valid"]
    for r0 in range(0, grid.height, grid.tile):
        r1 = min(r0 + grid.tile, grid.height)
        block = np.asarray(valid[r0:r1, :]) > 0
        pad = ((0, -block.shape[0] % factor), (0, -block.shape[1] % factor))
        block = np.pad(block, pad)
        h, w = block.shape[0] // factor, block.shape[1] // factor
        coarse[r0 // factor : r0 // factor + h, :w] = block.reshape(h, factor, w, factor).any(axis=(1, 3))
    if not coarse.any():
        return None
    polygons = []
    for geom, _ in rasterio.features.shapes(coarse, mask=coarse > 0, transform=Affine.scale(factor)):
        rings = []
        for ring in geom["coordinates"]:  # pixel coordinates, clipped to the scene (edge cells were padded)
            ring = [(min(float(c), grid.width), min(float(r), grid.height)) for c, r in ring]
            rings.append(_ring_to_lonlat(grid, ring, step=max(factor * 8.0, max(grid.width, grid.height) / 64)))
        polygons.append([_oriented(r, ccw=(i == 0)) for i, r in enumerate(rings)])
    if len(polygons) == 1:
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


def _oriented(ring: list[list[float]], *, ccw: bool) -> list[list[float]]:
    """RFC 7946's winding: exterior rings counter-clockwise, holes clockwise (by the shoelace sign)."""
    pts = np.asarray(ring, np.float64)
    area2 = float(np.sum(pts[:-1, 0] * pts[1:, 1] - pts[1:, 0] * pts[:-1, 1]))
    return ring if (area2 > 0) == ccw else ring[::-1]


def geometry_bbox(geometry: dict | None) -> list[float] | None:
    """[west, south, east, north] of a GeoJSON Polygon/MultiPolygon; None for None."""
    if geometry is None:
        return None
    polys = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    pts = np.array([p for poly in polys for ring in poly for p in ring], np.float64)
    return [float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())]


def lost_tiles_geojson(grid: Grid, lost: list[dict], *, pass_id: str = "", pass_uid: str = "") -> dict:
    """The retransmission list as a GeoJSON FeatureCollection: one feature per lost tile with its footprint
    (EPSG:4326; null for a pixel grid) and properties tile, reason, detail and the pixel window."""
    features = []
    for d in lost:
        r0, r1, c0, c1 = grid.tile_window(int(d["tile"]))
        features.append({
            "type": "Feature",
            "id": int(d["tile"]),
            "geometry": rectangle_geometry(grid, r0, r1, c0, c1),
            "properties": {"tile": int(d["tile"]), "reason": d.get("reason", ""), "detail": d.get("detail", ""),
                           "row0": r0, "row1": r1, "col0": c0, "col1": c1, "pass_id": pass_id,
                           "pass_uid": pass_uid},
        })
    return {"type": "FeatureCollection", "name": f"lost tiles of pass {pass_id}".strip(), "features": features}
