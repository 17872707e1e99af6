"""The satellite side, simulated: GeoTIFF scene -> pass container, one codec tile at a time."""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import compressai
import torch
from tqdm import tqdm

from . import __version__
from .codec import ARCHITECTURE, CODEC_ALIGN, TileCodec, load_codec
from .container import (PIXEL_GRID, CodecInfo, EncoderInfo, FORMAT_VERSION, PassHeader, PassWriter, SceneInfo, TileRecord,
                        TilingInfo, pack_mask)
from .errors import ConfigError
from .registry import resolve_model
from .scene import open_scene

log = logging.getLogger(__name__)


@dataclass
class EncodeResult:
    path: Path
    pass_id: str
    tiles: int
    bytes: int
    bpp: float
    header: PassHeader


def encode_scene(
    scene_path: str | Path,
    out: str | Path,
    *,
    codec: str | None = None,
    tile_size: int = 256,
    pass_id: str | None = None,
    acquired: str | None = None,
    bands: list[int] | None = None,
    threads: int = 1,
    device: str = "cpu",
    progress: bool = False,
    require_crs: bool = False,
    entropy: str = "float64",
) -> EncodeResult:
    """Encode a scene into a pass container. Memory: one tile at a time (windowed reads)."""
    if tile_size % CODEC_ALIGN or not 64 <= tile_size <= 4096:
        raise ConfigError(f"--tile-size {tile_size}: must be a multiple of {CODEC_ALIGN} between 64 and 4096")
    name, ckpt, sha, entry = resolve_model(codec, "codec")
    loaded = load_codec(ckpt, sha)
    tc = TileCodec(loaded, device=device, threads=threads, entropy=entropy)
    out = Path(out)
    with open_scene(scene_path, bands, require_crs=require_crs) as scene:
        ds = scene.ds
        header = PassHeader(
            format_version=FORMAT_VERSION,
            pass_id=pass_id or Path(scene_path).stem,
            pass_uid=secrets.token_hex(16),
            acquisition_time=acquired or datetime.now(timezone.utc).isoformat(timespec="seconds"),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            scene=SceneInfo(width=ds.width, height=ds.height, crs_wkt=ds.crs.to_wkt() if ds.crs else PIXEL_GRID,
                            transform=tuple(ds.transform)[:6],
                            source=Path(scene_path).name, source_dtype=str(ds.dtypes[0]), source_bands=ds.count),
            tiling=TilingInfo(tile_size=tile_size, tiles_x=math.ceil(ds.width / tile_size),
                              tiles_y=math.ceil(ds.height / tile_size)),
            codec=CodecInfo(name=name, architecture=ARCHITECTURE, arch=loaded.arch.as_dict(), sha256=loaded.sha256,
                            lmbda=entry.lmbda if entry else None, entropy=entropy),
            bands=scene.bands,
            encoder=EncoderInfo(software="groundstation", version=__version__, torch=torch.__version__,
                                compressai=compressai.__version__, threads=threads, device=device),
        )
        total = 0
        log.info("encoding %s (%dx%d, %s) into %d tiles of %dpx with codec %s", scene_path, ds.width, ds.height,
                 scene.bands.rule, header.tiling.n_tiles, tile_size, name)
        with PassWriter(out, header) as writer:
            for index in tqdm(range(header.tiling.n_tiles), disable=not progress, desc="encode", unit="tile"):
                r0, r1, c0, c1 = header.tile_window(index)
                rgb, valid = scene.read_rgb(r0, r1, c0, c1)
                enc = tc.encode(rgb)
                writer.write(TileRecord(tile_index=index, strings=enc.strings, z_hw=enc.z_hw, y_hw=enc.y_hw,
                                        witness=enc.witness, mask=pack_mask(valid)))
                total += enc.nbytes
    bpp = total * 8 / (header.scene.width * header.scene.height)
    log.info("wrote %s: %d tiles, %d bytes of ELIC strings, %.4f bpp", out, header.tiling.n_tiles, total, bpp)
    return EncodeResult(path=out, pass_id=header.pass_id, tiles=header.tiling.n_tiles, bytes=total, bpp=bpp, header=header)
