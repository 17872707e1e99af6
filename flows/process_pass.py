"""``process-pass``: one pass container -> versioned, georeferenced Zarr product, metrics table and report.

Steps (the flow is the only place that knows their order)::

    validate-pass          scan the container once: header, where each intact record lies, what is lost
    plan                   decode batches (tiles with a record), enhance batches (one halo window per tile),
                           evaluate batches (with --reference); done markers of an earlier run are reused
    decode-tiles      x N  in Dask workers: ELIC -> ``decoded`` + ``valid`` chunks          (CPU)
    enhance-windows   x M  in Dask workers: INN-RSIC inverse -> ``enhanced`` cores          (GPU slot if any)
    evaluate-tiles    x K  in Dask workers: PSNR / MS-SSIM / perceptual vs the reference    (GPU slot if any)
    build-overviews   x L  in Dask workers: the product's overview pyramid, level by level
    export-cog             in a Dask worker, with ``cog``: the product's COG (kept when a resumed run finds a
                           valid one of this version)
    write                  metrics Parquet, station history, markdown report, STAC Item; product marked
                           complete last
    publish                Prefect artifacts: progress (updated while running), tiles table, report

Outputs, next to earlier versions of the same pass::

    OUT_DIR/<pass_id>/<version>.zarr              the product (gsp_status 'complete' once finished)
    OUT_DIR/<pass_id>/<version>.metrics.parquet   one row per (tile, product), groundstation.metrics schema
    OUT_DIR/<pass_id>/<version>.report.md         the report
    OUT_DIR/<pass_id>/<version>.enhanced.tif      with ``cog``: a Cloud-Optimized GeoTIFF (``.decoded.tif`` for
                                                  a decoded-only product), in the STAC Item
    OUT_DIR/<pass_id>/<version>.state/            done markers while a run is unfinished (removed at the end)
    OUT_DIR/<pass_id>/<version>.lock              flock held while a run works on this product
    OUT_DIR/history.parquet                       one row per (pass, product, version), appended per run

The run's identity (models, operating point, version, paths) comes from :func:`flows.identity.resolve_run`, the
batches run through the shared stages (:mod:`flows.stages`), and what is written at the end is
:func:`flows.delivery.deliver`'s, the same as for a supplement. A complete product of the same version returns at
once without touching anything.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from groundstation import __version__
from groundstation.config import load_station
from groundstation.errors import ConfigError, ProductError
from groundstation.metrics import summarize_passes, tiles_frame
from groundstation.product import create_product, status
from groundstation.stac import cog_path
from groundstation.synthesis import latent_store_path
from tasks.plan import PassInfo, choose_core_tiles, validate_pass

from .cluster import cluster_info, make_task_runner, warm_workers
from .cluster import dask_address as cluster_address
from .delivery import deliver, pass_totals
from .arrivals import arriving_path, final_name, open_feed
from .delivery import timeliness
from .identity import ProductPaths, RunPlan, check_reference, pass_header, preflight, refuse_supplement, resolve_run
from .names import pass_run_name
from .options import ProcessOptions
from .report import RunProgress
from .runtime import prefect_api, start_api_early
from .scheduler import STOP_AFTER_ENV, hook_value
from .stages import TileStages, ensure_latent_store, product_lock

__all__ = ["process_pass", "run_process_pass"]


def _existing(paths: ProductPaths, header) -> dict | None:
    """The stored summary of a complete product of this pass, None when there is none; refuses another pass's."""
    import zarr

    st = status(paths.product)
    if st is None:
        return None
    attrs = dict(zarr.open_group(str(paths.product), mode="r").attrs)
    uid = attrs.get("gsp_run", {}).get("pass_uid")
    if uid != header.pass_uid:
        raise ProductError(
            f"{paths.product} belongs to another pass with id {header.pass_id!r} (uid {uid}, this pass has "
            f"{header.pass_uid}); move that product away or give this pass another id")
    return attrs.get("gsp_summary") if st == "complete" else None


@flow(name="process-pass", task_runner=make_task_runner(), validate_parameters=True, flow_run_name=pass_run_name)
def process_pass(pass_path: str, out_dir: str, options: ProcessOptions | None = None) -> dict:
    """Decode, enhance and evaluate one pass into a versioned Zarr product; returns the run summary (JSON-able).

    ``pass_path`` may name a container still being written (``NAME.part``, the inbox protocol): the run then
    works while it arrives (:mod:`flows.arrivals`) and finishes once the writer renames it; the product is
    the one the finished file gives. Idempotent: a complete product of the same pass and version returns its
    stored summary at once. Resumable: work whose done marker exists is not redone. Tiles whose decode batch
    fails (an error or a worker that died) are reported as ``decode_error``; a failed enhance/evaluate batch
    leaves the product incomplete and the flow failed, and the next run redoes only that batch.
    """
    log = get_run_logger()
    t_start = time.perf_counter()
    arriving = arriving_path(pass_path)
    if arriving is None:
        pass_path = str(final_name(pass_path))  # a .part renamed meanwhile: the finished file
        info: PassInfo | None = validate_pass(pass_path)
        header = info.header
    else:
        info, header = None, pass_header(arriving)
    refuse_supplement(header, pass_path)
    plan = resolve_run(header, options, out_dir, say=log)
    check_reference(plan.options.reference, header)
    paths = plan.paths
    done = _existing(paths, header)
    if done is not None:
        log.info("Pass %s: product %s is already complete; nothing to do", header.pass_id, paths.product)
        cog = cog_path(paths.product, plan.arrays[-1])
        if plan.options.cog and not cog.is_file():  # a complete product is left as it is: say how to add the COG
            log.warning("Pass %s: the complete product has no COG; write one with `gsp export %s --cog %s`",
                        header.pass_id, paths.product, cog)
        return {**done, "status": "already-complete"}
    if info is not None:
        log.info("Pass %s (acquired %s): %d of %d tiles have an intact record%s; writing %s",
                 header.pass_id, header.acquisition_time, len(info.records), info.n_tiles,
                 "" if info.trailer else " (no end-of-pass trailer: the downlink may have been cut short)",
                 paths.product)
    else:
        log.info("Pass %s (acquired %s) is arriving: %d tiles expected; processing as they come into %s",
                 header.pass_id, header.acquisition_time, header.tiling.n_tiles, paths.product)
    with product_lock(paths, "wait for it to finish (the lock is released when that process ends)"):
        done = _existing(paths, header)  # finished by another run while we waited for the lock
        if done is not None:
            return {**done, "status": "already-complete"}
        return _run(pass_path, info, plan, t_start)


def _prepare_product(plan: RunPlan) -> bool:
    """Create the product (and, in decode mode ``mosaic``, its latent store), or check that an incomplete one
    is ours to resume; True when resuming."""
    paths = plan.paths
    if paths.product.exists():
        import zarr

        attrs = dict(zarr.open_group(str(paths.product), mode="r").attrs)
        if attrs.get("gsp_run", {}).get("version") != plan.version:
            raise ProductError(f"{paths.product}: an incomplete product of another version; move it away")
        ensure_latent_store(plan)
        return True
    shutil.rmtree(paths.state, ignore_errors=True)  # markers without their product mean nothing
    shutil.rmtree(latent_store_path(paths.product), ignore_errors=True)  # latents without their product too
    paths.folder.mkdir(parents=True, exist_ok=True)
    run_attrs = {"pass_uid": plan.header.pass_uid, "version": plan.version, "options": plan.options.model_dump()}
    create_product(paths.product, plan.header, arrays=plan.arrays,
                   attrs={"gsp_pass": plan.header.model_dump(), "gsp_run": run_attrs})
    ensure_latent_store(plan)
    return False



def _run(pass_path, info: PassInfo | None, plan: RunPlan, t_start: float) -> dict:
    log = get_run_logger()
    header, opts, paths = plan.header, plan.options, plan.paths
    started = time.time()

    # ---- where it runs (checked before anything is written)
    cluster = cluster_info()
    if opts.device == "cuda" and cluster["gpus"] == 0:
        raise ConfigError("--device cuda, but the Dask cluster offers no GPU resource; start GPU workers with "
                          "`dask worker SCHEDULER --resources GPU=1` (docs/operations.md) or use --device auto")
    # ---- the models, loaded into every worker at once before the first batch (each worker loads them once;
    # a checkpoint that does not load fails the run here, before anything is written)
    codec, enhancer = plan.warm_models
    if opts.device != "cpu" and cluster["gpus"] > 0:
        enhancer = None  # enhanced on a GPU: the first batch loads it there
    if cluster["scheduler"]:
        with warm_workers(cluster["scheduler"], codec, enhancer) as warming:
            warming.wait(raise_operator_errors=True)
    resuming = _prepare_product(plan)
    downlink = load_station().downlink
    feed = open_feed(pass_path, paths.state / "arriving.gsp", info, downlink.stale_after_s)

    # ---- the stages, fed as records arrive (all at once for a finished file)
    core_tiles = opts.core_tiles or choose_core_tiles(header, opts.halo, max(1, cluster["threads"]),
                                                      last_rows=2 if opts.decode_mode == "mosaic" else 1)
    stages = TileStages(plan, feed.path, {}, use_gpu=opts.device != "cpu" and cluster["gpus"] > 0,
                        core_tiles=core_tiles, max_in_flight=max(2, 2 * cluster["threads"] or 4),
                        stop_after=int(hook_value(STOP_AFTER_ENV)) if hook_value(STOP_AFTER_ENV) else None)
    log.info("Dask cluster at %s: %d workers, %d threads, %d GPU slots; enhancement cores of %dx%d tiles (%d "
             "windows)%s", cluster["scheduler"], cluster["workers"], cluster["threads"], cluster["gpus"], core_tiles,
             core_tiles, len(stages.windows),
             "; resuming an unfinished run (work already done is kept)" if resuming else "")
    progress = RunProgress(header.pass_id, header.tiling.n_tiles, stages=len(plan.arrays), log=log)
    try:
        ran = stages.stream(feed, on_tiles=progress.tiles, window_s=downlink.batch_window_s)
    finally:
        progress.close()
    info = feed.info
    if resuming:
        log.info("Resumed: %d batches were already done and kept", ran["skipped"])

    # ---- collect and deliver
    tiles_df = tiles_frame([stages.row(t, name) for t in range(header.tiling.n_tiles) for name in plan.arrays])
    passes_df = summarize_passes(tiles_df)
    totals = pass_totals(header, stages.outcomes)
    enh, s = plan.enhancer, header.scene
    summary = {
        "status": "complete",
        "pass_id": header.pass_id, "pass_uid": header.pass_uid, "pass": str(final_name(pass_path)),
        "acquisition_time": header.acquisition_time,
        "scene": f"{s.width}x{s.height} px", "tile_size": header.tiling.tile_size,
        "product": str(paths.product), "metrics": str(paths.metrics), "report": str(paths.report),
        "version": plan.version, "tiles_total": info.n_tiles,
        **{k: totals[k] for k in ("tiles_ok", "tiles_lost", "lost", "bytes", "bpp")},
        "codec": {"name": plan.codec.name, "sha256": plan.codec.sha256, **plan.codec.info},
        "enhancer": ({"name": enh.name, "sha256": enh.sha256, "seed": opts.seed, "temperature": opts.temperature,
                      "strength": opts.strength, "halo": opts.halo, "core": header.tiling.tile_size * core_tiles,
                      **enh.info} if enh else None),
        "decode": plan.decode_provenance,
        "reference": opts.reference, "perceptual": stages.perceptual,
        "devices": stages.device_summary(),
        "cluster": dict(cluster),
        "batches": {"total": ran["batches"], "run": len(stages.ran), "skipped": ran["skipped"],
                    "failed": len(stages.failures)},
        "timings": {"total_s": None, "decode_ms_sum": totals["decode_ms_sum"],
                    "enhance_ms_sum": round(float(tiles_df.loc[tiles_df["product"] == "enhanced", "enhance_ms"]
                                                  .sum(skipna=True)), 1) if enh else 0.0},
        "timeliness": timeliness(header, feed, started, ran["first_decoded"]),
        "software": f"groundstation {__version__}",
        "flow_run_id": str(flow_run.id),
        "notes": list(info.notes) + ([f"processed while arriving; the pass ended: {feed.ended_by}"]
                                     if getattr(feed, "ended_by", "") else []),
        "exit_code": totals["exit_code"],
    }
    return deliver(paths, header, plan.version, plan.arrays, summary, tiles_df, passes_df, stages.perceptual,
                   stages.outcomes, cog=opts.cog, reuse_cog=resuming, t_start=t_start, progress_id=progress.id)


# ------------------------------------------------------------------------------------------------ entry point
def run_process_pass(pass_path: str | Path, out_dir: str | Path, options: ProcessOptions | None = None, *,
                     dask_address: str | None = None, n_workers: int = 2) -> dict:
    """Run :func:`process_pass` on a new LocalCluster (``n_workers`` processes) or on ``dask_address``.

    Start-up is overlapped: Prefect's ephemeral API (when ``PREFECT_API_URL`` is not set, see
    flows/runtime.py) starts in the background while the pass and models are checked; the flow loads the
    models into the workers before its first batch. GSPErrors (bad pass, wrong checkpoint, missing
    enhancer...) propagate with their message.
    """
    opts = options or ProcessOptions()
    start_api_early()
    preflight(pass_path, opts)
    with prefect_api(), cluster_address(dask_address, n_workers) as address:
        runner = make_task_runner(address)
        return process_pass.with_options(task_runner=runner)(str(pass_path), str(out_dir), opts)
