"""Ground side: pass container -> georeferenced ``decoded`` mosaic in Zarr, tile by tile.

A tile is written as valid pixels only when its record is intact (CRC), consistent with the header, decodes
without error and its decoded latent symbols match the encoder's witness. Everything else is masked (valid = 0)
and listed, with the reason, for retransmission.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import __version__
from .codec import CODEC_ALIGN, LoadedCodec, TileCodec, load_codec, to_uint8_hwc
from .container import WITNESS_KIND, PassHeader, PassReader, TileRecord, unpack_mask
from .errors import EXIT_OK, EXIT_TILES_LOST, DesyncError
from .product import create_product, finalize, open_arrays, write_block
from .registry import mosaic_g_s_sha256, resolve_model
from .synthesis import (DECODE_MODES, DEFAULT_BLEND, DEFAULT_CORE_TILES, HALO_LATENT, LatentStore, TileGrid,
                        create_latent_store, synthesis_windows, synthesize_into)

log = logging.getLogger(__name__)


@dataclass
class TileOutcome:
    tile: int
    status: str  # ok, crc_mismatch, truncated, missing, foreign, conflict, malformed, desync, decode_error
    detail: str = ""
    bytes: int = 0
    decode_ms: float = 0.0
    retried: bool = False


@dataclass
class DecodeSummary:
    product: str
    pass_id: str
    tiles_total: int
    tiles_ok: int
    lost: list[dict]
    bytes: int
    bpp: float
    decode_s: float
    codec: str
    notes: list[str] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)  # tiles whose symbols matched only in the strict retry
    entropy: str = "float32"
    synthesis: str = "float32"
    decode_mode: str = "tile"

    @property
    def exit_code(self) -> int:
        return EXIT_OK if not self.lost else EXIT_TILES_LOST

    def as_dict(self) -> dict:
        return {**asdict(self), "tiles_lost": len(self.lost), "exit_code": self.exit_code}


#: A header ``encoder.threads`` above this is no machine's thread count: garbage, decoded with one thread.
MAX_PLAUSIBLE_THREADS = 4096


def decode_threads(requested: int | None, header: PassHeader) -> tuple[int, str | None]:
    """(torch threads to decode with, a note when the header's value was not used as is).

    ``requested`` (the operator's ``--threads`` or the station setting) is an order and used as given. Else the
    header's ``encoder.threads`` -- the encoder's count, a hint for a bit-exact decode, never an order -- clamped
    to ``1..cpu count``; missing, < 1 or absurd values mean 1 (the witness check and the strict one-thread retry
    catch any thread-count-dependent desync either way).
    """
    if requested:
        return requested, None
    hint = header.encoder.threads
    if hint is None:
        return 1, None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if 1 <= hint <= cpus:
        return hint, None
    if 1 <= hint <= MAX_PLAUSIBLE_THREADS:
        use, why = cpus, f"exceeds this machine's {cpus} CPUs"
    else:
        use, why = 1, "is not a usable thread count"
    note = f"header encoder.threads {hint} {why}; decoding with {use} thread(s)"
    log.warning("%s", note)
    return use, note


def check_record(rec: TileRecord, header: PassHeader, codec: LoadedCodec) -> str | None:
    """Why a CRC-intact record cannot belong to this header/codec, or None."""
    r0, r1, c0, c1 = header.tile_window(rec.tile_index)
    h, w = r1 - r0, c1 - c0
    want_y = (math.ceil(h / CODEC_ALIGN) * 4, math.ceil(w / CODEC_ALIGN) * 4)
    want_z = (want_y[0] // 4, want_y[1] // 4)
    n = 2 * len(codec.arch.groups) + 1
    if len(rec.strings) != n:
        return f"{len(rec.strings)} ELIC strings, the codec needs {n}"
    if tuple(rec.y_hw) != want_y or tuple(rec.z_hw) != want_z:
        return f"latent shapes y{tuple(rec.y_hw)} z{tuple(rec.z_hw)} do not fit a {h}x{w} tile (want y{want_y} z{want_z})"
    return None


def decode_tile_latent(tc: TileCodec, rec: TileRecord, header: PassHeader
                       ) -> tuple[torch.Tensor | None, np.ndarray | None, TileOutcome]:
    """Entropy-decode and verify one record: (y_hat or None, valid (h,w) or None, outcome)."""
    r0, r1, c0, c1 = header.tile_window(rec.tile_index)
    h, w = r1 - r0, c1 - c0
    out = TileOutcome(tile=rec.tile_index, status="ok", bytes=rec.nbytes)
    why = check_record(rec, header, tc.codec)
    if why:
        out.status, out.detail = "malformed", why
        return None, None, out
    try:
        valid = unpack_mask(rec.mask, h, w) if rec.mask is not None else np.ones((h, w), bool)
    except ValueError as exc:
        out.status, out.detail = "malformed", f"validity mask: {exc}"
        return None, None, out
    t0 = time.perf_counter()
    y_hat = None
    try:
        y_hat, out.retried = tc.decode_latent_checked(rec.strings, rec.z_hw, rec.y_hw, rec.witness,
                                                      what=f"tile {rec.tile_index}")
    except DesyncError:
        out.status, out.retried = "desync", True
        out.detail = "entropy decoder desynchronised (symbol witness mismatch, also in strict mode)"
    except Exception as exc:  # a broken stream may raise anywhere inside CompressAI
        out.status, out.detail = "decode_error", f"{type(exc).__name__}: {str(exc)[:200]}"
    out.decode_ms = (time.perf_counter() - t0) * 1e3
    if out.status != "ok":
        return None, None, out
    return y_hat, valid, out


def decode_tile(tc: TileCodec, rec: TileRecord, header: PassHeader) -> tuple[np.ndarray | None, np.ndarray | None, TileOutcome]:
    """Decode and verify one record, pixels by tile-wise synthesis: (rgb (3,h,w) or None, valid or None, outcome)."""
    y_hat, valid, out = decode_tile_latent(tc, rec, header)
    if y_hat is None:
        return None, None, out
    r0, r1, c0, c1 = header.tile_window(rec.tile_index)
    t0 = time.perf_counter()
    rgb = to_uint8_hwc(tc.synthesize(y_hat, strict=out.retried)[0, :, : r1 - r0, : c1 - c0])
    out.decode_ms += (time.perf_counter() - t0) * 1e3
    return np.moveaxis(rgb, -1, 0), valid, out


def decode_records(tc: TileCodec, reader: PassReader, tiles, group, *, notes: list[str] | None = None,
                   store: LatentStore | None = None):
    """Read, decode and verify each of ``tiles`` (whose records ``reader`` can read), write the ``decoded`` and
    ``valid`` chunks of the ones that decode, and yield each tile's :class:`TileOutcome` (a record that cannot
    be read is ``malformed``; a tile that fails is not written, so it stays masked). The one tile loop of the
    single-process decoder and the pipeline's decode task. ``notes``: records without a witness are noted.
    ``store`` (mosaic decoding): entropy decoding only; each tile's latent goes into the store (a failed tile is
    marked lost there) and the synthesis windows write ``decoded`` later
    (:func:`groundstation.synthesis.synthesize_into`)."""
    header = reader.header
    for index in tiles:
        try:
            rec = reader.read(index)
        except Exception as exc:  # unpack errors: inconsistent lengths inside an intact frame, or the file changed
            if store is not None:
                store.put(index, None)
            yield TileOutcome(tile=index, status="malformed", detail=str(exc)[:200])
            continue
        if notes is not None and rec.witness is None and header.witness is not None:
            notes.append(f"tile {index}: record carries no witness")
        if store is not None:
            y_hat, valid, outcome = decode_tile_latent(tc, rec, header)
            store.put(index, y_hat)
        else:
            rgb, valid, outcome = decode_tile(tc, rec, header)
        if outcome.status == "ok":
            r0, _, c0, _ = header.tile_window(index)
            if store is None:
                write_block(group, "decoded", r0, c0, rgb)
            write_block(group, "valid", r0, c0, valid.astype(np.uint8))
        yield outcome


def decode_pass(
    pass_path: str | Path,
    out: str | Path,
    *,
    codec: str | None = None,
    threads: int | None = None,
    device: str = "cpu",
    synthesis: str = "float32",
    decode_mode: str = "tile",
    progress: bool = False,
) -> DecodeSummary:
    """Decode every intact record of ``pass_path`` into a new Zarr product ``out``.

    The entropy path runs in the mode the pass header names (``codec.entropy``); ``synthesis`` chooses the
    numeric mode of g_s (:data:`groundstation.codec.SYNTHESIS_MODES`), ``decode_mode`` how pixels are made from
    the tiles' latents (:data:`groundstation.synthesis.DECODE_MODES`: ``mosaic`` keeps the latents beside the
    product and synthesises windows over their mosaic, no seams at tile boundaries). All are recorded in the
    provenance.
    """
    if decode_mode not in DECODE_MODES:
        raise ValueError(f"decode mode {decode_mode!r}: choose one of {', '.join(DECODE_MODES)}")
    t_start = time.perf_counter()
    reader = PassReader(pass_path)  # a bad header raises PassFormatError here: nothing is created
    header = reader.header
    name, ckpt, _, _ = resolve_model(codec or header.codec.name, "codec")
    loaded = load_codec(ckpt, header.codec.sha256)  # wrong checkpoint: CheckpointError, nothing created
    scan = reader.scan()
    notes = list(scan.notes)
    threads, note = decode_threads(threads, header)
    if note:
        notes.append(note)
    tc = TileCodec(loaded, device=device, threads=threads, entropy=header.codec.entropy, synthesis=synthesis,
                   int_prior_sha256=header.codec.int_prior_sha256, witness_kind=header.witness or WITNESS_KIND,
                   mosaic_g_s=mosaic_g_s_sha256(loaded.sha256) if decode_mode == "mosaic" else None)
    if header.witness is None:
        notes.append("this pass carries no symbol witness: a decoder desync could not be detected")
        log.warning("%s: no symbol witness in this pass; desynchronised tiles would go unnoticed", pass_path)
    create_product(out, header, arrays=("decoded",), attrs={"gsp_pass": header.model_dump()})
    group = open_arrays(out)
    store = None
    if decode_mode == "mosaic":
        grid = TileGrid.from_header(header)
        create_latent_store(out, grid, loaded.arch.M, "float64" if header.codec.entropy == "float64" else "float32")
        store = LatentStore(out)
    outcomes: dict[int, TileOutcome] = {}
    for index, problem in scan.lost_tiles().items():
        outcomes[index] = TileOutcome(tile=index, status=problem.reason, detail=problem.detail)
    tiles = tqdm(sorted(scan.records), disable=not progress, desc="decode", unit="tile")
    for outcome in decode_records(tc, reader, tiles, group, notes=notes, store=store):
        outcomes[outcome.tile] = outcome
    if store is not None:
        for index in range(header.tiling.n_tiles):
            if index not in outcomes or outcomes[index].status != "ok":
                store.put(index, None)
        for tile, ms in synthesize_into(tc, out, synthesis_windows(grid, DEFAULT_CORE_TILES, HALO_LATENT)).items():
            outcomes[tile].decode_ms += ms
    ok = [o for o in outcomes.values() if o.status == "ok"]
    lost = [{"tile": o.tile, "reason": o.status, "detail": o.detail} for o in sorted(outcomes.values(), key=lambda o: o.tile)
            if o.status != "ok"]
    nbytes = sum(o.bytes for o in ok)
    pixels = sum((lambda w: (w[1] - w[0]) * (w[3] - w[2]))(header.tile_window(o.tile)) for o in ok)
    summary = DecodeSummary(
        product=str(out), pass_id=header.pass_id, tiles_total=header.tiling.n_tiles, tiles_ok=len(ok), lost=lost,
        bytes=nbytes, bpp=nbytes * 8 / pixels if pixels else 0.0, decode_s=time.perf_counter() - t_start,
        codec=name, notes=notes, retried=sorted(o.tile for o in outcomes.values() if o.retried),
        entropy=header.codec.entropy, synthesis=synthesis, decode_mode=decode_mode,
    )
    finalize(out, {
        "gsp_decode": {"software": f"groundstation {__version__}", "codec": name, "codec_sha256": loaded.sha256,
                       "codec_tables": loaded.tables, "threads": threads, "device": device,
                       "entropy": header.codec.entropy, "synthesis": synthesis, "decode_mode": decode_mode,
                       **({"synthesis_windows": {"core_tiles": DEFAULT_CORE_TILES, "halo_latent": HALO_LATENT,
                                                 "blend_px": DEFAULT_BLEND},
                           "mosaic_g_s_sha256": tc.mosaic_g_s} if store is not None else {}),
                       "tiles_ok": len(ok), "tiles_lost": lost, "bytes": nbytes, "bpp": summary.bpp,
                       "decode_s": round(summary.decode_s, 3), "notes": notes},
        "gsp_tiles": {str(o.tile): {"status": o.status, "bytes": o.bytes, "decode_ms": round(o.decode_ms, 1)}
                      for o in sorted(outcomes.values(), key=lambda o: o.tile)},
    })
    if lost:
        log.warning("%s: %d of %d tiles lost (masked as nodata); ask for retransmission of tiles %s", pass_path,
                    len(lost), header.tiling.n_tiles, [d["tile"] for d in lost])
    return summary
