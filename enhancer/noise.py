"""A seeded latent field: z ~ N(0, I) as a pure function of (seed, channel, global row, global column).

The reference draws ``z`` with ``torch.randn`` and no seed, so its output changes from run to run and tiles
of a mosaic would each see unrelated noise. Here every latent value is derived from its global position
with a counter-based hash (splitmix64's finaliser, applied in three chained rounds, then Box-Muller):
overlapping windows see identical values, reruns are bit-identical, and results do not depend on tiling,
batching, device or thread count (the hash runs in NumPy ``uint64`` on the CPU).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["z_field"]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, splitmix64's increment
_ROW_SALT = 0xD1B54A32D192ED03
_COL_SALT = 0xAEF17502108EF2D9
_U2_SALT = 0x632BE59BD9B4E019
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_TWO_POW_M53 = 1.0 / (1 << 53)


def _mix_scalar(x: int) -> int:
    """splitmix64 finaliser on a Python int (wrapping at 64 bits)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * _M1) & _MASK64
    x = ((x ^ (x >> 27)) * _M2) & _MASK64
    return x ^ (x >> 31)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (NumPy array arithmetic wraps modulo 2^64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(_M1)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(_M2)
    return x ^ (x >> np.uint64(31))


def _unit_open(bits: np.ndarray) -> np.ndarray:
    """Top 53 bits -> float64 uniform in the open interval (0, 1)."""
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * _TWO_POW_M53


def z_field(seed: int, y0: int, x0: int, h: int, w: int, *, channels: int = 3, temperature: float = 1.0,
            device: str | torch.device = "cpu") -> Tensor:
    """The latent for the window ``[y0, y0+h) x [x0, x0+w)`` of a mosaic: float32 ``(channels, h, w)``.

    Each value is standard normal and depends only on ``(seed, channel, y0 + i, x0 + j)``. The result is
    multiplied by ``temperature`` (0 gives zeros: the deterministic mean of the CGM).
    """
    for name, value in (("y0", y0), ("x0", x0), ("h", h), ("w", w), ("channels", channels)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"z_field: {name} must be a non-negative int, got {value!r}")
    if temperature < 0:
        raise ValueError(f"z_field: temperature must be >= 0, got {temperature}")
    if temperature == 0 or h == 0 or w == 0:
        return torch.zeros((channels, h, w), dtype=torch.float32, device=device)

    key = _mix_scalar(_mix_scalar(int(seed) & _MASK64) + _GOLDEN)
    rows = np.arange(y0, y0 + h, dtype=np.uint64)
    cols = np.arange(x0, x0 + w, dtype=np.uint64)
    col_term = (cols + np.uint64(1)) * np.uint64(_COL_SALT)
    out = np.empty((channels, h, w), dtype=np.float32)
    for c in range(channels):
        k_c = np.uint64(_mix_scalar(key + (c + 1) * _GOLDEN))
        k_row = _mix(k_c ^ ((rows + np.uint64(1)) * np.uint64(_ROW_SALT)))  # (h,)
        bits = _mix(k_row[:, None] ^ col_term[None, :])  # (h, w): one hash per position
        u1 = _unit_open(_mix(bits))
        u2 = _unit_open(_mix(bits ^ np.uint64(_U2_SALT)))
        # Box-Muller (cosine branch only, so each position owns its pair of uniforms).
        out[c] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    z = torch.from_numpy(out)
    if temperature != 1.0:
        z.mul_(float(temperature))
    return z.to(device)
