"""Build the product's overview pyramid (:mod:`groundstation.overviews`) on the flow's Dask workers.

Level k is computed from level k-1 only: the chunks of one level are split into batches, each batch a Prefect
task (``build-overviews``) that reads, for each of its output chunks, the 2x2 chunks below it and writes that
one chunk; the next level starts when every batch of this one is done. Only paths, a level and chunk indices
travel to the workers; memory per task is a few chunks, whatever the product's size.
"""

from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NONE

from groundstation.overviews import build_chunk, create_levels, level_chunks, open_levels
from groundstation.product import ARRAYS, write_gdal_views

__all__ = ["build_overviews", "build_pyramid"]

#: Output chunks per task: big enough that the task overhead stays small, small enough to spread a level.
CHUNKS_PER_TASK = 64


@task(name="build-overviews", cache_policy=NONE, retries=1, retry_delay_seconds=1)
def build_overviews(product: str, level: int, chunks: list[tuple[int, int]], arrays: list[str]) -> dict:
    """Write ``chunks`` ((row, col) indices) of overview ``level`` from level ``level - 1``."""
    t0 = time.perf_counter()
    group = open_levels(product)
    for r, c in chunks:
        build_chunk(group, level, r, c, arrays)
    return {"level": level, "chunks": len(chunks), "ms": round(1000 * (time.perf_counter() - t0), 1)}


def build_pyramid(product: str, arrays=ARRAYS, *, chunks_per_task: int = CHUNKS_PER_TASK) -> list[dict]:
    """Create the levels and fill them level by level with :func:`build_overviews` tasks submitted to the
    running flow's task runner (call it from a flow). Returns the levels (as in the ``multiscales`` attribute)."""
    levels = create_levels(product, arrays)
    names = [a for a in arrays if a in open_levels(product, "r")]
    for lv in levels[1:]:
        chunks = level_chunks(product, lv["level"])
        futures = [build_overviews.submit(str(product), lv["level"], chunks[i : i + chunks_per_task], names)
                   for i in range(0, len(chunks), chunks_per_task)]
        for f in futures:
            f.result()  # raises if a batch failed: the product stays incomplete, a rerun rebuilds the pyramid
    write_gdal_views(product, [lv["path"] for lv in levels[1:]])  # GDAL/QGIS use the levels when zoomed out
    return levels
