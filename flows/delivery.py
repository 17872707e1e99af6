"""Delivery: everything a run writes once the product's pixels are there, shared by ``process-pass`` and
``apply-supplement``.

In this order: the overview pyramid (level by level on the Dask workers), the COG (when asked), the metrics
Parquet, the station history, the quicklook picture, the report, the lost tiles (GeoJSON), the STAC Item, then
the complete flag
(last: a crash before it leaves an incomplete product that the next run finishes), and the Prefect artifacts
and events. :func:`pass_totals` is the one place that counts lost and decoded tiles, bytes and bpp.
"""

from __future__ import annotations

import math
import shutil
import time
from datetime import datetime

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact, update_progress_artifact

from groundstation.decode import TileOutcome
from groundstation.errors import EXIT_OK, EXIT_TILES_LOST
from groundstation.fileio import write_json_atomic, write_text_atomic
from groundstation.footprints import Grid, lost_tiles_geojson, tile_bounds
from groundstation.metrics import TILE_SCHEMA, add_tile_bounds, append_history, write_parquet
from groundstation.metrics.seams import scene_seam_ratio, stats_of
from groundstation.overviews import create_levels, open_levels
from groundstation.product import finalize, write_gdal_views
from groundstation.quicklook import image_data_uri, product_quicklook
from groundstation.stac import item_path, lost_path, write_item
from groundstation.synthesis import latent_store_path
from tasks.export import cog_array, write_cog
from tasks.overviews import build_overviews, overview_batches
from tasks.seams import seam_bands, seam_sums

from .arrivals import utc
from .events import emit_pass_events
from .identity import ProductPaths
from .report import artifact_key, render_report, tile_table_rows

__all__ = ["build_pyramid", "deliver", "pass_totals", "tiles_attr", "timeliness"]


def pass_totals(header, outcomes: dict[int, TileOutcome]) -> dict:
    """From the decode outcome of every tile: the summary's counts (``tiles_ok``, ``tiles_lost``), the lost
    tiles with their reasons (for the report and retransmission), ``bytes`` and ``bpp`` of the decoded tiles,
    the sum of their decode times and the exit code."""
    lost = [{"tile": t, "reason": o.status, "detail": o.detail} for t, o in sorted(outcomes.items())
            if o.status != "ok"]
    ok = [o for o in outcomes.values() if o.status == "ok"]
    nbytes = sum(o.bytes for o in ok)
    pixels = sum((w[1] - w[0]) * (w[3] - w[2]) for w in (header.tile_window(o.tile) for o in ok))
    return {"tiles_ok": len(ok), "tiles_lost": len(lost), "lost": lost, "bytes": nbytes,
            "bpp": nbytes * 8 / pixels if pixels else 0.0,
            "decode_ms_sum": round(sum(o.decode_ms for o in ok if not math.isnan(o.decode_ms)), 1),
            "exit_code": EXIT_TILES_LOST if lost else EXIT_OK}


def timeliness(header, feed, started: float, first_decoded: float | None) -> dict:
    """When the pass was acquired, when this run saw its first bytes (for a pass processed while it arrived),
    its last byte (the file's last change), the run's start, the first tile decoded; :func:`deliver` adds
    when the product was complete and the latency from the last byte to it."""
    return {"acquisition_time": header.acquisition_time, "header_seen": feed.timeline.get("header_seen"),
            "last_byte": feed.timeline.get("last_byte"), "run_started": utc(started),
            "first_tile_decoded": utc(first_decoded) if first_decoded else None,
            "product_complete": None, "latency_s": None}


def _with_timeliness(passes_df, when: dict | None):
    """The history rows with the run's timeliness (the same for every product of the run)."""
    if not when:
        return passes_df
    import pandas as pd

    def ts(v):
        return pd.Timestamp(v).tz_convert("UTC") if v else pd.NaT

    return passes_df.assign(acquired_at=ts(when.get("acquisition_time")), last_byte_at=ts(when.get("last_byte")),
                            first_tile_decoded_at=ts(when.get("first_tile_decoded")),
                            complete_at=ts(when.get("product_complete")), latency_s=when.get("latency_s"))


def tiles_attr(outcomes: dict[int, TileOutcome]) -> dict:
    """The product's ``gsp_tiles`` attribute: status, bytes and decode time per tile."""
    return {str(t): {"status": o.status, "bytes": o.bytes,
                     "decode_ms": None if math.isnan(o.decode_ms) else round(o.decode_ms, 1)}
            for t, o in sorted(outcomes.items())}


def _quicklook(product: str, header, lost: list[dict], log) -> str | None:
    """The product's quicklook (:func:`groundstation.quicklook.product_quicklook`: coordinates, scale bar, tile
    grid, lost tiles) beside it; None, with a warning, when it cannot be drawn (a picture never fails a run)."""
    try:
        return str(product_quicklook(product, lost=[d["tile"] for d in lost]).path)
    except Exception as exc:  # noqa: BLE001 - the product is what matters
        log.warning("Pass %s: no quicklook (%s: %s)", header.pass_id, type(exc).__name__, exc)
        return None


def build_pyramid(product: str, arrays, slots: int = 1) -> list[dict]:
    """The product's overview levels, each filled by ``build-overviews`` tasks on the flow's task runner (a level
    spread over ``slots`` tasks, the cluster's threads) once the level below is complete; then the GDAL views
    that use them. Returns the levels (``multiscales``)."""
    levels = create_levels(product, arrays)
    names = [a for a in arrays if a in open_levels(product, "r")]
    for lv in levels[1:]:
        futures = [build_overviews.submit(str(product), lv["level"], chunks, names)
                   for chunks in overview_batches(product, lv["level"], slots=slots)]
        for f in futures:
            f.result()  # raises if a batch failed: the product stays incomplete, a rerun rebuilds the pyramid
    write_gdal_views(product, [lv["path"] for lv in levels[1:]])  # GDAL/QGIS use the levels when zoomed out
    return levels


def deliver(paths: ProductPaths, header, version: str, arrays: tuple[str, ...], summary: dict, tiles_df,
            passes_df, perceptual: str | None, outcomes: dict[int, TileOutcome], *, cog: bool,
            reuse_cog: bool, t_start: float, progress_id=None, extra_attrs: dict | None = None) -> dict:
    """Write and publish a finished product (see the module docstring); ``summary`` holds :func:`pass_totals`.
    Returns ``summary`` completed with the paths written."""
    log = get_run_logger()
    product = str(paths.product)
    lost = summary["lost"]
    steps: dict[str, float] = {}  # seconds per delivery step: what a product waits for after its last tile
    clock = [time.perf_counter()]

    def step(name: str) -> None:
        now = time.perf_counter()
        steps[name] = round(now - clock[0], 2)
        clock[0] = now

    slots = int((summary.get("cluster") or {}).get("threads") or 1)
    # seams: the step across codec-tile boundaries over the step inside tiles (1: none), summed in row bands on
    # the workers while they build the overview pyramid
    seams = {name: [seam_sums.submit(product, name, y0, y1) for y0, y1 in seam_bands(header.scene.height)]
             for name in arrays}
    summary["overviews"] = [lv["path"] for lv in build_pyramid(product, arrays, slots)[1:]]
    summary["seam_ratio"] = {k: round(stats_of([f.result() for f in futures]).ratio, 3)
                             for k, futures in seams.items()}
    step("overviews_and_seams")
    summary["cog"] = None
    if cog:  # before the STAC Item, which lists the COG it finds beside the product
        made = write_cog.submit(product, cog_array(arrays), version, header.pass_uid, reuse=reuse_cog).result()
        summary["cog"] = made["path"]
        log.info("COG of %s %s: %s", made["array"], "kept (a valid one of this version was there)"
                 if made["action"] == "kept" else "written", made["path"])
        step("cog")
    if summary.get("reference"):  # the source's ratio on the same grid, what the products are judged against
        summary["seam_ratio"]["source"] = round(scene_seam_ratio(summary["reference"], header.tiling.tile_size,
                                                                 header.bands), 3)
        step("source_seams")
    passes_df = passes_df.assign(seam_ratio=passes_df["product"].map(summary["seam_ratio"]),
                                 seam_ratio_source=summary["seam_ratio"].get("source"))
    grid = Grid.from_header(header)
    tiles_df = add_tile_bounds(tiles_df, tile_bounds(grid))
    summary["lost_geojson"] = str(lost_path(paths.product)) if lost else None
    summary["stac_item"] = str(item_path(paths.product))
    write_parquet(tiles_df, paths.metrics, schema=TILE_SCHEMA,
                  metadata={"pass_id": header.pass_id, "product": str(paths.product), "product_version": version,
                            **({"perceptual": perceptual} if perceptual else {})})
    step("metrics")
    summary["quicklook"] = _quicklook(product, header, lost, log)
    step("quicklook")
    when = summary.get("timeliness")
    if when is not None:  # the product is complete once the flag below is written: tens of ms from now
        now = time.time()
        when["product_complete"] = utc(now)
        if when.get("last_byte"):
            when["latency_s"] = round(now - datetime.fromisoformat(when["last_byte"]).timestamp(), 2)
    append_history(_with_timeliness(passes_df, summary.get("timeliness")), paths.history)
    step("history")
    summary["timings"]["delivery_s"] = steps  # the report, STAC Item and flag follow (well under a second)
    summary["timings"]["total_s"] = round(time.perf_counter() - t_start, 2)
    report = render_report(summary, passes_df, perceptual)
    write_text_atomic(paths.report, report)
    if lost:
        write_json_atomic(lost_path(paths.product), lost_tiles_geojson(grid, lost, pass_id=header.pass_id,
                                                                       pass_uid=header.pass_uid))
    else:
        lost_path(paths.product).unlink(missing_ok=True)
    write_item(paths.product, summary=summary, catalog_root=paths.history.parent)
    finalize(paths.product, {**(extra_attrs or {}), "gsp_summary": summary, "gsp_tiles": tiles_attr(outcomes)})
    step("report_stac_flag")
    log.info("Pass %s delivered in %.1f s after its last tile: %s", header.pass_id, sum(steps.values()),
             ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))
    shutil.rmtree(paths.state, ignore_errors=True)
    if not lost:  # mosaic decoding's latents: kept only for a supplement of lost tiles to re-synthesise from
        shutil.rmtree(latent_store_path(paths.product), ignore_errors=True)

    # ---- publish
    if progress_id is not None:
        update_progress_artifact(progress_id, 100.0)
    create_table_artifact(tile_table_rows(tiles_df), key=artifact_key(header.pass_id, "tiles"),
                          description=f"Pass {header.pass_id}: metrics per tile and product (the version and the "
                          "totals are in the report)")
    # the report with its picture inside (a data URI: the UI shows it; a path on the station's disk would not load)
    picture = image_data_uri(summary["quicklook"]) if summary["quicklook"] else None
    create_markdown_artifact(render_report(summary, passes_df, perceptual, quicklook_src=picture) if picture
                             else report, key=artifact_key(header.pass_id, "report"),
                             description=f"Pass {header.pass_id}: report")
    if lost:
        log.warning("Pass %s: %d of %d tiles lost (masked as nodata); ask for retransmission of tiles %s",
                    header.pass_id, len(lost), header.tiling.n_tiles, [d["tile"] for d in lost])
    emit_pass_events(summary, passes_df)  # gsp.pass.tiles-lost (when tiles were lost), gsp.product.complete
    log.info("Pass %s done in %.1f s: product %s, metrics %s, report %s%s", header.pass_id,
             summary["timings"]["total_s"], paths.product, paths.metrics, paths.report,
             f", COG {summary['cog']}" if summary["cog"] else "")
    return summary
