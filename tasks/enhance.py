"""Enhance a batch of windows of the decoded mosaic into the product's ``enhanced`` array, in a worker process.

Each window reads its core plus halo from ``decoded`` (written by the decode batches it depends on) and writes
only its core, a block of whole codec tiles = whole chunks that no other window writes, so no two batches
share a chunk. The latent z is a function of (seed, global pixel position) (:func:`enhancer.noise.z_field`),
so the result does not depend on batching or on the core size (up to float rounding) and a rerun writes
identical bytes. Pixels that are not valid (nodata, lost tiles) are written as 0; a core without any valid
pixel is not enhanced at all (its chunks keep the fill value 0).
"""

from __future__ import annotations

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from enhancer.inference import enhance_windows as enhance_batched
from enhancer.inference import tune_cpu_worker
from enhancer.tiling import Box, Window
from groundstation.product import open_arrays, write_block

from .results import EnhancedTile, EnhanceResult
from .state import retry_unless_operator_error, write_marker
from .workers import device_label, get_enhancer, pick_device, worker_name

__all__ = ["enhance_windows"]

Box4 = tuple[int, int, int, int]  # y0, y1, x0, x1


@task(name="enhance-windows", cache_policy=NONE, retries=1, retry_delay_seconds=1,
      retry_condition_fn=retry_unless_operator_error)
def enhance_windows(product: str, state_dir: str, batch: int, windows: list[tuple[Box4, Box4]],
                    tiles: list[tuple[int, Box4]], enhancer_path: str, enhancer_sha256: str, *, seed: int = 0,
                    temperature: float = 1.0, strength: float = 1.0, use_gpu: bool = False, threads: int = 1,
                    batch_size: int = 4) -> EnhanceResult:
    """Enhance ``windows`` (``(core box, read box)``) with :func:`enhancer.inference.enhance_windows` (windows
    of equal shape batched, ``batch_size`` at most) at the operating point (``temperature``, ``strength``) and
    write their cores, invalid pixels as 0.

    ``tiles`` (``(tile, box)``: the codec tiles the cores cover) is what the result speaks of: one
    :class:`EnhancedTile` each ('ok' | 'no_valid_pixels'), ``enhance_ms`` the batch's time shared out by the
    tiles' pixels.
    """
    log = get_run_logger()
    tune_cpu_worker(threads)  # threads, and the heap kept for the enhancer's activations (enhancer.inference)
    device = pick_device(use_gpu)
    model = get_enhancer(enhancer_path, enhancer_sha256, device)
    group = open_arrays(product)
    decoded, valid = group["decoded"], group["valid"]
    todo: list[Window] = []
    masks: dict[tuple[int, int], np.ndarray] = {}
    for core, read in windows:
        cy0, cy1, cx0, cx1 = core
        mask = np.asarray(valid[cy0:cy1, cx0:cx1]).astype(bool)
        if mask.any():
            masks[(cy0, cx0)] = mask
            todo.append(Window(core=Box(*core), read=Box(*read)))

    def source(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.asarray(decoded[:, y0:y1, x0:x1])

    def sink(y0: int, y1: int, x0: int, x1: int, block: np.ndarray) -> None:
        block[:, ~masks[(y0, x0)]] = 0
        write_block(group, "enhanced", y0, x0, block)

    stats = {"seconds": 0.0, "pixels_read": 0}
    if todo:
        stats = enhance_batched(model, source, sink, todo, seed=seed, temperature=temperature, strength=strength,
                                batch_size=batch_size, device=device)
    covered: list[tuple[int, int]] = []  # (tile, valid pixels enhanced)
    for tile, (y0, y1, x0, x1) in tiles:
        win = next((w for w in todo if w.core.y0 <= y0 < w.core.y1 and w.core.x0 <= x0 < w.core.x1), None)
        m = None if win is None else masks[(win.core.y0, win.core.x0)][y0 - win.core.y0: y1 - win.core.y0,
                                                                        x0 - win.core.x0: x1 - win.core.x0]
        covered.append((tile, 0 if m is None or not m.any() else (y1 - y0) * (x1 - x0)))
    area = sum(px for _, px in covered)
    out = tuple(EnhancedTile(tile, "ok", round(stats["seconds"] * 1e3 * px / area, 1)) if px  # time by pixels
                else EnhancedTile(tile, "no_valid_pixels", 0.0) for tile, px in sorted(covered))
    result = EnhanceResult(tiles=out, device=device_label(device), worker=worker_name(), windows=len(todo),
                           pixels_read=int(stats["pixels_read"]))
    write_marker(state_dir, "enhance", batch, [t for t, _ in tiles], result.to_json())
    log.info("enhanced %d windows covering %d tiles (batch %d) on %s in %.1f s", len(todo),
             sum(1 for _, px in covered if px), batch, device, stats["seconds"])
    return result
