"""Inference with the enhancer: whole images and mosaics enhanced window by window.

What the reference does at inference (docs/method.md): run only the inverse, with input = the decoded
image (uint8 / 255) and z ~ N(0, I) at temperature 1, keep output channels 0-2, clamp to [0, 1], round to
uint8. Differences here, on purpose:

* z comes from :func:`enhancer.noise.z_field`, seeded and a function of the global pixel position, so a
  mosaic enhanced in windows sees the same latent as the whole image and reruns are bit-identical;
* odd heights/widths are padded (edge replication, bottom/right, one pixel) and cropped back, where the
  reference silently crops;
* a mosaic is processed in windows (:func:`enhancer.tiling.plan_windows`) whose halo gives the network
  context across core borders; with a halo of at least ``config.receptive_radius`` the result equals the
  whole-image result up to float rounding, and smaller halos trade a small seam error for speed
  (benchmarks/enhancer_tiling.py measures it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from enhancer.model import INNRSIC
from enhancer.noise import z_field
from enhancer.tiling import Box, Window, plan_windows

__all__ = [
    "Box",
    "Window",
    "crop_to",
    "enhance_array",
    "enhance_mosaic",
    "enhance_windows",
    "pad_to_even",
    "plan_windows",
    "z_field",
]

Source = Callable[[int, int, int, int], np.ndarray]
Sink = Callable[[int, int, int, int, np.ndarray], None]


def pad_to_even(x: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Pad an NCHW tensor at the bottom/right by edge replication to even H and W.

    Returns the padded tensor and the original ``(H, W)`` for :func:`crop_to`. The padding sits at the
    far edges, so padded pixels have global positions just past the image (``z_field`` covers them too).
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (h, w)


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Undo :func:`pad_to_even`."""
    return x[..., : size[0], : size[1]]


def _model_device(model: INNRSIC, device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch.cuda.is_available() is False")
    model.to(device).eval()
    return device


def _enhance_blocks(model: INNRSIC, blocks: np.ndarray, origins: Sequence[tuple[int, int]], *, seed: int,
                    temperature: float, device: torch.device) -> np.ndarray:
    """Enhance a batch of equal-shape uint8 blocks ``(N, 3, h, w)`` whose top-left pixels sit at ``origins``.

    Output channels 0-2 of the inverse, clamped to [0, 1] and rounded to uint8 (round half to even).
    """
    n, _, h, w = blocks.shape
    x = torch.from_numpy(np.ascontiguousarray(blocks)).to(device=device, dtype=torch.float32).div_(255.0)
    x, size = pad_to_even(x)
    hp, wp = x.shape[-2:]
    # z at the padded size: padded pixels take the latent of their global position, as in a whole-image run.
    z = torch.stack([z_field(seed, y0, x0, hp, wp, temperature=temperature) for y0, x0 in origins])
    out = model.inverse(x, z.to(device))
    out = crop_to(out, size).clamp_(0.0, 1.0).mul_(255.0).round_()
    return out.to(torch.uint8).cpu().numpy()


def _as_chw(image: np.ndarray, layout: Literal["auto", "HWC", "CHW"]) -> tuple[np.ndarray, str]:
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected a uint8 image of 3 dimensions (HWC or CHW), got {image.dtype} "
                         f"of shape {image.shape}")
    if layout == "auto":
        chw, hwc = image.shape[0] == 3, image.shape[2] == 3
        if chw and hwc:
            raise ValueError(f"image shape {image.shape} is ambiguous: pass layout='HWC' or 'CHW'")
        if not (chw or hwc):
            raise ValueError(f"image shape {image.shape} has no axis of 3 colour channels (RGB needed)")
        layout = "CHW" if chw else "HWC"
    if layout == "HWC":
        if image.shape[2] != 3:
            raise ValueError(f"layout HWC needs 3 channels last, got shape {image.shape}")
        return image.transpose(2, 0, 1), "HWC"
    if layout == "CHW":
        if image.shape[0] != 3:
            raise ValueError(f"layout CHW needs 3 channels first, got shape {image.shape}")
        return image, "CHW"
    raise ValueError(f"layout must be 'auto', 'HWC' or 'CHW', got {layout!r}")


def enhance_array(model: INNRSIC, image: np.ndarray, *, seed: int = 0, temperature: float = 1.0,
                  origin: tuple[int, int] = (0, 0), device: str | torch.device = "cpu",
                  layout: Literal["auto", "HWC", "CHW"] = "auto") -> np.ndarray:
    """Enhance a whole uint8 RGB image (HWC or CHW) in one pass; returns uint8 in the same layout.

    ``origin`` is the global position of the image's top-left pixel, for the latent field (a tile of a
    larger scene gets the same z as that scene). The model is moved to ``device`` and put in eval mode.
    """
    chw, used = _as_chw(image, layout)
    dev = _model_device(model, device)
    with torch.inference_mode():
        out = _enhance_blocks(model, chw[None], [origin], seed=seed, temperature=temperature, device=dev)[0]
    return out.transpose(1, 2, 0).copy() if used == "HWC" else out


def _batches(windows: Iterable[Window], batch_size: int) -> list[list[Window]]:
    """Group windows by read-box shape (order of first appearance), then cut groups into batches."""
    groups: dict[tuple[int, int], list[Window]] = {}
    for win in windows:
        groups.setdefault(win.read.shape, []).append(win)
    return [group[i: i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]


def enhance_mosaic(model: INNRSIC, source: Source, sink: Sink, shape: tuple[int, int], *, core: int = 256,
                   halo: int = 32, seed: int = 0, temperature: float = 1.0, batch_size: int = 4,
                   device: str | torch.device = "cpu", progress: bool = False) -> dict[str, float]:
    """Enhance a mosaic of ``shape = (H, W)`` window by window.

    ``source(y0, y1, x0, x1)`` returns the uint8 block ``(3, y1-y0, x1-x0)`` of the decoded mosaic;
    ``sink(y0, y1, x0, x1, block)`` receives the enhanced uint8 core ``(3, y1-y0, x1-x0)``. Each core is
    written once. Windows of equal read shape are batched (``batch_size`` at most). ``core`` and ``halo``
    must be even so that every read box starts on the Haar 2x2 grid of the whole mosaic. Returns counts and
    timing: ``windows``, ``batches``, ``pixels_read``, ``seconds``.
    """
    if core < 2 or core % 2 or halo < 0 or halo % 2:
        raise ValueError(f"core must be even and >= 2 and halo even and >= 0 (Haar 2x2 grid alignment), "
                         f"got core={core}, halo={halo}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return enhance_windows(model, source, sink, plan_windows(shape, core, halo), seed=seed,
                           temperature=temperature, batch_size=batch_size, device=device, progress=progress)


def enhance_windows(model: INNRSIC, source: Source, sink: Sink, windows: Sequence[Window], *, seed: int = 0,
                    temperature: float = 1.0, batch_size: int = 4, device: str | torch.device = "cpu",
                    progress: bool = False) -> dict[str, float]:
    """Enhance the given windows (a subset of a :func:`plan_windows` plan, e.g. one worker's batch).

    Same contract as :func:`enhance_mosaic` for ``source``/``sink``; windows of equal read shape are batched.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = _batches(windows, batch_size)
    dev = _model_device(model, device)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(windows), unit="window", desc="enhance")
    start = time.perf_counter()
    pixels_read = 0
    try:
        with torch.inference_mode():
            for batch in batches:
                blocks = []
                for win in batch:
                    r = win.read
                    block = np.asarray(source(r.y0, r.y1, r.x0, r.x1))
                    if block.dtype != np.uint8 or block.shape != (3, r.height, r.width):
                        raise ValueError(f"source({r.y0}, {r.y1}, {r.x0}, {r.x1}) returned {block.dtype} "
                                         f"{block.shape}; expected uint8 (3, {r.height}, {r.width})")
                    blocks.append(block)
                    pixels_read += r.height * r.width
                out = _enhance_blocks(model, np.stack(blocks), [(w.read.y0, w.read.x0) for w in batch],
                                      seed=seed, temperature=temperature, device=dev)
                for win, enhanced in zip(batch, out):
                    ys, xs = win.core_in_read
                    c = win.core
                    sink(c.y0, c.y1, c.x0, c.x1, np.ascontiguousarray(enhanced[:, ys, xs]))
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return {"windows": len(windows), "batches": len(batches), "pixels_read": pixels_read,
            "seconds": time.perf_counter() - start}
