"""The overview pyramid: level sizes, the mask-aware 2x2 reduction, levels built chunk by chunk equal to the
whole-array reduction, each level georeferenced, and GDAL's view using them."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from groundstation.overviews import GROUP, build_levels_serial, level_sizes, open_levels, reduce_2x2
from product_helpers import decoded_product


@pytest.mark.parametrize("w,h,t", [(300, 200, 128), (4096, 4096, 256), (257, 64, 64), (64, 64, 64), (1000, 3, 64)])
def test_level_sizes_halve_until_one_chunk(w, h, t):
    sizes = level_sizes(w, h, t)
    prev = (w, h)
    for lw, lh in sizes:
        assert (lw, lh) == (-(-prev[0] // 2), -(-prev[1] // 2))
        prev = (lw, lh)
    assert max(prev) <= t
    assert all(max(s) > t for s in [(w, h), *sizes][:-1])  # no level more than needed


def test_reduce_averages_valid_pixels_only_and_handles_odd_sizes():
    rgb = np.zeros((3, 3, 5), np.uint8)
    rgb[:, 0, 0], rgb[:, 0, 1], rgb[:, 1, 0], rgb[:, 1, 1] = 10, 20, 200, 31
    rgb[:, 2, 4] = 99
    valid = np.ones((3, 5), np.uint8)
    valid[1, 0] = 0  # its 200 must not count
    valid[0:2, 2:4] = 0  # a block without any valid pixel
    out, v = reduce_2x2({"a": rgb}, valid)
    assert out["a"].shape == (3, 2, 3) and v.shape == (2, 3)
    assert out["a"][0, 0, 0] == round((10 + 20 + 31) / 3)
    assert v[0, 1] == 0 and out["a"][0, 0, 1] == 0
    assert out["a"][0, 1, 2] == 99 and v[1, 2] == 1  # the odd corner: one real pixel
    assert v[1, 0] == 1


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory, tiny_codec):
    made = decoded_product(tmp_path_factory.mktemp("ovr"), tiny_codec, lose=(1,))
    levels = build_levels_serial(made["product"])
    return {**made, "levels": levels}


def test_levels_equal_the_whole_array_reduction_and_are_georeferenced(pyramid):
    import xarray as xr

    product, levels = pyramid["product"], pyramid["levels"]
    assert [lv["path"] for lv in levels] == [".", f"{GROUP}/1", f"{GROUP}/2"]
    assert [(lv["width"], lv["height"]) for lv in levels] == [(300, 200), (150, 100), (75, 50)]
    g = open_levels(product, "r")
    assert g.attrs["multiscales"][0]["datasets"] == levels
    dec, valid = np.asarray(g["decoded"][:]), np.asarray(g["valid"][:])
    with rasterio.open(pyramid["scene"]) as src:
        crs, transform = src.crs, src.transform
    for lv in levels[1:]:
        out, v = reduce_2x2({"decoded": dec}, valid)
        dec, valid = out["decoded"], v
        lg = g[lv["path"]]
        np.testing.assert_array_equal(np.asarray(lg["decoded"][:]), dec)
        np.testing.assert_array_equal(np.asarray(lg["valid"][:]), valid)
        assert lg["decoded"].chunks == (3, 128, 128)
        ds = xr.open_zarr(str(product), group=lv["path"], decode_coords="all", consolidated=False)
        assert ds.rio.crs == crs and ds.rio.transform() == transform * transform.scale(lv["scale"])
    assert valid.min() == 0  # the lost tile is still masked at the coarsest level


def test_gdal_view_uses_the_levels_as_overviews(pyramid):
    from groundstation.product import gdal_view

    with rasterio.open(gdal_view(pyramid["product"], "decoded")) as v:
        assert v.overviews(1) == [2, 4]
        small = v.read(out_shape=(3, 50, 75))
    np.testing.assert_array_equal(small, np.asarray(open_levels(pyramid["product"], "r")[f"{GROUP}/2/decoded"][:]))


def test_rebuilding_replaces_the_pyramid(pyramid):
    g = open_levels(pyramid["product"], "r+")
    for lv in pyramid["levels"][1:]:  # spoil every level's pixels and mask: the rebuild must write them anew
        g[f"{lv['path']}/decoded"][:] = 7
        g[f"{lv['path']}/valid"][:] = 0
    levels = build_levels_serial(pyramid["product"])
    assert levels == pyramid["levels"]
    g = open_levels(pyramid["product"], "r")
    dec, valid = np.asarray(g["decoded"][:]), np.asarray(g["valid"][:])
    for lv in levels[1:]:
        out, valid = reduce_2x2({"decoded": dec}, valid)
        dec = out["decoded"]
        np.testing.assert_array_equal(np.asarray(g[f"{lv['path']}/decoded"][:]), dec)
        np.testing.assert_array_equal(np.asarray(g[f"{lv['path']}/valid"][:]), valid)


def test_a_pixel_grid_product_gets_levels_without_a_crs(tmp_path, tiny_codec):
    import xarray as xr

    made = decoded_product(tmp_path, tiny_codec, kind="pixel")
    levels = build_levels_serial(made["product"])
    ds = xr.open_zarr(str(made["product"]), group=levels[1]["path"], decode_coords="all", consolidated=False)
    assert ds.rio.crs is None and ds.attrs["gsp_grid"] == "pixel" and ds.decoded.shape == (3, 100, 150)
    assert float(ds.x[0]) == 1.0 and ds.x.attrs["units"] == "pixel"  # centres in level-0 pixel units


def test_a_level_is_split_over_the_workers_and_capped_per_task(pyramid):
    from groundstation.overviews import level_chunks
    from tasks.overviews import overview_batches

    product = pyramid["product"]
    chunks = level_chunks(product, 1)
    assert len(chunks) >= 2
    assert overview_batches(product, 1) == [chunks]  # one slot: one task while the level fits in one
    split = overview_batches(product, 1, slots=2)  # two slots: both busy
    assert len(split) == 2 and sum(split, []) == chunks
    assert [len(b) for b in overview_batches(product, 1, chunks_per_task=1, slots=1)] == [1] * len(chunks)
    assert overview_batches(product, 1, slots=99) == [[c] for c in chunks]  # never an empty task
