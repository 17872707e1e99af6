"""Enhancer inference: the seeded latent field, window planning, whole-image and tiled enhancement."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from enhancer.inference import enhance_array, enhance_mosaic
from enhancer.model import EnhancerConfig
from enhancer.noise import z_field
from enhancer.testing import surrogate_enhancer
from enhancer.tiling import plan_windows
from helpers import REPO


@pytest.fixture(scope="module")
def demo_model():
    # Random non-identity weights whose inverse behaves like "image + a few tens of DN" (enhancer.testing).
    return surrogate_enhancer(EnhancerConfig.demo(), seed=0)


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB scene with sensor-like noise, uint8 (3, h, w)."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 3, 9, 11))).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
    return np.clip(smooth.numpy() * 180 + 40 + rng.normal(0, 8, (3, h, w)), 0, 255).astype(np.uint8)


def tiled(model, image: np.ndarray, **kwargs) -> np.ndarray:
    out = np.zeros_like(image)
    written = np.zeros(image.shape[1:], dtype=np.int32)

    def source(y0, y1, x0, x1):
        return image[:, y0:y1, x0:x1].copy()

    def sink(y0, y1, x0, x1, block):
        out[:, y0:y1, x0:x1] = block
        written[y0:y1, x0:x1] += 1

    enhance_mosaic(model, source, sink, image.shape[1:], **kwargs)
    assert np.all(written == 1), "every pixel must be written exactly once"
    return out


# --- z field ------------------------------------------------------------------------------------------

def test_z_field_is_a_function_of_global_position():
    a = z_field(7, 10, 20, 50, 60)
    b = z_field(7, 30, 50, 40, 40)
    assert a.shape == (3, 50, 60) and a.dtype == torch.float32
    assert torch.equal(a[:, 20:50, 30:60], b[:, :30, :30])  # the overlap [30, 60) x [50, 80)
    assert torch.equal(z_field(7, 10, 20, 50, 60), a)  # rerun: bit-identical
    assert not torch.equal(z_field(8, 10, 20, 50, 60), a)  # another seed: another field
    single = z_field(7, 44, 71, 1, 1)
    assert torch.equal(single[:, 0, 0], a[:, 34, 51])


def test_z_field_is_standard_normal():
    z = z_field(0, 0, 0, 256, 256).double()
    n = z.numel()
    assert abs(z.mean().item()) < 5 / n**0.5
    assert abs(z.std().item() - 1) < 0.01
    assert abs((z.abs() < 1).double().mean().item() - 0.6827) < 0.005
    assert abs((z**4).mean().item() - 3) < 0.1  # kurtosis of a normal
    flat = z.reshape(3, -1)
    corr = torch.corrcoef(flat)
    assert (corr - torch.eye(3, dtype=corr.dtype)).abs().max() < 0.01  # channels independent
    neighbours = torch.corrcoef(torch.stack([z[0, :, :-1].reshape(-1), z[0, :, 1:].reshape(-1)]))[0, 1]
    assert abs(neighbours.item()) < 0.01


def test_z_field_temperature_and_validation():
    base = z_field(3, 5, 6, 8, 9)
    assert torch.equal(z_field(3, 5, 6, 8, 9, temperature=0.5), base * 0.5)
    assert torch.equal(z_field(3, 5, 6, 8, 9, temperature=0), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError, match="y0"):
        z_field(3, -1, 0, 4, 4)
    with pytest.raises(ValueError, match="temperature"):
        z_field(3, 0, 0, 4, 4, temperature=-1)


# --- window planning ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 64), (200, 260), (257, 513), (31, 300)])
@pytest.mark.parametrize(("core", "halo"), [(64, 16), (32, 0), ((32, 48), (8, 4)), (256, 32)])
def test_windows_partition_the_mosaic(shape, core, halo):
    h, w = shape
    cy, cx = (core, core) if isinstance(core, int) else core
    hy, hx = (halo, halo) if isinstance(halo, int) else halo
    windows = plan_windows(shape, core, halo)
    coverage = np.zeros(shape, dtype=np.int32)
    for win in windows:
        c, r = win.core, win.read
        coverage[c.y0:c.y1, c.x0:c.x1] += 1
        assert c.y0 % cy == 0 and c.x0 % cx == 0  # chunk-aligned
        assert 0 < c.height <= cy and 0 < c.width <= cx
        if c.height < cy:
            assert c.y1 == h  # only edge cores are smaller
        if c.width < cx:
            assert c.x1 == w
        assert 0 <= r.y0 <= c.y0 < c.y1 <= r.y1 <= h and 0 <= r.x0 <= c.x0 < c.x1 <= r.x1 <= w
        assert (r.y0, r.y1, r.x0, r.x1) == (max(c.y0 - hy, 0), min(c.y1 + hy, h),
                                            max(c.x0 - hx, 0), min(c.x1 + hx, w))
        ys, xs = win.core_in_read
        assert (ys.stop - ys.start, xs.stop - xs.start) == c.shape
    assert np.all(coverage == 1)
    assert len(windows) == -(-h // cy) * -(-w // cx)


def test_plan_windows_validates_arguments():
    assert plan_windows((0, 10), 4, 2) == []
    with pytest.raises(ValueError, match="core"):
        plan_windows((10, 10), 0, 2)
    with pytest.raises(ValueError, match="halo"):
        plan_windows((10, 10), 4, -1)


# --- enhancement --------------------------------------------------------------------------------------

def test_enhance_array_layouts_and_determinism(demo_model):
    image = scene(37, 50, seed=1)
    chw = enhance_array(demo_model, image, seed=3)
    assert chw.shape == image.shape and chw.dtype == np.uint8
    hwc = enhance_array(demo_model, image.transpose(1, 2, 0).copy(), seed=3)
    assert np.array_equal(hwc.transpose(2, 0, 1), chw)
    assert np.array_equal(enhance_array(demo_model, image, seed=3), chw)
    assert not np.array_equal(enhance_array(demo_model, image, seed=4), chw)
    changed = np.abs(chw.astype(int) - image).mean()
    assert 1 < changed < 60, f"the surrogate should change the image by some DN, got {changed:.1f}"
    with pytest.raises(ValueError, match="ambiguous"):
        enhance_array(demo_model, np.zeros((3, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        enhance_array(demo_model, image.astype(np.float32))


def test_temperature_zero_is_deterministic_and_seed_free(demo_model):
    image = scene(40, 52, seed=2)
    a = enhance_array(demo_model, image, seed=1, temperature=0)
    assert np.array_equal(enhance_array(demo_model, image, seed=99, temperature=0), a)
    t1 = tiled(demo_model, image, core=16, halo=8, seed=1, temperature=0)
    t2 = tiled(demo_model, image, core=16, halo=8, seed=5, temperature=0, batch_size=1)
    assert np.array_equal(t1, t2)


@pytest.mark.parametrize("fast", [True, False])
def test_strength_keeps_that_fraction_of_the_enhancers_change(demo_model, fast):
    """strength a: decoded + a (enhanced - decoded) before rounding, in whole images and window by window alike;
    1 is the enhancer's output bit for bit."""
    image = scene(64, 72, seed=5)
    full = enhance_array(demo_model, image, seed=3, temperature=0.5, fast=fast)
    assert np.array_equal(enhance_array(demo_model, image, seed=3, temperature=0.5, fast=fast, strength=1.0), full)
    change = full.astype(float) - image
    assert np.abs(change).mean() > 5  # the surrogate changes the image by tens of DN: the test can see a blend
    for a in (0.25, 0.8):
        out = enhance_array(demo_model, image, seed=3, temperature=0.5, fast=fast, strength=a)
        expect = np.clip(image + a * change, 0, 255)  # the float output rounded once; this blends the rounded one
        assert np.abs(out - expect).max() <= 1.0, a
        assert np.abs(out.astype(float) - image).mean() == pytest.approx(a * np.abs(change).mean(), rel=0.03)
        windows = tiled(demo_model, image, core=32, halo=16, seed=3, temperature=0.5, strength=a)
        whole = enhance_array(demo_model, image, seed=3, temperature=0.5, strength=a)
        assert np.abs(windows.astype(int) - whole).max() <= 2
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            enhance_array(demo_model, image, strength=bad)


# Measured with this surrogate (weight seeds 0 and 1, 200x260, core 64): halo 0 -> max 90-94 DN, mean 3.4 DN;
# halo 8 -> max 1-2 DN, mean 0.02 DN; halo 16 -> max 1 DN (a float rounding tie), mean 2e-4 DN. The bounds
# leave one DN of margin on the maximum and ~50x on the mean; halo 0 shows the comparison can see seams.
@pytest.mark.parametrize("shape", [(200, 260), (201, 259)])
def test_tiled_matches_whole_image(demo_model, shape):
    image = scene(*shape, seed=3)
    whole = enhance_array(demo_model, image, seed=11)
    diff = np.abs(tiled(demo_model, image, core=64, halo=16, seed=11).astype(int) - whole)
    assert diff.max() <= 2 and diff.mean() < 0.01, (diff.max(), diff.mean())
    seams = np.abs(tiled(demo_model, image, core=64, halo=0, seed=11).astype(int) - whole)
    assert seams.max() > 10


def test_halo_covering_the_receptive_field_gives_the_whole_image_result():
    config = EnhancerConfig(blocks=1, coupling_growth=8, cgm_growth=8)
    model = surrogate_enhancer(config, seed=4)
    image = scene(101, 135, seed=4)
    halo = config.receptive_radius + config.receptive_radius % 2
    whole = enhance_array(model, image, seed=2)
    diff = np.abs(tiled(model, image, core=32, halo=halo, seed=2, batch_size=3).astype(int) - whole)
    assert diff.max() <= 1 and diff.mean() < 1e-3  # equal up to float rounding at .5 DN ties


def test_enhance_mosaic_checks_its_inputs(demo_model):
    image = scene(20, 20)
    with pytest.raises(ValueError, match="even"):
        tiled(demo_model, image, core=15, halo=4)
    with pytest.raises(ValueError, match="even"):
        tiled(demo_model, image, core=16, halo=3)

    def bad_source(y0, y1, x0, x1):
        return np.zeros((y1 - y0, x1 - x0, 3), np.uint8)

    with pytest.raises(ValueError, match="source"):
        enhance_mosaic(demo_model, bad_source, lambda *a: None, (20, 20), core=16, halo=4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model = surrogate_enhancer(EnhancerConfig.demo(), seed=0)
    image = scene(64, 80, seed=5)
    cpu = enhance_array(model, image, seed=1)
    gpu = enhance_array(model, image, seed=1, device="cuda")
    assert np.abs(cpu.astype(int) - gpu).max() <= 1


# --- fast inference path ----------------------------------------------------------------------------

WEIGHTS = REPO / "weights" / "enhancer" / "demo-inn-l0032.pt"


def _fast_vs_plain(model, windows: int = 3, size: int = 256, batch_size: int = 2):
    """Enhance ``windows`` size x size windows of a scene with the fast and the plain path (batched and not)."""
    image = scene(size, size * windows, seed=7)
    fast = tiled(model, image, core=size, halo=0, seed=5, batch_size=batch_size, fast=True)
    plain = tiled(model, image, core=size, halo=0, seed=5, batch_size=batch_size, fast=False)
    return image, fast, plain


def _assert_within_one_dn(fast: np.ndarray, plain: np.ndarray) -> None:
    diff = np.abs(fast.astype(int) - plain)
    assert diff.max() <= 1, diff.max()
    assert (diff > 0).mean() <= 1e-3, (diff > 0).mean()


def test_inverse_fast_equals_inverse_in_float(demo_model):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 64, 48, generator=gen)
    z = torch.randn(2, 3, 64, 48, generator=gen)
    with torch.inference_mode():
        plain = demo_model.inverse(image, z)
        fast = demo_model.inverse_fast(image, z)
    assert fast.shape == plain.shape and fast.dtype == plain.dtype
    assert (fast - plain).abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="odd"):
        demo_model.inverse_fast(image[..., :63, :], z[..., :63, :])


def test_fast_path_matches_plain_on_surrogate(demo_model):
    image, fast, plain = _fast_vs_plain(demo_model)
    _assert_within_one_dn(fast, plain)
    assert np.abs(plain.astype(int) - image).mean() > 1  # a non-identity model: the comparison sees something
    odd = scene(37, 51, seed=8)  # odd sizes: padding and cropping on both paths
    _assert_within_one_dn(enhance_array(demo_model, odd, seed=2), enhance_array(demo_model, odd, seed=2, fast=False))


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="committed demo checkpoint not present")
def test_fast_path_matches_plain_on_committed_checkpoint():
    from enhancer.checkpoint import load_enhancer

    model, _, _ = load_enhancer(WEIGHTS)
    _, fast, plain = _fast_vs_plain(model)
    _assert_within_one_dn(fast, plain)


def test_tune_cpu_worker_sets_threads_and_validates():
    from enhancer.inference import tune_cpu_worker

    before = torch.get_num_threads()
    try:
        applied = tune_cpu_worker(1, keep_heap=True)
        assert torch.get_num_threads() == 1 and applied["threads"] == 1
        assert isinstance(applied["keep_heap"], bool)  # True on glibc Linux, False elsewhere
        assert tune_cpu_worker(None, keep_heap=False) == {}
        with pytest.raises(ValueError, match="threads"):
            tune_cpu_worker(0)
    finally:
        torch.set_num_threads(before)
