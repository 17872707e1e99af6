"""Validating a pass container and planning the work on it: pure functions plus one small task.

The plan has three stages over the pass's codec tiles (row-major tile indices):

* ``decode`` batches: the tiles that have an intact record, ``tiles_per_batch`` at a time. Each batch writes
  the ``decoded`` and ``valid`` chunks of its own tiles only (a codec tile is one chunk).
* ``enhance`` batches: one enhancement window per codec tile, its core = the tile (so the core is one chunk
  of ``enhanced``) and its read box = the core grown by ``halo`` (:func:`enhancer.tiling.plan_windows`). A
  batch depends on the decode batches of every tile its read boxes touch.
* ``evaluate`` batches (only with a reference scene): full-reference metrics of a batch's tiles; they depend
  on the batches that wrote those tiles' last product.

Only tile indices, windows and small dicts travel; the flow decides the order (see flows/process_pass.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from enhancer.tiling import Box, Window, plan_windows
from groundstation.container import PassHeader, PassReader

from .state import retry_unless_operator_error

__all__ = ["Batch", "PassInfo", "chunked", "enhancement_windows", "validate_pass", "plan_decode", "plan_enhance",
           "plan_evaluate", "tiles_in_box"]

STAGES = ("decode", "enhance", "evaluate")


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


def read_pass_info(path: str | Path) -> PassInfo:
    """Parse the header (a bad one raises PassFormatError) and scan every record once."""
    reader = PassReader(path)
    scan = reader.scan()
    lost = {i: (str(p.reason), p.detail) for i, p in scan.lost_tiles().items()}
    return PassInfo(path=str(path), header=reader.header, records=dict(scan.records), lost=lost,
                    notes=list(scan.notes), trailer=scan.trailer, size=scan.size)


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


def enhancement_windows(header: PassHeader, halo: int) -> list[Window]:
    """One window per codec tile, in tile order: core = the tile, read box = core + halo (clipped)."""
    s, t = header.scene, header.tiling.tile_size
    windows = plan_windows((s.height, s.width), core=t, halo=halo)
    assert len(windows) == header.tiling.n_tiles, "window cores must be the codec tiles"
    return windows


def tiles_in_box(header: PassHeader, box: Box) -> list[int]:
    """Codec tiles that intersect a pixel box."""
    t, nx = header.tiling.tile_size, header.tiling.tiles_x
    rows = range(box.y0 // t, (box.y1 - 1) // t + 1)
    cols = range(box.x0 // t, (box.x1 - 1) // t + 1)
    return [r * nx + c for r in rows for c in cols]


def _owner(batches: list[Batch]) -> dict[int, str]:
    return {tile: b.key for b in batches for tile in b.tiles}


def plan_enhance(header: PassHeader, halo: int, tiles_per_batch: int, decode: list[Batch]) -> list[Batch]:
    """Enhancement batches over every tile; each waits for the decode batches its read boxes touch."""
    windows = enhancement_windows(header, halo)
    owner = _owner(decode)
    out = []
    for i, tiles in enumerate(chunked(list(range(header.tiling.n_tiles)), tiles_per_batch)):
        deps = {owner[n] for tile in tiles for n in tiles_in_box(header, windows[tile].read) if n in owner}
        out.append(Batch("enhance", i, tiles, frozenset(deps)))
    return out


def plan_evaluate(tiles: list[int], tiles_per_batch: int, upstream: list[Batch]) -> list[Batch]:
    """Evaluation batches over decodable tiles; each waits for the batches that wrote its tiles."""
    owners: dict[int, set[str]] = {}
    for b in upstream:
        for tile in b.tiles:
            owners.setdefault(tile, set()).add(b.key)
    return [Batch("evaluate", i, t, frozenset(k for tile in t for k in owners.get(tile, ())))
            for i, t in enumerate(chunked(sorted(tiles), tiles_per_batch))]
