"""Scenes without georeferencing (drone JPEGs, PNG scans): pixel-grid products, never a made-up CRS."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import needs_shared
from gsp.cli import main
from groundstation.container import PIXEL_GRID, PassReader
from groundstation.product import open_product
from synth import smooth_image


def _picture(path: Path, height: int = 150, width: int = 210) -> tuple[Path, np.ndarray]:
    from PIL import Image

    rgb = (np.moveaxis(smooth_image(height, width, 3, seed=3), 0, -1) * 255).round().astype(np.uint8)
    Image.fromarray(rgb).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(rgb).save(path)
    return path, rgb


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_picture_without_crs_becomes_a_pixel_grid_product(tmp_path, tiny_codec, suffix, caplog):
    import logging

    src, _ = _picture(tmp_path / f"frame{suffix}")
    with caplog.at_level(logging.INFO):
        assert main(["encode", str(src), "-o", str(tmp_path / "p.gsp"), "--codec", str(tiny_codec),
                     "--tile-size", "64"]) == 0
    assert "has no CRS: processed as a pixel grid" in caplog.text
    header = PassReader(tmp_path / "p.gsp").header
    assert header.scene.crs_wkt == PIXEL_GRID and header.scene.transform == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert main(["decode", str(tmp_path / "p.gsp"), "-o", str(tmp_path / "p.zarr"), "--codec", str(tiny_codec)]) == 0
    ds = open_product(tmp_path / "p.zarr")
    assert ds.attrs["gsp_grid"] == "pixel" and "spatial_ref" not in ds.coords and ds.rio.crs is None
    assert ds.decoded.shape == (3, 150, 210) and bool(ds.valid.values.all())
    np.testing.assert_array_equal(ds.x.values, np.arange(210) + 0.5)  # pixel centres, column order
    assert ds.x.attrs["units"] == "pixel"


def test_require_crs_keeps_the_refusal(tmp_path, tiny_codec, capsys):
    src, _ = _picture(tmp_path / "frame.png")
    rc = main(["encode", str(src), "-o", str(tmp_path / "p.gsp"), "--codec", str(tiny_codec), "--require-crs"])
    assert rc == 2 and not (tmp_path / "p.gsp").exists() and not (tmp_path / "p.gsp.part").exists()
    assert "has no CRS and this station requires one" in capsys.readouterr().err
    station = tmp_path / "station.yaml"
    station.write_text("encode:\n  require_crs: true\n")
    assert main(["--station", str(station), "encode", str(src), "-o", str(tmp_path / "p.gsp"),
                 "--codec", str(tiny_codec)]) == 2


def test_inspect_says_pixel_grid(tmp_path, tiny_codec, capsys):
    src, _ = _picture(tmp_path / "frame.png", 64, 64)
    assert main(["encode", str(src), "-o", str(tmp_path / "p.gsp"), "--codec", str(tiny_codec),
                 "--tile-size", "64"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "p.gsp")]) == 0
    assert "crs none: a pixel grid" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.extended  # ~3 min: the pixel grid of a JPEG without CRS is also tested small, through the flow (below)
def test_a_real_drone_jpeg_encodes_and_decodes(tmp_path, tiny_codec):
    """A 4000x3000 drone photo (no CRS, JPEG): 192 codec tiles of 256 px, all decoded, as a pixel grid."""
    frames = sorted(needs_shared("data", "scenes", "drone_frames").glob("*.jpg"))
    assert main(["encode", str(frames[0]), "-o", str(tmp_path / "d.gsp"), "--codec", str(tiny_codec)]) == 0
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["decode", str(tmp_path / "d.gsp"), "-o", str(tmp_path / "d.zarr"), "--codec", str(tiny_codec),
                   "--json"])
    res = json.loads(buf.getvalue())
    assert rc == 0 and res["tiles_total"] == 192 and res["tiles_ok"] == 192
    ds = open_product(tmp_path / "d.zarr")
    assert ds.rio.crs is None and ds.attrs["gsp_grid"] == "pixel" and ds.decoded.shape == (3, 3000, 4000)


@pytest.mark.slow
def test_a_jpeg_without_crs_goes_through_the_flow(tmp_path, prefect_harness, dask_cluster, tiny_codec, enhancer_ckpts):
    src, _ = _picture(tmp_path / "frame.jpg", 200, 300)
    assert main(["encode", str(src), "-o", str(tmp_path / "f.gsp"), "--codec", str(tiny_codec),
                 "--tile-size", "128"]) == 0
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["process", str(tmp_path / "f.gsp"), "-o", str(tmp_path / "out"), "--codec", str(tiny_codec),
                   "--enhancer", str(enhancer_ckpts[0]), "--reference", str(src),
                   "--dask-address", dask_cluster.scheduler_address, "--json"])
    res = json.loads(buf.getvalue())
    assert rc == 0 and res["tiles_ok"] == res["tiles_total"] == 6
    ds = open_product(res["product"])
    assert ds.attrs["gsp_grid"] == "pixel" and ds.rio.crs is None and int(ds.enhanced.values.max()) > 0
