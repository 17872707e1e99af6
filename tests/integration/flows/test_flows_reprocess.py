"""reprocess-archive: another enhancer gives a second product beside the first (with --cog, its COG too); a rerun
skips what is done."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from helpers import make_pass
from groundstation.errors import ConfigError


def test_dates_and_selection(tmp_path, tiny_codec):
    from flows.reprocess import parse_when, select_passes

    assert parse_when("2024-05-02", end=True).isoformat() == "2024-05-03T00:00:00+00:00"
    assert parse_when("2024-05-02T06:00:00+02:00").isoformat() == "2024-05-02T06:00:00+02:00"
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        parse_when("May 2nd")
    make_pass(tmp_path / "a" / "2024-05-01", tiny_codec, "sel-1", acquired="2024-05-01T23:00:00+00:00",
              height=64, width=64)
    make_pass(tmp_path / "a" / "2024-05-02", tiny_codec, "sel-2", acquired="2024-05-02T01:00:00+00:00",
              height=64, width=64)
    (tmp_path / "a" / "notes.txt").write_text("not a pass")
    sel, notes = select_passes(tmp_path / "a", "**/*.gsp", since="2024-05-02")
    assert [h.pass_id for _, h in sel] == ["sel-2"]
    sel, notes = select_passes(tmp_path / "a", until="2024-05-01")
    assert [h.pass_id for _, h in sel] == ["sel-1"] and any("notes.txt" in n for n in notes)


@pytest.mark.slow
def test_new_enhancer_makes_a_new_product_and_a_rerun_skips(tmp_path, prefect_harness, dask_cluster, tiny_codec,
                                                           enhancer_ckpts):
    import numpy as np
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    from gsp.cli import main
    from groundstation.product import open_product, status
    from groundstation.stac import cog_path, item_path, version_of

    archive, products = tmp_path / "archive", tmp_path / "products"
    make_pass(archive / "day1", tiny_codec, "arch-1", seed=3, acquired="2024-05-01T10:00:00+00:00")
    make_pass(archive / "day2", tiny_codec, "arch-2", seed=4, acquired="2024-05-02T10:00:00+00:00")
    enh_a, enh_b = enhancer_ckpts

    def reprocess(enhancer, *extra):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(["reprocess", "--archive", str(archive), "--products", str(products), "--glob", "**/*.gsp",
                         "--enhancer", str(enhancer), "--codec", str(tiny_codec), "--tiles-per-batch", "3",
                         "--concurrency", "2", "--dask-address", dask_cluster.scheduler_address, "--json", *extra])
        return code, json.loads(buf.getvalue())

    code, rows = reprocess(enh_a, "--until", "2024-05-01")  # only the first day with the old enhancer
    assert code == 0 and [(r["pass_id"], r["status"]) for r in rows] == [("arch-1", "done")]
    first = rows[0]["product"]

    code, rows = reprocess(enh_b, "--cog")  # the new enhancer over the whole archive, two at a time, with COGs
    assert code == 0 and sorted((r["pass_id"], r["status"]) for r in rows) == [("arch-1", "done"), ("arch-2", "done")]
    second = next(r["product"] for r in rows if r["pass_id"] == "arch-1")
    assert second != first and status(first) == status(second) == "complete"
    assert sorted(p.name for p in (products / "arch-1").glob("*.zarr")) == sorted(
        [first.rsplit("/", 1)[1], second.rsplit("/", 1)[1]])  # side by side
    a, b = open_product(first), open_product(second)
    assert (a.decoded.values == b.decoded.values).all() and not (a.enhanced.values == b.enhanced.values).all()
    # --cog: one COG per new version (each pass's), none for the first version (made without --cog)
    assert sorted(p.name for p in products.rglob("*.tif")) == sorted(
        cog_path(r["product"], "enhanced").name for r in rows)
    assert not cog_path(first, "enhanced").exists()
    for r in rows:
        cog = cog_path(r["product"], "enhanced")
        assert cog_validate(str(cog))[0]
        with rasterio.open(cog) as c:
            assert c.tags()["GSP_VERSION"] == version_of(r["product"])
            np.testing.assert_array_equal(c.dataset_mask(), open_product(r["product"]).valid.values * 255)
        item = json.loads(item_path(r["product"]).read_text())
        assert item["assets"]["enhanced-cog"]["href"] == f"./{cog.name}"

    code, rows = reprocess(enh_b)  # nothing left to do
    assert code == 0 and [r["status"] for r in rows] == ["skipped", "skipped"]

    # products decoded tile by tile (as before the mosaic mode) and the default seamless ones: two versions side by
    # side, named and recorded apart; the same symbols, other pixels
    code, rows = reprocess(enh_b, "--decode-mode", "tile")
    assert code == 0 and [r["status"] for r in rows] == ["done", "done"]
    tile = next(r["product"] for r in rows if r["pass_id"] == "arch-1")
    assert "-mosaic__" in second and "-mosaic__" not in tile and tile == second.replace("-mosaic__", "__")
    t, m = open_product(tile), open_product(second)
    assert t.attrs["gsp_summary"]["decode"]["mode"] == "tile" and m.attrs["gsp_summary"]["decode"]["mode"] == "mosaic"
    assert t.attrs["gsp_summary"]["bytes"] == m.attrs["gsp_summary"]["bytes"]
    assert not (t.decoded.values == m.decoded.values).all()
