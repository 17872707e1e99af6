"""Enhance a batch of windows of the decoded mosaic into the product's ``enhanced`` array, in a worker process.

Each window reads its core plus halo from ``decoded`` (written by the decode batches it depends on) and writes
only its core, which is one codec tile = one chunk, so no two batches share a chunk. The latent z is a function
of (seed, global pixel position) (:func:`enhancer.noise.z_field`), so the result does not depend on batching
and a rerun writes identical bytes. Pixels that are not valid (nodata, lost tiles) are written as 0; a core
without any valid pixel is not enhanced at all (its chunk keeps the fill value 0).
"""

from __future__ import annotations

import time

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from enhancer.inference import enhance_array
from groundstation.product import open_arrays, write_block

from .state import retry_unless_operator_error, write_marker
from .workers import device_label, get_enhancer, pick_device, set_threads, worker_name

__all__ = ["enhance_windows"]

Box4 = tuple[int, int, int, int]  # y0, y1, x0, x1


@task(name="enhance-windows", cache_policy=NONE, retries=1, retry_delay_seconds=1,
      retry_condition_fn=retry_unless_operator_error)
def enhance_windows(product: str, state_dir: str, batch: int, windows: list[tuple[int, Box4, Box4]],
                    enhancer_path: str, enhancer_sha256: str, *, seed: int = 0, temperature: float = 1.0,
                    use_gpu: bool = False, threads: int = 1) -> dict:
    """Enhance ``windows`` (``(tile, core box, read box)``) and write their cores.

    Returns ``{"tiles": [{"tile", "status" ('ok' | 'no_valid_pixels'), "enhance_ms"}], "device", "worker"}``.
    """
    log = get_run_logger()
    set_threads(threads)
    device = pick_device(use_gpu)
    model = get_enhancer(enhancer_path, enhancer_sha256, device)
    group = open_arrays(product)
    decoded, valid = group["decoded"], group["valid"]
    tiles = []
    for tile, core, read in windows:
        cy0, cy1, cx0, cx1 = core
        ry0, ry1, rx0, rx1 = read
        mask = np.asarray(valid[cy0:cy1, cx0:cx1]).astype(bool)
        if not mask.any():
            tiles.append({"tile": tile, "status": "no_valid_pixels", "enhance_ms": 0.0})
            continue
        t0 = time.perf_counter()
        block = np.asarray(decoded[:, ry0:ry1, rx0:rx1])
        out = enhance_array(model, block, seed=seed, temperature=temperature, origin=(ry0, rx0), device=device,
                            layout="CHW")
        core_out = np.ascontiguousarray(out[:, cy0 - ry0: cy1 - ry0, cx0 - rx0: cx1 - rx0])
        core_out[:, ~mask] = 0
        write_block(group, "enhanced", cy0, cx0, core_out)
        tiles.append({"tile": tile, "status": "ok", "enhance_ms": round((time.perf_counter() - t0) * 1e3, 1)})
    result = {"tiles": tiles, "device": device_label(device), "worker": worker_name()}
    write_marker(state_dir, "enhance", batch, [w[0] for w in windows], result)
    log.info("enhanced %d windows (batch %d) on %s", sum(t["status"] == "ok" for t in tiles), batch, device)
    return result
