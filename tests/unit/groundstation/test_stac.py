"""Footprints (tiles, valid area, lost tiles), the tile table's footprint columns, STAC Items and the station
catalogue: read back with pystac, validated offline against the STAC core schemas pystac ships."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import pystac
import rasterio
from pystac.extensions.projection import ProjectionExtension

from groundstation.errors import ProductError
from groundstation.footprints import Grid, geometry_bbox, lost_tiles_geojson, tile_bounds, valid_footprint
from groundstation.stac import (CATALOG_NAME, cog_path, item_path, lost_path, update_catalog, validate_offline,
                                write_item)
from product_helpers import decoded_product


@pytest.fixture(scope="module")
def station(tmp_path_factory, tiny_codec):
    """PRODUCTS/<pass>/<version>.zarr for a UTM pass with tile 1 lost, and a pixel-grid pass."""
    root = tmp_path_factory.mktemp("products")
    utm = decoded_product(root / "pass-a", tiny_codec, lose=(1,), name="v1")
    pix = decoded_product(root / "pass-b", tiny_codec, kind="pixel", name="v1")
    return {"root": root, "utm": utm, "pixel": pix}


def _grid(product) -> Grid:
    import zarr

    return Grid.from_pass_dict(dict(zarr.open_group(str(product), mode="r").attrs)["gsp_pass"])


# ------------------------------------------------------------------------------------------------ footprints
def test_tile_bounds_match_gdal_and_cover_the_scene(station):
    grid = _grid(station["utm"]["product"])
    b = tile_bounds(grid)
    assert sorted(b) == list(range(6))
    with rasterio.open(station["utm"]["scene"]) as src:
        crs = src.crs
        left, bottom, right, top = src.bounds
    assert min(v["crs_xmin"] for v in b.values()) == left and max(v["crs_xmax"] for v in b.values()) == right
    assert min(v["crs_ymin"] for v in b.values()) == bottom and max(v["crs_ymax"] for v in b.values()) == top
    from rasterio.warp import transform_bounds

    for t, v in b.items():  # EPSG:4326 bounds as GDAL computes them (densified edges)
        lon0, lat0, lon1, lat1 = transform_bounds(crs, "EPSG:4326", v["crs_xmin"], v["crs_ymin"], v["crs_xmax"],
                                                  v["crs_ymax"], densify_pts=21)
        assert [v["lon_min"], v["lat_min"], v["lon_max"], v["lat_max"]] == pytest.approx([lon0, lat0, lon1, lat1],
                                                                                          abs=1e-9)
    assert b[0]["crs_xmax"] == b[1]["crs_xmin"]  # tiles partition the scene


def test_pixel_grid_tiles_have_pixel_bounds_and_no_lonlat(station):
    grid = _grid(station["pixel"]["product"])
    assert not grid.georeferenced
    b = tile_bounds(grid)
    assert all(math.isnan(v[k]) for v in b.values() for k in ("lon_min", "lat_min", "lon_max", "lat_max"))
    assert all(math.isfinite(v["crs_xmin"]) for v in b.values())
    import zarr

    assert valid_footprint(zarr.open_group(str(station["pixel"]["product"]), mode="r"), grid) is None
    fc = lost_tiles_geojson(grid, [{"tile": 2, "reason": "missing", "detail": ""}])
    assert fc["features"][0]["geometry"] is None and fc["features"][0]["properties"]["col0"] == 256


def test_valid_footprint_leaves_out_the_lost_tile_and_nodata(station):
    import zarr

    product = station["utm"]["product"]
    grid = _grid(product)
    g = zarr.open_group(str(product), mode="r")
    fp = valid_footprint(g, grid)
    bbox = geometry_bbox(fp)
    b = tile_bounds(grid)
    west = min(v["lon_min"] for v in b.values())
    east = max(v["lon_max"] for v in b.values())
    assert bbox[0] >= west - 1e-9 and bbox[2] <= east + 1e-9
    # the footprint has a notch where tile 1 (row 0, cols 128-256) was lost: its centre lies outside
    from pyproj import Transformer

    with rasterio.open(station["utm"]["scene"]) as src:
        tr = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        lost_centre = tr.transform(*(src.transform * (192, 64)))
        kept_centre = tr.transform(*(src.transform * (64, 150)))
    assert not _inside(fp, lost_centre) and _inside(fp, kept_centre)
    assert fp["type"] in ("Polygon", "MultiPolygon")


def _inside(geom, pt) -> bool:
    """Even-odd point-in-polygon over every ring (enough for these rectilinear footprints)."""
    polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
    x, y = pt
    inside = False
    for poly in polys:
        for ring in poly:
            for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:]):
                if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
                    inside = not inside
    return inside


def test_tile_table_gets_footprint_columns(station):
    from groundstation.metrics import TILE_BOUNDS_COLUMNS, TILE_SCHEMA, TileMetrics, add_tile_bounds, tiles_frame

    grid = _grid(station["utm"]["product"])
    rows = [TileMetrics(pass_id="a", tile_index=t, product="decoded", height=1, width=1, compressed_bytes=1)
            for t in range(6)]
    df = tiles_frame(rows)
    assert list(df.columns) == TILE_SCHEMA.names and set(TILE_BOUNDS_COLUMNS) <= set(df.columns)
    assert df["lon_min"].isna().all()  # unknown until the flow adds them
    df = add_tile_bounds(df, tile_bounds(grid))
    assert df[list(TILE_BOUNDS_COLUMNS)].notna().all().all()
    assert (df["crs_xmax"] > df["crs_xmin"]).all() and (df["lat_max"] > df["lat_min"]).all()
    assert TILE_SCHEMA.names[: TILE_SCHEMA.names.index("note") + 1][-3:] == ["device", "status", "note"]


# ------------------------------------------------------------------------------------------------ STAC
def test_item_and_catalogue_read_back_and_validate(station):
    product = station["utm"]["product"]
    grid = _grid(product)
    lost = station["utm"]["summary"].lost
    from groundstation.fileio import write_json_atomic

    write_json_atomic(lost_path(product), lost_tiles_geojson(grid, lost, pass_id="v1-utm"))
    (product.parent / "v1.report.md").write_text("# report\n")
    path = write_item(product)
    assert path == item_path(product) == station["root"] / "pass-a" / "v1.item.json"
    d = json.loads(path.read_text())
    validate_offline(d)
    cat_path = station["root"] / CATALOG_NAME
    validate_offline(json.loads(cat_path.read_text()))

    item = pystac.Item.from_file(str(path))
    assert item.datetime.isoformat() == "2024-05-01T10:00:00+00:00"
    proj = ProjectionExtension.ext(item)
    with rasterio.open(station["utm"]["scene"]) as src:
        assert proj.code == "EPSG:32618" and proj.shape == [src.height, src.width]
        assert proj.transform == list(src.transform)[:6] and proj.bbox == list(src.bounds)
    assert item.geometry["type"] in ("Polygon", "MultiPolygon") and len(item.bbox) == 4
    from groundstation.container import PassReader

    assert item.properties["gsp:codec"]["sha256"] == PassReader(station["utm"]["pass"]).header.codec.sha256
    assert item.properties["gsp:pass_id"] == "v1-utm" and item.properties["gsp:version"] == "v1"
    assert item.properties["gsp:lost_tiles"] == [1] and item.properties["gsp:enhancer"] is None
    assert set(item.assets) == {"product", "decoded-gdal", "report", "lost-tiles"}  # what exists on disk
    for key, asset in item.assets.items():
        assert (product.parent / asset.href).exists(), key
        assert asset.media_type and asset.roles
    assert item.assets["product"].media_type == "application/vnd+zarr"

    cat = pystac.Catalog.from_file(str(cat_path))
    assert [i.id for i in cat.get_items()] == [item.id]
    assert item.get_root().id == cat.id


def test_cog_asset_and_catalogue_refresh_without_duplicates(station, tmp_path):
    from groundstation.cog import export_cog

    product = station["utm"]["product"]
    export_cog(product, cog_path(product, "decoded"), array="decoded")
    write_item(product)
    write_item(product)  # again: one link, refreshed
    item = pystac.Item.from_file(str(item_path(product)))
    assert item.assets["decoded-cog"].media_type == pystac.MediaType.COG
    assert (product.parent / item.assets["decoded-cog"].href).is_file()
    cat = json.loads((station["root"] / CATALOG_NAME).read_text())
    assert [lk["href"] for lk in cat["links"] if lk["rel"] == "item"].count("./pass-a/v1.item.json") == 1


def test_pixel_grid_item_has_null_geometry(station):
    path = write_item(station["pixel"]["product"])
    d = json.loads(path.read_text())
    validate_offline(d)
    assert d["geometry"] is None and d.get("bbox") is None
    assert d["properties"]["proj:code"] is None and d["properties"]["proj:shape"] == [200, 300]
    item = pystac.Item.from_file(str(path))
    assert item.geometry is None and item.properties["gsp:grid"] == "pixel"
    cat = pystac.Catalog.from_file(str(station["root"] / CATALOG_NAME))
    assert len(list(cat.get_items())) == 2


def test_offline_validation_rejects_a_broken_item(station):
    d = json.loads(write_item(station["utm"]["product"]).read_text())
    d.pop("properties")
    with pytest.raises(ValueError):
        validate_offline(d)


def test_unreadable_catalogue_is_a_clear_error(tmp_path, station):
    (tmp_path / CATALOG_NAME).write_text("{not json")
    with pytest.raises(ProductError, match="unreadable .*move it aside"):
        update_catalog(tmp_path, tmp_path / "x.item.json")


def test_cli_export_stac(station, tmp_path, capsys):
    from gsp.cli import main

    root = tmp_path / "copy"
    shutil.copytree(station["root"] / "pass-b", root / "pass-b")
    assert main(["export", str(root / "pass-b" / "v1.zarr"), "--stac"]) == 0
    assert "stac item:" in capsys.readouterr().out
    assert (root / CATALOG_NAME).is_file() and (root / "pass-b" / "v1.item.json").is_file()
    np.testing.assert_equal(len(list(pystac.Catalog.from_file(str(root / CATALOG_NAME)).get_items())), 1)
