"""Decode a batch of codec tiles into the product (``decoded`` + ``valid`` chunks), in a worker process; and,
in decode mode ``mosaic``, synthesise windows of the latent mosaic into ``decoded``.

``decode_tiles`` runs the single-process decoder's tile loop (:func:`groundstation.decode.decode_records`:
record checks, witness check with a strict-mode retry); a tile that fails is reported with its reason and left
masked (valid = 0). In mosaic mode it writes ``valid`` and each tile's latent into the product's latent store
(a failed tile is marked lost there) and ``synthesize_windows`` makes the pixels
(:func:`groundstation.synthesis.synthesize_into`). A batch's done marker is written after all its chunks are.
"""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from groundstation.codec import TileCodec
from groundstation.container import WITNESS_KIND, PassReader
from groundstation.decode import decode_records, decode_threads
from groundstation.product import open_arrays
from groundstation.synthesis import LatentStore, synthesis_windows, synthesize_into

from .results import DecodeResult, SynthesisResult
from .state import retry_unless_operator_error, write_marker
from .workers import get_codec, pick_device, set_threads, worker_name

__all__ = ["decode_tiles", "synthesize_windows"]


@task(name="decode-tiles", cache_policy=NONE, retries=1, retry_delay_seconds=1,
      retry_condition_fn=retry_unless_operator_error)
def decode_tiles(pass_path: str, product: str, state_dir: str, batch: int, records: dict[int, tuple[int, int]],
                 codec_path: str, codec_sha256: str, threads: int | None = None, synthesis: str = "float32",
                 use_gpu: bool = False, latents: bool = False) -> DecodeResult:
    """Decode the tiles in ``records`` (tile -> record offset/length) and write their chunks.

    ``threads``: torch threads for decoding (None: the encoder's count from the header, the bit-exact
    condition). The entropy path follows the header; ``synthesis`` is the run's (one mode per product).
    ``use_gpu``: run float32 synthesis on this worker's GPU when it sees one (the entropy path and the witness
    stay on the CPU; no GPU slot is claimed: g_s is small). ``latents`` (decode mode ``mosaic``): entropy
    decoding only, the latents go into the product's latent store (no ``decoded`` pixels: the synthesis
    windows write those).
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
    outcomes = []
    store = LatentStore(product) if latents else None
    for outcome in decode_records(tc, reader, sorted(int(k) for k in records), open_arrays(product), store=store):
        if outcome.status != "ok":
            log.warning("tile %d lost: %s (%s)", outcome.tile, outcome.status, outcome.detail)
        outcomes.append(outcome)
    result = DecodeResult(outcomes=tuple(outcomes), worker=worker_name(), device="cpu" if latents else synth_dev,
                          seconds=round(time.perf_counter() - t0, 3))
    write_marker(state_dir, "decode", batch, sorted(int(k) for k in records), result.to_json())
    ok = sum(o.status == "ok" for o in outcomes)
    log.info("decoded %d of %d tiles (batch %d) in %.1f s", ok, len(outcomes), batch, result.seconds)
    return result


@task(name="synthesize-windows", cache_policy=NONE, retries=1, retry_delay_seconds=1,
      retry_condition_fn=retry_unless_operator_error)
def synthesize_windows(product: str, state_dir: str, batch: int, windows: list[int], core_tiles: int, halo: int,
                       codec_path: str, codec_sha256: str, synthesis: str = "float32", use_gpu: bool = False,
                       threads: int = 1, mosaic_g_s: str | None = None) -> SynthesisResult:
    """Run g_s over ``windows`` (indices into the product's synthesis windows of ``core_tiles`` and ``halo``)
    of the latent mosaic and write their ``decoded`` cores (whole chunks: one writer each). Every tile a window
    reads must be decoded or known lost in the latent store (the flow submits a batch only then).
    ``mosaic_g_s``: sha256 of the registry's g_s fine-tuned for the mosaic (None: the codec's own g_s)."""
    log = get_run_logger()
    t0 = time.perf_counter()
    set_threads(threads)
    store = LatentStore(product)
    plan = synthesis_windows(store.grid, core_tiles, halo)
    chosen = [plan[w] for w in windows]
    dev = pick_device(use_gpu) if synthesis == "float32" else "cpu"
    tc = TileCodec(get_codec(codec_path, codec_sha256), device="cpu", threads=threads, synthesis=synthesis,
                   synthesis_device=dev, mosaic_g_s=mosaic_g_s)
    ms = synthesize_into(tc, product, chosen, halo=halo)
    result = SynthesisResult(tiles=tuple(sorted(t for w in chosen for t in w.core_tiles)),
                             ms={t: round(v, 1) for t, v in ms.items()}, worker=worker_name(), device=dev,
                             seconds=round(time.perf_counter() - t0, 3))
    write_marker(state_dir, "synthesize", batch, list(result.tiles), result.to_json())
    log.info("synthesised %d windows (%d tiles, batch %d) in %.1f s", len(chosen), len(result.tiles), batch,
             result.seconds)
    return result
