"""Write the run's Cloud-Optimized GeoTIFF (``process-pass`` with ``cog``), as a Prefect task on a Dask worker.

The flow calls it after the overview pyramid is built and before the STAC Item is written (the Item lists the
COG, :func:`groundstation.stac.build_item`) and before the product is marked complete. The file lies beside
the product, ``<version>.<array>.tif`` (:func:`groundstation.stac.cog_path`): ``enhanced``, or ``decoded`` for
a decoded-only product. It is :func:`groundstation.cog.export_cog`'s COG: RGB, exact CRS and transform,
``valid`` as the internal mask (lost tiles are masked), averaged overviews, validated with rio-cogeo and
renamed into place only then. Memory does not grow with the product (strips of one chunk row).

The file carries the product version and the pass uid as GDAL metadata; a resumed run whose product already
has a valid COG with those tags (an earlier run wrote it, then stopped before the product was marked complete)
keeps it as it is.
"""

from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NONE

from groundstation.cog import cog_matches, export_cog, product_grid
from groundstation.stac import cog_path

__all__ = ["COG_TAGS", "cog_array", "write_cog"]

#: GDAL metadata items the flow's COG carries (the product version and the pass it was made from).
COG_TAGS = ("GSP_VERSION", "GSP_PASS_UID")


def cog_array(arrays) -> str:
    """The mosaic the run's COG holds: ``enhanced`` when the product has it, else ``decoded``."""
    return "enhanced" if "enhanced" in arrays else "decoded"


@task(name="export-cog", cache_policy=NONE, retries=1, retry_delay_seconds=1)
def write_cog(product: str, array: str, version: str, pass_uid: str, *, reuse: bool = False) -> dict:
    """Write ``array`` of the (finished, not yet complete) ``product`` as its COG beside it; returns the path,
    whether it was ``written`` or ``kept``, size and overviews. ``reuse``: keep a valid COG of this version and
    pass that is already there (a resumed run)."""
    t0 = time.perf_counter()
    out = cog_path(product, array)
    tags = {"GSP_VERSION": version, "GSP_PASS_UID": pass_uid}
    if reuse:
        grid = product_grid(product, require_complete=False)
        if cog_matches(out, width=grid["width"], height=grid["height"], tags=tags):
            return {"path": str(out), "array": array, "action": "kept", "bytes": out.stat().st_size,
                    "ms": round(1000 * (time.perf_counter() - t0), 1)}
    res = export_cog(product, out, array=array, overviews=True, tags=tags, require_complete=False)
    return {"path": res.path, "array": array, "action": "written", "bytes": res.bytes, "overviews": res.overviews,
            "valid_fraction": res.valid_fraction, "ms": round(1000 * (time.perf_counter() - t0), 1)}
