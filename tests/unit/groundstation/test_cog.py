"""``gsp export --cog``: a valid Cloud-Optimized GeoTIFF with exact georeferencing, RGB and the valid mask;
clear errors for what cannot be exported; nothing half-written."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rio_cogeo.cogeo import cog_validate

from groundstation import cog as cogmod
from groundstation.cog import export_cog
from groundstation.errors import ProductError
from groundstation.product import open_product
from gsp.cli import main
from product_helpers import decoded_product


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_codec):
    return decoded_product(tmp_path_factory.mktemp("cog"), tiny_codec, lose=(1,))


def test_a_complete_product_with_lost_tiles_says_so(made):
    import zarr

    from groundstation.product import status

    attrs = zarr.open_group(str(made["product"]), mode="r").attrs
    assert status(made["product"]) == "complete" and attrs["gsp_tiles_lost"] == 1  # tile 1 was damaged


def test_cog_is_valid_rgb_masked_and_exactly_georeferenced(made, tmp_path, monkeypatch):
    monkeypatch.setattr(cogmod, "STRIP_WIDTH", 128)  # many small windows: the strips must tile the scene
    res = export_cog(made["product"], tmp_path / "out" / "p.tif", array="decoded", blocksize=128)
    ok, errors, warns = cog_validate(res.path)
    assert ok and not errors, errors
    ds = open_product(made["product"])
    with rasterio.open(made["scene"]) as src, rasterio.open(res.path) as c:
        assert c.driver == "GTiff" and c.crs == src.crs and c.transform == src.transform
        assert c.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert c.descriptions == ("red", "green", "blue")
        assert c.nodata is None and c.mask_flag_enums[0] == [MaskFlags.per_dataset]  # internal mask, not nodata
        np.testing.assert_array_equal(c.dataset_mask(), ds.valid.values * 255)
        assert (ds.valid.values[:128, 128:256] == 0).all()  # the lost tile 1 is masked
        np.testing.assert_array_equal(c.read(), ds.decoded.values)
        assert c.overviews(1) == res.overviews and len(res.overviews) >= 1  # 300 px > one 128 px tile
        assert c.block_shapes[0] == (128, 128)
    assert res.valid_fraction == pytest.approx(ds.valid.values.mean())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p.tif"]  # no staging file left


def test_without_overviews(made, tmp_path):
    res = export_cog(made["product"], tmp_path / "n.tif", array="decoded", overviews=False, blocksize=128)
    assert res.overviews == [] and cog_validate(res.path)[0]


def test_a_failed_export_leaves_the_old_file_and_no_leftovers(made, tmp_path, monkeypatch):
    out = tmp_path / "p.tif"
    out.write_bytes(b"old")

    def broken(path):
        raise ProductError("the COG written from the product does not validate (simulated)")

    monkeypatch.setattr(cogmod, "_check_cog", broken)
    with pytest.raises(ProductError, match="does not validate"):
        export_cog(made["product"], out, array="decoded")
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["p.tif"]


def test_cli_export_cog(made, tmp_path, capsys):
    out = tmp_path / "cli.tif"
    assert main(["export", str(made["product"]), "--cog", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["cog"]["array"] == "decoded"  # a decoded-only product: decoded by default
    assert cog_validate(str(out))[0]


def test_cli_export_never_lists_a_cog_outside_the_catalogue(made, tmp_path, capsys):
    """--cog elsewhere with --stac: refused before anything is written (the Item's hrefs stay inside the
    catalogue); --cog alone writes the COG and leaves the Item as it is."""
    from groundstation.stac import item_path

    product = made["product"]
    outside = tmp_path / "elsewhere" / "x.tif"
    catalogue = ["--catalog", str(product.parent)]
    assert main(["export", str(product), "--cog", str(outside), "--stac", *catalogue]) == 2
    err = capsys.readouterr().err
    assert "lies outside the station catalogue" in err and "leave out --stac" in err
    assert not outside.exists() and not item_path(product).exists()
    assert main(["export", str(product), "--cog", str(outside)]) == 0
    assert outside.is_file() and not item_path(product).exists()


@pytest.mark.parametrize("case", ["missing", "incomplete", "no-array", "nothing-to-do"])
def test_cli_errors_are_clear_without_traceback(made, tmp_path, capsys, case):
    import zarr

    product = made["product"]
    args = ["--cog", str(tmp_path / "x.tif")]
    if case == "missing":
        product, match = tmp_path / "nope.zarr", "no product there"
    elif case == "incomplete":
        import shutil

        shutil.copytree(made["product"], tmp_path / "inc.zarr")
        zarr.open_group(str(tmp_path / "inc.zarr"), mode="r+").attrs["gsp_status"] = "incomplete"
        product, match = tmp_path / "inc.zarr", "incomplete .*not complete; run the same `gsp process` again"
    elif case == "no-array":
        args, match = args + ["--array", "enhanced"], "has no array 'enhanced' .*--array decoded"
    else:
        args, match = [], "nothing to do; give --cog"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["export", str(product), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gsp export: error:") and "Traceback" not in err
    import re

    assert re.search(match, err), err
    assert not (tmp_path / "x.tif").exists()


def test_the_flows_export_task_writes_beside_an_unfinished_product_and_a_resume_keeps_a_valid_cog(made, tmp_path):
    """``export-cog`` (tasks/export.py) runs before the product is marked complete; the COG carries the
    version and pass uid, and a resumed run keeps a valid COG with those tags instead of writing it again."""
    import shutil

    import zarr

    from groundstation.stac import cog_path
    from tasks.export import write_cog

    product = tmp_path / "v1.zarr"
    shutil.copytree(made["product"], product)
    zarr.open_group(str(product), mode="r+").attrs["gsp_status"] = "incomplete"
    first = write_cog.fn(str(product), "decoded", "v1", "uid-1", reuse=True)  # nothing there yet: written
    out = cog_path(product, "decoded")
    assert first["action"] == "written" and first["path"] == str(out) and out.name == "v1.decoded.tif"
    assert cog_validate(str(out))[0]
    with rasterio.open(out) as c:
        assert c.tags()["GSP_VERSION"] == "v1" and c.tags()["GSP_PASS_UID"] == "uid-1"
        np.testing.assert_array_equal(c.dataset_mask(), open_product(product).valid.values * 255)
    stamp = out.stat().st_mtime_ns
    assert write_cog.fn(str(product), "decoded", "v1", "uid-1", reuse=True)["action"] == "kept"
    assert out.stat().st_mtime_ns == stamp
    assert write_cog.fn(str(product), "decoded", "v1", "uid-2", reuse=True)["action"] == "written"  # another pass
    out.write_bytes(b"torn")  # not a COG: written again
    assert write_cog.fn(str(product), "decoded", "v1", "uid-2", reuse=True)["action"] == "written"
    assert write_cog.fn(str(product), "decoded", "v1", "uid-2", reuse=False)["action"] == "written"  # a new run
    assert cog_validate(str(out))[0]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging leftovers
