"""The product as other tools read it: Zarr format 2 that GDAL (rasterio's bundled 3.10) opens, the GDAL VRT views
with RGB and the valid mask, CF metadata, and products written before (Zarr format 3)."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp, MaskFlags

from groundstation.errors import ProductError
from groundstation.product import (ZARR_FORMAT, gdal_view, gdal_view_path, open_arrays, open_product, status,
                                   write_block, zarr_format)
from product_helpers import decoded_product


@pytest.fixture(scope="module", params=["utm", "geographic"])
def made(request, tmp_path_factory, tiny_codec):
    return decoded_product(tmp_path_factory.mktemp(f"gdal-{request.param}"), tiny_codec, kind=request.param)


@pytest.fixture(scope="module")
def pixel(tmp_path_factory, tiny_codec):
    return decoded_product(tmp_path_factory.mktemp("gdal-pixel"), tiny_codec, kind="pixel")


def test_written_as_zarr_format_2_without_a_fill_value(made):
    p = made["product"]
    assert ZARR_FORMAT == 2 and zarr_format(p) == 2 and not (p / "zarr.json").exists()
    for name in ("decoded", "valid"):
        meta = json.loads((p / name / ".zarray").read_text())
        assert meta["zarr_format"] == 2 and meta["fill_value"] is None  # GDAL would call a fill value nodata
        assert meta["chunks"][-2:] == [128, 128]  # one codec tile per chunk: one writer per chunk
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing in the store that zarr does not know (the views lie beside it)
        assert sorted(zarr.open_group(str(p), mode="r").array_keys()) == ["band", "decoded", "spatial_ref", "time",
                                                                         "valid", "x", "y"]
    ds = open_product(p)
    assert ds.decoded.dtype == np.uint8 and ds.valid.dtype == np.uint8  # no _FillValue: never turned into floats
    with rasterio.open(made["scene"]) as src:
        assert ds.rio.crs == src.crs and ds.rio.transform() == src.transform  # xarray/rioxarray: exact


def test_gdal_opens_the_zarr_arrays_with_crs_and_no_nodata(made):
    """``ZARR:"p.zarr":/decoded`` through rasterio: 3 bands, the CRS, no nodata (black pixels stay data). The
    transform GDAL derives from the x/y centre coordinates agrees to float rounding only (it divides
    (x[-1] - x[0]) by n - 1); the VRT view below carries it exactly."""
    p = made["product"]
    with rasterio.open(made["scene"]) as src:
        crs, transform = src.crs, src.transform
    with rasterio.open(f'ZARR:"{p}":/decoded') as z:
        assert z.count == 3 and z.dtypes == ("uint8",) * 3 and (z.height, z.width) == (200, 300)
        assert z.crs == crs
        assert z.transform.almost_equals(transform, precision=1e-9 * max(abs(transform.c), abs(transform.f), 1))
        assert z.nodata is None and z.mask_flag_enums[0] == [MaskFlags.all_valid]
        # what GDAL 3.10's Zarr driver cannot say by itself, hence the VRT: no colours, no mask from 'valid'
        assert z.colorinterp == (ColorInterp.undefined,) * 3
        np.testing.assert_array_equal(z.read(), open_product(p).decoded.values)


def test_the_gdal_view_has_exact_georeferencing_rgb_and_valid_as_its_mask(made, tmp_path):
    """The VRT inside the product: exact CRS and transform, Red/Green/Blue, GDAL's mask = valid (not nodata):
    a real black pixel inside the valid area is shown, the nodata box is masked."""
    copy = tmp_path / "moved" / "p.zarr"  # relative sources: the view moves with the product folder
    shutil.copytree(made["product"], copy)
    shutil.copy(made["product"].with_name("p.decoded.vrt"), copy.with_name("p.decoded.vrt"))
    g = open_arrays(copy)
    write_block(g, "decoded", 100, 100, np.zeros((3, 5, 5), np.uint8))  # black, but valid
    view = gdal_view(copy, "decoded")
    assert view == copy.with_name("p.decoded.vrt")
    with rasterio.open(made["scene"]) as src:
        crs, transform, mask = src.crs, src.transform, src.dataset_mask()
    with rasterio.open(view) as v:
        assert v.crs == crs and v.transform == transform  # exact
        assert v.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert v.descriptions == ("red", "green", "blue")
        assert v.nodata is None and v.mask_flag_enums[0] == [MaskFlags.per_dataset]
        gdal_mask = v.dataset_mask()
        np.testing.assert_array_equal(gdal_mask, np.asarray(g["valid"][:]) * 255)
        np.testing.assert_array_equal(gdal_mask, mask)
        assert (v.read()[:, 100:105, 100:105] == 0).all() and (gdal_mask[100:105, 100:105] == 255).all()
        np.testing.assert_array_equal(v.read(), np.asarray(g["decoded"][:]))
        masked = v.read(1, masked=True)
        assert masked.mask.sum() == (mask == 0).sum()


def test_cf_metadata(made):
    p = made["product"]
    ds = open_product(p)
    assert ds.attrs["Conventions"].startswith("CF-")
    geographic = ds.rio.crs.is_geographic
    assert ds.x.attrs["standard_name"] == ("longitude" if geographic else "projection_x_coordinate")
    assert ds.y.attrs["standard_name"] == ("latitude" if geographic else "projection_y_coordinate")
    assert ds.x.attrs["axis"] == "X" and ds.y.attrs["axis"] == "Y" and ds.x.attrs["units"]
    for name in ("decoded", "valid"):
        assert ds[name].attrs["long_name"] and ds[name].attrs["units"] == "1"
        assert ds[name].attrs.get("grid_mapping", ds[name].encoding.get("grid_mapping")) == "spatial_ref"
    assert list(ds.valid.attrs["flag_values"]) == [0, 1]
    assert ds.valid.attrs["flag_meanings"].split() == ["nodata_or_lost", "valid"]
    assert ds.time.values == np.datetime64("2024-05-01T10:00:00")  # 12:00+02:00 as UTC
    assert ds.time.attrs["standard_name"] == "time"
    assert list(ds.band.values) == ["red", "green", "blue"]
    band = json.loads((p / "band" / ".zarray").read_text())
    assert band["dtype"] == "|O" and band["filters"] == [{"id": "vlen-utf8"}]  # plain strings, not UTF-32
    assert ds.attrs["gsp_pass"]["pass_id"] == "p-" + ("utm" if not geographic else "geographic")
    assert ds.attrs["gsp_decode"]["codec_sha256"] and ds.attrs["gsp_status"] == "complete"


def test_a_pixel_grid_product_has_a_view_without_georeferencing(pixel):
    p = pixel["product"]
    ds = open_product(p)
    assert ds.rio.crs is None and ds.attrs["gsp_grid"] == "pixel" and ds.x.attrs["units"] == "pixel"
    assert "<SRS>" not in p.with_name("p.decoded.vrt").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(gdal_view(p, "decoded")) as v:
            assert v.crs is None and v.colorinterp[0] == ColorInterp.red
            assert (v.dataset_mask() == 255).all()


def test_a_zarr_format_3_product_written_before_is_still_read(tmp_path, tiny_codec, monkeypatch):
    """Products made before this change (format 3): status, xarray, zarr arrays and COG export work; asking for
    the GDAL view says why there is none and what to do."""
    import groundstation.product as product

    monkeypatch.setattr(product, "ZARR_FORMAT", 3)
    made = decoded_product(tmp_path, tiny_codec)
    gdal_view_path(made["product"], "decoded").unlink()  # the old writer wrote no view
    monkeypatch.undo()
    p = made["product"]
    assert zarr_format(p) == 3 and (p / "zarr.json").is_file()
    assert status(p) == "complete"
    ds = open_product(p)
    with rasterio.open(made["scene"]) as src:
        assert ds.rio.crs == src.crs and ds.rio.transform() == src.transform
    assert ds.decoded.dtype == np.uint8
    with pytest.raises(ProductError, match="Zarr format 3 .*gsp export"):
        gdal_view(p, "decoded")
    from groundstation.cog import export_cog

    res = export_cog(p, tmp_path / "old.tif", array="decoded")
    with rasterio.open(res.path) as c:
        np.testing.assert_array_equal(c.read(), ds.decoded.values)
    from groundstation.overviews import build_levels_serial, open_levels

    build_levels_serial(p)  # an older product resumed by this version: its levels stay format 3
    assert (p / "overviews" / "1" / "zarr.json").is_file() and not gdal_view_path(p, "decoded").exists()
    assert open_levels(p, "r")["overviews/1/decoded"].shape == (3, 100, 150)


def test_gdal_view_of_a_missing_array_is_a_clear_error(made):
    with pytest.raises(ProductError, match="no array 'enhanced'.*decoded"):
        gdal_view(made["product"], "enhanced")
