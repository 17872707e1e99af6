"""The seam ratio: how much a tiled image steps at its codec-tile boundaries compared with inside its tiles.

For every pair of 4-neighbours (horizontal and vertical) whose two pixels are both valid, the step is the mean
absolute difference over the bands. Pairs that straddle a tile boundary (column ``c-1 | c`` with ``c`` a
multiple of the tile size, likewise for rows) are *boundary* pairs, all others *interior* pairs:

    seam ratio = mean step over boundary pairs / mean step over interior pairs

A natural image has a ratio near 1 (boundaries are arbitrary lines through it); an image whose tiles were
coded independently shows a grid of steps, a ratio well above 1. Judge a product against its source scene's
ratio (same grid), not against 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SeamStats", "seam_ratio", "seam_stats"]


@dataclass(frozen=True)
class SeamStats:
    """Mean absolute neighbour steps (DN) across tile boundaries and inside tiles, and how many pairs each."""

    boundary_step: float
    interior_step: float
    boundary_pairs: int
    interior_pairs: int

    @property
    def ratio(self) -> float:
        """boundary / interior step; NaN when either set of pairs is empty or the interior never steps."""
        if not self.boundary_pairs or not self.interior_pairs or self.interior_step == 0:
            return float("nan")
        return self.boundary_step / self.interior_step


def _as_chw(image: np.ndarray) -> np.ndarray:
    """(C, H, W) view: (H, W) and (H, W, C<=4) are recognised first (as :mod:`.pixel` reads (3, H, 3) as HWC)."""
    img = np.asarray(image)
    if img.ndim == 2:
        return img[None]
    if img.ndim == 3 and img.shape[2] <= 4:
        return img.transpose(2, 0, 1)
    if img.ndim == 3 and img.shape[0] <= 4:
        return img
    raise ValueError(f"seam ratio: expected an (H, W), (H, W, C) or (C, H, W) image with C <= 4, got shape "
                     f"{img.shape}")


def seam_stats(image: np.ndarray, tile_size: int, valid: np.ndarray | None = None, *,
               origin: tuple[int, int] = (0, 0)) -> SeamStats:
    """Boundary and interior neighbour steps of ``image`` on a tile grid of pitch ``tile_size``.

    ``image``: (H, W), (H, W, C) or (C, H, W) with C <= 4. ``valid``: (H, W),
    nonzero = valid; pairs with an invalid pixel are left out. ``origin``: the global (row, col) of the image's
    top-left pixel, so a crop of a mosaic keeps the mosaic's grid.
    """
    if tile_size < 2:
        raise ValueError(f"seam ratio: tile_size must be >= 2, got {tile_size}")
    img = _as_chw(image).astype(np.float64)
    _, h, w = img.shape
    ok = np.ones((h, w), bool) if valid is None else np.asarray(valid).astype(bool)
    if ok.shape != (h, w):
        raise ValueError(f"seam ratio: valid mask {ok.shape} does not match the image's {(h, w)}")
    sums = {True: 0.0, False: 0.0}
    counts = {True: 0, False: 0}
    for axis in (1, 2):  # rows (vertical neighbours), then columns
        step = np.abs(np.diff(img, axis=axis)).mean(axis=0)  # (h-1, w) or (h, w-1)
        pair_ok = ok[1:, :] & ok[:-1, :] if axis == 1 else ok[:, 1:] & ok[:, :-1]
        n = step.shape[axis - 1]
        # the pair (k, k+1) straddles a boundary when the global index of k+1 is a multiple of the tile size
        second = np.arange(1, n + 1) + origin[axis - 1]
        across = (second % tile_size) == 0
        across = across[:, None] if axis == 1 else across[None, :]
        for boundary in (True, False):
            sel = pair_ok & (across if boundary else ~across)
            sums[boundary] += float(step[sel].sum())
            counts[boundary] += int(sel.sum())
    return SeamStats(
        boundary_step=sums[True] / counts[True] if counts[True] else float("nan"),
        interior_step=sums[False] / counts[False] if counts[False] else float("nan"),
        boundary_pairs=counts[True], interior_pairs=counts[False],
    )


def seam_ratio(image: np.ndarray, tile_size: int, valid: np.ndarray | None = None, *,
               origin: tuple[int, int] = (0, 0)) -> float:
    """Mean step across tile boundaries / mean step inside tiles (see :func:`seam_stats`); NaN if undefined."""
    return seam_stats(image, tile_size, valid, origin=origin).ratio
