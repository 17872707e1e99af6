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
from .container import (DEFAULT_ENTROPY, ENTROPY_MODES, FALLBACK_ENTROPY, PIXEL_GRID, CodecInfo, EncoderInfo, FORMAT_VERSION, PassHeader, PassReader, PassWriter, SceneInfo,
                        SupplementInfo, TileRecord, TilingInfo, pack_mask)
from .errors import CheckpointError, ConfigError, SceneError
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
    entropy: str | None = None,
    tiles: list[int] | None = None,
    supplement_of: str | Path | None = None,
) -> EncodeResult:
    """Encode a scene into a pass container. Memory: one tile at a time (windowed reads).

    ``entropy``: the numeric mode of the entropy path (recorded in the header); None: the default for new passes
    (:func:`choose_entropy`). ``tiles`` with ``supplement_of`` (the full pass as first sent): a *supplement*, the retransmission of those
    tiles only (:func:`encode_supplement`)."""
    if tiles is not None or supplement_of is not None:
        if tiles is None or supplement_of is None:
            raise ConfigError("--tiles and --supplement-of go together: a supplement resends TILES of the pass "
                              "PASS (whose header gives the pass uid, grid, codec and band rule)")
        return encode_supplement(scene_path, out, supplement_of, tiles, codec=codec, device=device,
                                 progress=progress)
    if tile_size % CODEC_ALIGN or not 64 <= tile_size <= 4096:
        raise ConfigError(f"--tile-size {tile_size}: must be a multiple of {CODEC_ALIGN} between 64 and 4096")
    name, ckpt, sha, entry = resolve_model(codec, "codec")
    loaded = load_codec(ckpt, sha)
    entropy = choose_entropy(loaded, entropy, name)
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
                            lmbda=entry.lmbda if entry else None, entropy=entropy,
                            int_prior_sha256=tc.int_prior_sha256),
            bands=scene.bands,
            encoder=EncoderInfo(software="groundstation", version=__version__, torch=torch.__version__,
                                compressai=compressai.__version__, threads=threads, device=device),
        )
        log.info("encoding %s (%dx%d, %s) into %d tiles of %dpx with codec %s", scene_path, ds.width, ds.height,
                 scene.bands.rule, header.tiling.n_tiles, tile_size, name)
        with PassWriter(out, header) as writer:
            total, _ = _write_tiles(writer, header, scene, tc, range(header.tiling.n_tiles), progress)
    bpp = total * 8 / (header.scene.width * header.scene.height)
    log.info("wrote %s: %d tiles, %d bytes of ELIC strings, %.4f bpp", out, header.tiling.n_tiles, total, bpp)
    return EncodeResult(path=out, pass_id=header.pass_id, tiles=header.tiling.n_tiles, bytes=total, bpp=bpp, header=header)


def choose_entropy(loaded, entropy: str | None, name: str) -> str:
    """The entropy mode a new pass is encoded in. A mode given (``--entropy``, the station's ``encode.entropy``)
    is used as it is: ``int`` without the codec's integer prior is then a CheckpointError saying how to make
    one. None, the default: ``int`` (DEFAULT_ENTROPY) when the codec has an integer prior (a registry
    ``int_prior``, or ``NAME.int.pt`` beside the checkpoint), else ``float64`` (FALLBACK_ENTROPY, which
    decodes on every x86 CPU) with a logged note: a codec just trained still encodes, and its passes say which
    mode they are in."""
    from .intprior import has_int_prior, quantise_hint, sidecar_path

    if entropy is not None:
        if entropy not in ENTROPY_MODES:
            raise ConfigError(f"entropy mode {entropy!r}: choose one of {', '.join(ENTROPY_MODES)}")
        return entropy
    if DEFAULT_ENTROPY != "int" or has_int_prior(loaded):
        return DEFAULT_ENTROPY
    log.warning("codec %s has no integer prior (no registry int_prior, no %s beside it): encoding in entropy mode "
                "%s, not the default %s; to get %s, %s (--entropy chooses a mode explicitly)", name,
                sidecar_path(loaded.path or "CODEC.pt").name, FALLBACK_ENTROPY, DEFAULT_ENTROPY, DEFAULT_ENTROPY,
                quantise_hint(loaded.path or None))
    return FALLBACK_ENTROPY


def parse_tiles(text: str) -> list[int]:
    """``"3,7"`` / ``"3-5,9"`` -> sorted distinct tile indices (ConfigError naming what is wrong)."""
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ConfigError(f"--tiles {text!r}: give tile indices like 3,7 or 3-5,9") from None
    if any(t < 0 for t in out):
        raise ConfigError(f"--tiles {text!r}: tile indices start at 0")
    return sorted(out)


def encode_supplement(scene_path: str | Path, out: str | Path, original: str | Path, tiles: list[int], *,
                      codec: str | None = None, device: str = "cpu", progress: bool = False) -> EncodeResult:
    """The satellite resending ``tiles`` of the pass ``original``: a container with the original's header (same
    pass uid, grid, codec, band rule, encoder threads and entropy mode, so each record is the one the full pass
    carried) plus ``supplement`` naming the tiles, holding only their records.

    Errors (ConfigError / SceneError / CheckpointError, nothing written): a tile outside the pass's grid, a
    scene of another size than the pass's, a codec whose sha256 is not the pass's.
    """
    head = PassReader(original).header
    n = head.tiling.n_tiles
    tiles = sorted(set(int(t) for t in tiles))
    if not tiles:
        raise ConfigError("--tiles: name at least one tile to resend")
    bad = [t for t in tiles if not 0 <= t < n]
    if bad:
        raise ConfigError(f"--tiles {','.join(map(str, bad))}: outside 0..{n - 1} (pass {head.pass_id} has "
                          f"{head.tiling.tiles_x}x{head.tiling.tiles_y} = {n} tiles)")
    name, ckpt, sha, _ = resolve_model(codec or head.codec.name, "codec")
    if sha and sha != head.codec.sha256:
        raise CheckpointError(f"codec {name!r} has sha256 {sha[:16]}..., pass {head.pass_id} was encoded with "
                              f"{head.codec.sha256[:16]}... ({head.codec.name}); give --codec with that checkpoint")
    loaded = load_codec(ckpt, head.codec.sha256)  # a CheckpointError when the file is another codec
    tc = TileCodec(loaded, device=device, threads=head.encoder.threads or 1, entropy=head.codec.entropy,
                   int_prior_sha256=head.codec.int_prior_sha256)
    header = head.model_copy(update={"supplement": SupplementInfo(
        tiles=tiles, sent=datetime.now(timezone.utc).isoformat(timespec="seconds"))})
    PassHeader.model_validate(header.model_dump())  # the copy is checked as a reader will check it
    out = Path(out)
    with open_scene(scene_path, None) as opened:
        ds = opened.ds
        if (ds.width, ds.height) != (head.scene.width, head.scene.height):
            raise SceneError(f"{scene_path} is {ds.width}x{ds.height}, pass {head.pass_id} is "
                             f"{head.scene.width}x{head.scene.height}: give the scene the pass was encoded from")
        scene = type(opened)(path=opened.path, ds=ds, bands=head.bands)  # the pass's band rule, as first sent
        log.info("encoding a supplement of pass %s (uid %s): tiles %s", head.pass_id, head.pass_uid, tiles)
        with PassWriter(out, header) as writer:
            total, pixels = _write_tiles(writer, header, scene, tc, tiles, progress)
    bpp = total * 8 / pixels
    log.info("wrote %s: supplement of %d tiles, %d bytes of ELIC strings", out, len(tiles), total)
    return EncodeResult(path=out, pass_id=header.pass_id, tiles=len(tiles), bytes=total, bpp=bpp, header=header)


def _write_tiles(writer, header, scene, tc, indices, progress: bool) -> tuple[int, int]:
    """Read, encode and write the tiles ``indices`` of ``scene`` (windowed: one tile in memory at a time);
    returns the compressed bytes and the pixels they cover."""
    total = pixels = 0
    for index in tqdm(indices, disable=not progress, desc="encode", unit="tile"):
        r0, r1, c0, c1 = header.tile_window(index)
        rgb, valid = scene.read_rgb(r0, r1, c0, c1)
        enc = tc.encode(rgb)
        writer.write(TileRecord(tile_index=index, strings=enc.strings, z_hw=enc.z_hw, y_hw=enc.y_hw,
                                witness=enc.witness, mask=pack_mask(valid)))
        total += enc.nbytes
        pixels += (r1 - r0) * (c1 - c0)
    return total, pixels
