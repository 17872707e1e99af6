"""The planners' invariants (tasks/plan.py), over odd scene shapes, tile sizes, halos and core sizes: enhancement
cores partition the scene on chunk boundaries, read boxes stay inside it, every batch plan covers every tile
exactly once and waits for exactly what it reads, and the chosen core size stays within its bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from groundstation.container import PassHeader, PassReader
from tasks.plan import (MAX_CORE_PX, chunked, choose_core_tiles, enhancement_windows, plan_decode, plan_enhance,
                        plan_evaluate, tiles_in_box)

from helpers import REPO

GOLDEN = REPO / "tests" / "golden" / "golden.gsp"
TILES = 6  # the 300x200 scene of 128-px tiles below

#: (width, height, tile): odd sizes, one-tile scenes, edge tiles of 1 px, more columns than rows and the reverse.
SHAPES = [(1, 1, 64), (65, 64, 64), (300, 190, 64), (257, 513, 256), (1000, 37, 128), (640, 640, 64)]


def header(width: int, height: int, tile: int) -> PassHeader:
    """A real, validated pass header (the golden pass's) with another scene size and tile grid."""
    base = PassReader(GOLDEN).header.model_dump()
    base["scene"].update(width=width, height=height)
    base["tiling"].update(tile_size=tile, tiles_x=-(-width // tile), tiles_y=-(-height // tile))
    return PassHeader.model_validate(base)


def _ids(case) -> str:
    return "x".join(map(str, case))


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
@pytest.mark.parametrize("halo", [0, 2, 32])
@pytest.mark.parametrize("core_tiles", [1, 2, 3])
def test_cores_partition_the_scene_and_read_boxes_stay_inside(shape, halo, core_tiles):
    w, h, t = shape
    hd = header(w, h, t)
    windows = enhancement_windows(hd, halo, core_tiles)
    covered = np.zeros((h, w), np.int32)
    for win in windows:
        c, r = win.core, win.read
        assert c.y0 % t == 0 and c.x0 % t == 0  # cores start on codec-tile (chunk) boundaries ...
        assert (c.y1 % t == 0 or c.y1 == h) and (c.x1 % t == 0 or c.x1 == w)  # ... and end on one or the edge
        assert c.height > 0 and c.width > 0
        covered[c.y0:c.y1, c.x0:c.x1] += 1
        assert 0 <= r.y0 <= c.y0 and c.y1 <= r.y1 <= h and 0 <= r.x0 <= c.x0 and c.x1 <= r.x1 <= w
        assert (r.y0, r.x0) == (max(0, c.y0 - halo), max(0, c.x0 - halo))  # core + halo, clipped
        assert (r.y1, r.x1) == (min(h, c.y1 + halo), min(w, c.x1 + halo))
    assert (covered == 1).all()  # one writer per pixel
    if core_tiles == 1:
        assert [tiles_in_box(hd, win.core) for win in windows] == [[i] for i in range(hd.tiling.n_tiles)]


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
@pytest.mark.parametrize("tiles_per_batch", [1, 3, 8])
def test_batches_cover_every_tile_once_and_wait_for_what_they_read(shape, tiles_per_batch):
    hd = header(*shape)
    n = hd.tiling.n_tiles
    intact = [i for i in range(n) if i % 5 != 3]  # some tiles lost: no decode batch, still enhanced (masked)
    decode = plan_decode(list(reversed(intact)), tiles_per_batch)
    assert sorted(itertools.chain.from_iterable(b.tiles for b in decode)) == intact
    assert all(1 <= len(b.tiles) <= tiles_per_batch and not b.deps for b in decode)
    assert len({b.key for b in decode}) == len(decode)
    owner = {tile: b.key for b in decode for tile in b.tiles}
    for core_tiles in (1, 2):
        windows = enhancement_windows(hd, 16, core_tiles)
        enhance = plan_enhance(hd, 16, tiles_per_batch, decode, core_tiles=core_tiles)
        assert sorted(itertools.chain.from_iterable(b.windows for b in enhance)) == list(range(len(windows)))
        assert sorted(itertools.chain.from_iterable(b.tiles for b in enhance)) == list(range(n))
        for b in enhance:
            read = {tile for wi in b.windows for tile in tiles_in_box(hd, windows[wi].read)}
            assert b.deps == {owner[tile] for tile in read if tile in owner}
        evaluate = plan_evaluate(intact, tiles_per_batch, decode + enhance)
        assert sorted(itertools.chain.from_iterable(b.tiles for b in evaluate)) == intact
        for b in evaluate:
            writers = {x.key for x in decode + enhance if set(x.tiles) & set(b.tiles)}
            assert b.deps == writers


@pytest.mark.parametrize("shape", SHAPES + [(16384, 16384, 256), (5000, 300, 2048)], ids=_ids)
@pytest.mark.parametrize("workers", [1, 2, 7])
def test_choose_core_tiles_stays_within_its_bounds(shape, workers):
    hd = header(*shape)
    t = hd.tiling.tile_size
    k = choose_core_tiles(hd, 32, workers)
    assert 1 <= k <= max(1, MAX_CORE_PX // t)
    assert k == 1 or k * t <= MAX_CORE_PX
    assert 1 <= choose_core_tiles(hd, 32, workers, max_core_px=t) <= 1


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="batch size"):
        chunked([1, 2], 0)
    with pytest.raises(ValueError, match="core_tiles"):
        enhancement_windows(header(300, 190, 64), 32, 0)


def test_enhance_batches_wait_for_the_decode_batches_their_halo_touches():
    from enhancer.tiling import Box

    hd = header(300, 200, 128)  # 2 rows x 3 cols of 128-px tiles
    decode = plan_decode(list(range(TILES)), 2)  # tiles (0,1) (2,3) (4,5); grid 2 rows x 3 cols
    enhance = plan_enhance(hd, 32, 1, decode)
    windows = enhancement_windows(hd, 32)
    assert [w.core for w in windows] == [Box(*hd.tile_window(i)) for i in range(TILES)]
    assert tiles_in_box(hd, windows[0].read) == [0, 1, 3, 4]
    assert enhance[0].deps == {"decode-00000", "decode-00001", "decode-00002"}  # tiles 0, 1 | 3 | 4
    assert all(len(b.tiles) == 1 for b in enhance)
    no_halo = plan_enhance(hd, 0, 1, decode)
    assert [b.deps for b in no_halo] == [{"decode-00000"}, {"decode-00000"}, {"decode-00001"}, {"decode-00001"},
                                         {"decode-00002"}, {"decode-00002"}]


def test_enhancement_cores_of_several_tiles_cover_whole_chunks_and_cut_the_halo():
    h = header(1536, 1536, 256)  # 6x6 tiles
    assert choose_core_tiles(h, 32, workers=2, last_rows=2) == 3  # 4 windows of 3x3 tiles: balanced on 2 workers
    assert choose_core_tiles(h, 32, workers=2) == 2  # tile-wise: only the last row waits, smaller windows
    big = header(16384, 16384, 256)
    assert choose_core_tiles(big, 32, workers=2) == 4  # capped at 1024 px
    assert choose_core_tiles(big, 32, workers=2, last_rows=2) == 4  # the end of a big scene is a small share
    # a 16x12-tile drone frame decoded in mosaic mode: 4x4-tile cores leave 4 windows of 1 Mpx for the pass's
    # last rows, 3x3 ones 6 smaller ones for 5 % more pixels (pass_latency.py measured 3x3 ahead of 4x4)
    frame = header(4000, 3000, 256)
    assert choose_core_tiles(frame, 32, workers=2, last_rows=2) == 3
    for k in (1, 2, 3, 4):
        wins = enhancement_windows(h, 32, k)
        covered = np.zeros((1536, 1536), int)
        for w in wins:
            assert w.core.y0 % 256 == 0 and w.core.x0 % 256 == 0  # cores start on chunk boundaries
            assert w.core.y1 % 256 == 0 or w.core.y1 == 1536
            covered[w.core.y0:w.core.y1, w.core.x0:w.core.x1] += 1
        assert (covered == 1).all()  # one writer per pixel, so per chunk
    reads = lambda k: sum(w.read.height * w.read.width for w in enhancement_windows(big, 32, k)) / 16384 ** 2
    assert reads(1) > 1.5 and reads(4) < 1.14  # the halo's cost: 1.56x -> 1.13x the pixels
    decode = plan_decode(list(range(36)), 8)
    enhance = plan_enhance(h, 32, 8, decode, core_tiles=3)
    assert [len(b.windows) for b in enhance] == [1, 1, 1, 1]
    assert sorted(t for b in enhance for t in b.tiles) == list(range(36))
    assert enhance[0].tiles == (0, 1, 2, 6, 7, 8, 12, 13, 14)
    assert enhance[0].deps == {"decode-00000", "decode-00001", "decode-00002"}  # tiles 0..15 + halo row 3: 18..21
