"""The seam ratio of a finished product (:mod:`groundstation.metrics.seams`) on the flow's Dask workers.

A product's mosaics are read in row bands, one ``seam-sums`` task per band and mosaic, submitted beside the
overview pyramid's tasks (:func:`flows.delivery.deliver`): the seam ratio is then no longer seconds of the flow
process reading the whole product alone after the last tile. Only a path, a mosaic's name and two row numbers
travel; a task returns four numbers.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from groundstation.metrics.seams import product_seam_sums, row_bands

__all__ = ["SEAM_BAND_ROWS", "seam_bands", "seam_sums"]

#: Rows per ``seam-sums`` task: about 0.1 s of a worker for a 4000 px wide RGB mosaic.
SEAM_BAND_ROWS = 1024


def seam_bands(height: int, rows: int = SEAM_BAND_ROWS) -> list[tuple[int, int]]:
    """Row bands ``(y0, y1)`` that partition ``height`` rows, one ``seam-sums`` task each."""
    return row_bands(height, rows)


@task(name="seam-sums", cache_policy=NONE, retries=1, retry_delay_seconds=1)
def seam_sums(product: str, name: str, y0: int, y1: int) -> list[float]:
    """[boundary step sum, boundary pairs, interior step sum, interior pairs] of rows ``y0..y1-1`` of mosaic
    ``name`` (:func:`groundstation.metrics.seams.product_seam_sums`)."""
    return product_seam_sums(product, name, y0, y1)
