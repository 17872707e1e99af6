"""Pixel metrics on uint8 RGB (HWC or CHW): bits per pixel, PSNR, MS-SSIM.

* ``bpp``: compressed bits per pixel.
* ``psnr_db``: PSNR with a peak of 255, from the MSE over all pixels and channels (identical images: ``inf``).
* ``ms_ssim``: MS-SSIM of ``pytorch_msssim`` (data_range=255, 11-px Gaussian window, 5 scales). That library
  asserts ``min(H, W) > (win_size - 1) * 2**4 = 160``; smaller images get ``NaN`` and a reason instead.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch


MS_SSIM_WIN_SIZE = 11
MS_SSIM_LEVELS = 5
#: pytorch_msssim asserts ``min(H, W) > (win_size - 1) * 2 ** 4``: with its default 11-px window, 161 px.
MS_SSIM_MIN_SIDE = (MS_SSIM_WIN_SIZE - 1) * 2 ** (MS_SSIM_LEVELS - 1) + 1


def bpp(nbytes: int, height: int, width: int) -> float:
    """Bits per pixel of ``nbytes`` compressed bytes for a ``height`` x ``width`` image."""
    if height <= 0 or width <= 0:
        raise ValueError(f"bpp needs a positive image size, got {height}x{width}")
    if nbytes < 0:
        raise ValueError(f"bpp needs a non-negative byte count, got {nbytes}")
    return nbytes * 8.0 / (height * width)


def _as_hwc(img: np.ndarray, what: str = "image") -> np.ndarray:
    """(H, W, 3) view of a uint8 RGB image given as HWC or CHW. (3, H, 3) is read as HWC."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 RGB, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    if img.ndim == 3 and img.shape[0] == 3:
        return img.transpose(1, 2, 0)
    raise ValueError(f"{what}: expected an (H, W, 3) or (3, H, W) RGB image, got shape {img.shape}")


def pair_hwc(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_hwc(a, "first image"), _as_hwc(b, "second image")
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape} (as HWC)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"empty image: {a.shape}")
    return a, b


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error on the 0-255 scale over all pixels and the 3 channels."""
    a, b = pair_hwc(a, b)
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(d * d))


def psnr_from_mse(mse_value: float, peak: float = 255.0) -> float:
    """``10 log10(peak**2 / mse)``; ``inf`` for a zero MSE, ``NaN`` for a NaN MSE."""
    if math.isnan(mse_value):
        return math.nan
    if mse_value <= 0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse_value)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 RGB images (HWC or CHW), peak 255; identical images give ``inf``."""
    return psnr_from_mse(mse(a, b))


class MsSsim(NamedTuple):
    """MS-SSIM value, or ``NaN`` with the reason it could not be computed (``reason`` is None when computed)."""

    value: float
    reason: str | None = None


def ms_ssim(a: np.ndarray, b: np.ndarray, device: str | torch.device = "cpu") -> MsSsim:
    """MS-SSIM of two uint8 RGB images (HWC or CHW) with ``pytorch_msssim`` (data_range=255, 5 scales).

    Images whose smaller side is below :data:`MS_SSIM_MIN_SIDE` (161 px) cannot be downsampled 4 times
    under the 11-px window: they give ``MsSsim(nan, reason)`` instead of the library's AssertionError.
    """
    from pytorch_msssim import ms_ssim as _ms_ssim

    a, b = pair_hwc(a, b)
    h, w = a.shape[:2]
    if min(h, w) < MS_SSIM_MIN_SIDE:
        return MsSsim(
            math.nan,
            f"ms_ssim: image {h}x{w} is too small for {MS_SSIM_LEVELS} scales "
            f"(pytorch_msssim needs both sides >= {MS_SSIM_MIN_SIDE} px with an {MS_SSIM_WIN_SIZE}-px window)",
        )
    x = _to_nchw_float(a, device)
    y = _to_nchw_float(b, device)
    with torch.inference_mode():
        value = _ms_ssim(x, y, data_range=255, size_average=True, win_size=MS_SSIM_WIN_SIZE)
    return MsSsim(float(value))


def _to_nchw_float(hwc: np.ndarray, device: str | torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)[None]
    return t.to(device=device, dtype=torch.float32)
