"""INN-RSIC network and checkpoints: invertibility, the reference layout, strict loading, errors."""

from __future__ import annotations


import pytest
import torch

from helpers import SHARED
from enhancer.checkpoint import (
    config_from_state_dict,
    load_enhancer,
    load_manifest,
    random_state_dict,
    save_enhancer,
)
from enhancer.inference import crop_to, pad_to_even
from enhancer.model import INNRSIC, EnhancerConfig
from enhancer.modules import YUV_MATRIX, AffineCoupling, ChannelExpansion, DenseBlock, HaarDownsampling, quantize
from groundstation.errors import CheckpointError

MANIFEST = SHARED / "reference" / "enhancer_state_dict.json"
needs_manifest = pytest.mark.skipif(not MANIFEST.is_file(), reason=f"{MANIFEST} not present")


def random_model(config: EnhancerConfig, seed: int = 0) -> INNRSIC:
    model = INNRSIC(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(random_state_dict(shapes, seed=seed), strict=True)
    return model.eval()


# --- building blocks ----------------------------------------------------------------------------------


def test_haar_is_orthogonal_and_subband_major():
    haar = HaarDownsampling(6)
    x = torch.rand(2, 6, 8, 10)
    y = haar(x)
    assert y.shape == (2, 24, 4, 5)
    torch.testing.assert_close(haar.inverse(y), x, atol=1e-6, rtol=0)
    # Channels 0-5 are the LL band (2x2 means) of channels 0-5; the rest are detail bands.
    torch.testing.assert_close(y[:, :6], torch.nn.functional.avg_pool2d(x, 2), atol=1e-6, rtol=0)
    const = haar(torch.ones(1, 6, 4, 4))
    assert torch.all(const[:, 6:] == 0)
    assert not haar.haar_weights.requires_grad


def test_channel_expansion_starts_at_yuv_and_inverts():
    exp = ChannelExpansion()
    assert torch.equal(exp.conv1.conv_weights.detach(), torch.tensor(YUV_MATRIX))
    x = torch.rand(1, 3, 4, 6)
    y = exp(x)
    assert y.shape == (1, 6, 4, 6)
    torch.testing.assert_close(exp.inverse(y), x, atol=1e-6, rtol=0)


def test_dense_block_init_and_identity_coupling():
    block = DenseBlock(6, 18, growth=8)
    assert torch.all(block.conv5.weight == 0) and torch.all(block.conv5.bias == 0)
    assert block.conv1.weight.abs().max() > 0
    # Xavier-normal x0.1: the std is a tenth of xavier's sqrt(2 / (fan_in + fan_out)).
    fan_in, fan_out = 6 * 9, 8 * 9
    assert block.conv1.weight.std().item() == pytest.approx(0.1 * (2 / (fan_in + fan_out)) ** 0.5, rel=0.3)
    coupling = AffineCoupling(24, 6, growth=8)
    x = torch.randn(1, 24, 6, 6)
    torch.testing.assert_close(coupling(x), x)  # zero conv5 -> F = G = 0, s = 0: identity


def test_quantize_rounds_and_passes_gradient_straight_through():
    x = torch.tensor([-0.2, 0.0, 0.5, 0.70001, 1.3], requires_grad=True)
    q = quantize(x)
    expected = torch.round(torch.clamp(x.detach(), 0, 1) * 255) / 255
    assert torch.equal(q.detach(), expected)
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


# --- whole network ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("config", "size"), [
    (EnhancerConfig.demo(), (32, 32)),
    (EnhancerConfig.demo(), (31, 45)),
    (EnhancerConfig.demo(), (17, 8)),
    (EnhancerConfig.demo(), (1, 3)),
    (EnhancerConfig(blocks=2, coupling_growth=8, cgm_growth=8), (64, 50)),
    (EnhancerConfig.reference(), (32, 48)),
], ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else f"b{v.blocks}g{v.coupling_growth}")
def test_inverse_undoes_forward(config, size):
    model = random_model(config, seed=1)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(2))
    x_even, original = pad_to_even(x)
    with torch.no_grad():
        y = model(x_even)
        # The random blocks are not the identity: the latent differs clearly from the identity network's.
        identity = INNRSIC(config).eval()
        assert (y - identity(x_even)).abs().max() > 1e-2
        x_rec = crop_to(model.inverse(y[:, :3], y[:, 3:]), original)
    assert y.shape == (2, 6, *x_even.shape[-2:])
    assert x_rec.shape == x.shape
    assert (x_rec - x).abs().max().item() < 1e-4


def test_odd_size_is_refused_not_cropped():
    model = INNRSIC(EnhancerConfig.demo())
    with pytest.raises(ValueError, match="pad_to_even"):
        model(torch.rand(1, 3, 9, 8))
    with pytest.raises(ValueError, match="pad_to_even"):
        model.inverse(torch.rand(1, 3, 8, 9), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="equal shape"):
        model.inverse(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 6))


def test_pad_to_even_replicates_and_crops_back():
    x = torch.arange(15.0).reshape(1, 1, 3, 5)
    padded, size = pad_to_even(x)
    assert padded.shape == (1, 1, 4, 6) and size == (3, 5)
    assert torch.equal(padded[..., 3, :5], x[..., 2, :]) and torch.equal(padded[..., :3, 5], x[..., :, 4])
    assert torch.equal(crop_to(padded, size), x)


def test_config_validation_and_presets():
    assert EnhancerConfig.reference() == EnhancerConfig()
    assert EnhancerConfig.demo().blocks < EnhancerConfig.reference().blocks
    with pytest.raises(ValueError, match="blocks"):
        EnhancerConfig(blocks=0)


# --- reference layout and checkpoints -----------------------------------------------------------------

@needs_manifest
def test_reference_model_matches_manifest_exactly():
    manifest = load_manifest(MANIFEST)
    state = INNRSIC(EnhancerConfig.reference()).state_dict()
    assert len(manifest) == 264
    assert list(state) == list(manifest)
    assert {k: tuple(v.shape) for k, v in state.items()} == manifest
    assert sum(v.numel() for v in state.values()) == 2_488_298


@needs_manifest
def test_manifest_state_dict_loads_strictly_and_round_trips(tmp_path):
    state = random_state_dict(MANIFEST, seed=3)
    path = tmp_path / "enhancer_random.pth"
    torch.save(state, path)  # the authors' format: a plain state_dict
    model, config, digest = load_enhancer(path)
    assert config == EnhancerConfig.reference()
    assert len(digest) == 64
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)

    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(4))
    z = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        before = model.inverse(image, z)
    saved = tmp_path / "resaved.pth"
    digest2 = save_enhancer(model, saved)
    again, config2, digest3 = load_enhancer(saved, expected_sha256=digest2)
    assert config2 == config and digest3 == digest2
    with torch.inference_mode():
        assert torch.equal(again.inverse(image, z), before)


def test_wrapped_and_prefixed_checkpoint_loads(tmp_path):
    model = random_model(EnhancerConfig.demo(), seed=6)
    wrapped = {"network": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}
    path = tmp_path / "train.pth"
    torch.save(wrapped, path)
    loaded, config, _ = load_enhancer(path)
    assert config == EnhancerConfig.demo()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    torch.save({"state_dict": model.state_dict()}, path)
    assert load_enhancer(path)[1] == EnhancerConfig.demo()


def test_config_is_inferred_from_shapes():
    state = INNRSIC(EnhancerConfig(blocks=5, coupling_growth=12, cgm_growth=20)).state_dict()
    assert config_from_state_dict(state) == EnhancerConfig(blocks=5, coupling_growth=12, cgm_growth=20)


@pytest.mark.parametrize("damage", ["missing", "unexpected", "wrong_shape"])
def test_mismatched_checkpoint_names_the_key(tmp_path, damage):
    state = INNRSIC(EnhancerConfig.demo()).state_dict()
    if damage == "missing":
        key = "guassianize.h_scale_s.conv3.bias"
        del state[key]
    elif damage == "unexpected":
        key = "guassianize.h_extra.weight"
        state[key] = torch.zeros(3)
    else:
        key = "operations_gaussian.3.G.conv5.weight"
        state[key] = torch.zeros(17, 6 + 4 * 16, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=damage.replace("_", "-")) as info:
        load_enhancer(path)
    assert key in str(info.value) and str(path) in str(info.value)


def test_unreadable_or_foreign_checkpoints_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_enhancer(tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_enhancer(junk)
    with pytest.raises(CheckpointError, match="sha256"):
        load_enhancer(junk, expected_sha256="0" * 64)
    foreign = tmp_path / "foreign.pth"
    torch.save({"g_a.0.weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="operations_gaussian.2.F.conv1.weight"):
        load_enhancer(foreign)
    state = INNRSIC(EnhancerConfig.demo()).state_dict()
    state["operations_gaussian.1.haar_weights"] = torch.zeros_like(state["operations_gaussian.1.haar_weights"])
    bad_haar = tmp_path / "haar.pth"
    torch.save(state, bad_haar)
    with pytest.raises(CheckpointError, match="operations_gaussian.1.haar_weights"):
        load_enhancer(bad_haar)


def test_identity_start_passes_the_decoded_image_through():
    torch.manual_seed(0)
    model = INNRSIC(EnhancerConfig.demo()).init_identity(latent_gain=40.0)
    x = torch.rand(2, 3, 32, 48)
    out = model(x)
    assert torch.allclose(out[:, :3], x, atol=1e-6)  # s = x
    assert out[:, 3:].abs().max() < 1e-4  # z = 0
    y = torch.rand(2, 3, 32, 48)
    assert torch.allclose(model.inverse(y, torch.zeros_like(y)), y, atol=1e-6)  # T = 0: enhanced == decoded
    z = torch.randn_like(y)
    step = model.inverse(y, z) - y  # T = 1: z enters at 1/latent_gain (sigma = 1 at the start)
    assert torch.allclose(step, z / 40.0, atol=1e-5)
    assert torch.allclose(model.inverse(*model(x).split(3, dim=1)), x, atol=1e-5)  # still an INN
    with pytest.raises(ValueError, match="latent_gain"):
        model.init_identity(0)
