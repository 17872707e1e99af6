"""gsp evaluate: real ELIC + enhancer per rate point, tables, plots, resume, reference points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from groundstation.errors import ConfigError
from gsp.evaluation import (
    PER_IMAGE_CSV,
    evaluate_folder,
    read_reference_points,
    resolve_rate_points,
)
from groundstation.registry import Registry

from helpers import two_point_registry
from synth import write_pngs


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three small RGB images, sizes not multiples of 64 (the codec pads); one large enough for MS-SSIM."""
    d = tmp_path_factory.mktemp("images")
    return write_pngs(d, (("a", (96, 80), 0), ("b", (70, 120), 1), ("sub/c", (176, 168), 2)))


@pytest.fixture(scope="module")
def identity_enhancer(tmp_path_factory) -> Path:
    from enhancer.checkpoint import save_enhancer
    from enhancer.model import INNRSIC, EnhancerConfig

    path = tmp_path_factory.mktemp("identity") / "identity.pt"
    save_enhancer(INNRSIC(EnhancerConfig(blocks=1, coupling_growth=4, cgm_growth=4)).init_identity(), path)
    return path


@pytest.fixture(scope="module")
def registry(tiny_codec, other_codec, identity_enhancer, enhancer_ckpts) -> Registry:
    return two_point_registry(tiny_codec, other_codec, identity_enhancer, enhancer_ckpts[0])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, images, registry):
    out = tmp_path_factory.mktemp("eval")
    ref = out.parent / "ref.csv"
    ref.write_text("label,bpp,psnr_db,ms_ssim,perceptual_metric,perceptual,note\n"
                   "paper DCAE,0.5,30.21,,lpips_alex,0.3240,DOTA\n"
                   "same metric,0.4,25.0,0.9,stlpips_alex,0.2,made up\n")
    res = evaluate_folder(images, out, resolve_rate_points(None, registry), reference=ref)
    return res, out


def test_tables_and_plots_are_written(evaluated, images):
    res, out = evaluated
    assert res.images == 3 and res.computed == 6 and res.skipped == 0
    per = pd.read_csv(out / PER_IMAGE_CSV)
    assert len(per) == 12  # 2 rate points x 3 images x (decoded, enhanced)
    assert set(per.image) == {"a", "b", "sub__c"}
    # bpp is over the unpadded pixels and the enhancer adds no bits
    np.testing.assert_allclose(per.bpp, per.bytes * 8 / (per.height * per.width))
    assert (per.groupby(["rate_point", "image"]).bpp.nunique() == 1).all()
    # MS-SSIM needs > 160 px per side: NaN for the small images, a value for the large one
    assert per[per.image != "sub__c"].ms_ssim.isna().all() and per[per.image == "sub__c"].ms_ssim.notna().all()
    summary = pd.read_csv(out / "evaluation.csv")
    assert list(zip(summary.rate_point, summary["product"])) == [("hi", "decoded"), ("hi", "enhanced"),
                                                                 ("lo", "decoded"), ("lo", "enhanced")]
    assert summary.enhance_s_per_mp.notna().tolist() == [False, True, False, True]
    for png in ("rd.png", "rate_perception.png", "examples.png"):
        with Image.open(out / png) as im:
            assert im.size[0] > 300
    md = (out / "evaluation.md").read_text()
    assert "| hi | decoded |" in md and "| lpips_alex | lpips_vgg | stlpips_alex |" in md
    assert "Each image coded whole (the paper's protocol)." in md and "seam ratio" not in md
    assert "Δ lpips_alex %" in md and "Δ lpips_vgg %" in md and "Δ stlpips_alex %" in md
    assert "stlpips_alex are not on the scale" in md  # a reference in another metric is listed, not drawn
    # LPIPS-Alex is the primary metric; LPIPS-VGG and ST-LPIPS-Alex are computed beside it, each in its column
    assert (per.perceptual_metric == "lpips_alex").all()
    assert per.lpips_vgg.notna().all() and per.stlpips_alex.notna().all()
    assert (per.lpips_vgg != per.perceptual).all() and (per.stlpips_alex != per.perceptual).all()


def test_decoded_metrics_match_a_direct_codec_run(evaluated, images, tiny_codec):
    from groundstation.codec import TileCodec, load_codec
    from groundstation.images import load_rgb
    from groundstation.metrics import psnr_db

    _, out = evaluated
    per = pd.read_csv(out / PER_IMAGE_CSV)
    image = load_rgb(images / "a.png").copy()
    tc = TileCodec(load_codec(tiny_codec), threads=1)
    enc = tc.encode(image)
    decoded, _ = tc.decode(enc.strings, enc.z_hw, enc.y_hw, enc.height, enc.width)
    row = per[(per.rate_point == "hi") & (per.image == "a") & (per["product"] == "decoded")].iloc[0]
    assert row.bytes == enc.nbytes
    assert row.psnr_db == pytest.approx(psnr_db(image, decoded), abs=1e-9)


def test_identity_enhancer_has_no_effect_and_a_real_one_does(evaluated):
    res, _ = evaluated
    eff = res.effects.set_index("rate_point")
    # enhanced == decoded exactly for the identity start at temperature 0
    assert eff.loc["hi", "d_psnr_db"] == 0 and eff.loc["hi", "d_perceptual"] == 0
    assert eff.loc["hi", "perceptual_helped"] == 0
    # the surrogate at temperature 1 changes pixels: PSNR moves
    assert eff.loc["lo", "d_psnr_db"] != 0


def test_rerun_resumes_and_recomputes_only_what_changed(evaluated, images, registry, tiny_codec, other_codec,
                                                        identity_enhancer, enhancer_ckpts, tmp_path):
    res, out = evaluated
    before = pd.read_csv(out / PER_IMAGE_CSV)
    again = evaluate_folder(images, out, resolve_rate_points(None, registry))
    assert again.computed == 0 and again.skipped == 6
    # a crash after the decoded row of the last image: that image is evaluated again, nothing else
    (out / PER_IMAGE_CSV).write_text("".join((out / PER_IMAGE_CSV).read_text().splitlines(True)[:-1]))
    again = evaluate_folder(images, out, resolve_rate_points(None, registry))
    assert again.computed == 1
    after = pd.read_csv(out / PER_IMAGE_CSV).sort_values(["rate_point", "image", "product"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(after.drop(columns="enhance_s"),
                                  before.sort_values(["rate_point", "image", "product"])
                                  .reset_index(drop=True).drop(columns="enhance_s"))
    # rows of another primary metric (an ST-LPIPS-era file) are recomputed, never mixed in
    older = pd.read_csv(out / PER_IMAGE_CSV)
    older.loc[older.rate_point == "lo", "perceptual_metric"] = "stlpips_alex"
    older.to_csv(out / PER_IMAGE_CSV, index=False)
    again = evaluate_folder(images, out, resolve_rate_points(None, registry))
    assert again.computed == 3 and again.skipped == 3
    # another temperature for one rate point: only that point's rows are recomputed
    changed = two_point_registry(tiny_codec, other_codec, identity_enhancer, enhancer_ckpts[0], temperature=0.5)
    again = evaluate_folder(images, out, resolve_rate_points(None, changed))
    assert again.computed == 3 and again.skipped == 3
    # another strength likewise (in a copy: later tests read this folder); a file written before the strength
    # column is read as strength 1
    copy = tmp_path / "copy"
    copy.mkdir()
    pd.read_csv(out / PER_IMAGE_CSV).drop(columns="strength").to_csv(copy / PER_IMAGE_CSV, index=False)
    again = evaluate_folder(images, copy, resolve_rate_points(None, changed))
    assert again.computed == 0 and again.skipped == 6
    again = evaluate_folder(images, copy, resolve_rate_points(None, changed, strength=0.5))
    assert again.computed == 6
    per = pd.read_csv(copy / PER_IMAGE_CSV)
    assert set(per.strength) == {0.5}
    lo = per[per.rate_point == "lo"].pivot_table(index="image", columns="product", values="psnr_db")
    assert (lo.enhanced != lo.decoded).all()  # the surrogate's half change is still a change


def test_worker_processes_give_the_same_numbers(tmp_path, images, registry, evaluated):
    _, out1 = evaluated
    points = resolve_rate_points(["hi"], registry)
    res = evaluate_folder(images, tmp_path, points, workers=2, limit=2)
    assert res.images == 2
    mine = pd.read_csv(tmp_path / PER_IMAGE_CSV).drop(columns="enhance_s").sort_values(["image", "product"])
    assert set(mine.image) == {"a", "sub__c"}  # --limit spreads over the sorted list: first and last
    ref = pd.read_csv(out1 / PER_IMAGE_CSV)
    ref = ref[(ref.rate_point == "hi") & ref.image.isin(["a", "sub__c"])].drop(columns="enhance_s")
    pd.testing.assert_frame_equal(mine.reset_index(drop=True),
                                  ref.sort_values(["image", "product"]).reset_index(drop=True))


def test_bad_inputs_get_clear_errors(tmp_path, images, registry):
    with pytest.raises(ConfigError, match="no rate point named 'nope'"):
        resolve_rate_points(["nope"], registry)
    with pytest.raises(ConfigError, match="--temperature -1"):
        resolve_rate_points(None, registry, temperature=-1.0)
    assert {p.temperature for p in resolve_rate_points(None, registry, temperature=0.25)} == {0.25}
    with pytest.raises(ConfigError, match="no images .* found under"):
        evaluate_folder(tmp_path, tmp_path / "o", resolve_rate_points(["hi"], registry))
    bad = tmp_path / "ref.csv"
    bad.write_text("name,bpp\nx,0.1\n")
    with pytest.raises(ConfigError, match="needs columns label, bpp, psnr_db"):
        read_reference_points(bad)
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / PER_IMAGE_CSV).write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="not written by gsp evaluate"):
        evaluate_folder(images, tmp_path / "o2", resolve_rate_points(["hi"], registry))


def test_another_enhancer_file_is_evaluated_at_one_rate_point_and_keys_its_rows(tmp_path, images, registry,
                                                                                 enhancer_ckpts):
    """--enhancer FILE (a training run's export, e.g. an ablation) replaces one rate point's enhancer: its rows
    carry the file's sha256, so the registry's enhancer in the same folder is computed again, never mixed in."""
    from groundstation.fileio import sha256_file

    with pytest.raises(ConfigError, match="name its rate point alone with --rate-points"):
        resolve_rate_points(None, registry, enhancer=str(enhancer_ckpts[0]))
    with pytest.raises(ConfigError, match="checkpoint file not found"):
        resolve_rate_points(["hi"], registry, enhancer=str(tmp_path / "missing.pt"))
    (point,) = resolve_rate_points(["hi"], registry, enhancer=str(enhancer_ckpts[0]))
    assert point.enhancer == enhancer_ckpts[0].name and point.enhancer_sha256 == sha256_file(enhancer_ckpts[0])
    res = evaluate_folder(images, tmp_path, [point], limit=1)
    rows = pd.read_csv(tmp_path / PER_IMAGE_CSV)
    assert res.computed == 1 and set(rows.enhancer_sha256.dropna()) == {point.enhancer_sha256}
    eff = res.effects.set_index("rate_point")
    assert eff.loc["hi", "d_psnr_db"] != 0  # the surrogate enhancer, not hi's identity start
    again = evaluate_folder(images, tmp_path, resolve_rate_points(["hi"], registry), limit=1)
    assert again.computed == 1 and again.skipped == 0
    assert again.effects.set_index("rate_point").loc["hi", "d_psnr_db"] == 0


def test_registry_refuses_a_rate_point_whose_enhancer_belongs_to_another_codec(tiny_codec, other_codec,
                                                                              identity_enhancer, enhancer_ckpts):
    reg = two_point_registry(tiny_codec, other_codec, identity_enhancer, enhancer_ckpts[0]).model_dump()
    reg["rate_points"]["hi"]["enhancer"] = "e-sur"  # trained behind c-lo
    with pytest.raises(ValueError, match="trained behind 'c-lo'"):
        Registry.model_validate(reg)


def test_cli_help_and_unknown_rate_point(tmp_path):
    run = [sys.executable, "-m", "gsp.cli", "evaluate"]
    out = subprocess.run(run + ["--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--rate-points" in out.stdout and "evaluation.csv" in out.stdout
    out = subprocess.run(run + [str(tmp_path), "-o", str(tmp_path / "o"), "--rate-points", "nope"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "no rate point named 'nope'" in out.stderr


def test_written_tables_have_the_usual_permissions(evaluated):
    import os
    import stat

    _, out = evaluated
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((out / PER_IMAGE_CSV).stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_tiled_coding_measures_the_seams_and_resumes_by_tiling(tmp_path, images, registry, evaluated):
    """--tile-size: every image coded in codec tiles as a pass is, decoded as the station decodes; each row has
    the seam ratio of its product and of the original; rows of another tiling are never mixed in."""
    from gsp.evaluation import WHOLE, Tiling
    from gsp.evaluation.running import _read_done
    from groundstation.codec import TileCodec, load_codec
    from groundstation.images import load_rgb
    from groundstation.metrics.seams import seam_ratio
    from groundstation.synthesis import roundtrip_tiled

    points = resolve_rate_points(["hi"], registry)
    tiled = Tiling(64, "mosaic")
    res = evaluate_folder(images, tmp_path, points, tiling=tiled)
    assert res.computed == 3
    per = pd.read_csv(tmp_path / PER_IMAGE_CSV)
    assert (per.tiling == "64px mosaic").all() and per.seam_ratio.notna().all()
    assert (per.groupby("image").seam_ratio_source.nunique() == 1).all()  # the original's, once per image
    # the decoded row is the station's decode of the tiles: bytes and PSNR of that decode, not of a whole-image one
    image = load_rgb(images / "sub" / "c.png").copy()
    decoded, nbytes = roundtrip_tiled(TileCodec(load_codec(points[0].codec_path), threads=1), image, 64, "mosaic")
    row = per[(per.image == "sub__c") & (per["product"] == "decoded")].iloc[0]
    assert row.bytes == nbytes and row.seam_ratio == pytest.approx(seam_ratio(decoded, 64))
    assert row.seam_ratio_source == pytest.approx(seam_ratio(image, 64))
    whole = pd.read_csv(evaluated[1] / PER_IMAGE_CSV)
    assert row.bytes > whole[(whole.image == "sub__c") & (whole.rate_point == "hi")].bytes.iloc[0]  # 12 tiles' headers
    summary = pd.read_csv(tmp_path / "evaluation.csv")
    assert summary.seam_ratio.notna().all() and summary.seam_ratio_source.notna().all()
    md = (tmp_path / "evaluation.md").read_text()
    assert "64 px codec tiles" in md and "| seam ratio | original's |" in md
    # same tiling: nothing to do; another tiling (here the whole-image protocol) finds nothing done
    assert evaluate_folder(images, tmp_path, points, tiling=tiled).computed == 0
    assert len(_read_done(tmp_path / PER_IMAGE_CSV, points, tiled)) == 6
    assert _read_done(tmp_path / PER_IMAGE_CSV, points, WHOLE).empty
    assert _read_done(evaluated[1] / PER_IMAGE_CSV, points, tiled).empty
    older = tmp_path / "older.csv"  # written before tiled coding existed: read as whole-image rows
    whole.drop(columns=["tiling", "seam_ratio", "seam_ratio_source"]).to_csv(older, index=False)
    assert len(_read_done(older, points, WHOLE)) == 6 and _read_done(older, points, tiled).empty


def test_tiling_options_get_clear_errors(tmp_path):
    from gsp.evaluation import Tiling

    with pytest.raises(ConfigError, match="--tile-size 100: give a positive multiple of 64"):
        Tiling(100)
    with pytest.raises(ConfigError, match="--decode-mode blur: one of tile, mosaic"):
        Tiling(256, "blur")
    with pytest.raises(ConfigError, match="--decode-mode only applies to tiled coding"):
        Tiling.of(0, "tile")
    assert Tiling.of(256).decode_mode == "mosaic"  # the station's default
    out = subprocess.run([sys.executable, "-m", "gsp.cli", "evaluate", str(tmp_path), "-o", str(tmp_path / "o"),
                          "--tile-size", "100"], capture_output=True, text=True)
    assert out.returncode == 2 and "--tile-size 100" in out.stderr and "Traceback" not in out.stderr
