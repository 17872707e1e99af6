"""The seam ratio on synthetic images whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from groundstation.metrics.seams import seam_ratio, seam_stats


def _ramp(h: int, w: int) -> np.ndarray:
    """Every horizontal and vertical step 1 DN."""
    y, x = np.mgrid[0:h, 0:w]
    return (y + x).astype(np.uint8)


def test_smooth_ramp_has_ratio_one():
    img = _ramp(40, 40)
    assert seam_ratio(img, 8) == pytest.approx(1.0)
    stats = seam_stats(img, 8)
    # 40x40: 39 vertical + 39 horizontal pair lines; boundaries after rows/cols 7, 15, 23, 31 (4 each)
    assert stats.boundary_pairs == 2 * 4 * 40
    assert stats.interior_pairs == 2 * 35 * 40
    assert stats.boundary_step == pytest.approx(1.0)


def test_blocky_image_known_ratio():
    """A constant-per-tile image with 1 DN texture inside: boundary steps are known exactly."""
    t = 8
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 200, size=(4, 4)).astype(np.int64)
    img = np.kron(levels, np.ones((t, t), np.int64))
    img = img + (np.indices(img.shape).sum(0) % 2)  # checkerboard: every interior step is exactly 1
    img = img.astype(np.uint8)
    # boundary step between tiles a and b: |a - b| plus the checkerboard's +-1, which across a boundary
    # alternates as inside (the parity changes across every pair): |a + p - b - (1 - p)| summed over the pairs
    vals = []
    for axis in (0, 1):
        d = np.abs(np.diff(img.astype(np.int64), axis=axis))
        idx = np.arange(t - 1, img.shape[axis] - 1, t)
        vals.append(np.take(d, idx, axis=axis).ravel())
    want = np.concatenate(vals).mean() / 1.0
    assert seam_ratio(img, t) == pytest.approx(want)
    assert seam_ratio(img, t) > 10


def test_channels_first_and_last_agree_and_bands_are_averaged():
    img = _ramp(32, 24)
    rgb = np.stack([img, img, img // 2], axis=-1)
    assert seam_ratio(rgb, 8) == pytest.approx(seam_ratio(rgb.transpose(2, 0, 1), 8))


def test_invalid_pixels_are_left_out():
    t = 8
    img = _ramp(32, 32).astype(np.int64)
    img[:, 16:] += 100  # a step of 100 at the boundary after column 15 only
    img = img.astype(np.uint8)
    assert seam_ratio(img, t) > 5
    valid = np.ones(img.shape, bool)
    valid[:, 16:24] = False  # the tile right of the step is nodata: the step no longer counts
    assert seam_ratio(img, t, valid) == pytest.approx(1.0)


def test_origin_moves_the_grid():
    t = 8
    img = _ramp(32, 32).astype(np.int64)
    img[:, 12:] += 50  # a step after column 11: a boundary only when the crop starts at column 4 of the mosaic
    img = img.astype(np.uint8)
    assert seam_ratio(img, t, origin=(0, 4)) > 5
    assert seam_ratio(img, t) < 1.2


def test_undefined_cases_are_nan_and_bad_input_is_refused():
    assert np.isnan(seam_ratio(np.zeros((8, 8), np.uint8), 16))  # no boundary inside
    assert np.isnan(seam_ratio(np.zeros((32, 32), np.uint8), 8))  # flat: interior never steps
    with pytest.raises(ValueError, match="valid mask"):
        seam_ratio(np.zeros((8, 8), np.uint8), 4, np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="tile_size"):
        seam_ratio(np.zeros((8, 8), np.uint8), 1)


@pytest.mark.parametrize("rows", [1, 7, 8, 13, 100])
def test_bands_count_exactly_the_same_pairs(rows):
    from groundstation.metrics.seams import seam_stats_blocks

    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, size=(3, 37, 29), dtype=np.uint8)
    valid = rng.random((37, 29)) > 0.1
    whole = seam_stats(img, 8, valid)
    got = seam_stats_blocks(lambda y0, y1: (img[:, y0:y1], valid[y0:y1]), 37, 29, 8, rows)
    assert got.boundary_pairs == whole.boundary_pairs and got.interior_pairs == whole.interior_pairs
    assert got.ratio == pytest.approx(whole.ratio, rel=1e-12)
