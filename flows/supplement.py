"""``apply-supplement``: the retransmission round trip. Resent tiles of a pass complete its existing product(s).

A pass that lost tiles is processed as usual (exit status 3, the lost tiles listed for retransmission); the
satellite then resends those tiles as a *supplement*: a container with the full pass's header (same
``pass_uid``, grid, codec, band rule; ``supplement`` names the resent tiles, see docs/pass-format.md) holding
only their records (simulated by ``gsp encode SCENE -o OUT --supplement-of PASS --tiles 3,7``). This flow
applies it to every product of that pass under the products folder whose lost tiles it covers:

1. **refusals first, nothing changed**: a supplement of a pass that has no product here (unknown pass), one whose
   tiles are all intact already (a duplicate), one encoded with another codec (the header's sha256) or on
   another grid, and one that meets a product still being written, are GSPErrors raised before anything is
   written (``watch-inbox`` moves such a file to ``INBOX/failed`` with the reason);
2. the product is marked ``incomplete`` with ``gsp_supplement_pending`` (a crash half way leaves it so; the same
   supplement applied again redoes the work, anything else is refused until then);
3. ``decode-tiles`` writes the resent tiles' ``decoded`` and ``valid`` chunks (the product's codec and pixel
   synthesis; in decode mode ``mosaic`` their latents into the product's latent store, and
   ``synthesize-windows`` redoes the synthesis windows that read them, so their neighbours' pixels near the
   shared boundaries are made from both tiles' latents as a one-shot run would); ``enhance-windows`` recomputes
   only the enhancement windows whose read box (core + halo) touches a tile whose decoded pixels changed: their cores and the neighbours whose halo reads it (same core size, halo, seed and
   temperature as the product's run, so the same windows); with a reference scene, ``evaluate-tiles`` redoes
   the metrics of the tiles whose pixels changed;
4. then what ``process-pass`` writes at its end (:func:`flows.delivery.deliver`): overview pyramid, COG when
   the product had one, metrics Parquet (the affected tiles' rows replaced), station history, report, lost
   tiles GeoJSON (removed when none is left), STAC Item, and the complete flag.

**Why the same product version.** The version names what decides the pixels (codec, enhancer, seed,
temperature, halo); those do not change, and every record of the supplement is the record the full pass would
have carried, so the completed product holds the pixels a one-shot run of the undamaged pass would have
written (the enhancement is a function of the decoded mosaic, the seed and the pixel position). A new version
beside the old would claim a different processing where there is none, and leave two products of one pass to
choose between. What *is* different is recorded: ``gsp_supplements`` (also in the summary, the report's notes
and the STAC Item's properties) lists per supplement the file, when it was sent and applied, the tiles it
brought and the enhancement windows it recomputed.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from groundstation.container import PassHeader, PassReader
from groundstation.decode import TileOutcome
from groundstation.errors import PassFormatError, ProductError
from groundstation.metrics import read_parquet, summarize_passes, tiles_frame
from groundstation.synthesis import latent_store_path
from tasks.plan import PassInfo, read_pass_info, tiles_in_box

from .cluster import cluster_info, make_task_runner
from .cluster import dask_address as cluster_address
from .delivery import deliver, pass_totals
from .identity import ProductPaths, product_paths, resolve_run
from .names import supplement_run_name
from .options import ProcessOptions
from .runtime import prefect_api
from .stages import TileStages, product_lock

__all__ = ["PENDING_ATTR", "SupplementTarget", "apply_supplement", "is_supplement", "plan_supplement",
           "run_apply_supplement"]

#: Product attribute set while a supplement is being applied (the product is ``incomplete`` meanwhile).
PENDING_ATTR = "gsp_supplement_pending"
#: Product attribute: one entry per supplement applied (provenance).
SUPPLEMENTS_ATTR = "gsp_supplements"


@dataclass
class SupplementTarget:
    """A product the supplement completes: its store, attributes and the lost tiles the supplement brings."""

    product: Path
    attrs: dict
    tiles: list[int]
    pending: bool = False  # an earlier application of this supplement stopped half way

    @property
    def version(self) -> str:
        return self.attrs["gsp_run"]["version"]


@dataclass
class SupplementPlan:
    info: PassInfo
    targets: list[SupplementTarget]
    notes: list[str] = field(default_factory=list)


def _attrs(store: Path) -> dict:
    import zarr

    try:
        return dict(zarr.open_group(str(store), mode="r").attrs)
    except Exception:  # noqa: BLE001 - not a product (a half-created store): no attributes
        return {}


def _products_of(products: Path, header: PassHeader) -> list[tuple[Path, dict]]:
    """Every product of the pass ``header.pass_uid`` under ``products`` (all versions), with its attributes."""
    folder = product_paths(products, header.pass_id, "x").folder
    out = []
    for store in sorted(folder.glob("*.zarr")) if folder.is_dir() else []:
        attrs = _attrs(store)
        if attrs.get("gsp_run", {}).get("pass_uid") == header.pass_uid:
            out.append((store, attrs))
    return out


def _lost_tiles(attrs: dict) -> set[int]:
    return {int(t) for t, o in attrs.get("gsp_tiles", {}).items() if o.get("status") != "ok"}


def _same_pass(store: Path, attrs: dict, header: PassHeader) -> None:
    """The supplement must carry the product's pass: same codec (sha256), grid and band rule."""
    first = attrs.get("gsp_pass", {})
    codec = first.get("codec", {}).get("sha256")
    if codec != header.codec.sha256:
        raise ProductError(
            f"supplement of pass {header.pass_id} was encoded with codec sha256 {header.codec.sha256[:16]}... "
            f"({header.codec.name}), the pass of {store} with {str(codec)[:16]}...: a different codec; its tiles "
            "cannot complete this product (ask the satellite to resend them with the pass's codec)")
    try:
        stored = PassHeader.model_validate(first)
    except ValueError:
        raise ProductError(f"{store}: its pass header attribute is not readable; not a product of this station") \
            from None
    for part in ("scene", "tiling", "bands"):
        if getattr(stored, part) != getattr(header, part):
            raise ProductError(f"supplement of pass {header.pass_id}: its {part} differs from that of the pass of "
                               f"{store}; it is not a retransmission of that pass")


def plan_supplement(path: str | Path, products: str | Path) -> SupplementPlan:
    """Which products the supplement ``path`` completes, and with which tiles; reads only.

    Raises a GSPError (nothing is written) for an unknown pass, a different codec or grid, a product that is
    being written, and a duplicate (every resent tile already intact)."""
    info = read_pass_info(path)
    header = info.header
    name = Path(path).name
    found = _products_of(Path(products), header)
    if not found:
        raise ProductError(f"{name}: supplement of an unknown pass: no product of pass {header.pass_id} (uid "
                           f"{header.pass_uid}) under {products}; process the full pass first")
    if not info.records:
        raise ProductError(f"{name}: the supplement of pass {header.pass_id} holds no intact tile record "
                           f"({', '.join(sorted({r for r, _ in info.lost.values()}))}); ask for it again")
    sent = set(info.records)
    targets, notes, covered_anywhere = [], [], False
    for store, attrs in found:
        _same_pass(store, attrs, header)
        status, pending = attrs.get("gsp_status"), attrs.get(PENDING_ATTR)
        if status != "complete" and not (pending and pending.get("pass_uid") == header.pass_uid
                                         and pending.get("name") == name):
            why = (f"supplement {pending.get('name')} is being applied to it" if pending
                   else "it is being written (or its run stopped: run process-pass again to finish it)")
            raise ProductError(f"{name}: {store} is incomplete: {why}; apply this supplement once it is complete")
        lost = _lost_tiles(attrs)
        tiles = sorted(sent & lost)
        if tiles:
            covered_anywhere = True
            targets.append(SupplementTarget(store, attrs, tiles, pending=bool(pending)))
            if sent - lost:
                notes.append(f"{store.name}: tiles {_fmt(sorted(sent - lost))} of the supplement were intact "
                             "already and are left as they were")
    if not covered_anywhere:
        damaged = sorted(set(header.supplement.tiles if header.supplement else ()) - sent)
        if damaged and any(set(damaged) & _lost_tiles(a) for _, a in found):
            raise ProductError(f"{name}: the supplement's records of the lost tiles {_fmt(damaged)} of pass "
                               f"{header.pass_id} are damaged as well; ask for them again")
        raise ProductError(f"{name}: duplicate supplement of pass {header.pass_id}: tiles {_fmt(sorted(sent))} are "
                           f"already intact in {', '.join(str(s) for s, _ in found)}; nothing to do")
    return SupplementPlan(info=info, targets=targets, notes=notes)


def is_supplement(path: str | Path, products: str | Path) -> bool:
    """Whether ``watch-inbox`` should apply ``path`` as a supplement rather than process it as a pass: its
    header says so, or its pass already has a product here with lost tiles that it holds intact records of
    (an older satellite resending tiles without marking the container)."""
    try:
        reader = PassReader(path)
        if reader.header.supplement is not None:
            return True
        found = _products_of(Path(products), reader.header)
        if not found:
            return False
        have = set(reader.scan().records)
    except (PassFormatError, OSError):
        return False  # process-pass reports a bad container
    return any(have & _lost_tiles(a) for _, a in found if a.get("gsp_status") == "complete")


def _fmt(tiles) -> str:
    return ", ".join(str(t) for t in tiles)


def _set_attrs(store: Path, attrs: dict) -> None:
    import zarr

    g = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    g.attrs.update(attrs)
    zarr.consolidate_metadata(str(store))  # readers use the consolidated metadata of a finished product


@flow(name="apply-supplement", task_runner=make_task_runner(), validate_parameters=True,
      flow_run_name=supplement_run_name)
def apply_supplement(supplement_path: str, products: str) -> list[dict]:
    """Complete the product(s) of the supplement's pass with its tiles (see the module docstring); returns one
    summary per product completed. GSPErrors (unknown pass, duplicate, different codec...) change nothing."""
    log = get_run_logger()
    plan = plan_supplement(supplement_path, products)
    for n in plan.notes:
        log.info("%s", n)
    out = []
    for target in plan.targets:
        paths = product_paths(products, plan.info.header.pass_id, target.version)
        with product_lock(paths, "apply the supplement once it is done"):
            out.append(_apply_one(supplement_path, plan.info, target, paths, products))
    return out


def _stored_outcomes(attrs: dict) -> dict[int, TileOutcome]:
    """The decode outcome of every tile as the product's first run recorded it (``gsp_tiles``, lost details)."""
    details = {d["tile"]: d.get("detail", "") for d in attrs.get("gsp_summary", {}).get("lost", [])}
    return {int(t): TileOutcome(tile=int(t), status=o["status"], bytes=o.get("bytes") or 0,
                                decode_ms=math.nan if o.get("decode_ms") is None else o["decode_ms"],
                                detail=details.get(int(t), ""))
            for t, o in attrs.get("gsp_tiles", {}).items()}


def _apply_one(supplement_path: str, info: PassInfo, target: SupplementTarget, paths: ProductPaths,
               products: str) -> dict:
    log = get_run_logger()
    t0 = time.perf_counter()
    sup, name = info.header, Path(supplement_path).name
    attrs = _attrs(target.product)  # again, under the lock
    if attrs.get("gsp_status") != "complete" and not target.pending:
        raise ProductError(f"{target.product} changed while the supplement waited for it; apply it again")
    header = PassHeader.model_validate(attrs["gsp_pass"])  # the pass as first processed
    summary = dict(attrs["gsp_summary"])
    # the product's own models and options (a changed checkpoint fails here)
    plan = resolve_run(header, ProcessOptions.stored(attrs["gsp_run"]["options"]), products)
    if plan.version != target.version:
        raise ProductError(f"{target.product}: its models resolve to version {plan.version} now; the supplement "
                           "needs the checkpoints the product was made with")
    opts = plan.options
    if opts.reference and not Path(opts.reference).is_file():
        raise ProductError(f"{target.product} was evaluated against {opts.reference}, which is gone; the "
                           "metrics of the resent tiles could not be computed")
    tiles = target.tiles
    if opts.decode_mode == "mosaic" and not latent_store_path(paths.product).exists():
        raise ProductError(f"{target.product} was decoded as a latent mosaic but its latent store "
                           f"{latent_store_path(paths.product).name} is gone, so the resent tiles' neighbours "
                           "cannot be synthesised again; reprocess the pass and its supplement together")
    log.info("Supplement %s: tiles %s of pass %s into %s", name, _fmt(tiles), sup.pass_id, paths.product)
    _set_attrs(paths.product, {"gsp_status": "incomplete", PENDING_ATTR: {
        "name": name, "pass_uid": sup.pass_uid, "tiles": tiles}})
    shutil.rmtree(paths.state, ignore_errors=True)

    cluster = cluster_info()
    core_tiles = max(1, int(summary["enhancer"]["core"]) // header.tiling.tile_size) if plan.enhancer else 1
    stages = TileStages(plan, str(supplement_path), info.records, use_gpu=opts.device != "cpu" and cluster["gpus"] > 0,
                        core_tiles=core_tiles, known=_stored_outcomes(attrs))
    # ---- the resent tiles first: which windows to redo depends on which of them decode
    decode = stages.decode_batches(tiles)
    stages.run(decode)
    new = {t: stages.outcomes[t] for t in tiles}
    decoded_ok = sorted(t for t, o in new.items() if o.status == "ok")
    for t, o in new.items():
        if o.status != "ok":
            log.warning("Supplement: tile %d lost again: %s (%s)", t, o.status, o.detail)
            stages.outcomes[t] = replace(o, detail=f"{o.detail} (resent in {name})")
    # ---- mosaic decoding: the synthesis windows that read a newly decoded tile (their cores' pixels near the
    # resent tiles change too); then the enhancement windows whose read box touches a tile whose decoded pixels
    # changed, and the metrics of the tiles whose pixels changed (with the reference scene, as the run did)
    synth = stages.synthesis_batches(decode, decoded_ok) if decoded_ok else []
    repainted = {t for b in synth for t in b.tiles}
    fresh = set(decoded_ok) | repainted
    affected = [i for i, w in enumerate(stages.windows) if fresh & set(tiles_in_box(header, w.read))]
    enhance = stages.enhance_batches(synth if stages.mosaic else decode, affected) if affected else []
    changed = sorted(set(new) | repainted | {t for b in enhance for t in b.tiles})
    evaluate = stages.evaluate_batches(changed, decode + synth + enhance)
    stages.run(synth + enhance + evaluate)
    if synth:
        log.info("Supplement: %d of %d synthesis windows of the latent mosaic redone (tiles %s)",
                 sum(len(b.windows) for b in synth), len(stages.synth_windows), _fmt(sorted(repainted)))
    if plan.enhancer:
        log.info("Supplement: %d of %d enhancement windows recomputed (%s)", len(affected), len(stages.windows),
                 _fmt(affected))

    # ---- the metrics table: the changed tiles' rows replaced
    recomputed = {t for b in enhance for t in b.tiles}
    replace_rows = [(t, p) for t in changed for p in plan.arrays
                    if (t, p) in stages.evaluated or (p == "decoded" and (t in new or t in repainted))
                    or (p == "enhanced" and (t in new or t in recomputed))]
    old = read_parquet(paths.metrics)
    perceptual = stages.perceptual or _perceptual_of(paths.metrics)
    rows = [stages.row(t, p) for t, p in replace_rows]
    import pandas as pd

    gone = set(replace_rows)
    keep = ~pd.Series([(int(t), p) in gone for t, p in zip(old["tile_index"], old["product"])], index=old.index)
    tiles_df = pd.concat([old[keep], tiles_frame(rows)], ignore_index=True) if rows else old[keep]
    order = {n: i for i, n in enumerate(plan.arrays)}
    tiles_df = (tiles_df.assign(_o=tiles_df["product"].map(order)).sort_values(["tile_index", "_o"])
                .drop(columns="_o").reset_index(drop=True))
    passes_df = summarize_passes(tiles_df)

    # ---- the summary, with what came later recorded
    totals = pass_totals(header, stages.outcomes)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entry = {
        "file": str(supplement_path), "name": name,
        "sent": sup.supplement.sent if sup.supplement else None, "applied": now,
        "tiles": tiles, "tiles_ok": decoded_ok, "tiles_still_lost": sorted(set(tiles) - set(decoded_ok)),
        "windows_recomputed": affected, "windows_total": len(stages.windows), "core_tiles": core_tiles,
        "tiles_resynthesised": sorted(repainted),
        "batches": {"decode": len(decode), "synthesize": len(synth), "enhance": len(enhance),
                    "evaluate": len(evaluate)},
        "flow_run_id": str(flow_run.id), "seconds": None,
    }
    history = list(attrs.get(SUPPLEMENTS_ATTR) or [])
    if target.pending and history and history[-1].get("name") == entry["name"]:
        history.pop()  # never recorded twice
    summary.update({
        "status": "complete", **{k: totals[k] for k in ("tiles_ok", "tiles_lost", "lost", "bytes", "bpp",
                                                          "exit_code")},
        "notes": [*summary.get("notes", []), f"tiles {_fmt(decoded_ok)} came later, from the supplement "
                  f"{entry['name']} (sent {entry['sent'] or 'unmarked'}, applied {now}); {len(affected)} of "
                  f"{len(stages.windows)} enhancement windows recomputed" if decoded_ok else
                  f"supplement {entry['name']} applied {now}: tiles {_fmt(tiles)} were lost again"],
        "supplements": [*history, entry],
    })
    summary["timings"] = {**summary.get("timings", {}), "decode_ms_sum": totals["decode_ms_sum"]}
    if plan.enhancer is not None:
        summary["timings"]["enhance_ms_sum"] = round(float(
            tiles_df.loc[tiles_df["product"] == "enhanced", "enhance_ms"].sum(skipna=True)), 1)
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    before_s = float((attrs["gsp_summary"].get("timings") or {}).get("total_s") or 0.0)
    result = deliver(paths, header, plan.version, plan.arrays, summary, tiles_df, passes_df, perceptual,
                     stages.outcomes, cog=bool(summary.get("cog")), reuse_cog=False,
                     t_start=time.perf_counter() - before_s - entry["seconds"],
                     extra_attrs={PENDING_ATTR: None, SUPPLEMENTS_ATTR: [*history, entry]})
    log.info("Supplement %s applied to %s: %d of %d tiles now, %d lost", entry["name"], paths.product,
             totals["tiles_ok"], header.tiling.n_tiles, totals["tiles_lost"])
    return result


def _perceptual_of(metrics: Path) -> str | None:
    """The perceptual metric's description stored in a metrics file (kept when no row is re-evaluated)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(metrics).metadata or {}
    value = meta.get(b"perceptual")
    return value.decode() if value else None


def run_apply_supplement(supplement: str | Path, products: str | Path, *, dask_address: str | None = None,
                         n_workers: int = 2) -> list[dict]:
    """:func:`apply_supplement` on ``dask_address`` or a new LocalCluster; refusals (GSPError) are raised before
    a cluster starts."""
    plan_supplement(supplement, products)  # fail fast, before the API and the cluster
    with prefect_api(), cluster_address(dask_address, n_workers) as address:
        return apply_supplement.with_options(task_runner=make_task_runner(address))(str(supplement), str(products))

