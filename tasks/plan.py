"""Validating a pass container and planning the work on it: pure functions plus one small task.

The plan has three stages over the pass's codec tiles (row-major tile indices):

* ``decode`` batches: the tiles that have an intact record, ``tiles_per_batch`` at a time. Each batch writes
  the ``decoded`` and ``valid`` chunks of its own tiles only (a codec tile is one chunk).
* ``synthesize`` batches (decode mode ``mosaic``): the decode batches then write only ``valid`` and each
  tile's latent (the product's latent store); a synthesis batch runs ELIC's g_s over synthesis windows of the
  latent mosaic (:func:`groundstation.synthesis.synthesis_windows`: cores of whole codec tiles, a latent halo)
  and writes their ``decoded`` cores. It depends on the decode batches of every tile its windows read; the
  enhance batches then depend on the synthesis batches that wrote the pixels they read.
* ``enhance`` batches: enhancement windows whose core is a block of ``core_tiles x core_tiles`` codec tiles
  (whole chunks of ``enhanced``: a chunk has one writer) and whose read box is the core grown by ``halo``
  (:func:`enhancer.tiling.plan_windows`). Bigger cores spend less on the halo (256 px cores with a 32 px halo
  read 1.56x the pixels they write, 1024 px cores 1.13x), smaller ones leave less work for the end of a pass;
  :func:`choose_core_tiles` weighs the two. A batch depends on the decode batches of every tile its read boxes
  touch.
* ``evaluate`` batches (only with a reference scene): full-reference metrics of a batch's tiles; they depend
  on the batches that wrote those tiles' last product.

Only tile indices, windows and small dicts travel; the flow decides the order (:mod:`flows.stages`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from enhancer.tiling import Box, Window, plan_windows
from groundstation.container import PassHeader, PassReader, ScanResult

from .state import retry_unless_operator_error

__all__ = ["Batch", "PassInfo", "choose_core_tiles", "chunked", "enhancement_windows", "pass_info", "plan_decode",
           "plan_enhance", "plan_evaluate", "plan_synthesis", "read_pass_info", "tiles_in_box", "validate_pass"]

STAGES = ("decode", "synthesize", "enhance", "evaluate")


@dataclass(frozen=True)
class PassInfo:
    """What validating a container found: its header, where each intact record lies, and what is lost."""

    path: str
    header: PassHeader
    records: dict[int, tuple[int, int]]  # tile -> (body offset, body length)
    lost: dict[int, tuple[str, str]]  # tile -> (reason, detail)
    notes: list[str]
    trailer: bool
    size: int

    @property
    def n_tiles(self) -> int:
        return self.header.tiling.n_tiles


def pass_info(path: str | Path, scan: ScanResult) -> PassInfo:
    """The :class:`PassInfo` of a finished scan of ``path``."""
    lost = {i: (str(p.reason), p.detail) for i, p in scan.lost_tiles().items()}
    return PassInfo(path=str(path), header=scan.header, records=dict(scan.records), lost=lost,
                    notes=list(scan.notes), trailer=scan.trailer, size=scan.size)


def read_pass_info(path: str | Path) -> PassInfo:
    """Parse the header (a bad one raises PassFormatError) and scan every record once."""
    return pass_info(path, PassReader(path).scan())


@task(name="validate-pass", cache_policy=NONE, retries=1, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_operator_error)
def validate_pass(path: str) -> PassInfo:
    """Validate a pass container and index its records (retried once: the file may sit on a network share)."""
    return read_pass_info(path)


@dataclass(frozen=True)
class Batch:
    """One Prefect task's worth of work: a stage, its batch number, the tiles it covers, what it waits for."""

    stage: str
    index: int
    tiles: tuple[int, ...]
    deps: frozenset[str] = field(default_factory=frozenset)
    #: enhance / synthesize batches: indices into enhancement_windows() / synthesis_windows(); tiles = the codec
    #: tiles their cores cover
    windows: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.stage}-{self.index:05d}"


def chunked(items: list[int], size: int) -> list[tuple[int, ...]]:
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    return [tuple(items[i: i + size]) for i in range(0, len(items), size)]


def plan_decode(tiles: list[int], tiles_per_batch: int) -> list[Batch]:
    """Decode batches over the tiles that have an intact record (row-major)."""
    return [Batch("decode", i, t) for i, t in enumerate(chunked(sorted(tiles), tiles_per_batch))]


def enhancement_windows(header: PassHeader, halo: int, core_tiles: int = 1) -> list[Window]:
    """Enhancement windows in row-major order: cores of ``core_tiles x core_tiles`` codec tiles (clipped at the
    scene's edges), read boxes = core + halo (clipped)."""
    if core_tiles < 1:
        raise ValueError(f"core_tiles must be >= 1, got {core_tiles}")
    s, t = header.scene, header.tiling.tile_size
    windows = plan_windows((s.height, s.width), core=t * core_tiles, halo=halo)
    if core_tiles == 1:
        assert len(windows) == header.tiling.n_tiles, "window cores must be the codec tiles"
    return windows


#: Largest enhancement core, in pixels a side: beyond ~1024 px the halo saves little (1.13x -> 1.06x) while a
#: window's activations grow (about 0.4 GB per 1088x1088 window for the demo enhancer).
MAX_CORE_PX = 1024


def choose_core_tiles(header: PassHeader, halo: int, workers: int, max_core_px: int = MAX_CORE_PX,
                      last_rows: int = 1) -> int:
    """The core size (in codec tiles a side) that should finish enhancement soonest on ``workers`` slots.

    Cost model, in pixels read, two makespans ``max(read / workers, largest window)`` added up: of all the
    windows (the work) and of the windows that wait for the pass's last ``last_rows`` tile rows (the work left
    when a streamed pass's last records arrive, which nothing can overlap). ``last_rows`` is 2 in decode mode
    ``mosaic`` (a tile row's pixels are synthesised once the next row's latents are in), 1 tile-wise. The
    smallest estimate wins, ties going to the smaller largest window. Bigger cores spend less on the halo,
    smaller ones leave less for the end: on 2 workers (mosaic) a 6x6-tile pass gets 3x3-tile cores, a 16x12-tile
    drone frame 3x3 (``benchmarks/pass_latency.py --core-tiles``: 4x4 streamed 3 s slower), a 64x64-tile scene
    4x4 (1.13x the pixels).
    """
    t = header.tiling.tile_size
    first = max(0, header.tiling.tiles_y - max(1, last_rows)) * t  # first pixel row of the last tile rows
    slots = max(1, workers)
    best: tuple[float, int, int] | None = None
    for k in range(1, max(1, max_core_px // t) + 1):
        wins = enhancement_windows(header, halo, k)
        reads = [w.read.height * w.read.width for w in wins]
        tail = [r for w, r in zip(wins, reads) if w.read.y1 > first]
        score = (max(sum(reads) / slots, max(reads)) + max(sum(tail) / slots, max(tail)), max(reads), -k)
        if best is None or score < best:
            best = score
    return -best[2]


def tiles_in_box(header: PassHeader, box: Box) -> list[int]:
    """Codec tiles that intersect a pixel box."""
    t, nx = header.tiling.tile_size, header.tiling.tiles_x
    rows = range(box.y0 // t, (box.y1 - 1) // t + 1)
    cols = range(box.x0 // t, (box.x1 - 1) // t + 1)
    return [r * nx + c for r in rows for c in cols]


def _owner(batches: list[Batch]) -> dict[int, str]:
    return {tile: b.key for b in batches for tile in b.tiles}


def plan_enhance(header: PassHeader, halo: int, tiles_per_batch: int, decode: list[Batch],
                 core_tiles: int = 1, windows: list[int] | None = None) -> list[Batch]:
    """Enhancement batches over the whole scene (or over ``windows``, indices into :func:`enhancement_windows`):
    about ``tiles_per_batch`` tiles' worth of windows each (at least one window); each waits for the decode
    batches its read boxes touch. ``Batch.tiles`` are the codec tiles the batch's cores cover (what its done
    marker and results speak of)."""
    boxes = enhancement_windows(header, halo, core_tiles)
    owner = _owner(decode)
    per_batch = max(1, tiles_per_batch // (core_tiles * core_tiles))
    chosen = list(range(len(boxes))) if windows is None else sorted(windows)
    out = []
    for i, wins in enumerate(chunked(chosen, per_batch)):
        tiles = tuple(sorted(n for w in wins for n in tiles_in_box(header, boxes[w].core)))
        deps = {owner[n] for w in wins for n in tiles_in_box(header, boxes[w].read) if n in owner}
        out.append(Batch("enhance", i, tiles, frozenset(deps), windows=tuple(wins)))
    return out


def plan_synthesis(windows: list, tiles_per_batch: int, decode: list[Batch], core_tiles: int,
                   chosen: list[int] | None = None) -> list[Batch]:
    """Synthesis batches over ``windows`` (:class:`groundstation.synthesis.SynthesisWindow`, or the ``chosen``
    indices into them): about ``tiles_per_batch`` tiles' worth of windows each; each waits for the decode
    batches of the tiles its windows read. ``Batch.tiles``: the codec tiles the cores cover."""
    owner = _owner(decode)
    per_batch = max(1, tiles_per_batch // (core_tiles * core_tiles))
    picked = list(range(len(windows))) if chosen is None else sorted(chosen)
    out = []
    for i, wins in enumerate(chunked(picked, per_batch)):
        tiles = tuple(sorted(t for w in wins for t in windows[w].core_tiles))
        deps = {owner[t] for w in wins for t in windows[w].read_tiles if t in owner}
        out.append(Batch("synthesize", i, tiles, frozenset(deps), windows=tuple(wins)))
    return out


def plan_evaluate(tiles: list[int], tiles_per_batch: int, upstream: list[Batch]) -> list[Batch]:
    """Evaluation batches over decodable tiles; each waits for the batches that wrote its tiles."""
    owners: dict[int, set[str]] = {}
    for b in upstream:
        for tile in b.tiles:
            owners.setdefault(tile, set()).add(b.key)
    return [Batch("evaluate", i, t, frozenset(k for tile in t for k in owners.get(tile, ())))
            for i, t in enumerate(chunked(sorted(tiles), tiles_per_batch))]
