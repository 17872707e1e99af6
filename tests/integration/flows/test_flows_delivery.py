"""What a process-pass run delivers to tools other than xarray: tile footprints in the metrics table, the lost
tiles as GeoJSON, the STAC Item and station catalogue, GDAL's RGB view with the valid mask, and a COG (written by
the run with --cog, and by ``gsp export``)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

TILES = 6


@pytest.fixture(scope="module")
def run(tmp_path_factory, prefect_harness, dask_cluster, flow_pass, tiny_codec, enhancer_ckpts):
    """``gsp process --cog`` on a copy of the flow pass whose tile 4 record is damaged (exit 3: a tile lost)."""
    from gsp.cli import main
    from product_helpers import lose_tiles

    scene, passfile = flow_pass
    d = tmp_path_factory.mktemp("delivery")
    damaged = lose_tiles(passfile, [4], d / "damaged.gsp")
    out = d / "products"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["process", str(damaged), "-o", str(out), "--codec", str(tiny_codec), "--enhancer",
                     str(enhancer_ckpts[0]), "--temperature", "0", "--strength", "0.7",
                     "--dask-address", dask_cluster.scheduler_address, "--cog", "--json"])
    return {"code": code, "res": json.loads(buf.getvalue()), "out": out, "scene": scene, "enhancer": enhancer_ckpts[0]}


@pytest.mark.slow
def test_the_strength_reaches_the_pixels_the_version_the_item_and_the_report(run):
    """--strength 0.7: the product keeps 70 % of the enhancer's change, and says so wherever the operating point
    is written."""
    from enhancer.checkpoint import load_enhancer
    from enhancer.inference import enhance_array
    from groundstation.product import open_product

    res = run["res"]
    assert "-t0-a0p7-h32" in res["version"]
    product = open_product(res["product"])
    assert product.attrs["gsp_summary"]["enhancer"]["strength"] == 0.7
    assert "temperature 0.0, strength 0.7" in Path(res["report"]).read_text()
    item = json.loads(Path(product.attrs["gsp_summary"]["stac_item"]).read_text())
    assert item["properties"]["gsp:enhancer"]["strength"] == 0.7
    decoded, enhanced = np.asarray(product["decoded"]), np.asarray(product["enhanced"])
    valid = np.asarray(product["valid"]).astype(bool)
    full = enhance_array(load_enhancer(run["enhancer"])[0], decoded, temperature=0, layout="CHW")
    kept = np.abs(enhanced.astype(float) - decoded)[:, valid].mean() / np.abs(full.astype(float) - decoded)[:, valid].mean()
    assert kept == pytest.approx(0.7, abs=0.03)


@pytest.mark.slow
def test_run_delivers_footprints_geojson_stac_and_gdal_view(run):
    import pystac
    import rasterio
    from pystac.extensions.projection import ProjectionExtension
    from rasterio.enums import ColorInterp

    from groundstation.metrics import TILE_BOUNDS_COLUMNS, read_parquet
    from groundstation.product import gdal_view, open_product
    from groundstation.stac import CATALOG_NAME, item_path, lost_path, validate_offline

    res = run["res"]
    assert run["code"] == 3 and res["tiles_lost"] == 1 and res["lost"][0]["tile"] == 4
    product = Path(res["product"])
    summary = open_product(product).attrs["gsp_summary"]  # the flow's summary (the CLI prints a part of it)
    assert summary["lost_geojson"] == str(lost_path(product)) and summary["stac_item"] == str(item_path(product))

    tiles = read_parquet(res["metrics"])
    assert tiles[list(TILE_BOUNDS_COLUMNS)].notna().all().all()  # every tile, lost ones too
    with rasterio.open(run["scene"]) as src:
        crs, transform, mask = src.crs, src.transform, src.dataset_mask()
        left, bottom, right, top = src.bounds
    assert tiles["crs_xmin"].min() == left and tiles["crs_ymax"].max() == top

    lost = json.loads(lost_path(product).read_text())
    assert lost_path(product) == Path(res["report"]).with_name(f"{res['version']}.lost.geojson")
    [feat] = lost["features"]
    assert feat["properties"]["tile"] == 4 and feat["properties"]["reason"] == "crc_mismatch"
    t4 = tiles[(tiles["tile_index"] == 4) & (tiles["product"] == "decoded")].iloc[0]
    lons = [p[0] for p in feat["geometry"]["coordinates"][0]]
    lats = [p[1] for p in feat["geometry"]["coordinates"][0]]
    assert min(lons) == pytest.approx(t4["lon_min"]) and max(lats) == pytest.approx(t4["lat_max"])
    assert "lost.geojson" in Path(res["report"]).read_text()

    d = json.loads(item_path(product).read_text())
    validate_offline(d)
    validate_offline(json.loads((run["out"] / CATALOG_NAME).read_text()))
    item = pystac.Item.from_file(str(item_path(product)))
    assert item.datetime is not None and ProjectionExtension.ext(item).code == f"EPSG:{crs.to_epsg()}"
    assert ProjectionExtension.ext(item).transform == list(transform)[:6]
    assert item.properties["gsp:enhancer"]["sha256"] == summary["enhancer"]["sha256"]
    assert item.properties["gsp:codec"]["sha256"] == summary["codec"]["sha256"]
    assert item.properties["gsp:lost_tiles"] == [4]
    assert {"product", "decoded-gdal", "enhanced-gdal", "enhanced-cog", "metrics", "report",
            "lost-tiles", "quicklook"} == set(item.assets)
    assert item.assets["quicklook"].roles == ["thumbnail", "overview"]
    for asset in item.assets.values():
        assert Path(asset.get_absolute_href()).exists()
    cat = pystac.Catalog.from_file(str(run["out"] / CATALOG_NAME))
    assert [i.id for i in cat.get_items()] == [item.id]

    # the pyramid, built by build-overviews tasks after enhancement: listed in the product, used by GDAL
    assert summary["overviews"] == ["overviews/1", "overviews/2"]
    assert [d["path"] for d in open_product(product).attrs["multiscales"][0]["datasets"]] == [".", *summary["overviews"]]
    with rasterio.open(gdal_view(product, "enhanced")) as v:
        assert v.crs == crs and v.transform == transform
        assert v.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert v.overviews(1) == [2, 4]
        gmask = v.dataset_mask()
    expected = (mask > 0).copy()
    expected[128:200, 128:256] = False  # tile 4 (row 1, col 1) is lost
    np.testing.assert_array_equal(gmask > 0, expected)


@pytest.mark.slow
def test_run_with_cog_writes_a_valid_masked_cog_listed_in_the_item_and_report(run):
    """--cog: <version>.enhanced.tif beside the product, accepted by rio-cogeo's validator, with the product's
    exact CRS and transform, RGB, overviews and ``valid`` (the lost tile masked) as its internal mask; the run's
    STAC Item lists it, the summary and report name it, and it reads like any file the user writes."""
    import pystac
    import rasterio
    from rasterio.enums import ColorInterp, MaskFlags
    from rio_cogeo.cogeo import cog_validate

    from groundstation.product import open_product
    from groundstation.stac import cog_path, item_path
    from helpers import unusual_modes

    res = run["res"]
    product = Path(res["product"])
    out = cog_path(product, "enhanced")
    assert res["cog"] == str(out) and out.name == f"{res['version']}.enhanced.tif"
    ds = open_product(product)
    assert ds.attrs["gsp_summary"]["cog"] == str(out)
    ok, errors, _ = cog_validate(str(out))
    assert ok, errors
    with rasterio.open(run["scene"]) as src, rasterio.open(out) as c:
        assert c.crs == src.crs and c.transform == src.transform
        assert (c.width, c.height) == (src.width, src.height)
        assert c.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert c.nodata is None and c.mask_flag_enums[0] == [MaskFlags.per_dataset]
        assert c.block_shapes[0] == (512, 512) and c.overviews(1) == []  # 300x200 px fit one tile: AUTO adds none
        assert c.tags()["GSP_VERSION"] == res["version"]
        valid = ds.valid.values
        assert not valid[128:200, 128:256].any()  # tile 4 (lost) is masked
        np.testing.assert_array_equal(c.dataset_mask(), valid * 255)
        np.testing.assert_array_equal(c.read(), ds.enhanced.values)
    item = pystac.Item.from_file(str(item_path(product)))
    asset = item.assets["enhanced-cog"]
    assert Path(asset.get_absolute_href()) == out and asset.media_type == pystac.MediaType.COG
    assert str(out) in Path(res["report"]).read_text()
    assert unusual_modes(run["out"]) == []
    assert not [p.name for p in product.parent.iterdir() if p.name.startswith(".")]  # no staging file left


@pytest.mark.slow
def test_export_the_run_product_as_cog_and_add_it_to_the_item(run, tmp_path):
    import pystac
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    from gsp.cli import main
    from groundstation.product import open_product
    from groundstation.stac import cog_path, item_path

    product = Path(run["res"]["product"])
    out = cog_path(product, "decoded")  # the run wrote the enhanced one (--cog); the decoded mosaic as well
    item_before = item_path(product).read_bytes()
    assert main(["export", str(product), "--cog", str(out), "--array", "decoded", "--blocksize", "128"]) == 0
    assert item_path(product).read_bytes() == item_before  # the Item changes only with --stac
    assert main(["export", str(product), "--stac"]) == 0  # which lists the COG found beside the product
    ok, errors, _ = cog_validate(str(out))
    assert ok, errors
    with rasterio.open(out) as c:
        np.testing.assert_array_equal(c.read(), open_product(product).decoded.values)
        assert c.overviews(1)
    item = pystac.Item.from_file(str(item_path(product)))  # refreshed by the --stac export
    assert Path(item.assets["decoded-cog"].get_absolute_href()) == out
    assert Path(item.assets["enhanced-cog"].get_absolute_href()) == cog_path(product, "enhanced")
