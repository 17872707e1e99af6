"""Enhance a batch of windows of the decoded mosaic into the product's ``enhanced`` array, in a worker process.

Each window reads its core plus halo from ``decoded`` (written by the decode batches it depends on) and writes
only its core, which is one codec tile = one chunk, so no two batches share a chunk. The latent z is a function
of (seed, global pixel position) (:func:`enhancer.noise.z_field`), so the result does not depend on batching
and a rerun writes identical bytes. Pixels that are not valid (nodata, lost tiles) are written as 0; a core
without any valid pixel is not enhanced at all (its chunk keeps the fill value 0).
"""

from __future__ import annotations

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from enhancer.inference import enhance_windows as enhance_batched
from enhancer.inference import tune_cpu_worker
from enhancer.tiling import Box, Window
from groundstation.product import open_arrays, write_block

from .state import retry_unless_operator_error, write_marker
from .workers import device_label, get_enhancer, pick_device, worker_name

__all__ = ["enhance_windows"]

Box4 = tuple[int, int, int, int]  # y0, y1, x0, x1


@task(name="enhance-windows", cache_policy=NONE, retries=1, retry_delay_seconds=1,
      retry_condition_fn=retry_unless_operator_error)
def enhance_windows(product: str, state_dir: str, batch: int, windows: list[tuple[int, Box4, Box4]],
                    enhancer_path: str, enhancer_sha256: str, *, seed: int = 0, temperature: float = 1.0,
                    use_gpu: bool = False, threads: int = 1, batch_size: int = 4) -> dict:
    """Enhance ``windows`` (``(tile, core box, read box)``) with :func:`enhancer.inference.enhance_windows`
    (windows of equal shape batched, ``batch_size`` at most) and write their cores, invalid pixels as 0.

    Returns ``{"tiles": [{"tile", "status" ('ok' | 'no_valid_pixels'), "enhance_ms"}], "device", "worker"}``;
    ``enhance_ms`` is the batch's time shared out by window.
    """
    log = get_run_logger()
    tune_cpu_worker(threads)  # threads, and the heap kept for the enhancer's activations (enhancer.inference)
    device = pick_device(use_gpu)
    model = get_enhancer(enhancer_path, enhancer_sha256, device)
    group = open_arrays(product)
    decoded, valid = group["decoded"], group["valid"]
    tiles, todo = [], []
    masks: dict[tuple[int, int], np.ndarray] = {}
    for tile, core, read in windows:
        cy0, cy1, cx0, cx1 = core
        mask = np.asarray(valid[cy0:cy1, cx0:cx1]).astype(bool)
        if not mask.any():
            tiles.append({"tile": tile, "status": "no_valid_pixels", "enhance_ms": 0.0})
            continue
        masks[(cy0, cx0)] = mask
        todo.append((tile, Window(core=Box(*core), read=Box(*read))))

    def source(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.asarray(decoded[:, y0:y1, x0:x1])

    def sink(y0: int, y1: int, x0: int, x1: int, block: np.ndarray) -> None:
        block[:, ~masks[(y0, x0)]] = 0
        write_block(group, "enhanced", y0, x0, block)

    if todo:
        stats = enhance_batched(model, source, sink, [w for _, w in todo], seed=seed, temperature=temperature,
                                batch_size=batch_size, device=device)
        per_window_ms = round(stats["seconds"] * 1e3 / len(todo), 1)
        tiles += [{"tile": tile, "status": "ok", "enhance_ms": per_window_ms} for tile, _ in todo]
    tiles.sort(key=lambda t: t["tile"])
    result = {"tiles": tiles, "device": device_label(device), "worker": worker_name()}
    write_marker(state_dir, "enhance", batch, [w[0] for w in windows], result)
    log.info("enhanced %d windows (batch %d) on %s", len(todo), batch, device)
    return result
