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

``version`` names the models and the parameters that change the pixels (:func:`product_version`), so
reprocessing with another enhancer writes a new product beside the old one, and the same models again find
the product complete and return at once without touching anything.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import flow, get_run_logger
from tqdm import tqdm
from prefect.runtime import flow_run
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)

from groundstation import __version__
from groundstation.fileio import write_text_atomic
from groundstation.errors import CheckpointError, ConfigError, ProductError, SceneError
from groundstation.metrics import TILE_SCHEMA, TileMetrics, append_history, summarize_passes, tiles_frame, \
    write_parquet
from groundstation.product import create_product, finalize, status
from groundstation.registry import resolve_model
from groundstation.fileio import write_json_atomic
from groundstation.footprints import Grid, lost_tiles_geojson, tile_bounds
from groundstation.metrics import add_tile_bounds
from groundstation.stac import cog_path, item_path, lost_path, write_item
from tasks.export import cog_array, write_cog
from tasks.overviews import build_pyramid
from tasks.decode import decode_tiles
from tasks.enhance import enhance_windows
from tasks.evaluate import evaluate_tiles
from tasks.plan import Batch, PassInfo, choose_core_tiles, enhancement_windows, validate_pass, plan_decode, plan_enhance, \
    plan_evaluate
from tasks.state import ExclusiveLock, LockHeld, read_markers

from .cluster import cluster_info, gpu_annotation, make_task_runner, warm_workers
from .cluster import dask_address as cluster_address
from .runtime import prefect_api, start_api_early
from .scheduler import BatchScheduler, RunInterrupted, hook_value
from .options import ProcessOptions
from .names import batch_task_name, pass_run_name
from .events import emit_pass_events
from .report import artifact_key, render_report, table_rows

__all__ = ["EXIT_OK", "EXIT_TILES_LOST", "ModelRef", "ProcessOptions", "ProductPaths", "RunInterrupted",
           "deliver", "process_pass", "product_paths", "product_version", "resolve_models", "run_process_pass"]

EXIT_OK = 0
EXIT_TILES_LOST = 3

#: Test hooks (environment of the flow process): stop after N batches (a run "killed" half way), and make
#: the worker decoding these tiles die with SIGSEGV (a crash in native code).
STOP_AFTER_ENV = "GSP_TEST_STOP_AFTER_BATCHES"
CRASH_TILES_ENV = "GSP_TEST_CRASH_TILES"


@dataclass(frozen=True)
class ModelRef:
    name: str
    path: str
    sha256: str
    info: dict  # architecture / tables, for provenance



def resolve_models(header, opts: ProcessOptions) -> tuple[ModelRef, ModelRef | None]:
    """Codec and enhancer checkpoints, loaded once here so that a wrong or broken file fails before the run."""
    from enhancer.checkpoint import load_enhancer
    from groundstation.codec import load_codec

    name, path, expected, _ = resolve_model(opts.codec or header.codec.name, "codec")
    if expected and expected != header.codec.sha256:
        raise CheckpointError(
            f"codec {name!r} in the registry has sha256 {expected[:16]}..., the pass was encoded with "
            f"{header.codec.sha256[:16]}... ({header.codec.name}); pass --codec with the matching checkpoint")
    loaded = load_codec(path, header.codec.sha256)
    codec = ModelRef(name, str(path), loaded.sha256, {"arch": loaded.arch.as_dict(), "tables": loaded.tables})
    if not opts.enhance:
        return codec, None
    ename, epath, esha = _enhancer_checkpoint(opts)
    _, config, digest = load_enhancer(epath, esha)
    enh = ModelRef(ename, str(epath), digest, {"config": asdict(config), "receptive_radius": config.receptive_radius})
    return codec, enh


#: Temperature of an enhancer that is no rate point's (a checkpoint from elsewhere): the deterministic mean.
FALLBACK_TEMPERATURE = 0.0


def with_operating_point(opts: ProcessOptions, enh: ModelRef | None) -> ProcessOptions:
    """``opts`` with its temperature decided: the one given, else the registry's operating point for this
    enhancer's rate point (chosen on a validation subset, docs/evaluation.md), else :data:`FALLBACK_TEMPERATURE`."""
    if opts.temperature is not None:
        return opts
    log = logging.getLogger(__name__)
    point = None
    if enh is not None:
        from groundstation.registry import load_registry

        point = load_registry().operating_point(enh.sha256)
    if point is None:
        if enh is not None:
            log.info("enhancer %s is no rate point of the registry: temperature %g (the deterministic mean)",
                     enh.name, FALLBACK_TEMPERATURE)
        return opts.model_copy(update={"temperature": FALLBACK_TEMPERATURE})
    log.info("temperature %g: the operating point of rate point %s", point[1], point[0])
    return opts.model_copy(update={"temperature": point[1]})


def _enhancer_checkpoint(opts: ProcessOptions) -> tuple[str, Path, str | None]:
    """(name, checkpoint, expected sha256) of the enhancer to use; a clear error when there is none."""
    try:
        name, path, sha, _ = resolve_model(opts.enhancer, "enhancer")
    except ConfigError as exc:
        if opts.enhancer is None:
            raise ConfigError(
                f"no enhancer given and none found in the registry ({exc}); pass --enhancer NAME (a registry "
                "name or a checkpoint file), or --no-enhance to write a decoded-only product") from None
        raise
    return name, path, sha


def preflight(pass_path: str | Path, opts: ProcessOptions):
    """Cheap checks before anything starts (no API, no cluster): the pass header parses, the models can be
    found, the reference fits. Returns the header. The flow checks the checkpoints' contents itself."""
    from groundstation.container import PassReader

    header = PassReader(pass_path).header
    refuse_supplement(header, pass_path)
    resolve_model(opts.codec or header.codec.name, "codec")
    if opts.enhance:
        _enhancer_checkpoint(opts)
    _check_reference(opts.reference, header)
    return header


def refuse_supplement(header, pass_path) -> None:
    """A supplement (resent tiles of a pass) is applied to the pass's product, never processed as a pass."""
    if header.supplement is not None:
        raise ProductError(
            f"{Path(pass_path).name} is a supplement (tiles {', '.join(map(str, header.supplement.tiles))} of "
            f"pass {header.pass_id} resent), not a pass: apply it to the pass's product with `gsp supplement "
            f"{pass_path} --products DIR` or drop it into the inbox")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "x"


def product_version(codec: ModelRef, enhancer: ModelRef | None, opts: ProcessOptions) -> str:
    """A name for what decides the product's pixels: codec and enhancer (name + sha256 prefix), seed,
    temperature and halo (and ``-px64`` for float64 pixel synthesis). E.g.
    ``tiny-pt-1a2b3c4d__sr-demo-5e6f7a8b-s0-t1-h32``."""
    if enhancer is not None and opts.temperature is None:
        raise ValueError("the temperature must be decided (with_operating_point) before the version is named")
    base = f"{_slug(codec.name)}-{codec.sha256[:8]}" + ("-px64" if opts.synthesis == "float64" else "")
    if enhancer is None:
        return f"{base}__decoded-only"
    temp = format(opts.temperature, "g").replace(".", "p")
    return f"{base}__{_slug(enhancer.name)}-{enhancer.sha256[:8]}-s{opts.seed}-t{temp}-h{opts.halo}"


@dataclass(frozen=True)
class ProductPaths:
    folder: Path
    product: Path
    metrics: Path
    report: Path
    state: Path
    lock: Path
    history: Path


def product_paths(out_dir: str | Path, pass_id: str, version: str) -> ProductPaths:
    out = Path(out_dir)
    folder = out / _slug(pass_id)
    return ProductPaths(folder=folder, product=folder / f"{version}.zarr",
                        metrics=folder / f"{version}.metrics.parquet", report=folder / f"{version}.report.md",
                        state=folder / f"{version}.state", lock=folder / f"{version}.lock",
                        history=out / "history.parquet")


def _check_reference(reference: str | None, header) -> None:
    if reference is None:
        return
    import rasterio

    if not Path(reference).is_file():
        raise SceneError(f"--reference {reference}: no such file")
    with rasterio.open(reference) as ds:
        s = header.scene
        if (ds.width, ds.height) != (s.width, s.height):
            raise SceneError(f"--reference {reference} is {ds.width}x{ds.height} but pass {header.pass_id} is "
                             f"{s.width}x{s.height}; give the scene this pass was encoded from")
        if ds.count < max(header.bands.selection):
            raise SceneError(f"--reference {reference} has {ds.count} bands, the pass used bands "
                             f"{header.bands.selection}; give the scene this pass was encoded from")


# ------------------------------------------------------------------------------------------------ the flow
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

    Idempotent: a complete product of the same pass and version returns its stored summary at once. Resumable:
    batches whose done marker exists are not redone. Tiles whose decode batch fails (an error or a worker
    that died) are reported as ``decode_error``; a failed enhance/evaluate batch leaves the product incomplete
    and the flow failed, and the next run redoes only that batch.
    """
    opts = options or ProcessOptions()
    log = get_run_logger()
    t_start = time.perf_counter()
    info: PassInfo = validate_pass(str(pass_path))
    header = info.header
    refuse_supplement(header, pass_path)
    codec, enh = resolve_models(header, opts)
    opts = with_operating_point(opts, enh)
    _check_reference(opts.reference, header)
    version = product_version(codec, enh, opts)
    paths = product_paths(out_dir, header.pass_id, version)
    done = _existing(paths, header)
    if done is not None:
        log.info("Pass %s: product %s is already complete; nothing to do", header.pass_id, paths.product)
        cog = cog_path(paths.product, "enhanced" if enh else "decoded")
        if opts.cog and not cog.is_file():  # a complete product is left as it is: say how to add the COG
            log.warning("Pass %s: the complete product has no COG; write one with `gsp export %s --cog %s`",
                        header.pass_id, paths.product, cog)
        return {**done, "status": "already-complete"}
    log.info("Pass %s (acquired %s): %d of %d tiles have an intact record%s; writing %s",
             header.pass_id, header.acquisition_time, len(info.records), info.n_tiles,
             "" if info.trailer else " (no end-of-pass trailer: the downlink may have been cut short)",
             paths.product)
    try:
        lock = ExclusiveLock(paths.lock).acquire()
    except LockHeld as exc:
        raise ProductError(f"{paths.product} is being written by another run ({exc.holder}); wait for it to "
                           "finish (the lock is released when that process ends)") from None
    try:
        done = _existing(paths, header)  # finished by another run while we waited for the lock
        if done is not None:
            return {**done, "status": "already-complete"}
        return _run(pass_path, info, codec, enh, opts, version, paths, t_start)
    finally:
        lock.release()


def _prepare_product(paths: ProductPaths, header, version: str, arrays: tuple[str, ...], run_attrs: dict) -> bool:
    """Create the product, or check that an incomplete one is ours to resume; True when resuming."""
    if paths.product.exists():
        import zarr

        attrs = dict(zarr.open_group(str(paths.product), mode="r").attrs)
        if attrs.get("gsp_run", {}).get("version") != version:
            raise ProductError(f"{paths.product}: an incomplete product of another version; move it away")
        return True
    shutil.rmtree(paths.state, ignore_errors=True)  # markers without their product mean nothing
    paths.folder.mkdir(parents=True, exist_ok=True)
    create_product(paths.product, header, arrays=arrays, attrs={"gsp_pass": header.model_dump(), "gsp_run": run_attrs})
    return False


def _reusable(state: Path, batches: list[Batch]) -> dict[str, dict]:
    """Results of batches an earlier run finished: a marker whose tiles are exactly the planned batch's."""
    out = {}
    for stage in {b.stage for b in batches}:
        markers = read_markers(state, stage)
        for b in batches:
            m = markers.get(b.index) if b.stage == stage else None
            if m is not None and tuple(m.get("tiles", ())) == b.tiles and isinstance(m.get("result"), dict):
                out[b.key] = m["result"]
    return out


def _run(pass_path, info: PassInfo, codec: ModelRef, enh: ModelRef | None, opts: ProcessOptions, version: str,
         paths: ProductPaths, t_start: float) -> dict:
    log = get_run_logger()
    header = info.header
    arrays = ("decoded", "enhanced") if enh else ("decoded",)

    # ---- where it runs (checked before anything is written)
    cluster = cluster_info()
    if opts.device == "cuda" and cluster["gpus"] == 0:
        raise ConfigError("--device cuda, but the Dask cluster offers no GPU resource; start GPU workers with "
                          "`dask worker SCHEDULER --resources GPU=1` (see flows/README.md) or use --device auto")
    use_gpu = opts.device != "cpu" and cluster["gpus"] > 0

    run_attrs = {"pass_uid": header.pass_uid, "version": version, "options": opts.model_dump()}
    resuming = _prepare_product(paths, header, version, arrays, run_attrs)
    product, state = str(paths.product), str(paths.state)

    # ---- plan
    decode = plan_decode(list(info.records), opts.tiles_per_batch)
    core_tiles = opts.core_tiles or choose_core_tiles(header, opts.halo, max(1, cluster["threads"]))
    enhance = plan_enhance(header, opts.halo, opts.tiles_per_batch, decode, core_tiles) if enh else []
    evaluate = (plan_evaluate(list(info.records), opts.tiles_per_batch, decode + enhance)
                if opts.reference else [])
    batches = decode + enhance + evaluate
    already = _reusable(paths.state, batches) if resuming else {}
    if resuming:
        log.info("Resuming an unfinished run: %d of %d batches were already done and are kept",
                 len(already), len(batches))
    windows = enhancement_windows(header, opts.halo, core_tiles) if enh else []

    crash = tuple(int(t) for t in (hook_value(CRASH_TILES_ENV) or "").split(",") if t.strip())
    stop_after = int(hook_value(STOP_AFTER_ENV)) if hook_value(STOP_AFTER_ENV) else None
    log.info("Dask cluster: %d workers, %d threads, %d GPU slots; %d decode, %d enhance (%d windows, cores of "
             "%dx%d tiles), %d evaluate batches", cluster["workers"], cluster["threads"], cluster["gpus"],
             len(decode), len(enhance), len(windows), core_tiles, core_tiles, len(evaluate))

    key = artifact_key(header.pass_id, "progress")
    progress_id = create_progress_artifact(0.0, key=key, description=f"Pass {header.pass_id}: batches done")
    last = [0.0]
    # a console bar for the operator who started the run in a terminal (served runs have no terminal)
    bar = tqdm(total=len(batches), initial=len(already), desc=f"pass {header.pass_id}", unit="batch",
               disable=not sys.stderr.isatty(), leave=False)

    def on_progress(n_done: int, total: int) -> None:
        bar.update(n_done - bar.n)
        pct = 100.0 * n_done / total if total else 100.0
        if pct - last[0] >= 5.0 or n_done == total:
            update_progress_artifact(progress_id, pct)
            last[0] = pct

    def on_failure(b: Batch, why: str) -> None:
        log.error("%s failed (%s)", b.key, why)
        if b.stage == "decode":  # its tiles are lost: none of their pixels may look valid to the enhancer
            _mask_tiles(product, header, b.tiles, arrays)
            log.error("tiles %s are reported lost (decode_error) and masked", list(b.tiles))

    sched = BatchScheduler(submit=lambda b: None, max_in_flight=max(2, 2 * cluster["threads"] or 4),
                           on_progress=on_progress, on_failure=on_failure, stop_after=stop_after)

    def decode_outcome(tile: int) -> dict | None:
        for b in decode:
            if tile in b.tiles and b.key in sched.results:
                return next((o for o in sched.results[b.key]["outcomes"] if o["tile"] == tile), None)
        return None

    def enhance_result(tile: int) -> tuple[dict | None, str]:
        for b in enhance:
            if tile in b.tiles and b.key in sched.results:
                r = sched.results[b.key]
                return next((t for t in r["tiles"] if t["tile"] == tile), None), r.get("device", "")
        return None, ""

    def submit(b: Batch):
        if b.stage == "decode":
            return decode_tiles.with_options(task_run_name=batch_task_name(decode_tiles.name, b.index)).submit(
                str(pass_path), product, state, b.index, {t: info.records[t] for t in b.tiles}, codec.path,
                codec.sha256, synthesis=opts.synthesis, crash_tiles=crash, use_gpu=use_gpu)
        if b.stage == "enhance":
            wins = [(_box(windows[w].core), _box(windows[w].read)) for w in b.windows]
            covered = [(t, header.tile_window(t)) for t in b.tiles]
            with gpu_annotation(use_gpu):
                name = batch_task_name(enhance_windows.name, b.index)
                return enhance_windows.with_options(task_run_name=name).submit(
                    product, state, b.index, wins, covered, enh.path, enh.sha256, seed=opts.seed,
                    temperature=opts.temperature, use_gpu=use_gpu, threads=opts.threads)
        tiles = []
        for t in b.tiles:
            o = decode_outcome(t)
            if o is None or o["status"] != "ok":
                continue
            e, edev = enhance_result(t) if enh else (None, "")
            tiles.append({"tile": t, "window": header.tile_window(t), "bytes": o["bytes"],
                          "decode_ms": o["decode_ms"], "decode_device": "cpu",
                          "enhance_ms": e["enhance_ms"] if e else math.nan, "enhance_device": edev})
        with gpu_annotation(use_gpu):
            return evaluate_tiles.with_options(task_run_name=batch_task_name(evaluate_tiles.name, b.index)).submit(
                product, opts.reference, state, b.index, header.bands.model_dump(), tiles,
                pass_id=header.pass_id, product_version=version, products=arrays, use_gpu=use_gpu,
                threads=opts.threads)

    sched.submit = submit
    try:
        sched.run(batches, already)
    finally:
        bar.close()

    # ---- collect
    failed_later = {k: v for k, v in sched.failures.items() if not k.startswith("decode")}
    if failed_later:
        raise ProductError(f"{len(failed_later)} batches failed ({', '.join(sorted(failed_later))}); "
                           f"{paths.product} stays incomplete: run again to redo only those batches")
    outcomes: dict[int, dict] = {t: {"tile": t, "status": r, "detail": d, "bytes": 0, "decode_ms": math.nan}
                                 for t, (r, d) in info.lost.items()}
    for b in decode:
        if b.key in sched.results:
            for o in sched.results[b.key]["outcomes"]:
                outcomes[o["tile"]] = o
        else:
            why = sched.failures.get(b.key, "not run")
            for t in b.tiles:
                outcomes[t] = {"tile": t, "status": "decode_error", "bytes": 0, "decode_ms": math.nan,
                               "detail": f"the batch failed (a worker crash is retried by Dask first): {why}"}
    rows, perceptual = _metrics_rows(header, version, arrays, outcomes, enhance_result, evaluate, sched)
    tiles_df = tiles_frame(rows)
    passes_df = summarize_passes(tiles_df)

    lost, ok, nbytes, pixels = outcome_totals(header, outcomes)
    devices = {stage: ",".join(sorted({r.get("device", "") for k, r in sched.results.items()
                                       if k.startswith(stage)} - {""})) or ("cpu" if stage == "decode" else "")
               for stage in ("decode", "enhance")}  # decode: where g_s ran (entropy decoding is always CPU)
    notes = list(info.notes)
    s = header.scene
    summary = {
        "status": "complete",
        "pass_id": header.pass_id, "pass_uid": header.pass_uid, "pass": str(pass_path),
        "acquisition_time": header.acquisition_time,
        "scene": f"{s.width}x{s.height} px", "tile_size": header.tiling.tile_size,
        "product": str(paths.product), "metrics": str(paths.metrics), "report": str(paths.report),
        "version": version,
        "tiles_total": info.n_tiles, "tiles_ok": len(ok), "tiles_lost": len(lost), "lost": lost,
        "bytes": nbytes, "bpp": nbytes * 8 / pixels if pixels else 0.0,
        "codec": {"name": codec.name, "sha256": codec.sha256, **codec.info},
        "enhancer": ({"name": enh.name, "sha256": enh.sha256, "seed": opts.seed, "temperature": opts.temperature,
                      "halo": opts.halo, "core": header.tiling.tile_size * core_tiles, **enh.info} if enh else None),
        "reference": opts.reference, "perceptual": perceptual,
        "devices": devices,
        "cluster": {k: v for k, v in cluster.items()},
        "batches": {"total": len(batches), "run": len(sched.ran), "skipped": len(already),
                    "failed": len(sched.failures)},
        "timings": {"total_s": None,
                    "decode_ms_sum": round(sum(o["decode_ms"] for o in ok), 1),
                    "enhance_ms_sum": round(float(tiles_df.loc[tiles_df["product"] == "enhanced", "enhance_ms"]
                                                  .sum(skipna=True)), 1) if enh else 0.0},
        "software": f"groundstation {__version__}",
        "flow_run_id": str(flow_run.id),
        "notes": notes,
        "exit_code": EXIT_TILES_LOST if lost else EXIT_OK,
    }

    return deliver(paths, header, version, arrays, summary, tiles_df, passes_df, perceptual, outcomes, lost,
                   cog=opts.cog, reuse_cog=resuming, t_start=t_start, progress_id=progress_id)


def deliver(paths: ProductPaths, header, version: str, arrays: tuple[str, ...], summary: dict, tiles_df,
            passes_df, perceptual: str | None, outcomes: dict[int, dict], lost: list[dict], *, cog: bool,
            reuse_cog: bool, t_start: float, progress_id=None, extra_attrs: dict | None = None) -> dict:
    """Everything a run writes once the product's pixels are there, in this order: overviews, COG (``cog``),
    metrics Parquet, station history, report, lost tiles (GeoJSON), STAC Item, then the complete flag (last,
    with ``extra_attrs``), and the Prefect artifacts and events. Shared by ``process-pass`` and
    ``apply-supplement`` (flows/supplement.py). Returns ``summary`` (completed with the paths written)."""
    log = get_run_logger()
    product = str(paths.product)
    # ---- write: overviews, COG, metrics, history, report, lost tiles (GeoJSON), STAC item, the complete flag (last)
    summary["overviews"] = [lv["path"] for lv in build_pyramid(product, arrays)[1:]]  # Dask tasks, level by level
    summary["cog"] = None
    if cog:  # before the STAC Item, which lists the COG it finds beside the product
        made = write_cog.submit(product, cog_array(arrays), version, header.pass_uid, reuse=reuse_cog).result()
        summary["cog"] = made["path"]
        log.info("COG of %s %s: %s", made["array"], "kept (a valid one of this version was there)"
                 if made["action"] == "kept" else "written", made["path"])
    grid = Grid.from_header(header)
    tiles_df = add_tile_bounds(tiles_df, tile_bounds(grid))
    summary["lost_geojson"] = str(lost_path(paths.product)) if lost else None
    summary["stac_item"] = str(item_path(paths.product))
    write_parquet(tiles_df, paths.metrics, schema=TILE_SCHEMA,
                  metadata={"pass_id": header.pass_id, "product": str(paths.product), "product_version": version,
                            **({"perceptual": perceptual} if perceptual else {})})
    append_history(passes_df, paths.history)
    summary["timings"]["total_s"] = round(time.perf_counter() - t_start, 2)
    report = render_report(summary, passes_df, perceptual)
    write_text_atomic(paths.report, report)
    if lost:
        write_json_atomic(lost_path(paths.product), lost_tiles_geojson(grid, lost, pass_id=header.pass_id,
                                                                       pass_uid=header.pass_uid))
    else:
        lost_path(paths.product).unlink(missing_ok=True)
    write_item(paths.product, summary=summary, catalog_root=paths.history.parent)
    finalize(paths.product, {
        **(extra_attrs or {}),
        "gsp_summary": summary,
        "gsp_tiles": {str(t): {"status": o["status"], "bytes": o["bytes"],
                               "decode_ms": None if math.isnan(o["decode_ms"]) else round(o["decode_ms"], 1)}
                      for t, o in sorted(outcomes.items())},
    })
    shutil.rmtree(paths.state, ignore_errors=True)

    # ---- publish
    if progress_id is not None:
        update_progress_artifact(progress_id, 100.0)
    create_table_artifact(table_rows(tiles_df), key=artifact_key(header.pass_id, "tiles"),
                          description=f"Pass {header.pass_id}, product {version}: metrics per tile and product")
    create_markdown_artifact(report, key=artifact_key(header.pass_id, "report"),
                             description=f"Pass {header.pass_id}: report")
    if lost:
        log.warning("Pass %s: %d of %d tiles lost (masked as nodata); ask for retransmission of tiles %s",
                    header.pass_id, len(lost), header.tiling.n_tiles, [d["tile"] for d in lost])
    emit_pass_events(summary, passes_df)  # gsp.pass.tiles-lost (when tiles were lost), gsp.product.complete
    log.info("Pass %s done in %.1f s: product %s, metrics %s, report %s%s", header.pass_id,
             summary["timings"]["total_s"], paths.product, paths.metrics, paths.report,
             f", COG {summary['cog']}" if summary["cog"] else "")
    return summary


def _mask_tiles(product: str, header, tiles, arrays: tuple[str, ...]) -> None:
    """Zero the chunks of tiles a failed batch may have written part of (they are reported lost: no pixel of
    theirs may look valid). Whole chunks, written by the flow once the batch's task is over."""
    import numpy as np

    from groundstation.product import open_arrays, write_block

    group = open_arrays(product)
    for t in tiles:
        r0, r1, c0, c1 = header.tile_window(t)
        write_block(group, "valid", r0, c0, np.zeros((r1 - r0, c1 - c0), np.uint8))
        for name in arrays:
            write_block(group, name, r0, c0, np.zeros((3, r1 - r0, c1 - c0), np.uint8))


def _box(b) -> tuple[int, int, int, int]:
    return (b.y0, b.y1, b.x0, b.x1)



def outcome_totals(header, outcomes: dict[int, dict]) -> tuple[list[dict], list[dict], int, int]:
    """From the decode outcomes per tile: the lost tiles (for the report and retransmission), the outcomes of
    the tiles that decoded, and their bytes and pixels (for bpp)."""
    lost = [{"tile": t, "reason": o["status"], "detail": o.get("detail", "")}
            for t, o in sorted(outcomes.items()) if o["status"] != "ok"]
    ok = [o for o in outcomes.values() if o["status"] == "ok"]
    nbytes = sum(o["bytes"] for o in ok)
    pixels = sum((w[1] - w[0]) * (w[3] - w[2]) for w in (header.tile_window(o["tile"]) for o in ok))
    return lost, ok, nbytes, pixels


def _metrics_rows(header, version, arrays, outcomes, enhance_result, evaluate, sched) -> tuple[list, str | None]:
    """One TileMetrics per (tile, product): from the evaluate batches (with a reference) or rate/timing only."""
    evaluated: dict[tuple[int, str], dict] = {}
    perceptual = None
    for b in evaluate:
        r = sched.results.get(b.key)
        if r:
            perceptual = perceptual or r.get("perceptual")
            for row in r["rows"]:
                evaluated[(row["tile_index"], row["product"])] = row
    rows = []
    for t in range(header.tiling.n_tiles):
        o = outcomes.get(t) or {"status": "missing", "detail": "", "bytes": 0, "decode_ms": math.nan}
        r0, r1, c0, c1 = header.tile_window(t)
        e, edev = enhance_result(t) if "enhanced" in arrays else (None, "")
        for name in arrays:
            row = evaluated.get((t, name))
            if row is not None:
                fields = {k: v for k, v in row.items() if k != "bpp"}
                rows.append(TileMetrics(**fields))
                continue
            rows.append(TileMetrics(
                pass_id=header.pass_id, tile_index=t, product=name, product_version=version,
                height=r1 - r0, width=c1 - c0, compressed_bytes=int(o.get("bytes") or 0),
                decode_ms=o.get("decode_ms", math.nan) if o["status"] == "ok" else math.nan,
                enhance_ms=(e["enhance_ms"] if e else math.nan) if name == "enhanced" else math.nan,
                device=(edev if name == "enhanced" else "cpu") if o["status"] == "ok" else "",
                status=o["status"], note=o.get("detail", "") if o["status"] != "ok" else "",
            ))
    return rows, perceptual


# ------------------------------------------------------------------------------------------------ entry point
def run_process_pass(pass_path: str | Path, out_dir: str | Path, options: ProcessOptions | None = None, *,
                     dask_address: str | None = None, n_workers: int = 2) -> dict:
    """Run :func:`process_pass` on a new LocalCluster (``n_workers`` processes) or on ``dask_address``.

    Start-up is overlapped: Prefect's ephemeral API (when ``PREFECT_API_URL`` is not set, see
    flows/runtime.py) starts in the background while the pass and models are checked, the LocalCluster
    starts and its workers load the models. GSPErrors (bad pass, wrong checkpoint, missing enhancer...)
    propagate with their message.
    """
    opts = options or ProcessOptions()
    start_api_early()
    header = preflight(pass_path, opts)
    codec, enhancer = _warm_models(header, opts)
    # the API first: a failed start must not tear down a cluster whose workers are still loading models
    with prefect_api(), cluster_address(dask_address, n_workers) as address, \
            warm_workers(address, codec, enhancer) as warming:
        warming.wait()
        runner = make_task_runner(address)
        return process_pass.with_options(task_runner=runner)(str(pass_path), str(out_dir), opts)


def _warm_models(header, opts: ProcessOptions) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """``(path, sha256)`` of the codec and enhancer a run will load (for the workers' warm-up); None where the
    registry gives no sha256 and the file is not there (the flow reports that clearly)."""
    from groundstation.fileio import sha256_file

    def pair(path, sha):
        if sha:
            return str(path), sha
        return (str(path), sha256_file(path)) if Path(path).is_file() else None

    _, cpath, csha, _ = resolve_model(opts.codec or header.codec.name, "codec")
    codec = pair(cpath, csha or header.codec.sha256)
    enhancer = pair(*_enhancer_checkpoint(opts)[1:]) if opts.enhance else None
    return codec, enhancer
