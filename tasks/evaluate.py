"""Full-reference metrics of a batch of tiles against the source scene, read in windows, in a worker process.

The reference window is turned into 8-bit RGB with the *pass header's* band rule (band selection, scaling
range, fill value), i.e. exactly what the satellite encoded, so the figures measure the codec and the
enhancer, not a different stretch. Pixels that are not valid in the product (nodata) are taken from the
reference in the candidate, so they add no error; the row's note says how many there were.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from groundstation.container import BandInfo
from groundstation.metrics import evaluate_tile
from groundstation.product import open_arrays
from groundstation.scene import Scene

from .results import EvaluateResult
from .state import retry_unless_operator_error, write_marker
from .workers import device_label, get_perceptual, pick_device, set_threads, worker_name

__all__ = ["evaluate_tiles"]


@task(name="evaluate-tiles", cache_policy=NONE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_operator_error)
def evaluate_tiles(product: str, reference: str, state_dir: str, batch: int, bands: dict, tiles: list[dict],
                   *, pass_id: str, product_version: str, products: tuple[str, ...] = ("decoded", "enhanced"),
                   use_gpu: bool = False, threads: int = 1) -> EvaluateResult:
    """Metrics rows for ``tiles`` (dicts with ``tile``, ``window`` (r0, r1, c0, c1), ``bytes``, ``decode_ms``,
    ``enhance_ms``, ``decode_device``, ``enhance_device``), one per tile and product.

    Returns the rows and the perceptual metrics' descriptions (retried twice: the reference scene may sit on a
    network share).
    """
    import rasterio

    log = get_run_logger()
    t0 = time.perf_counter()
    set_threads(threads)
    device = pick_device(use_gpu)
    perceptual = get_perceptual(device)
    group = open_arrays(product)
    band_info = BandInfo.model_validate(bands)
    rows = []
    with rasterio.open(reference) as ds:
        scene = Scene(path=Path(reference), ds=ds, bands=band_info)
        for info in tiles:
            r0, r1, c0, c1 = info["window"]
            ref, _ = scene.read_rgb(r0, r1, c0, c1)
            valid = np.asarray(group["valid"][r0:r1, c0:c1]).astype(bool)
            n_invalid = int((~valid).sum())
            for name in products:
                cand = np.moveaxis(np.asarray(group[name][:, r0:r1, c0:c1]), 0, -1).copy()
                cand[~valid] = ref[~valid]
                row = evaluate_tile(
                    ref, cand, pass_id=pass_id, tile_index=info["tile"], product=name,
                    compressed_bytes=info["bytes"], perceptual=perceptual, product_version=product_version,
                    decode_ms=info.get("decode_ms", math.nan),
                    enhance_ms=info.get("enhance_ms", math.nan) if name == "enhanced" else math.nan,
                    device=info.get(f"{'enhance' if name == 'enhanced' else 'decode'}_device", ""),
                )
                if n_invalid:
                    row.note = "; ".join(x for x in (row.note, f"{n_invalid} nodata pixels copied from the reference (no error counted there)") if x)
                rows.append(row)
    result = EvaluateResult(rows=tuple(rows), perceptual="; ".join(f"{m.name}: {m.description}" for m in perceptual), metric_device=device_label(device),
                            worker=worker_name(), seconds=round(time.perf_counter() - t0, 3))
    write_marker(state_dir, "evaluate", batch, [t["tile"] for t in tiles], result.to_json())
    log.info("evaluated %d tiles (batch %d) against the reference", len(tiles), batch)
    return result
