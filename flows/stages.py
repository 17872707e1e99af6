"""The stages every flow that makes pixels shares: decode, enhance and evaluate batches of one product, submitted
through one :class:`~flows.scheduler.BatchScheduler` and collected as typed results.

``process-pass`` runs them over a whole pass, ``apply-supplement`` over the resent tiles and the synthesis and
enhancement windows they touch. In decode mode ``mosaic`` (the default) a ``synthesize`` stage sits between
decoding and enhancement: decode batches store each tile's latent, synthesis batches make the ``decoded`` pixels
of windows of the latent mosaic (:mod:`groundstation.synthesis`), and enhancement waits for the synthesis
batches that wrote the pixels it reads. A :class:`TileStages` knows the run's identity (:class:`~flows.identity.RunPlan`), the
container the decode batches read, the product and its state folder; it plans batches, submits each when the
batches it depends on are done (a window is ready when every tile its read box touches is decoded or known
lost), masks the tiles of a decode batch that failed, and keeps per tile what happened:
:attr:`TileStages.outcomes` (:class:`~groundstation.decode.TileOutcome`), :attr:`TileStages.enhanced` and
:attr:`TileStages.evaluated` (:class:`~groundstation.metrics.TileMetrics` rows with a reference scene).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

from groundstation.decode import TileOutcome
from groundstation.errors import ProductError
from groundstation.metrics import TileMetrics
from groundstation.synthesis import (DEFAULT_CORE_TILES, HALO_LATENT, LatentStore, TileGrid, create_latent_store,
                                     latent_store_path, synthesis_windows, windows_reading)
from tasks.decode import decode_tiles, synthesize_windows
from tasks.enhance import enhance_windows
from tasks.evaluate import evaluate_tiles
from tasks.plan import (Batch, enhancement_windows, plan_decode, plan_enhance, plan_evaluate, plan_synthesis,
                        tiles_in_box)
from tasks.results import EnhancedTile, result_from_json
from tasks.state import ExclusiveLock, LockHeld, read_markers

from .cluster import task_annotations
from .identity import RunPlan
from .names import batch_task_name
from .scheduler import BatchScheduler, stage_priority

__all__ = ["TileStages", "ensure_latent_store", "product_lock", "reusable_results"]


@contextlib.contextmanager
def product_lock(paths, then: str):
    """Hold the product's lock (one run writes a product at a time); a held lock is a ProductError naming the
    holder and ``then``, what the operator should do."""
    try:
        lock = ExclusiveLock(paths.lock).acquire()
    except LockHeld as exc:
        raise ProductError(f"{paths.product} is being written by another run ({exc.holder}); {then}") from None
    try:
        yield
    finally:
        lock.release()


def ensure_latent_store(plan: RunPlan) -> None:
    """Decode mode ``mosaic``: the product's latent store (one chunk per tile, beside the product), made when
    missing. It is dropped once the product is complete with no tile lost (:func:`flows.delivery.deliver`):
    only a supplement of lost tiles re-synthesises from it."""
    if plan.options.decode_mode != "mosaic" or latent_store_path(plan.paths.product).exists():
        return
    dtype = "float64" if plan.header.codec.entropy == "float64" else "float32"
    create_latent_store(plan.paths.product, TileGrid.from_header(plan.header), int(plan.codec.info["arch"]["M"]),
                        dtype)


def _box(b) -> tuple[int, int, int, int]:
    return (b.y0, b.y1, b.x0, b.x1)


def reusable_results(state, batches: list[Batch]) -> dict[str, object]:
    """Typed results of batches an earlier run finished: a done marker whose tiles are exactly the planned
    batch's and whose result reads back (anything else is redone)."""
    out = {}
    for stage in {b.stage for b in batches}:
        markers = read_markers(state, stage)
        for b in batches:
            m = markers.get(b.index) if b.stage == stage else None
            if m is None or tuple(m.get("tiles", ())) != b.tiles or not isinstance(m.get("result"), dict):
                continue
            try:
                out[b.key] = result_from_json(stage, m["result"])
            except ValueError:
                continue
    return out


@dataclass
class TileStages:
    """Decode, enhance and evaluate batches of one product (see the module docstring).

    ``source``/``records``: the container the decode batches read and where its intact records lie;
    ``known``: outcomes of tiles this run does not decode (lost in the scan, or a product's earlier tiles);
    ``core_tiles``: enhancement cores in codec tiles a side; ``on_failure(batch, why)`` is told of every
    failed batch (after a failed decode batch's tiles were masked).
    """

    plan: RunPlan
    source: str
    records: dict[int, tuple[int, int]]
    use_gpu: bool
    core_tiles: int = 1
    known: dict[int, TileOutcome] = field(default_factory=dict)
    max_in_flight: int = 4
    on_failure: object = None
    stop_after: int | None = None

    def __post_init__(self) -> None:
        self.paths = self.plan.paths
        self.windows = (enhancement_windows(self.plan.header, self.plan.options.halo, self.core_tiles)
                        if self.plan.enhancer else [])
        self.mosaic = self.plan.options.decode_mode == "mosaic"
        #: decode mode ``mosaic``: the synthesis windows of the scene (cores of DEFAULT_CORE_TILES codec tiles)
        self.synth_windows = (synthesis_windows(TileGrid.from_header(self.plan.header), DEFAULT_CORE_TILES,
                                                HALO_LATENT) if self.mosaic else [])
        self.synth_ms: dict[int, float] = {}
        self.outcomes: dict[int, TileOutcome] = dict(self.known)
        self.enhanced: dict[int, tuple[EnhancedTile, str]] = {}
        self.evaluated: dict[tuple[int, str], TileMetrics] = {}
        self.perceptual: str | None = None
        self.devices: dict[str, set[str]] = {"decode": set(), "enhance": set()}
        self.known_lost: set[int] = set()
        self.sched = BatchScheduler(submit=self._submit, max_in_flight=self.max_in_flight,
                                    on_failure=self._failed, stop_after=self.stop_after)

    # ---------------------------------------------------------------- planning
    def decode_batches(self, tiles) -> list[Batch]:
        return plan_decode(sorted(tiles), self.plan.options.tiles_per_batch)

    def synthesis_batches(self, decode: list[Batch], tiles=None) -> list[Batch]:
        """Decode mode ``mosaic``: batches over the synthesis windows (those that read any of ``tiles``; all when
        None), each waiting for the decode batches of the tiles its windows read. Tile mode: none."""
        if not self.mosaic:
            return []
        chosen = None if tiles is None else [self.synth_windows.index(w)
                                             for w in windows_reading(self.synth_windows, tiles)]
        return plan_synthesis(self.synth_windows, self.plan.options.tiles_per_batch, decode, DEFAULT_CORE_TILES,
                              chosen)

    def enhance_batches(self, upstream: list[Batch], windows: list[int] | None = None) -> list[Batch]:
        """Batches over ``windows`` (indices into :attr:`windows`; all when None), each waiting for the
        ``upstream`` batches (those that wrote the ``decoded`` pixels: decode batches, or synthesis batches in
        mosaic mode) of the tiles its read boxes touch."""
        if not self.plan.enhancer:
            return []
        return plan_enhance(self.plan.header, self.plan.options.halo, self.plan.options.tiles_per_batch, upstream,
                            self.core_tiles, windows=windows)

    def mark_lost(self, tiles) -> None:
        """Decode mode ``mosaic``: tell the latent store that ``tiles`` are lost (never stitched into the mosaic),
        so the synthesis windows that read them can run. Written by the flow: no decode batch owns these tiles."""
        tiles = sorted(set(tiles) - self.known_lost)
        if self.mosaic and tiles:
            store = LatentStore(self.paths.product)
            for t in tiles:
                store.put(t, None)
        self.known_lost.update(tiles)

    def evaluate_batches(self, tiles, upstream: list[Batch]) -> list[Batch]:
        if not self.plan.options.reference:
            return []
        return plan_evaluate(sorted(tiles), self.plan.options.tiles_per_batch, upstream)

    # ---------------------------------------------------------------- running
    def run(self, batches: list[Batch], already: dict | None = None, on_progress=None) -> None:
        """Run ``batches`` (``already``: typed results of batches an earlier run did; ``on_progress(done,
        total)`` after each batch); then raise ProductError when an enhance or evaluate batch failed (a failed
        decode batch costs its tiles, reported lost)."""
        self.sched.run(batches, already or {}, on_progress=on_progress)
        self._finish(batches)

    def stream(self, feed, on_tiles=None, window_s: float = 2.0) -> dict:
        """Run the whole pass from ``feed`` (:mod:`flows.arrivals`): records are decoded as they arrive, in
        batches of ``tiles_per_batch`` (fewer when ``window_s`` seconds passed since the first of them came, or
        the pass ended); each planned enhancement batch is submitted once every tile its read boxes touch is
        decoded or known lost; evaluation (with a reference) once the pass has ended. Work an interrupted run
        finished (done markers in the state folder) is reused, tile by tile for decoding. The enhancement
        batches are those of the whole scene, so a pass processed while it arrives and the finished file give
        the same bytes. ``on_tiles(received, decoded, enhanced)`` is told whenever those counts of tiles change.
        Returns {"skipped": batches reused, "first_decoded": when the first tile was written, "batches": how
        many in all}. Raises ProductError when an enhance or evaluate batch failed."""
        plan, opts = self.plan, self.plan.options
        header, tpb = plan.header, opts.tiles_per_batch
        state = self.paths.state
        already: dict[str, object] = {}
        owner: dict[int, str] = {}
        decode: list[Batch] = []
        for index, m in sorted(read_markers(state, "decode").items()):  # any batching an earlier run chose
            try:
                result = result_from_json("decode", m["result"])
            except (KeyError, ValueError):
                continue
            b = Batch("decode", index, tuple(int(t) for t in m.get("tiles", ())))
            already[b.key] = result
            decode.append(b)
            owner.update({t: b.key for t in b.tiles})
        synth_plan = self.synthesis_batches([])
        enhance_plan = self.enhance_batches(synth_plan)  # mosaic: their deps (synthesis batches) are known now
        already.update(reusable_results(state, synth_plan + enhance_plan))
        waiting_synth = list(synth_plan)
        waiting = [b for b in enhance_plan]
        released: set[str] = set()
        queued: list[int] = []
        first_queued = [0.0]
        next_index = [max((b.index for b in decode), default=-1) + 1]
        ended = [False]
        evaluate: list[Batch] = []
        counted: list[Batch] = []
        timeline: dict[str, float] = {}

        def read_boxes(b: Batch) -> set[int]:
            return {t for w in b.windows for t in tiles_in_box(header, self.windows[w].read)}

        shown = [None]

        def tell() -> None:
            res = self.sched.results
            counts = (len(self.records),
                      sum(len(r.outcomes) for k, r in res.items() if k.startswith("decode")),
                      sum(len(r.tiles) for k, r in res.items() if k.startswith("enhance")))
            if on_tiles is not None and counts != shown[0]:
                shown[0] = counts
                on_tiles(*counts)

        def noted() -> None:
            if "first_decoded" not in timeline and any(k.startswith("decode") and k not in already
                                                       for k in self.sched.results):
                timeline["first_decoded"] = time.time()

        def more() -> list[Batch] | None:
            noted()
            if ended[0] and not queued and not waiting and evaluate:
                return None
            out: list[Batch] = [b for b in decode if b.key in already and not counted]  # counted once, not rerun
            counted.extend(out)
            if not ended[0]:
                new, ended[0] = feed.poll()
                for t in sorted(new):
                    self.records[t] = new[t]
                    if t not in owner and t not in queued:
                        if not queued:
                            first_queued[0] = time.monotonic()
                        queued.append(t)
                if ended[0]:
                    for t, (reason, detail) in feed.info.lost.items():
                        self.outcomes.setdefault(t, TileOutcome(tile=t, status=reason, detail=detail,
                                                                decode_ms=math.nan))
            due = ended[0] or (queued and time.monotonic() - first_queued[0] >= window_s)
            while queued and (len(queued) >= tpb or due):
                tiles, queued[:] = tuple(sorted(queued[:tpb])), queued[tpb:]
                b = Batch("decode", next_index[0], tiles)
                next_index[0] += 1
                decode.append(b)
                owner.update({t: b.key for t in tiles})
                out.append(b)
                first_queued[0] = time.monotonic()
            lost = set(feed.info.lost) if ended[0] else set()
            self.mark_lost(lost)  # before any synthesis window that reads them runs
            for b in list(waiting_synth):
                reads = {t for w in b.windows for t in self.synth_windows[w].read_tiles}
                if all(t in owner or t in lost for t in reads):
                    waiting_synth.remove(b)
                    released.add(b.key)
                    out.append(Batch(b.stage, b.index, b.tiles, frozenset(owner[t] for t in reads if t in owner),
                                     windows=b.windows))
            for b in list(waiting):
                if self.mosaic:  # waits for the synthesis batches that write the pixels it reads
                    if b.deps <= released:
                        waiting.remove(b)
                        out.append(b)
                    continue
                reads = read_boxes(b)
                if all(t in owner or t in lost for t in reads):
                    waiting.remove(b)
                    out.append(Batch(b.stage, b.index, b.tiles, frozenset(owner[t] for t in reads if t in owner),
                                     windows=b.windows))
            if ended[0] and not queued and not waiting and not evaluate:
                evaluate.extend(self.evaluate_batches(feed.info.records, decode + synth_plan + enhance_plan)
                                or [Batch("evaluate", -1, ())])  # (a marker that nothing is left to plan)
                real = [b for b in evaluate if b.index >= 0]
                already.update(reusable_results(state, real))
                self.sched.results.update({k: v for k, v in already.items() if k.startswith("evaluate")})
                out += real
            tell()
            return out

        progress = self.sched.on_progress

        # after every batch too, not only while ``more`` gives batches: a complete file gives them all at once
        def finished(done: int, total: int) -> None:
            noted()
            tell()
            if progress is not None:
                progress(done, total)

        self.sched.run([], already, more=more, on_progress=finished)
        self.sched.on_progress = progress
        tell()
        self._finish(decode + synth_plan + enhance_plan + [b for b in evaluate if b.index >= 0])
        return {"skipped": len(already), "first_decoded": timeline.get("first_decoded"),
                "batches": len(decode) + len(synth_plan) + len(enhance_plan) + sum(b.index >= 0 for b in evaluate)}

    def _finish(self, batches: list[Batch]) -> None:
        for b in batches:
            if b.key in self.sched.results:
                self._collect(b, self.sched.results[b.key])
        failed_later = sorted(k for k in self.sched.failures if not k.startswith("decode"))
        if failed_later:
            raise ProductError(f"{len(failed_later)} batches failed ({', '.join(failed_later)}); "
                               f"{self.paths.product} stays incomplete: run again to redo only those batches")

    @property
    def ran(self) -> list[str]:
        return self.sched.ran

    @property
    def failures(self) -> dict[str, str]:
        return self.sched.failures

    def _collect(self, b: Batch, result) -> None:
        if b.stage == "decode":
            if not self.mosaic:
                self.devices["decode"].add(result.device)
            for o in result.outcomes:
                self.outcomes[o.tile] = o
        elif b.stage == "synthesize":
            self.devices["decode"].add(result.device)
            self.synth_ms.update(result.ms)
        elif b.stage == "enhance":
            self.devices["enhance"].add(result.device)
            for t in result.tiles:
                self.enhanced[t.tile] = (t, result.device)
        else:
            self.perceptual = self.perceptual or result.perceptual
            for row in result.rows:
                self.evaluated[(row.tile_index, row.product)] = row

    def _failed(self, b: Batch, why: str) -> None:
        from prefect import get_run_logger

        log = get_run_logger()
        log.error("%s failed (%s)", b.key, why)
        if b.stage == "decode":  # its tiles are lost: none of their pixels may look valid to the enhancer
            _mask_tiles(str(self.paths.product), self.plan.header, b.tiles, self.plan.arrays)
            self.known_lost.difference_update(b.tiles)
            self.mark_lost(b.tiles)
            log.error("tiles %s are reported lost (decode_error) and masked", list(b.tiles))
            for t in b.tiles:
                self.outcomes[t] = TileOutcome(
                    tile=t, status="decode_error", decode_ms=math.nan,
                    detail=f"the batch failed (a worker crash is retried by Dask first): {why}")
        if self.on_failure is not None:
            self.on_failure(b, why)

    def _outcome(self, tile: int) -> TileOutcome | None:
        """The decode outcome of ``tile`` so far (a finished decode batch's, else what was known)."""
        for key, result in self.sched.results.items():
            if key.startswith("decode"):
                found = next((o for o in result.outcomes if o.tile == tile), None)
                if found is not None:
                    return found
        return self.outcomes.get(tile)

    def _enhanced(self, tile: int) -> tuple[EnhancedTile | None, str]:
        for key, result in self.sched.results.items():
            if key.startswith("enhance"):
                found = next((t for t in result.tiles if t.tile == tile), None)
                if found is not None:
                    return found, result.device
        return self.enhanced.get(tile, (None, ""))

    def _submit(self, b: Batch):
        """Submit ``b``'s task, with its stage's Dask priority (and the GPU resource where it runs on one)."""
        gpu = self.use_gpu and b.stage in ("enhance", "evaluate")
        with task_annotations(gpu, priority=stage_priority(b.stage)):
            return self._submit_task(b)

    def _submit_task(self, b: Batch):
        plan, opts = self.plan, self.plan.options
        header, product, state = plan.header, str(self.paths.product), str(self.paths.state)
        if b.stage == "decode":
            return decode_tiles.with_options(task_run_name=batch_task_name(decode_tiles.name, b.index)).submit(
                self.source, product, state, b.index, {t: self.records[t] for t in b.tiles}, plan.codec.path,
                plan.codec.sha256, synthesis=opts.synthesis, use_gpu=self.use_gpu, latents=self.mosaic)
        if b.stage == "synthesize":
            return synthesize_windows.with_options(task_run_name=batch_task_name(synthesize_windows.name, b.index)
                                                   ).submit(product, state, b.index, list(b.windows),
                                                            DEFAULT_CORE_TILES, HALO_LATENT, plan.codec.path,
                                                            plan.codec.sha256, synthesis=opts.synthesis,
                                                            use_gpu=self.use_gpu, mosaic_g_s=plan.mosaic_g_s)
        if b.stage == "enhance":
            wins = [(_box(self.windows[w].core), _box(self.windows[w].read)) for w in b.windows]
            covered = [(t, header.tile_window(t)) for t in b.tiles]
            return enhance_windows.with_options(task_run_name=batch_task_name(enhance_windows.name, b.index)).submit(
                product, state, b.index, wins, covered, plan.enhancer.path, plan.enhancer.sha256, seed=opts.seed,
                temperature=opts.temperature, strength=opts.strength, use_gpu=self.use_gpu, threads=opts.threads)
        tiles = []
        for t in b.tiles:
            o = self._outcome(t)
            if o is None or o.status != "ok":
                continue
            e, edev = self._enhanced(t) if plan.enhancer else (None, "")
            tiles.append({"tile": t, "window": header.tile_window(t), "bytes": o.bytes, "decode_ms": self._decode_ms(o),
                          "decode_device": "cpu", "enhance_ms": e.enhance_ms if e else math.nan,
                          "enhance_device": edev})
        return evaluate_tiles.with_options(task_run_name=batch_task_name(evaluate_tiles.name, b.index)).submit(
            product, opts.reference, state, b.index, header.bands.model_dump(), tiles, pass_id=header.pass_id,
            product_version=plan.version, products=plan.arrays, use_gpu=self.use_gpu, threads=opts.threads)

    # ---------------------------------------------------------------- results
    def row(self, tile: int, product: str) -> TileMetrics:
        """The metrics row of ``tile``'s ``product``: the evaluated one (with a reference), else rate and timing."""
        row = self.evaluated.get((tile, product))
        if row is not None:
            return row
        header = self.plan.header
        o = self.outcomes.get(tile) or TileOutcome(tile=tile, status="missing", decode_ms=math.nan)
        ok = o.status == "ok"
        r0, r1, c0, c1 = header.tile_window(tile)
        e, edev = self.enhanced.get(tile, (None, ""))
        return TileMetrics(
            pass_id=header.pass_id, tile_index=tile, product=product, product_version=self.plan.version,
            height=r1 - r0, width=c1 - c0, compressed_bytes=int(o.bytes or 0),
            decode_ms=self._decode_ms(o) if ok else math.nan,
            enhance_ms=(e.enhance_ms if e else math.nan) if product == "enhanced" else math.nan,
            device=(edev if product == "enhanced" else "cpu") if ok else "",
            status=o.status, note=o.detail if not ok else "")

    def _decode_ms(self, o: TileOutcome) -> float:
        """A tile's decode time: entropy decoding plus (mosaic mode) its share of the synthesis windows."""
        if self.mosaic and o.tile not in self.synth_ms:
            for key, result in self.sched.results.items():
                if key.startswith("synthesize") and o.tile in result.ms:
                    return o.decode_ms + result.ms[o.tile]
        return o.decode_ms + self.synth_ms.get(o.tile, 0.0)

    def device_summary(self) -> dict[str, str]:
        """Where each stage ran (decode: where g_s ran; entropy decoding is always on the CPU)."""
        return {stage: ",".join(sorted(d - {""})) or ("cpu" if stage == "decode" else "")
                for stage, d in self.devices.items()}


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
