"""Overview pyramid (:mod:`groundstation.overviews`) work for the flow's Dask workers.

Level k is computed from level k-1 only: the chunks of one level are split into batches
(:func:`overview_batches`), each batch a Prefect task (``build-overviews``) that reads, for each of its output
chunks, the 2x2 chunks below it and writes that one chunk. The flow runs the levels in order
(:func:`flows.delivery.build_pyramid`). Only paths, a level and chunk indices travel to the workers; memory per
task is a few chunks, whatever the product's size.
"""

from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NONE

from groundstation.overviews import build_chunk, level_chunks, open_levels

__all__ = ["CHUNKS_PER_TASK", "build_overviews", "overview_batches"]

#: Output chunks per task: big enough that the task overhead stays small, small enough to spread a level.
CHUNKS_PER_TASK = 64


def overview_batches(product: str, level: int, chunks_per_task: int = CHUNKS_PER_TASK,
                     slots: int = 1) -> list[list[tuple[int, int]]]:
    """The output chunks of overview ``level``, at most ``chunks_per_task`` at a time (one ``build-overviews``
    task each) and split over at least ``slots`` tasks where the level has that many chunks: the pyramid is the
    last thing between a pass's last tile and its product, so a level should keep every worker busy."""
    chunks = level_chunks(product, level)
    size = max(1, min(chunks_per_task, -(-len(chunks) // max(1, slots))))
    return [chunks[i: i + size] for i in range(0, len(chunks), size)]


@task(name="build-overviews", cache_policy=NONE, retries=1, retry_delay_seconds=1)
def build_overviews(product: str, level: int, chunks: list[tuple[int, int]], arrays: list[str]) -> dict:
    """Write ``chunks`` ((row, col) indices) of overview ``level`` from level ``level - 1``."""
    t0 = time.perf_counter()
    group = open_levels(product)
    for r, c in chunks:
        build_chunk(group, level, r, c, arrays)
    return {"level": level, "chunks": len(chunks), "ms": round(1000 * (time.perf_counter() - t0), 1)}
