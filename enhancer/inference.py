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

Speed: by default (``fast=True``) the network runs :meth:`INNRSIC.inverse_fast`, channels_last
end to end with no layout flips, fed straight from the uint8 blocks; ``fast=False`` keeps the plain
:meth:`INNRSIC.inverse` (results equal up to float rounding: at most 1 DN, on rare .5 ties). A worker
process should call :func:`tune_cpu_worker` once (threads per worker, heap reuse);
benchmarks/enhancer_throughput.py measures both against the machine's conv peak.
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
    "tune_cpu_worker",
    "z_field",
]

Source = Callable[[int, int, int, int], np.ndarray]
Sink = Callable[[int, int, int, int, np.ndarray], None]


def tune_cpu_worker(threads: int | None = None, *, keep_heap: bool = True) -> dict[str, object]:
    """Process-wide CPU settings for a worker that runs the enhancer; call once at worker start.

    ``threads``: torch intra-op threads (``torch.set_num_threads``): give each worker process its share of
    the cores (cores // workers) so that workers do not oversubscribe them; None leaves it unchanged.
    ``keep_heap``: on glibc, raise malloc's mmap and trim thresholds so that the enhancer's large
    activations (several MB each, freed and reallocated for every convolution) are reused from the heap
    instead of being mmap'd and page-faulted afresh on every call; measured on the demo configuration,
    about 6x fewer page faults and 1.1-1.4x the throughput on one thread. The cost: the worker keeps its
    peak heap (a few hundred MB for batches of 256x256 windows) instead of returning it to the system.
    Returns what was applied.
    """
    applied: dict[str, object] = {}
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
        applied["threads"] = threads
    if keep_heap:
        applied["keep_heap"] = _keep_heap()
    return applied


def _keep_heap() -> bool:
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    ok = mallopt(m_mmap_threshold, 1 << 30) == 1  # allocations below 1 GiB come from the heap
    return bool(ok and mallopt(m_trim_threshold, (1 << 31) - 1) == 1)  # and the heap is not trimmed


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


def _enhance_blocks(model: INNRSIC, blocks: np.ndarray | Sequence[np.ndarray],
                    origins: Sequence[tuple[int, int]], *, seed: int, temperature: float, device: torch.device,
                    fast: bool = True, strength: float = 1.0) -> np.ndarray:
    """Enhance a batch of equal-shape uint8 blocks ``(N, 3, h, w)`` whose top-left pixels sit at ``origins``.

    ``blocks`` is one array or a sequence of ``(3, h, w)`` arrays (the fast path copies each straight into
    the float batch, without stacking them first).

    Output channels 0-2 of the inverse, blended with the input by ``strength`` (:func:`blend_`), clamped to
    [0, 1] and rounded to uint8 (round half to even).
    ``fast`` runs :meth:`INNRSIC.inverse_fast` (channels_last, no layout flips; equal to the plain
    :meth:`INNRSIC.inverse` up to float rounding, i.e. at most 1 DN on rare .5 ties), else ``inverse``.
    """
    if not fast:
        if not isinstance(blocks, np.ndarray):
            blocks = np.stack(blocks)
        x = torch.from_numpy(np.ascontiguousarray(blocks)).to(device=device, dtype=torch.float32).div_(255.0)
        x, size = pad_to_even(x)
        hp, wp = x.shape[-2:]
        # z at the padded size: padded pixels take the latent of their global position, as in a whole image.
        z = torch.stack([z_field(seed, y0, x0, hp, wp, temperature=temperature) for y0, x0 in origins])
        out = blend_(model.inverse(x, z.to(device)), x, strength)
        out = crop_to(out, size).clamp_(0.0, 1.0).mul_(255.0).round_()
        return out.to(torch.uint8).cpu().numpy()
    # Fast path: one uint8 -> float32 conversion straight into a channels_last buffer (no extra copies), the
    # latents written into their batch slots, the result rounded in place and returned as contiguous uint8.
    n = len(blocks)
    c, h, w = blocks[0].shape
    if device.type == "cuda":  # uint8 through pinned memory (a quarter of the bytes, asynchronous), float on the GPU
        host = torch.empty((n, c, h, w), dtype=torch.uint8, pin_memory=True)
        for i in range(n):
            host[i].copy_(torch.from_numpy(blocks[i]))
        x = host.to(device, non_blocking=True).to(dtype=torch.float32, memory_format=torch.channels_last)
    else:
        x = torch.empty((n, c, h, w), dtype=torch.float32, device=device, memory_format=torch.channels_last)
        for i in range(n):  # torch.from_numpy is a view (any strides): one uint8 -> float32 copy per block
            x[i].copy_(torch.from_numpy(blocks[i]))
    x.div_(255.0)
    x, size = pad_to_even(x)
    hp, wp = x.shape[-2:]
    z = torch.empty((n, c, hp, wp), dtype=torch.float32, device=device, memory_format=torch.channels_last)
    for i, (y0, x0) in enumerate(origins):
        z[i].copy_(z_field(seed, y0, x0, hp, wp, temperature=temperature))
    out = blend_(model.inverse_fast(x, z), x, strength)
    out = crop_to(out, size).clamp_(0.0, 1.0).mul_(255.0).round_()
    return out.to(device="cpu", dtype=torch.uint8, memory_format=torch.contiguous_format).numpy()


def check_strength(strength: float, option: str = "strength") -> float:
    """``strength`` as a float in (0, 1], else a ValueError naming ``option`` (the one check of the range; callers
    that speak to an operator turn it into a ConfigError)."""
    strength = float(strength)
    if not (0.0 < strength <= 1.0):
        raise ValueError(f"{option} {strength:g}: give a fraction of the enhancer's change in (0, 1] (1 = all of it)")
    return strength


def blend_(out: torch.Tensor, x: torch.Tensor, strength: float) -> torch.Tensor:
    """The enhancer's output moved back towards its input: ``x + strength * (clamp(out, 0, 1) - x)``, in place on
    ``out`` (float, before rounding): a fraction of the change the full output would show, the same in every
    pixel, so ``x`` in [0, 1] keeps the result there. ``strength`` 1 returns ``out`` untouched, bit for bit.

    Together with the temperature, the strength is the operating point: the temperature scales the latent
    the enhancer samples detail from, the strength how much of the enhancer's change reaches the product
    (docs/evaluation.md: at l0130 the temperature's cheapest point, T = 0, still costs about 0.5 dB)."""
    if strength == 1.0:
        return out
    return out.clamp_(0.0, 1.0).sub_(x).mul_(strength).add_(x)


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
                  layout: Literal["auto", "HWC", "CHW"] = "auto", fast: bool = True,
                  strength: float = 1.0) -> np.ndarray:
    """Enhance a whole uint8 RGB image (HWC or CHW) in one pass; returns uint8 in the same layout.

    ``origin`` is the global position of the image's top-left pixel, for the latent field (a tile of a
    larger scene gets the same z as that scene). The model is moved to ``device`` and put in eval mode.
    ``fast=False`` runs the plain :meth:`INNRSIC.inverse` (see :func:`_enhance_blocks`); ``strength``: the
    fraction of the enhancer's change kept (:func:`blend_`).
    """
    strength = check_strength(strength)
    chw, used = _as_chw(image, layout)
    dev = _model_device(model, device)
    with torch.inference_mode():
        out = _enhance_blocks(model, chw[None], [origin], seed=seed, temperature=temperature, device=dev,
                              fast=fast, strength=strength)[0]
    return out.transpose(1, 2, 0).copy() if used == "HWC" else out


def _batches(windows: Iterable[Window], batch_size: int) -> list[list[Window]]:
    """Group windows by read-box shape (order of first appearance), then cut groups into batches."""
    groups: dict[tuple[int, int], list[Window]] = {}
    for win in windows:
        groups.setdefault(win.read.shape, []).append(win)
    return [group[i: i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]


def enhance_mosaic(model: INNRSIC, source: Source, sink: Sink, shape: tuple[int, int], *, core: int = 256,
                   halo: int = 32, seed: int = 0, temperature: float = 1.0, batch_size: int = 4,
                   device: str | torch.device = "cpu", progress: bool = False,
                   fast: bool = True, strength: float = 1.0) -> dict[str, float]:
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
                           temperature=temperature, batch_size=batch_size, device=device, progress=progress,
                           fast=fast, strength=strength)


def enhance_windows(model: INNRSIC, source: Source, sink: Sink, windows: Sequence[Window], *, seed: int = 0,
                    temperature: float = 1.0, batch_size: int = 4, device: str | torch.device = "cpu",
                    progress: bool = False, fast: bool = True, strength: float = 1.0) -> dict[str, float]:
    """Enhance the given windows (a subset of a :func:`plan_windows` plan, e.g. one worker's batch).

    Same contract as :func:`enhance_mosaic` for ``source``/``sink``; windows of equal read shape are batched.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    strength = check_strength(strength)
    batches = _batches(windows, batch_size)
    dev = _model_device(model, device)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(windows), unit="window", desc="enhance")
    start = time.perf_counter()
    pixels_read = 0

    def read(batch: list[Window]) -> list[np.ndarray]:
        blocks = []
        for win in batch:
            r = win.read
            block = np.asarray(source(r.y0, r.y1, r.x0, r.x1))
            if block.dtype != np.uint8 or block.shape != (3, r.height, r.width):
                raise ValueError(f"source({r.y0}, {r.y1}, {r.x0}, {r.x1}) returned {block.dtype} "
                                 f"{block.shape}; expected uint8 (3, {r.height}, {r.width})")
            blocks.append(block)
        return blocks

    # On a GPU the next batch is read (Zarr decompression, CPU) while this one is computed; on the CPU reading
    # ahead would only take the compute's own thread.
    prefetch = None
    if dev.type == "cuda" and len(batches) > 1:
        from concurrent.futures import ThreadPoolExecutor

        prefetch = ThreadPoolExecutor(1, thread_name_prefix="enhance-read")
    try:
        with torch.inference_mode():
            ahead = prefetch.submit(read, batches[0]) if prefetch else None
            for k, batch in enumerate(batches):
                blocks = ahead.result() if ahead else read(batch)
                if prefetch and k + 1 < len(batches):
                    ahead = prefetch.submit(read, batches[k + 1])
                pixels_read += sum(w.read.height * w.read.width for w in batch)
                out = _enhance_blocks(model, blocks, [(w.read.y0, w.read.x0) for w in batch],
                                      seed=seed, temperature=temperature, device=dev, fast=fast,
                                      strength=strength)
                for win, enhanced in zip(batch, out):
                    ys, xs = win.core_in_read
                    c = win.core
                    sink(c.y0, c.y1, c.x0, c.x1, np.ascontiguousarray(enhanced[:, ys, xs]))
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if prefetch is not None:
            prefetch.shutdown(wait=True)
        if bar is not None:
            bar.close()
    return {"windows": len(windows), "batches": len(batches), "pixels_read": pixels_read,
            "seconds": time.perf_counter() - start}
