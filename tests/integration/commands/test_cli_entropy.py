"""``gsp encode`` and the entropy mode of new passes: ``int`` by default, ``float64`` with a note for a codec that
has no integer prior, an explicit ``int`` without one a one-line error, and the quantiser the note names makes the
sidecar that turns the default back to ``int``."""

from __future__ import annotations

import json
import logging

from gsp.cli import main
from groundstation.container import PassReader
from synth import tiny_codec_checkpoint, write_pngs, write_scene


def _encode(tmp_path, codec, out: str, *extra: str, station=None) -> int:
    scene = tmp_path / "s.tif"
    if not scene.exists():
        write_scene(scene, 64, 128, crs="EPSG:32633", seed=4)
    return main([*(["--station", str(station)] if station else []), "encode", str(scene), "-o",
                 str(tmp_path / out), "--codec", str(codec), "--tile-size", "64", *extra])


def test_explicit_int_without_integer_prior_is_one_line_naming_the_quantiser(tmp_path, capsys):
    codec = tiny_codec_checkpoint(tmp_path / "fresh.pt", seed=6)
    assert _encode(tmp_path, codec, "p.gsp", "--entropy", "int") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("gsp encode: error: ") and "no integer prior for this codec" in err
    assert f"benchmarks/int_prior_quantise.py TRAIN_IMAGE_DIR --codecs {codec}" in err
    assert "--entropy float64" in err
    assert not list(tmp_path.glob("p.gsp*"))
    # the station's encode.entropy set to int is as explicit as the option
    station = tmp_path / "station.yaml"
    station.write_text("encode:\n  entropy: int\n")
    assert _encode(tmp_path, codec, "p.gsp", station=station) == 2
    assert "no integer prior for this codec" in capsys.readouterr().err
    station.write_text("encode:\n  entropy: float32\n")  # and any other mode it names is used as it is
    assert _encode(tmp_path, codec, "p.gsp", station=station) == 0
    assert PassReader(tmp_path / "p.gsp").header.codec.entropy == "float32"


def test_the_default_falls_back_then_the_quantiser_it_names_makes_it_int(tmp_path, capsys, caplog):
    import int_prior_quantise  # benchmarks/ is on the path (pytest.ini_options pythonpath)

    codec = tiny_codec_checkpoint(tmp_path / "fresh.pt", seed=6)
    with caplog.at_level(logging.WARNING):
        assert _encode(tmp_path, codec, "a.gsp") == 0
    assert capsys.readouterr().out.rstrip().endswith("bpp, entropy float64")
    assert PassReader(tmp_path / "a.gsp").header.codec.entropy == "float64"
    assert "benchmarks/int_prior_quantise.py TRAIN_IMAGE_DIR --codecs" in caplog.text
    # the command the note names, on a folder of calibration images: the sidecar lands beside the codec
    images = write_pngs(tmp_path / "train", [("a/1", (128, 128), 1), ("b/2", (96, 160), 2)])
    assert int_prior_quantise.main([str(images), "--codecs", str(codec), "--images", "2"]) == 0
    assert (tmp_path / "fresh.int.pt").is_file()
    report = json.loads((tmp_path / "fresh.int.json").read_text())  # not the committed results file
    assert report["codecs"][str(codec)]["sidecar"] == str(tmp_path / "fresh.int.pt")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _encode(tmp_path, codec, "b.gsp") == 0
    assert capsys.readouterr().out.rstrip().endswith("bpp, entropy int")
    header = PassReader(tmp_path / "b.gsp").header
    assert header.codec.entropy == "int" and header.codec.int_prior_sha256 == report["codecs"][str(codec)]["sha256"]
    assert "integer prior" not in caplog.text
    assert main(["decode", str(tmp_path / "b.gsp"), "-o", str(tmp_path / "b.zarr"), "--codec", str(codec)]) == 0
