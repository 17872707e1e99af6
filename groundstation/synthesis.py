"""Seamless decoding: ELIC's synthesis transform g_s run over the stitched latent mosaic, in windows.

The satellite codes every codec tile on its own, so a tile's latent y_hat knows nothing of its neighbours and
tile-wise synthesis (g_s per tile) leaves a step at every tile boundary. The symbols of every tile stay exactly
as sent (entropy decoding, the witness check and retransmission are per tile, unchanged); only how pixels are
made from the decoded latents changes here:

* the tiles' latents are placed side by side at their tile positions (a 256 px tile is 16x16 latent pixels:
  g_s upsamples by :data:`LATENT_STRIDE`), forming the latent mosaic of the scene;
* a **synthesis window** writes the pixels of a core of ``core_tiles x core_tiles`` codec tiles (whole chunks of
  ``decoded``: one writer per chunk) and reads the latents of the core grown by :data:`HALO_LATENT` latent
  pixels per side (clipped to the mosaic), so every pixel near a boundary sees both tiles' latents.

**The halo** was chosen from g_s's measured effective receptive field (``benchmarks/seams.py``, ``halo_sweep``
in its result): for a core synthesised from a latent crop grown by h latent pixels, compared with g_s over
the whole latent, h = 0 (tile-wise) differs by up to 34 DN, h = 2 by at most 1 DN on 0.75 % of pixels, h = 4 by
at most 1 DN on 0.002 % of pixels, h >= 5 not at all. :data:`HALO_LATENT` = 4 (64 px).

**Lost tiles.** A missing latent is never stitched in. A core tile whose own latent box grown by the halo
touches a lost tile (its 8 neighbours, since the halo is smaller than a tile) is synthesised *tile-wise* from
its own latent alone: its pixels are exactly those of tile-wise decoding, so a lost tile influences no pixel of
the product (its region's latents are zero only so that the window has a rectangular input, and nothing within
the halo of it is kept). A lost core tile itself gets zeros (it is masked, ``valid`` = 0, as before).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from .codec import CODEC_ALIGN, TileCodec, to_uint8_hwc
from .errors import ProductError
from .footprints import Grid

__all__ = ["DECODE_MODES", "DEFAULT_BLEND", "DEFAULT_CORE_TILES", "HALO_LATENT", "LATENT_STRIDE", "LatentStore",
           "SynthesisWindow", "TileGrid", "boundary_weight", "create_latent_store", "latent_store_path",
           "roundtrip_tiled", "synthesis_windows", "tiled_latents", "synthesize_into", "synthesize_mosaic",
           "synthesize_window", "windows_reading"]

#: g_s upsamples the latent by this factor (four stride-2 transposed convolutions).
LATENT_STRIDE = 16
#: Latent pixels of context per side of a synthesis window's core (see the module docstring for the measurement).
HALO_LATENT = 4
#: Core side in codec tiles: 2x2 tiles of 256 px with a 4-pixel latent halo read 1.56x the latent they write
#: inside the scene (less at its edges); 1x1 would read 2.25x.
DEFAULT_CORE_TILES = 2
#: Pixels over which each tile's own synthesis is faded into the mosaic synthesis at its boundaries (0: the
#: mosaic synthesis everywhere). 0 from ``benchmarks/seams.py`` (docs/seams.md): fading over 16 px halves the
#: PSNR cost of the mosaic synthesis but runs g_s twice per tile (1.44-1.71x the decode time).
DEFAULT_BLEND = 0
#: How a product's pixels are made from the tiles' latents: ``tile`` (g_s per tile, seams at tile boundaries)
#: or ``mosaic`` (g_s over the stitched latent mosaic in windows: this module).
DECODE_MODES = ("tile", "mosaic")


@dataclass(frozen=True)
class TileGrid(Grid):
    """The codec-tile grid of a scene (:class:`groundstation.footprints.Grid`) with its latent mosaic."""

    def __post_init__(self) -> None:
        if self.tile < CODEC_ALIGN or self.tile % CODEC_ALIGN:
            raise ValueError(f"tile size {self.tile} must be a positive multiple of {CODEC_ALIGN}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"scene size must be positive, got {self.height}x{self.width}")

    @classmethod
    def of_size(cls, height: int, width: int, tile_size: int) -> "TileGrid":
        """A grid without georeferencing (all that synthesis needs)."""
        return cls(width, height, tile_size, "", (1.0, 0.0, 0.0, 0.0, 1.0, 0.0))

    @property
    def tile_size(self) -> int:
        return self.tile

    def latent_box(self, index: int) -> tuple[int, int, int, int]:
        """Latent box of a tile in the mosaic: its latent is that of the tile padded to a multiple of 64 px."""
        r0, r1, c0, c1 = self.tile_window(index)
        s, a = LATENT_STRIDE, CODEC_ALIGN
        return (r0 // s, r0 // s + math.ceil((r1 - r0) / a) * a // s,
                c0 // s, c0 // s + math.ceil((c1 - c0) / a) * a // s)

    @property
    def latent_shape(self) -> tuple[int, int]:
        """Latent mosaic size: the last row/column of tiles may carry latent beyond the scene (their padding)."""
        return self.latent_box(self.n_tiles - 1)[1], self.latent_box(self.n_tiles - 1)[3]

    def tiles_in_latent_box(self, y0: int, y1: int, x0: int, x1: int) -> list[int]:
        """Tiles whose latent box intersects the latent box [y0, y1) x [x0, x1)."""
        t = self.tile_size // LATENT_STRIDE
        rows = range(max(0, y0 // t), min(self.tiles_y, (y1 - 1) // t + 1))
        cols = range(max(0, x0 // t), min(self.tiles_x, (x1 - 1) // t + 1))
        return [r * self.tiles_x + c for r in rows for c in cols]


@dataclass(frozen=True)
class SynthesisWindow:
    """A core of whole codec tiles (the pixels the window writes) and the latent box it reads (core + halo)."""

    core: tuple[int, int, int, int]  # pixel box r0, r1, c0, c1 (clipped to the scene)
    core_tiles: tuple[int, ...]
    read: tuple[int, int, int, int]  # latent box y0, y1, x0, x1 (clipped to the latent mosaic)
    read_tiles: tuple[int, ...]  # the tiles whose latents the window reads: it is ready when these are known


def synthesis_windows(grid: TileGrid, core_tiles: int = DEFAULT_CORE_TILES,
                      halo: int = HALO_LATENT) -> list[SynthesisWindow]:
    """Windows in row-major order; their cores partition the scene into blocks of ``core_tiles`` x
    ``core_tiles`` codec tiles (smaller at the bottom and right edges)."""
    if core_tiles < 1:
        raise ValueError(f"core_tiles must be >= 1, got {core_tiles}")
    if halo < 0:
        raise ValueError(f"halo must be >= 0 latent pixels, got {halo}")
    ly, lx = grid.latent_shape
    out = []
    for ty in range(0, grid.tiles_y, core_tiles):
        for tx in range(0, grid.tiles_x, core_tiles):
            tiles = [r * grid.tiles_x + c for r in range(ty, min(ty + core_tiles, grid.tiles_y))
                     for c in range(tx, min(tx + core_tiles, grid.tiles_x))]
            first, last = grid.tile_window(tiles[0]), grid.tile_window(tiles[-1])
            lfirst, llast = grid.latent_box(tiles[0]), grid.latent_box(tiles[-1])
            read = (max(lfirst[0] - halo, 0), min(llast[1] + halo, ly),
                    max(lfirst[2] - halo, 0), min(llast[3] + halo, lx))
            out.append(SynthesisWindow(core=(first[0], last[1], first[2], last[3]), core_tiles=tuple(tiles),
                                       read=read, read_tiles=tuple(grid.tiles_in_latent_box(*read))))
    return out


def windows_reading(windows: list[SynthesisWindow], tiles) -> list[SynthesisWindow]:
    """The windows that read any of ``tiles``: what a supplement of those tiles re-synthesises (a resent tile
    changes its own pixels and, through the halo, its neighbours' near the shared boundaries)."""
    tiles = set(tiles)
    return [w for w in windows if tiles.intersection(w.read_tiles)]


def _isolated_tiles(grid: TileGrid, window: SynthesisWindow, lost: set[int], halo: int) -> set[int]:
    """Core tiles that must be synthesised tile-wise: a lost tile lies within ``halo`` of their latent box."""
    if not lost:
        return set()
    ly, lx = grid.latent_shape
    out = set()
    for tile in window.core_tiles:
        y0, y1, x0, x1 = grid.latent_box(tile)
        near = grid.tiles_in_latent_box(max(y0 - halo, 0), min(y1 + halo, ly), max(x0 - halo, 0), min(x1 + halo, lx))
        if lost.intersection(near):
            out.add(tile)
    return out


def boundary_weight(grid: TileGrid, tile: int, blend: int) -> np.ndarray:
    """(h, w) weight of the mosaic synthesis in a tile: 1 on the pixels that touch a neighbouring tile, falling
    linearly to 0 at ``blend`` px from the tile's boundaries with other tiles (scene edges are no boundary)."""
    r0, r1, c0, c1 = grid.tile_window(tile)
    y = np.arange(r0, r1)[:, None].astype(np.float64)
    x = np.arange(c0, c1)[None, :].astype(np.float64)
    far = np.full((r1 - r0, c1 - c0), np.inf)
    for has, dist in ((r0 > 0, y - r0), (r1 < grid.height, r1 - 1 - y), (c0 > 0, x - c0),
                      (c1 < grid.width, c1 - 1 - x)):
        if has:
            far = np.minimum(far, dist)
    return np.clip(1 - far / blend, 0, 1) if blend > 0 else np.ones_like(far)


def synthesize_window(tc: TileCodec, grid: TileGrid, window: SynthesisWindow, latents: Mapping[int, torch.Tensor],
                      *, halo: int = HALO_LATENT, blend: int = DEFAULT_BLEND) -> np.ndarray:
    """The decoded core pixels of one window: (3, core height, core width) uint8.

    ``latents``: tile -> its entropy-decoded y_hat (1, M, h, w), for the window's ``read_tiles``; a read tile
    without an entry is lost (see the module docstring for what its neighbours get). ``halo`` must be the one
    the window was planned with. ``blend`` > 0: each tile's pixels are its tile-wise synthesis plus the mosaic
    synthesis' difference weighted by :func:`boundary_weight` (the mosaic's pixels at the boundary, the tile's
    own ``blend`` px inside it); 0: the mosaic synthesis alone. g_s runs in ``tc``'s synthesis mode and on its
    synthesis device.
    """
    lost = {t for t in window.read_tiles if t not in latents}
    r0, r1, c0, c1 = window.core
    out = np.zeros((3, r1 - r0, c1 - c0), np.uint8)
    present = [t for t in window.core_tiles if t not in lost]
    if not present:
        return out
    isolated = _isolated_tiles(grid, window, lost, halo)
    y0, y1, x0, x1 = window.read
    core = None
    if any(t not in isolated for t in present):
        some = latents[present[0]]
        mosaic = torch.zeros((1, some.shape[1], y1 - y0, x1 - x0), dtype=some.dtype)
        for tile in window.read_tiles:
            if tile in lost:
                continue
            ty0, ty1, tx0, tx1 = grid.latent_box(tile)
            lat = latents[tile]
            if tuple(lat.shape[-2:]) != (ty1 - ty0, tx1 - tx0):
                raise ValueError(f"tile {tile}: latent {tuple(lat.shape[-2:])} does not fit its "
                                 f"{ty1 - ty0}x{tx1 - tx0} place in the latent mosaic")
            sy0, sy1, sx0, sx1 = max(ty0, y0), min(ty1, y1), max(tx0, x0), min(tx1, x1)
            mosaic[..., sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = lat[..., sy0 - ty0: sy1 - ty0, sx0 - tx0: sx1 - tx0]
        s = LATENT_STRIDE
        core = tc.synthesize(mosaic, mosaic=True)[0, :, r0 - y0 * s: r1 - y0 * s, c0 - x0 * s: c1 - x0 * s].cpu()
    for tile in present:
        tr0, tr1, tc0, tc1 = grid.tile_window(tile)
        box = (slice(None), slice(tr0 - r0, tr1 - r0), slice(tc0 - c0, tc1 - c0))
        if tile in isolated or blend > 0:  # tile-wise pixels: all of them, or the detail under the blend
            own = tc.synthesize(latents[tile])[0, :, : tr1 - tr0, : tc1 - tc0].cpu()
            if tile not in isolated:
                w = torch.from_numpy(boundary_weight(grid, tile, blend)).to(own.dtype)
                own = own + w * (core[box] - own)
        else:
            own = core[box]
        out[box] = to_uint8_hwc(own).transpose(2, 0, 1)
    return out


def synthesize_mosaic(tc: TileCodec, grid: TileGrid, latents: Mapping[int, torch.Tensor], *,
                      core_tiles: int = DEFAULT_CORE_TILES, halo: int = HALO_LATENT,
                      blend: int = DEFAULT_BLEND) -> np.ndarray:
    """The whole decoded mosaic (3, height, width) uint8 from the tiles' latents (missing tiles: lost)."""
    out = np.zeros((3, grid.height, grid.width), np.uint8)
    for win in synthesis_windows(grid, core_tiles, halo):
        r0, r1, c0, c1 = win.core
        out[:, r0:r1, c0:c1] = synthesize_window(tc, grid, win, latents, halo=halo, blend=blend)
    return out


def tiled_latents(tc: TileCodec, rgb: np.ndarray, tile_size: int, *, what: str = "image"
                  ) -> tuple[TileGrid, dict[int, torch.Tensor], set[int], int]:
    """``rgb`` coded as the satellite codes a scene, every ``tile_size`` codec tile on its own, and each tile's
    symbols entropy-decoded and checked against its witness: (grid, tile -> y_hat, tiles that needed the strict
    retry, bytes of all the tiles' bitstreams)."""
    grid = TileGrid.of_size(*rgb.shape[:2], tile_size)
    latents: dict[int, torch.Tensor] = {}
    strict: set[int] = set()
    nbytes = 0
    for index in range(grid.n_tiles):
        r0, r1, c0, c1 = grid.tile_window(index)
        enc = tc.encode(np.ascontiguousarray(rgb[r0:r1, c0:c1]))
        nbytes += enc.nbytes
        latents[index], retried = tc.decode_latent_checked(enc.strings, enc.z_hw, enc.y_hw, enc.witness,
                                                           what=f"{what}, tile {index}")
        if retried:
            strict.add(index)
    return grid, latents, strict, nbytes


def roundtrip_tiled(tc: TileCodec, rgb: np.ndarray, tile_size: int, mode: str = "mosaic", *,
                    what: str = "image") -> tuple[np.ndarray, int]:
    """Code ``rgb`` ((H, W, 3) uint8) as the satellite does, every ``tile_size`` codec tile on its own, and
    decode it as the station does: each tile's symbols entropy-decoded and checked against its witness, the
    pixels made in ``mode`` (``tile``: g_s per tile; ``mosaic``: over the latent mosaic). Returns (decoded
    (H, W, 3) uint8, bytes of all the tiles' bitstreams). The evaluation's tiled protocol (``gsp evaluate
    --tile-size``), where the seams between tiles can be measured."""
    if mode not in DECODE_MODES:
        raise ValueError(f"decode mode {mode!r}: one of {', '.join(DECODE_MODES)}")
    h, w = rgb.shape[:2]
    grid, latents, strict, nbytes = tiled_latents(tc, rgb, tile_size, what=what)
    if mode == "mosaic":
        return synthesize_mosaic(tc, grid, latents).transpose(1, 2, 0).copy(), nbytes
    out = np.zeros((h, w, 3), np.uint8)
    for index, y_hat in latents.items():
        r0, r1, c0, c1 = grid.tile_window(index)
        out[r0:r1, c0:c1] = to_uint8_hwc(tc.synthesize(y_hat, strict=index in strict)[0, :, : r1 - r0, : c1 - c0])
    return out, nbytes


# ------------------------------------------------------------------------------------------- the latent store
#: Beside ``<name>.zarr``: ``<name>.latents`` (a Zarr store not named ``*.zarr``, so nothing that looks for
#: products takes it for one), the entropy-decoded latents of the product's tiles. A
#: synthesis window reads it; a supplement re-synthesises from it the windows its tiles touch.
LATENT_SUFFIX = ".latents"
#: Per-tile state in the store: not yet known, decoded (its latent is stored), lost (never stitched in).
TILE_UNKNOWN, TILE_DECODED, TILE_LOST = 0, 1, 2


def latent_store_path(product: str | Path) -> Path:
    """``<name>.latents`` beside the product ``<name>.zarr``."""
    product = Path(product)
    return product.with_name(product.name.removesuffix(".zarr") + LATENT_SUFFIX)


def create_latent_store(product: str | Path, grid: TileGrid, channels: int, dtype: str) -> Path:
    """An empty latent store for ``product``: ``y_hat`` (channels, latent rows, latent cols), one chunk per tile
    (so each tile's decoder is its chunk's only writer), and ``state`` (tiles_y, tiles_x), one chunk per tile."""
    import zarr

    path = latent_store_path(product)
    if path.exists():
        raise ProductError(f"{path}: a latent store already exists (left by an earlier decode of this product?); "
                           "remove it or choose another output path")
    t = grid.tile_size // LATENT_STRIDE
    group = zarr.open_group(str(path), mode="w-", zarr_format=2)
    group.create_array("y_hat", shape=(channels, *grid.latent_shape), chunks=(channels, t, t), dtype=dtype,
                       fill_value=0)
    group.create_array("state", shape=(grid.tiles_y, grid.tiles_x), chunks=(1, 1), dtype="uint8", fill_value=0)
    group.attrs.update({"height": grid.height, "width": grid.width, "tile_size": grid.tile_size})
    return path


class LatentStore:
    """The latent store of a product, opened for reading and writing tiles' latents and states."""

    def __init__(self, product: str | Path) -> None:
        import zarr

        self.path = latent_store_path(product)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no latent store (the product was decoded tile by tile)")
        self.group = zarr.open_group(str(self.path), mode="r+")
        a = self.group.attrs
        self.grid = TileGrid.of_size(int(a["height"]), int(a["width"]), int(a["tile_size"]))

    def put(self, tile: int, y_hat: torch.Tensor | None) -> None:
        """Store a decoded tile's latent, or (None) mark the tile lost."""
        r, c = divmod(tile, self.grid.tiles_x)
        if y_hat is not None:
            y0, y1, x0, x1 = self.grid.latent_box(tile)
            self.group["y_hat"][:, y0:y1, x0:x1] = y_hat[0].cpu().numpy()
        self.group["state"][r, c] = TILE_DECODED if y_hat is not None else TILE_LOST

    def states(self) -> np.ndarray:
        """(tiles_y * tiles_x,) per-tile state, row-major."""
        return np.asarray(self.group["state"][:]).ravel()

    def ready(self, window: SynthesisWindow) -> bool:
        """A window is ready when every tile it reads is decoded or known lost."""
        states = self.states()
        return all(states[t] != TILE_UNKNOWN for t in window.read_tiles)

    def latents(self, tiles) -> dict[int, torch.Tensor]:
        """The stored latents of the decoded ones among ``tiles`` (lost and unknown tiles are left out)."""
        states = self.states()
        out = {}
        for tile in tiles:
            if states[tile] == TILE_DECODED:
                y0, y1, x0, x1 = self.grid.latent_box(tile)
                out[tile] = torch.from_numpy(np.asarray(self.group["y_hat"][:, y0:y1, x0:x1]))[None]
        return out


def synthesize_into(tc: TileCodec, product: str | Path, windows: list[SynthesisWindow], *,
                    halo: int = HALO_LATENT, blend: int = DEFAULT_BLEND) -> dict[int, float]:
    """Synthesise ``windows`` from the product's latent store and write their cores into its ``decoded`` array
    (each core = whole chunks: one writer per chunk). Every window must be ready (:meth:`LatentStore.ready`);
    returns ms per decoded core tile (each window's time shared out by its decoded tiles)."""
    import time

    from .product import open_arrays, write_block

    store = LatentStore(product)
    group = open_arrays(product)
    states = store.states()
    ms: dict[int, float] = {}
    for win in windows:
        if not store.ready(win):
            unknown = [t for t in win.read_tiles if states[t] == TILE_UNKNOWN]
            raise ValueError(f"synthesis window over tiles {list(win.core_tiles)} is not ready: tiles {unknown} are "
                             "neither decoded nor known lost")
        t0 = time.perf_counter()
        block = synthesize_window(tc, store.grid, win, store.latents(win.read_tiles), halo=halo, blend=blend)
        write_block(group, "decoded", win.core[0], win.core[2], block)
        done = [t for t in win.core_tiles if states[t] == TILE_DECODED]
        for t in done:
            ms[t] = (time.perf_counter() - t0) * 1e3 / len(done)
    return ms
