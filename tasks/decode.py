"""Decode a batch of codec tiles into the product (``decoded`` + ``valid`` chunks), in a worker process.

Reuses the single-process decoder's pieces (:func:`groundstation.decode.decode_tile`: record checks, witness
check with a strict-mode retry); a tile that fails is reported with its reason and left masked (valid = 0).
The batch's done marker is written after all its chunks are.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from groundstation.codec import TileCodec
from groundstation.container import WITNESS_KIND, PassReader
from groundstation.decode import TileOutcome, decode_threads, decode_tile
from groundstation.product import open_arrays, write_block

from .state import retry_unless_operator_error, write_marker
from .workers import get_codec, pick_device, set_threads, worker_name

__all__ = ["decode_tiles"]


@task(name="decode-tiles", cache_policy=NONE, retries=1, retry_delay_seconds=1,
      retry_condition_fn=retry_unless_operator_error)
def decode_tiles(pass_path: str, product: str, state_dir: str, batch: int, records: dict[int, tuple[int, int]],
                 codec_path: str, codec_sha256: str, threads: int | None = None, synthesis: str = "float32",
                 crash_tiles: tuple[int, ...] = (), use_gpu: bool = False) -> dict:
    """Decode the tiles in ``records`` (tile -> record offset/length) and write their chunks.

    ``threads``: torch threads for decoding (None: the encoder's count from the header, the bit-exact
    condition). The entropy path follows the header; ``synthesis`` is the run's (one mode per product).
    ``crash_tiles`` is a test hook: the worker process kills itself (SIGSEGV) on these tiles, as a
    broken entropy table could. ``use_gpu``: run float32 synthesis on this worker's GPU when it sees one (the
    entropy path and the witness stay on the CPU; no GPU slot is claimed: g_s is small). Returns ``{"outcomes": [TileOutcome as dict], "worker", "device", "seconds"}``.
    """
    log = get_run_logger()
    t0 = time.perf_counter()
    reader = PassReader.with_index(pass_path, records)
    header = reader.header
    threads, note = decode_threads(threads, header)
    if note:
        log.warning("%s", note)
    set_threads(threads)
    synth_dev = pick_device(use_gpu) if synthesis == "float32" else "cpu"
    tc = TileCodec(get_codec(codec_path, codec_sha256), device="cpu", threads=threads,
                   entropy=header.codec.entropy, int_prior_sha256=header.codec.int_prior_sha256,
                   synthesis=synthesis, witness_kind=header.witness or WITNESS_KIND,
                   synthesis_device=synth_dev)
    group = open_arrays(product)
    outcomes: list[TileOutcome] = []
    for tile in sorted(int(k) for k in records):
        if tile in crash_tiles:
            os.kill(os.getpid(), signal.SIGSEGV)
        try:
            rec = reader.read(tile)
        except Exception as exc:  # inconsistent lengths inside an intact frame, or the file changed
            outcomes.append(TileOutcome(tile=tile, status="malformed", detail=str(exc)[:200]))
            continue
        rgb, valid, outcome = decode_tile(tc, rec, header)
        if outcome.status == "ok":
            r0, _, c0, _ = header.tile_window(tile)
            write_block(group, "decoded", r0, c0, rgb)
            write_block(group, "valid", r0, c0, valid.astype(np.uint8))
        else:
            log.warning("tile %d lost: %s (%s)", tile, outcome.status, outcome.detail)
        outcomes.append(outcome)
    result = {"outcomes": [asdict(o) for o in outcomes], "worker": worker_name(), "device": synth_dev,
              "seconds": round(time.perf_counter() - t0, 3)}
    write_marker(state_dir, "decode", batch, sorted(int(k) for k in records), result)
    ok = sum(o.status == "ok" for o in outcomes)
    log.info("decoded %d of %d tiles (batch %d) in %.1f s", ok, len(outcomes), batch, result["seconds"])
    return result
