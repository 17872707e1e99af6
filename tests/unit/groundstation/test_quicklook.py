"""The product's quicklook: coordinates on the axes, a scale bar, the tile grid and the lost tiles marked, and a
copy small enough to show inside a report artifact."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from groundstation.quicklook import image_data_uri, product_quicklook, quicklook_path, scale_bar
from product_helpers import decoded_product


def _red(png) -> int:
    """Pixels of the lost tiles' red (#e0301e) in the picture."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int(((abs(rgb[..., 0] - 0xE0) < 30) & (abs(rgb[..., 1] - 0x30) < 40) & (abs(rgb[..., 2] - 0x1E) < 40)).sum())


@pytest.fixture(scope="module")
def products(tmp_path_factory, tiny_codec):
    d = tmp_path_factory.mktemp("quicklook")
    return {"utm-lost": decoded_product(d / "a", tiny_codec, lose=(1,)),
            "utm": decoded_product(d / "b", tiny_codec),
            "geographic": decoded_product(d / "c", tiny_codec, kind="geographic"),
            "pixel": decoded_product(d / "e", tiny_codec, kind="pixel", lose=(2, 3))}


def test_scale_bars_are_round_lengths_about_a_fifth_of_the_width():
    assert scale_bar(90.0) == (10.0, "10 m")
    assert scale_bar(2530.0) == (500.0, "500 m")
    assert scale_bar(48_000.0) == (5000.0, "5 km")
    assert scale_bar(700_000.0) == (100_000.0, "100 km")


def test_a_product_with_a_lost_tile_shows_it_on_a_map_with_coordinates_and_a_scale_bar(products):
    made = products["utm-lost"]
    q = product_quicklook(made["product"])  # the lost tiles from the product's own tile table
    assert q.path == quicklook_path(made["product"]) and q.path.name == "p.quicklook.png" and q.path.is_file()
    assert q.lost == [1] and q.array == "decoded" and q.scale == "10 m"  # 300 px of 0.3 m
    assert (q.xlabel, q.ylabel) == ("easting (m, EPSG:32618)", "northing (m, EPSG:32618)")
    whole = product_quicklook(products["utm"]["product"])
    assert whole.lost == [] and _red(q.path) > 20 * max(1, _red(whole.path))  # the lost tile is marked in red
    w, h = Image.open(q.path).size
    assert 500 <= w <= 900 and h < w  # small: a 300x200 scene with its axes


def test_geographic_and_pixel_grid_products(products):
    g = product_quicklook(products["geographic"]["product"])
    assert g.xlabel == "longitude (deg, EPSG:4326)" and g.scale == "500 m at 41N"  # 0.03 deg at 40.7 N: 2.5 km
    p = product_quicklook(products["pixel"]["product"])
    assert (p.xlabel, p.ylabel, p.scale, p.lost) == ("column (px)", "row (px)", None, [2, 3])


def test_the_embedded_copy_is_a_jpeg_small_enough_for_an_artifact(products):
    q = product_quicklook(products["utm-lost"]["product"])
    uri = image_data_uri(q.path)
    assert uri.startswith("data:image/jpeg;base64,") and len(uri) <= 200_000
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert img.format == "JPEG" and img.size[0] >= 300
    small = image_data_uri(q.path, max_bytes=30_000)  # scaled down until it fits, or none
    assert small is None or len(small) <= 30_000
    assert image_data_uri(q.path, max_bytes=100) is None


def test_a_quicklook_from_an_overview_level_shows_the_same_picture(tmp_path, tiny_codec):
    """Large products are drawn from an overview level, whose pixels may be floats in 0..255: shown as 8-bit, not
    clipped to 0..1 (a white picture)."""
    import zarr

    from groundstation.overviews import build_levels_serial

    made = decoded_product(tmp_path / "o", tiny_codec)
    build_levels_serial(made["product"])
    levels = (dict(zarr.open_group(str(made["product"]), mode="r").attrs).get("multiscales") or [{}])[0]
    assert [d["level"] for d in levels.get("datasets", []) if d["level"] > 0], "the product has no overview"
    full = np.asarray(Image.open(product_quicklook(made["product"], made["product"].parent / "full.png").path)
                      .convert("L")).astype(float)
    small = np.asarray(Image.open(product_quicklook(made["product"], made["product"].parent / "level.png",
                                                    max_side=50).path).convert("L")).astype(float)
    assert full.shape == small.shape and abs(full.mean() - small.mean()) < 8, (full.mean(), small.mean())
