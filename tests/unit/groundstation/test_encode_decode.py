"""Scene -> pass -> Zarr product: shapes, georeferencing, band rules, and every damaged-input case."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio

from gsp.cli import main
from groundstation.container import PassReader
from groundstation.decode import decode_pass
from groundstation.encode import encode_scene
from groundstation.errors import CheckpointError, PassFormatError, SceneError
from groundstation.product import open_product
from synth import write_scene

TILE = 128


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tiny_codec):
    """An odd-sized uint16 scene with a nodata box, encoded once and decoded once (the reference run)."""
    d = tmp_path_factory.mktemp("clean")
    scene = write_scene(d / "scene.tif", 300, 410, crs="EPSG:32618", dtype="uint16", nodata=0, nodata_box=(10, 50, 20, 60))
    encode_scene(scene, d / "p.gsp", codec=str(tiny_codec), tile_size=TILE, pass_id="clean-pass")
    summary = decode_pass(d / "p.gsp", d / "p.zarr", codec=str(tiny_codec))
    ds = open_product(d / "p.zarr")
    return {"dir": d, "scene": scene, "summary": summary, "decoded": ds.decoded.values, "valid": ds.valid.values}


def test_round_trip_shape_crs_transform_and_mask(clean):
    ds = open_product(clean["dir"] / "p.zarr")
    with rasterio.open(clean["scene"]) as src:
        assert ds.decoded.shape == (3, src.height, src.width)
        assert ds.rio.crs == src.crs
        assert ds.rio.transform() == src.transform  # exact, not approximately
        mask = src.dataset_mask() > 0
    # pixel (row, col) of the product is pixel (row, col) of the scene: the nodata box lands exactly
    assert (ds.valid.values.astype(bool) == mask).all()
    assert ds.attrs["gsp_status"] == "complete"
    assert ds.decoded.encoding["chunks"] == (3, TILE, TILE)
    s = clean["summary"]
    assert s.tiles_ok == s.tiles_total == 12 and not s.lost and s.exit_code == 0
    assert s.bpp == pytest.approx(s.bytes * 8 / (300 * 410))


@pytest.mark.parametrize("kind", ["rgba", "rgbn_uint16", "float_nan", "grey", "geographic"])
def test_band_rules_and_crs(tmp_path, tiny_codec, kind):
    kw = {
        "rgba": dict(alpha=True, crs="EPSG:32614", nodata_box=(0, 30, 0, 30)),
        "rgbn_uint16": dict(bands=4, dtype="uint16", crs="EPSG:26914", nodata=0, nodata_box=(5, 25, 5, 25)),
        "float_nan": dict(bands=1, dtype="float32", crs="EPSG:3857", nodata=float("nan"), nodata_box=(0, 10, 0, 64)),
        "grey": dict(bands=1, crs="EPSG:32632"),
        "geographic": dict(crs="EPSG:4326", transform=(0.0001, 0, -74.01, 0, -0.0001, 40.75)),
    }[kind]
    if "transform" in kw:
        from affine import Affine
        kw["transform"] = Affine(*kw["transform"])
    scene = write_scene(tmp_path / "s.tif", 70, 131, **kw)
    res = encode_scene(scene, tmp_path / "p", codec=str(tiny_codec), tile_size=64)
    rule = res.header.bands.rule
    if kind == "rgba":
        assert "alpha" in rule and res.header.bands.mask_source == "alpha band"
    if kind == "rgbn_uint16":
        assert "NIR dropped" in rule and res.header.bands.scaling == "linear"
    if kind in ("float_nan", "grey"):
        assert res.header.bands.selection == [1, 1, 1]
    decode_pass(tmp_path / "p", tmp_path / "p.zarr", codec=str(tiny_codec))
    ds = open_product(tmp_path / "p.zarr")
    with rasterio.open(scene) as src:
        assert ds.rio.crs == src.crs and ds.rio.transform() == src.transform
        mask = src.dataset_mask() > 0
        if kind == "float_nan":
            mask &= np.isfinite(src.read(1))
    assert (ds.valid.values.astype(bool) == mask).all()


def damage(clean_dir, tmp_path, how: str):
    src = clean_dir / "p.gsp"
    data = bytearray(src.read_bytes())
    scan = PassReader(src).scan()
    off = {i: o for i, (o, _) in scan.records.items()}
    if how == "bitflip":
        data[off[5] + 60] ^= 0x04
    elif how == "truncated":
        data = data[: off[11] + 40]
    elif how == "missing":
        start, end = off[7] - 12, off[8] - 12
        data = data[:start] + data[end:]
    elif how == "duplicated":
        start, end = off[3] - 12, off[4] - 12
        data = data[:end] + data[start:end] + data[end:]
    elif how == "foreign":
        other = bytearray((clean_dir / "other.gsp").read_bytes())
        o_scan = PassReader(clean_dir / "other.gsp").scan()
        o, ln = o_scan.records[2]
        start, end = off[2] - 12, off[3] - 12
        data = data[:start] + other[o - 12 : o + ln] + data[end:]  # tile 2 replaced by another pass's tile 2
    out = tmp_path / f"{how}.gsp"
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("how,lost", [("bitflip", {5: "crc_mismatch"}), ("truncated", {11: "truncated"}),
                                      ("missing", {7: "missing"}), ("duplicated", {}), ("foreign", {2: "foreign"})])
def test_damaged_pass_costs_only_damaged_tiles(clean, tmp_path, tiny_codec, how, lost, capsys):
    d = clean["dir"]
    if how == "foreign" and not (d / "other.gsp").exists():
        encode_scene(clean["scene"], d / "other.gsp", codec=str(tiny_codec), tile_size=TILE, pass_id="other")
    bad = damage(d, tmp_path, how)
    # tile by tile, as the clean decode (the mosaic mode's neighbours of a lost tile: the mosaic test below)
    code = main(["decode", str(bad), "-o", str(tmp_path / "out.zarr"), "--codec", str(tiny_codec), "--json",
                 "--decode-mode", "tile"])
    summary = json.loads(capsys.readouterr().out)
    assert {x["tile"]: x["reason"] for x in summary["lost"]} == lost
    assert code == (3 if lost else 0) == summary["exit_code"]
    ds = open_product(tmp_path / "out.zarr")
    assert ds.attrs["gsp_status"] == "complete"
    dec, valid = ds.decoded.values, ds.valid.values
    header = PassReader(bad).header
    for index in range(header.tiling.n_tiles):
        r0, r1, c0, c1 = header.tile_window(index)
        if index in lost:  # masked as nodata, never silently wrong pixels
            assert not valid[r0:r1, c0:c1].any() and not dec[:, r0:r1, c0:c1].any()
        else:  # every intact tile is bit-identical to the clean run
            assert np.array_equal(dec[:, r0:r1, c0:c1], clean["decoded"][:, r0:r1, c0:c1])
            assert np.array_equal(valid[r0:r1, c0:c1], clean["valid"][r0:r1, c0:c1])


def test_damaged_header_leaves_no_product(clean, tmp_path, tiny_codec, capsys):
    data = bytearray((clean["dir"] / "p.gsp").read_bytes())
    data[40] ^= 0xFF
    (tmp_path / "bad.gsp").write_bytes(data)
    assert main(["decode", str(tmp_path / "bad.gsp"), "-o", str(tmp_path / "o.zarr"), "--codec", str(tiny_codec)]) == 2
    assert "header CRC mismatch" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()
    (tmp_path / "short.gsp").write_bytes(bytes(data[:100]))
    with pytest.raises(PassFormatError, match="truncated header"):
        decode_pass(tmp_path / "short.gsp", tmp_path / "o.zarr", codec=str(tiny_codec))
    assert not (tmp_path / "o.zarr").exists()


def test_wrong_codec_is_refused_before_anything_is_written(clean, tmp_path, other_codec):
    with pytest.raises(CheckpointError, match="sha256 .* does not match"):
        decode_pass(clean["dir"] / "p.gsp", tmp_path / "o.zarr", codec=str(other_codec))
    assert not (tmp_path / "o.zarr").exists()


def test_unreadable_scene_is_a_clear_error(tmp_path, tiny_codec):
    (tmp_path / "x.tif").write_bytes(b"this is not a tiff")
    with pytest.raises(SceneError, match="not a readable raster"):
        encode_scene(tmp_path / "x.tif", tmp_path / "p", codec=str(tiny_codec))
    with pytest.raises(SceneError, match="no such scene"):
        encode_scene(tmp_path / "nope.tif", tmp_path / "p", codec=str(tiny_codec))
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.part").exists()


def test_existing_product_is_never_overwritten(clean, tmp_path, tiny_codec):
    shutil.copytree(clean["dir"] / "p.zarr", tmp_path / "p.zarr")

    def files() -> dict[str, tuple[bytes, int]]:
        return {str(f.relative_to(tmp_path)): (f.read_bytes(), f.stat().st_mtime_ns)
                for f in sorted((tmp_path / "p.zarr").rglob("*")) if f.is_file()}

    before = files()
    assert main(["decode", str(clean["dir"] / "p.gsp"), "-o", str(tmp_path / "p.zarr"), "--codec", str(tiny_codec)]) == 2
    assert files() == before  # every file's bytes and mtime as they were; none added, none removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]  # nothing written beside it either


def test_inspect_reports_integrity(clean, tmp_path, capsys):
    bad = damage(clean["dir"], tmp_path, "bitflip")
    assert main(["inspect", str(bad), "--json"]) == 3
    rep = json.loads(capsys.readouterr().out)
    assert rep["tiles_total"] == 12 and rep["tiles_intact"] == 11
    assert rep["tiles_lost"] == [{"tile": 5, "reason": "crc_mismatch", "detail": "record CRC32 mismatch (bit errors)"}]
    assert rep["header"]["scene"]["width"] == 410
    assert main(["inspect", str(clean["dir"] / "p.gsp")]) == 0
    assert "12 intact of 12" in capsys.readouterr().out


def test_mosaic_decoding_keeps_symbols_and_a_lost_tile_touches_no_neighbour(clean, tmp_path, tiny_codec, capsys):
    """``gsp decode --decode-mode mosaic`` of a pass with tile 5 lost (row 1, col 1 of 3x4): the lost tile is
    masked and zero, its eight neighbours are exactly the tile-wise pixels, every other tile is the lossless
    mosaic decoding's; the latent store and the provenance say what happened."""
    from groundstation.synthesis import TILE_DECODED, TILE_LOST, LatentStore

    d = clean["dir"]
    whole = tmp_path / "whole.zarr"
    decode_pass(d / "p.gsp", whole, codec=str(tiny_codec), decode_mode="mosaic")
    bad = damage(d, tmp_path, "bitflip")
    code = main(["decode", str(bad), "-o", str(tmp_path / "m.zarr"), "--codec", str(tiny_codec), "--json",
                 "--decode-mode", "mosaic"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 3 and summary["decode_mode"] == "mosaic" and [x["tile"] for x in summary["lost"]] == [5]
    ds = open_product(tmp_path / "m.zarr")
    assert ds.attrs["gsp_decode"]["decode_mode"] == "mosaic"
    assert ds.attrs["gsp_decode"]["synthesis_windows"]["halo_latent"] >= 1
    ref = open_product(whole).decoded.values
    dec, valid = ds.decoded.values, ds.valid.values
    header = PassReader(bad).header
    for index in range(header.tiling.n_tiles):
        r0, r1, c0, c1 = header.tile_window(index)
        block = dec[:, r0:r1, c0:c1]
        if index == 5:
            assert not valid[r0:r1, c0:c1].any() and not block.any()
        elif index in (0, 1, 2, 4, 6, 8, 9, 10):
            assert np.array_equal(block, clean["decoded"][:, r0:r1, c0:c1])
        else:
            assert np.abs(block.astype(np.int16) - ref[:, r0:r1, c0:c1]).max() <= 1
    assert not np.array_equal(ref, clean["decoded"])  # mosaic decoding changes pixels near tile boundaries
    states = LatentStore(tmp_path / "m.zarr").states()
    assert states[5] == TILE_LOST and (np.delete(states, 5) == TILE_DECODED).all()
    from groundstation.metrics.seams import product_seam_ratios, seam_ratio

    got = product_seam_ratios(tmp_path / "m.zarr", rows=100)  # bands that do not line up with the tiles
    assert got == {"decoded": pytest.approx(seam_ratio(dec, TILE, valid))}
    # as the flow sums them: one band per worker task, added up (the same pairs, in exact integers for 8 bits)
    from groundstation.metrics.seams import product_seam_sums, seam_stats, stats_of
    from tasks.seams import seam_bands

    bands = seam_bands(dec.shape[1], rows=77)
    assert bands[0][0] == 0 and bands[-1][1] == dec.shape[1] and all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
    summed = stats_of(np.sum([product_seam_sums(tmp_path / "m.zarr", "decoded", *b) for b in bands], axis=0))
    whole = seam_stats(dec, TILE, valid)
    assert (summed.boundary_pairs, summed.interior_pairs) == (whole.boundary_pairs, whole.interior_pairs)
    assert summed.ratio == pytest.approx(whole.ratio, rel=1e-12) and summed.ratio == pytest.approx(got["decoded"])
    floats = seam_stats(dec.astype(np.float64), TILE, valid)  # a float image: the same steps in float64
    assert floats.boundary_pairs == whole.boundary_pairs and floats.ratio == pytest.approx(whole.ratio, rel=1e-12)
