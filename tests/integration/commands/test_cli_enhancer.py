"""``gsp enhance`` on images and GeoTIFFs, ``gsp models check`` on every checkpoint kind, ``gsp models list``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import needs_shared
from enhancer.checkpoint import random_state_dict, save_enhancer
from enhancer.inference import enhance_array
from groundstation.registry import load_registry
from enhancer.model import EnhancerConfig
from enhancer.testing import surrogate_enhancer
from gsp.cli import main
from synth import write_scene


@pytest.fixture(scope="module")
def enhancer_file(tmp_path_factory) -> Path:
    """A demo-size enhancer whose inverse behaves like "image + a few DN" (enhancer.testing)."""
    path = tmp_path_factory.mktemp("enhancer") / "surrogate.pt"
    save_enhancer(surrogate_enhancer(EnhancerConfig.demo(), seed=0), path)
    return path


# ------------------------------------------------------------------------------------------------ enhance

def test_enhance_geotiff_keeps_georeferencing_and_matches_the_whole_image(tmp_path, enhancer_file, capsys):
    import rasterio

    scene = write_scene(tmp_path / "scene.tif", 70, 90, crs="EPSG:32614", seed=3)
    out = tmp_path / "enhanced.tif"
    rc = main(["enhance", str(scene), "--enhancer", str(enhancer_file), "--core", "32", "--halo", "68",
               "--seed", "5", "--strength", "0.5", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "CRS and transform kept" in said
    # a checkpoint that is no rate point's: the deterministic mean (the flows' rule), the strength as given
    assert "temperature 0: the enhancer is no rate point of the registry" in said
    assert not (tmp_path / "enhanced.tif.part").exists()
    with rasterio.open(scene) as a, rasterio.open(out) as b:
        assert b.crs == a.crs and b.transform == a.transform
        assert (b.count, b.height, b.width, b.dtypes) == (3, 70, 90, ("uint8",) * 3)
        assert b.profile["blockxsize"] == a.profile["blockxsize"] and b.colorinterp == a.colorinterp
        assert b.tags()["GSP_ENHANCER_SHA256"] and b.tags()["GSP_SEED"] == "5"
        assert (b.tags()["GSP_TEMPERATURE"], b.tags()["GSP_STRENGTH"]) == ("0.0", "0.5")
        src, enhanced = a.read(), b.read()
    assert not np.array_equal(src, enhanced)
    # windows of core 32 with a halo of at least the receptive radius (67 px for demo) = the whole image
    model = surrogate_enhancer(EnhancerConfig.demo(), seed=0)
    whole = enhance_array(model, src, seed=5, layout="CHW", temperature=0, strength=0.5)
    assert np.abs(whole.astype(int) - enhanced.astype(int)).max() <= 1
    full = enhance_array(model, src, seed=5, layout="CHW", temperature=0)
    assert np.abs(full.astype(int) - src).mean() > 1.8 * np.abs(enhanced.astype(int) - src).mean()


def test_enhance_geotiff_leaves_nodata_pixels_alone(tmp_path, enhancer_file):
    import rasterio

    scene = write_scene(tmp_path / "scene.tif", 48, 40, crs="EPSG:4326", nodata=0, nodata_box=(0, 10, 0, 12),
                        transform=rasterio.transform.from_origin(10.0, 50.0, 1e-4, 1e-4))
    out = tmp_path / "enhanced.tif"
    assert main(["enhance", str(scene), "--enhancer", str(enhancer_file), "--core", "16", "--halo", "8",
                 "-o", str(out)]) == 0
    with rasterio.open(scene) as a, rasterio.open(out) as b:
        assert b.nodata == 0 and b.crs == a.crs and b.transform == a.transform
        src, enhanced = a.read(), b.read()
    assert np.all(enhanced[:, :10, :12] == 0)
    assert not np.array_equal(src[:, 10:], enhanced[:, 10:])


def test_enhance_png(tmp_path, enhancer_file):
    rng = np.random.default_rng(0)
    img = rng.integers(40, 200, (30, 46, 3), dtype=np.uint8)  # even core, odd-free size
    Image.fromarray(img).save(tmp_path / "in.png")
    assert main(["enhance", str(tmp_path / "in.png"), "--enhancer", str(enhancer_file), "--core", "16",
                 "--halo", "4", "--temperature", "0", "-o", str(tmp_path / "out.png")]) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == img.shape and out.dtype == np.uint8


@pytest.mark.parametrize("kind", ["uint16", "four_bands", "grey_png"])
def test_enhance_refuses_anything_but_3_band_uint8(tmp_path, enhancer_file, capsys, kind):
    if kind == "uint16":
        src = write_scene(tmp_path / "in.tif", 32, 32, dtype="uint16")
    elif kind == "four_bands":
        src = write_scene(tmp_path / "in.tif", 32, 32, bands=4)
    else:
        src = tmp_path / "in.png"
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(src)
    assert main(["enhance", str(src), "--enhancer", str(enhancer_file), "-o", str(tmp_path / "o.tif")]) == 2
    err = capsys.readouterr().err
    assert "not 3" in err and "gsp encode/decode" in err
    assert not (tmp_path / "o.tif").exists()


def test_enhance_rejects_odd_core(tmp_path, enhancer_file, capsys):
    scene = write_scene(tmp_path / "scene.tif", 32, 32)
    assert main(["enhance", str(scene), "--enhancer", str(enhancer_file), "--core", "33", "-o",
                 str(tmp_path / "o.tif")]) == 2
    assert "--core 33" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- models check

def check(path: Path, capsys) -> dict:
    assert main(["models", "check", str(path), "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_models_check_tiny_codec(tiny_codec, capsys):
    info = check(tiny_codec, capsys)
    assert (info["kind"], info["format"], info["container"]) == ("codec", "compressai", "raw state_dict")
    assert info["arch"] == {"N": 32, "M": 64, "groups": [8, 8, 16, 16, 16]}
    assert info["entropy_tables"].startswith("filled") and info["parameters"] > 0
    assert len(info["sha256"]) == 64 and not info["module_prefix"]
    assert main(["models", "check", str(tiny_codec)]) == 0
    text = capsys.readouterr().out
    assert "codec (compressai), loads strictly" in text and "N=32" in text


def test_models_check_authors_codec_in_a_training_wrapper(tmp_path, tiny_codec, capsys):
    from unit.groundstation.test_codec_loading import to_authors_names  # tests/ is on the path, not its subfolders

    sd = torch.load(tiny_codec, weights_only=True)
    authors = {f"module.{k}": v for k, v in to_authors_names(sd).items()}
    torch.save({"state_dict": authors, "epoch": 3}, tmp_path / "authors.pth.tar")
    info = check(tmp_path / "authors.pth.tar", capsys)
    assert (info["kind"], info["format"]) == ("codec", "inn-rsic-elic")
    assert info["container"] == "training wrapper ['state_dict']" and info["wrapper_entries"] == ["epoch"]
    assert info["module_prefix"] and info["arch"]["N"] == 32


def test_models_check_surrogate_enhancer_plain_and_wrapped(tmp_path, enhancer_file, capsys):
    info = check(enhancer_file, capsys)
    assert (info["kind"], info["format"], info["container"]) == ("enhancer", "inn-rsic-enhancer", "raw state_dict")
    assert info["arch"]["blocks"] == 3 and info["arch"]["coupling_growth"] == 16
    sd = torch.load(enhancer_file, weights_only=True)
    torch.save({"network": {f"module.{k}": v for k, v in sd.items()}, "step": 7}, tmp_path / "wrapped.pt")
    wrapped = check(tmp_path / "wrapped.pt", capsys)
    assert wrapped["container"] == "training wrapper ['network']" and wrapped["module_prefix"]
    assert wrapped["parameters"] == info["parameters"]


def test_models_check_reference_enhancer_from_the_manifest(tmp_path, capsys):
    manifest = needs_shared("reference", "enhancer_state_dict.json")
    torch.save(random_state_dict(manifest, seed=1), tmp_path / "ref.pth")
    info = check(tmp_path / "ref.pth", capsys)
    assert info["arch"]["blocks"] == 8 and info["arch"]["coupling_growth"] == 32 and info["arch"]["cgm_growth"] == 64
    assert info["stored_values"] == 2_488_298 and info["entries"] == 264


def test_models_check_broken_files_name_the_key(tmp_path, enhancer_file, tiny_codec, capsys):
    sd = torch.load(enhancer_file, weights_only=True)
    del sd["operations_gaussian.3.G.conv2.bias"]
    torch.save(sd, tmp_path / "broken_enhancer.pt")
    assert main(["models", "check", str(tmp_path / "broken_enhancer.pt")]) == 2
    assert "operations_gaussian.3.G.conv2.bias" in capsys.readouterr().err

    sd = torch.load(tiny_codec, weights_only=True)
    sd["g_s.0.extra"] = torch.zeros(3)
    torch.save(sd, tmp_path / "broken_codec.pt")
    assert main(["models", "check", str(tmp_path / "broken_codec.pt")]) == 2
    assert "g_s.0.extra" in capsys.readouterr().err

    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "foreign.pt")
    assert main(["models", "check", str(tmp_path / "foreign.pt")]) == 2
    assert "foo.weight" in capsys.readouterr().err


def test_models_list_prints_the_registry(capsys):
    assert main(["models", "list"]) == 0
    text = capsys.readouterr().out
    assert "default codec: demo-elic-l0032" in text and "elic2022-chandelier" in text
    reg = load_registry()
    for name, p in reg.rate_points.items():  # each rate point with its operating point
        assert f"{name:<8} {p.codec} + {p.enhancer}: temperature {p.temperature:g}, strength {p.strength:g}" in text
    assert main(["models", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert any(m["name"] == "demo-elic-l0032" and m["default"] for m in data["models"])
    assert {p["rate_point"]: (p["temperature"], p["strength"]) for p in data["rate_points"]} == {
        n: (p.temperature, p.strength) for n, p in reg.rate_points.items()}
