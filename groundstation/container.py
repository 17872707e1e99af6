"""The pass container: what the satellite downlinks after a pass. Parsed here, and only here.

Byte layout (all integers little-endian; the full description with a worked example is docs/pass-format.md)::

    file    := header record* trailer?
    header  := MAGIC(8) version:u16 json_len:u32 json:bytes[json_len] json_crc:u32
    record  := SYNC_TILE(4) body_len:u32 body_crc:u32 body:bytes[body_len]
    body    := pass_uid:16s tile_index:u32 flags:u16 witness:u32 z_h:u16 z_w:u16 y_h:u16 y_w:u16
               n_strings:u8 len:u32[n_strings] strings... [mask_len:u32 mask:bytes[mask_len]]
    trailer := SYNC_END(4) body_len:u32 body_crc:u32 (pass_uid:16s n_records:u32)

``flags`` bit 0: ``witness`` holds the CRC32 of the decoded latent symbols (format 1 always sets it; a record
without it decodes with a warning that a desync would go unnoticed); bit 1: a validity mask follows the strings
(zlib-compressed ``np.packbits`` of the tile's valid pixels, row-major; absent = every pixel valid).

Every length is checked against a hard limit and against the bytes left in the file *before* anything is
allocated; a damaged record costs its tile only: the scanner resynchronises on the next sync marker. Every header
field is validated before anything uses it (finite numbers, a parseable CRS WKT or "" for a pixel grid, an
invertible transform, sizes, bands and times in range): a bad one is a PassFormatError naming it.
``benchmarks/fuzz_container.py`` and tests/test_container_fuzz.py fuzz this whole path.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, BinaryIO, Iterator, Literal

import numpy as np
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError,
                      field_validator, model_validator)

from .errors import PassFormatError

MAGIC = b"\x89GSPASS\n"  # high bit + newline: catches 7-bit and text-mode transfers
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
SYNC_TILE = b"\xf0TIL"
SYNC_END = b"\xf0END"
MAX_HEADER_BYTES = 1 << 20
MAX_RECORD_BYTES = 64 << 20
MAX_STRINGS = 64
#: What a record's witness covers: the CRC32 of the decoded integer symbols of the hyperprior z and the latent
#: y, in coding order (the default since z was added: a CRC-valid record whose z string was changed cannot pass).
WITNESS_KIND = "crc32-int32-decoded-z-and-y-symbols"
#: Passes written before: the y symbols only.
WITNESS_KIND_Y = "crc32-int32-decoded-y-symbols"
WITNESS_KINDS = (WITNESS_KIND, WITNESS_KIND_Y)
#: Numeric modes of the entropy-parameter path a pass may name (``codec.entropy``; groundstation.codec says what
#: each computes) and the one new passes get unless the station or the command says otherwise: the one place
#: the default lives. ``int`` needs the codec's integer prior; a codec without one (no registry ``int_prior``,
#: no ``NAME.int.pt`` beside it: a codec just trained, say) gets ``FALLBACK_ENTROPY`` when nobody chose a mode,
#: with a logged note (groundstation.encode.choose_entropy). A mode chosen explicitly is never replaced.
ENTROPY_MODES = ("float32", "float64", "int")
DEFAULT_ENTROPY = "int"
FALLBACK_ENTROPY = "float64"
#: ``scene.crs_wkt`` of a scene without a CRS: a pixel grid (no georeferencing; the transform maps pixels).
PIXEL_GRID = ""

_HEAD = struct.Struct("<8sHI")
_U32 = struct.Struct("<I")
_FRAME = struct.Struct("<4sII")  # sync, body_len, body_crc
_BODY = struct.Struct("<16sIHIHHHHB")
_TRAILER = struct.Struct("<16sI")

FLAG_WITNESS = 1
FLAG_MASK = 2


# ------------------------------------------------------------------------------------------------ header
# Every field of the header comes from the downlink: it is validated here, before anything downstream uses it
# (a buggy encoder or a crafted file may carry a valid CRC). Rejected, as a PassFormatError naming the field, is
# what no consumer could use; a mere hint (``encoder.threads``) is any integer, clamped where it is used
# (decode.decode_threads).
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"  # printable: header strings end up in logs, reports and file names
_Text = Annotated[str, StringConstraints(max_length=1000, pattern=_NO_CONTROL)]


class _Strict(BaseModel):
    # allow_inf_nan=False: JSON ``NaN`` / ``Infinity`` / 1e999 in any float field is rejected
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _iso_time(v: str) -> str:
    try:
        datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(f"{v[:60]!r} is not an ISO 8601 time (e.g. 2024-05-01T10:00:00+00:00)") from None
    return v


_IsoTime = Annotated[str, StringConstraints(min_length=4, max_length=64), AfterValidator(_iso_time)]


@lru_cache(maxsize=64)
def _crs_error(wkt: str) -> str | None:
    """Why a CRS WKT cannot georeference a product (None: it can). Parsed the way the product writer uses it:
    rasterio (GDAL), then pyproj for the CF grid mapping."""
    try:
        from pyproj import CRS as ProjCRS
        from rasterio.crs import CRS
        from rasterio.errors import CRSError

        ProjCRS.from_wkt(wkt)  # first: PROJ rejects garbage quietly (GDAL would print to stderr)
        ProjCRS.from_user_input(CRS.from_wkt(wkt).to_wkt())
    except (CRSError, ValueError, TypeError) as exc:  # pyproj.exceptions.CRSError is a ValueError
        return f"not a parseable CRS WKT ({str(exc)[:160]})"
    except Exception as exc:  # noqa: BLE001 - whatever GDAL/PROJ raise on odd input is a bad field, not a crash
        return f"not a parseable CRS WKT ({type(exc).__name__}: {str(exc)[:160]})"
    return None


class SceneInfo(_Strict):
    width: int = Field(gt=0, lt=1 << 24)
    height: int = Field(gt=0, lt=1 << 24)
    crs_wkt: str = Field(max_length=64_000)  # PIXEL_GRID ("") = no CRS: a pixel grid
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f (rasterio order)
    source: _Text = ""
    source_dtype: _Text = ""
    source_bands: int = Field(default=0, ge=0, le=65535)

    @field_validator("crs_wkt")
    @classmethod
    def _crs_parses(cls, v: str) -> str:
        if v == PIXEL_GRID:
            return v  # a scene without a CRS: nothing to parse
        why = _crs_error(v)
        if why:
            raise ValueError(why)
        return v

    @field_validator("transform")
    @classmethod
    def _invertible(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        a, b, c, d, e, f = v
        det = a * e - b * d
        if not math.isfinite(det) or det == 0 or not math.isfinite(1.0 / det):
            raise ValueError(f"affine transform {v} is not invertible (a*e - b*d = {det})")
        return v

    @model_validator(mode="after")
    def _corners_finite(self) -> "SceneInfo":
        a, b, c, d, e, f = self.transform
        for col, row in ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height)):
            x, y = c + a * col + b * row, f + d * col + e * row
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError(f"transform: scene corner ({col}, {row}) maps to a non-finite coordinate")
        return self


class TilingInfo(_Strict):
    tile_size: int
    tiles_x: int = Field(gt=0)
    tiles_y: int = Field(gt=0)

    @field_validator("tile_size")
    @classmethod
    def _aligned(cls, v: int) -> int:
        if v < 64 or v > 4096 or v % 64:
            raise ValueError(f"tile_size {v} must be a multiple of 64 between 64 and 4096")
        return v

    @property
    def n_tiles(self) -> int:
        return self.tiles_x * self.tiles_y


def _json_finite(v: dict) -> dict:
    try:
        blob = json.dumps(v, allow_nan=False)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not plain finite JSON ({exc})") from None
    if len(blob) > 64_000:
        raise ValueError(f"{len(blob)} bytes of JSON, more than 64,000")
    return v


class CodecInfo(_Strict):
    # a registry name (or a checkpoint's file name), never a path: decode resolves it on the station
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^/\\\x00-\x1f\x7f]+$")
    architecture: _Text
    arch: Annotated[dict, AfterValidator(_json_finite)]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    lmbda: float | None = Field(default=None, gt=0)
    #: numeric mode of the entropy-parameter path (groundstation.codec.ENTROPY_MODES); passes written before
    #: the field existed are float32
    entropy: Literal[ENTROPY_MODES] = "float32"
    #: ``int`` passes: sha256 of the integer prior (sidecar) the encoder used; the decoder must use that one.
    #: Never written for the float modes, so their headers are byte for byte what they were.
    int_prior_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _int_prior_with_int(self) -> "CodecInfo":
        if (self.entropy == "int") != (self.int_prior_sha256 is not None):
            raise ValueError("codec.int_prior_sha256 is required with entropy 'int' and allowed only with it")
        return self

    @field_validator("name")
    @classmethod
    def _not_a_path(cls, v: str) -> str:
        if v in (".", "..") or v != v.strip():
            raise ValueError(f"{v!r} is not a codec name (a registry name or checkpoint file name, no path)")
        return v


class BandInfo(_Strict):
    selection: list[int] = Field(min_length=1, max_length=3)  # 1-based source band numbers giving R, G, B
    rule: _Text  # why these bands (human-readable)
    scaling: Literal["identity", "linear"]
    in_min: list[float]
    in_max: list[float]
    mask_source: _Text  # what defined invalid pixels (alpha band, nodata value, NaN, none)
    source_nodata: float | None = None
    fill_value: int = Field(default=0, ge=0, le=255)

    @field_validator("selection")
    @classmethod
    def _bands(cls, v: list[int]) -> list[int]:
        if len(v) not in (1, 3):
            raise ValueError(f"{len(v)} bands selected; a pass holds 1 (grey) or 3 (R, G, B)")
        if any(b < 1 or b > 65535 for b in v):
            raise ValueError(f"band numbers {v} must be between 1 and 65535")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> "BandInfo":
        n = len(self.selection)
        for name in ("in_min", "in_max"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} values for {n} selected bands")
        if self.scaling == "linear" and any(hi <= lo for lo, hi in zip(self.in_min, self.in_max)):
            raise ValueError(f"linear scaling needs in_max > in_min for every band (in_min {self.in_min}, "
                             f"in_max {self.in_max})")
        return self

    @property
    def rgb(self) -> tuple[list[int], list[float], list[float]]:
        """(selection, in_min, in_max) for R, G, B: one grey band is shown in all three."""
        if len(self.selection) == 1:
            return self.selection * 3, self.in_min * 3, self.in_max * 3
        return self.selection, self.in_min, self.in_max


class EncoderInfo(_Strict):
    software: _Text
    version: _Text
    torch: _Text
    compressai: _Text
    # the encoder's thread count: a hint for a bit-exact decode, never an order. Any integer is accepted here;
    # decode.decode_threads clamps it to the machine (< 1 or absurd: 1)
    threads: int | None
    device: _Text


class SupplementInfo(_Strict):
    """Marks a *supplement* container: the satellite resending some tiles of a pass it already downlinked. Its
    header is the full pass's (same ``pass_uid``, grid, codec, band rule) plus this field; it holds only the
    records of ``tiles``. Optional: a header without it is a full pass (every pass written before it existed)."""

    tiles: list[int] = Field(min_length=1, max_length=1_000_000)  # the resent tiles, sorted, unique
    sent: _IsoTime  # when the supplement was written

    @field_validator("tiles")
    @classmethod
    def _sorted_unique(cls, v: list[int]) -> list[int]:
        if any(t < 0 for t in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"tiles {v[:20]} must be distinct tile indices >= 0 in increasing order")
        return v


class PassHeader(_Strict):
    format_version: int = Field(ge=0, le=65535)
    pass_id: str = Field(min_length=1, max_length=200, pattern=_NO_CONTROL)
    pass_uid: str = Field(pattern=r"^[0-9a-f]{32}$")
    acquisition_time: _IsoTime
    created: _IsoTime
    scene: SceneInfo
    tiling: TilingInfo
    codec: CodecInfo
    bands: BandInfo
    encoder: EncoderInfo
    witness: Literal["crc32-int32-decoded-z-and-y-symbols", "crc32-int32-decoded-y-symbols"] | None = WITNESS_KIND
    #: set on a supplement (resent tiles of this pass), absent on a full pass; never written when None, so a
    #: full pass's header is byte for byte what it was before the field existed
    supplement: SupplementInfo | None = None

    @model_validator(mode="after")
    def _grid_covers_scene(self) -> "PassHeader":
        t, s = self.tiling, self.scene
        if self.supplement is not None and self.supplement.tiles[-1] >= t.n_tiles:
            raise ValueError(f"supplement.tiles: tile {self.supplement.tiles[-1]} outside 0..{t.n_tiles - 1}")
        if t.tiles_x != math.ceil(s.width / t.tile_size) or t.tiles_y != math.ceil(s.height / t.tile_size):
            raise ValueError(
                f"tiling: tile grid {t.tiles_x}x{t.tiles_y} of {t.tile_size}px does not cover a {s.width}x{s.height} scene"
            )
        if t.n_tiles > 1_000_000:
            raise ValueError(f"tiling: {t.n_tiles} tiles is more than the 1,000,000 a pass may have")
        if s.source_bands and max(self.bands.selection) > s.source_bands:
            raise ValueError(f"bands.selection {self.bands.selection} names a band the {s.source_bands}-band "
                             "source (scene.source_bands) does not have")
        return self

    def tile_window(self, index: int) -> tuple[int, int, int, int]:
        """(row0, row1, col0, col1) of a codec tile in scene pixels; edge tiles are smaller."""
        t, s = self.tiling, self.scene
        if not 0 <= index < t.n_tiles:
            raise IndexError(f"tile {index} outside 0..{t.n_tiles - 1}")
        r, c = divmod(index, t.tiles_x)
        r0, c0 = r * t.tile_size, c * t.tile_size
        return r0, min(r0 + t.tile_size, s.height), c0, min(c0 + t.tile_size, s.width)

    @property
    def uid_bytes(self) -> bytes:
        return bytes.fromhex(self.pass_uid)


def header_errors(exc: ValidationError) -> str:
    """A pydantic error as ``field.path: message; ...`` (the operator sees which header field is wrong)."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------ records
@dataclass
class TileRecord:
    tile_index: int
    strings: list[bytes]
    z_hw: tuple[int, int]
    y_hw: tuple[int, int]
    witness: int | None
    mask: bytes | None = None  # zlib(np.packbits(valid)) when some pixels are invalid
    pass_uid: bytes = b""

    @property
    def nbytes(self) -> int:
        """Bytes of ELIC strings (what bpp counts)."""
        return sum(len(s) for s in self.strings)

    def pack(self, pass_uid: bytes) -> bytes:
        flags = (FLAG_WITNESS if self.witness is not None else 0) | (FLAG_MASK if self.mask is not None else 0)
        if len(self.strings) > MAX_STRINGS:
            raise ValueError(f"{len(self.strings)} strings exceed the {MAX_STRINGS} a record may hold")
        parts = [
            _BODY.pack(pass_uid, self.tile_index, flags, self.witness or 0, *self.z_hw, *self.y_hw, len(self.strings)),
            struct.pack(f"<{len(self.strings)}I", *(len(s) for s in self.strings)),
            *self.strings,
        ]
        if self.mask is not None:
            parts += [_U32.pack(len(self.mask)), self.mask]
        body = b"".join(parts)
        return _FRAME.pack(SYNC_TILE, len(body), zlib.crc32(body)) + body

    @classmethod
    def unpack(cls, body: bytes) -> "TileRecord":
        """Parse a CRC-checked body; raise ValueError naming what is inconsistent."""
        if len(body) < _BODY.size:
            raise ValueError(f"body of {len(body)} bytes is shorter than the {_BODY.size}-byte record header")
        uid, index, flags, witness, zh, zw, yh, yw, n = _BODY.unpack_from(body)
        pos = _BODY.size
        if n == 0 or n > MAX_STRINGS:
            raise ValueError(f"record holds {n} strings (1..{MAX_STRINGS} allowed)")
        if pos + 4 * n > len(body):
            raise ValueError("string length table runs past the record")
        lengths = struct.unpack_from(f"<{n}I", body, pos)
        pos += 4 * n
        if pos + sum(lengths) > len(body):
            raise ValueError(f"strings of {sum(lengths)} bytes run past the record ({len(body) - pos} left)")
        strings = []
        for ln in lengths:
            strings.append(body[pos : pos + ln])
            pos += ln
        mask = None
        if flags & FLAG_MASK:
            if pos + 4 > len(body):
                raise ValueError("mask length runs past the record")
            (mlen,) = _U32.unpack_from(body, pos)
            pos += 4
            if pos + mlen > len(body):
                raise ValueError("mask runs past the record")
            mask = body[pos : pos + mlen]
            pos += mlen
        if pos != len(body):
            raise ValueError(f"{len(body) - pos} unexpected trailing bytes in the record")
        return cls(
            tile_index=index,
            strings=strings,
            z_hw=(zh, zw),
            y_hw=(yh, yw),
            witness=witness if flags & FLAG_WITNESS else None,
            mask=mask,
            pass_uid=uid,
        )


def pack_mask(valid: np.ndarray) -> bytes | None:
    """None when every pixel is valid (nothing to send)."""
    if valid.all():
        return None
    return zlib.compress(np.packbits(valid.astype(bool), axis=None).tobytes(), 9)


def unpack_mask(blob: bytes, height: int, width: int) -> np.ndarray:
    """Inflate with a hard output limit (a zip bomb cannot allocate more than the tile needs)."""
    need = (height * width + 7) // 8
    d = zlib.decompressobj()
    try:
        raw = d.decompress(blob, need + 1)
    except zlib.error as exc:  # a damaged stream (zlib's own Adler-32 included): a bad field, not a crash
        raise ValueError(f"mask is not a valid zlib stream ({exc})") from None
    if len(raw) != need or d.unconsumed_tail:
        raise ValueError(f"mask inflates to {len(raw)}+ bytes, expected {need} for {height}x{width}")
    if not d.eof or d.unused_data:
        raise ValueError("mask stream is incomplete or followed by stray bytes (Adler-32 unchecked)")
    return np.unpackbits(np.frombuffer(raw, np.uint8), count=height * width).reshape(height, width).astype(bool)


# ------------------------------------------------------------------------------------------------ writing
class PassWriter:
    """Writes ``path.part`` and renames it to ``path`` on a clean close: a pass at its final name is complete."""

    def __init__(self, path: str | Path, header: PassHeader) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".part")
        self.header = header
        self.records = 0
        self._f: BinaryIO = open(self.tmp, "wb")
        self._f.write(pack_header(header))

    def write(self, record: TileRecord) -> int:
        blob = record.pack(self.header.uid_bytes)
        self._f.write(blob)
        self.records += 1
        return len(blob)

    def close(self) -> None:
        body = _TRAILER.pack(self.header.uid_bytes, self.records)
        self._f.write(_FRAME.pack(SYNC_END, len(body), zlib.crc32(body)) + body)
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._f.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "PassWriter":
        return self

    def __exit__(self, exc_type, *_: object) -> None:
        self.abort() if exc_type else self.close()


def pack_header(header: PassHeader) -> bytes:
    # ``supplement`` only when set: a full pass keeps the header older readers (extra keys forbidden) accept
    exclude: dict = {"supplement": True} if header.supplement is None else {}
    if header.codec.int_prior_sha256 is None:
        exclude["codec"] = {"int_prior_sha256"}
    blob = header.model_dump_json(exclude=exclude or None).encode()
    if len(blob) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(blob)} bytes exceeds {MAX_HEADER_BYTES}")
    return _HEAD.pack(MAGIC, header.format_version, len(blob)) + blob + _U32.pack(zlib.crc32(blob))


def read_header(f: BinaryIO, name: str = "pass") -> tuple[PassHeader, int]:
    """Parse the header at the start of ``f``; return it and the offset of the first record."""
    head = f.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise PassFormatError(f"{name}: truncated header ({len(head)} of {_HEAD.size} bytes); the file is not a complete pass container")
    magic, version, jlen = _HEAD.unpack(head)
    if magic != MAGIC:
        raise PassFormatError(f"{name}: not a pass container (magic {magic!r}, expected {MAGIC!r})")
    if version not in SUPPORTED_VERSIONS:
        raise PassFormatError(
            f"{name}: container format version {version} is not supported (this build reads {list(SUPPORTED_VERSIONS)}); "
            "upgrade the ground-station software"
        )
    if jlen > MAX_HEADER_BYTES:
        raise PassFormatError(f"{name}: header length {jlen} exceeds the {MAX_HEADER_BYTES}-byte limit: damaged header")
    blob = f.read(jlen)
    crc = f.read(4)
    if len(blob) < jlen or len(crc) < 4:
        raise PassFormatError(f"{name}: truncated header (the file ends inside it); ask for the pass again")
    if zlib.crc32(blob) != _U32.unpack(crc)[0]:
        raise PassFormatError(f"{name}: header CRC mismatch: the header is damaged; ask for the pass again")
    try:
        data = json.loads(blob)
    except (ValueError, RecursionError) as exc:  # not UTF-8 / not JSON / nested beyond the parser's stack
        raise PassFormatError(f"{name}: invalid header: not JSON ({str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise PassFormatError(f"{name}: invalid header: a JSON {type(data).__name__}, expected an object")
    try:
        header = PassHeader.model_validate(data)
    except ValidationError as exc:
        raise PassFormatError(f"{name}: invalid header field {header_errors(exc)[:600]}") from None
    except (ValueError, RecursionError) as exc:
        raise PassFormatError(f"{name}: invalid header: {str(exc)[:500]}") from None
    if header.format_version != version:
        raise PassFormatError(f"{name}: header says version {header.format_version}, framing says {version}")
    return header, _HEAD.size + jlen + 4


# ------------------------------------------------------------------------------------------------ reading
TileStatus = Literal["ok", "crc_mismatch", "truncated", "missing", "foreign", "conflict", "malformed",
                     "desync", "decode_error"]


@dataclass
class TileProblem:
    tile_index: int | None  # None: a damaged record whose index could not be trusted
    reason: TileStatus | str
    detail: str
    offset: int | None = None


@dataclass
class ScanResult:
    """Where each intact record lies, and everything that was wrong with the rest."""

    header: PassHeader
    records: dict[int, tuple[int, int]] = field(default_factory=dict)  # tile -> (body offset, body length)
    problems: list[TileProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    trailer: bool = False
    size: int = 0

    def lost_tiles(self) -> dict[int, TileProblem]:
        """Tiles without an intact record, with the most specific reason known (one per tile)."""
        lost: dict[int, TileProblem] = {}
        for p in self.problems:
            if p.tile_index is not None and p.tile_index not in self.records and p.tile_index not in lost:
                lost[p.tile_index] = p
        return dict(sorted(lost.items()))


class PassReader:
    """Random access to a pass container's tile records after one streaming scan (memory: the index only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise PassFormatError(f"{self.path}: no such pass container")
        with open(self.path, "rb") as f:
            self.header, self.data_offset = read_header(f, str(self.path))
        self._scan: ScanResult | None = None

    @classmethod
    def with_index(cls, path: str | Path, records: dict[int, tuple[int, int]]) -> "PassReader":
        """A reader that trusts a known record index (from an earlier scan) instead of rescanning the file.

        ``read`` still re-checks each record's frame and CRC, so a file changed since that scan is caught.
        """
        reader = cls(path)
        reader._scan = ScanResult(header=reader.header, records={int(k): tuple(v) for k, v in records.items()})
        return reader

    def scan(self) -> ScanResult:
        if self._scan is None:
            self._scan = _scan(self.path, self.header, self.data_offset)
        return self._scan

    def read(self, tile_index: int) -> TileRecord:
        """The intact record of a tile (KeyError if it has none); the CRC is checked again on read."""
        offset, length = self.scan().records[tile_index]
        with open(self.path, "rb") as f:
            f.seek(offset - _FRAME.size)
            _, blen, crc = _FRAME.unpack(f.read(_FRAME.size))
            body = f.read(length)
        if blen != length or zlib.crc32(body) != crc:
            raise PassFormatError(f"{self.path}: tile record {tile_index} changed on disk since it was scanned")
        return TileRecord.unpack(body)

    def __iter__(self) -> Iterator[TileRecord]:
        for index in sorted(self.scan().records):
            yield self.read(index)

    def report(self) -> dict:
        """The header and the integrity of every record, as plain data (``gsp inspect --json``)."""
        scan, h = self.scan(), self.header
        lost = scan.lost_tiles()
        if h.supplement is not None:  # a supplement carries only the resent tiles: the others are not lost
            lost = {i: p for i, p in lost.items() if i in set(h.supplement.tiles)}
        return {
            "pass": str(self.path),
            "header": h.model_dump(),
            "tiles_total": h.tiling.n_tiles,
            "tiles_intact": len(scan.records),
            "tiles_lost": [{"tile": i, "reason": p.reason, "detail": p.detail} for i, p in lost.items()],
            "other_problems": [{"reason": p.reason, "detail": p.detail, "offset": p.offset}
                               for p in scan.problems if p.tile_index is None],
            "trailer": scan.trailer,
            "notes": scan.notes,
            "record_bytes": {str(i): ln for i, (_, ln) in sorted(scan.records.items())},
        }


def _find(f: BinaryIO, start: int, size: int) -> int:
    """Offset of the next sync marker (tile or end) at or after ``start``, or -1."""
    block = 1 << 20
    pos = start
    while pos < size:
        f.seek(pos)
        data = f.read(block + 3)
        hits = [i for i in (data.find(SYNC_TILE), data.find(SYNC_END)) if i >= 0]
        if hits:
            return pos + min(hits)
        pos += block
    return -1


def _scan(path: Path, header: PassHeader, start: int) -> ScanResult:
    return RecordScanner(path, header, start).advance(final=True)


class RecordScanner:
    """Scans a container's records, all at once or while the file still grows (a downlink in progress).

    :meth:`advance` reads what was appended since the last call. With ``final=False`` a record that runs past
    the current end of the file is not an error: the scan stops before it and resumes there next time, and
    nothing is declared missing. With ``final=True`` (the pass has ended) the rest is judged as
    :meth:`PassReader.scan` judges a complete file: truncated records, missing tiles, conflicting duplicates
    (neither copy kept). A growing file scanned to its end with ``final=True`` gives the same result as one
    scan of the finished file.
    """

    def __init__(self, path: str | Path, header: PassHeader, start: int) -> None:
        self.path = Path(path)
        self.res = ScanResult(header=header)
        self._pos = start  # where the next sync marker is looked for
        self._start = start
        self._crcs: dict[int, int] = {}
        self._conflicts: set[int] = set()
        self._first = True

    @property
    def records(self) -> dict[int, tuple[int, int]]:
        return self.res.records

    def advance(self, final: bool = False) -> ScanResult:
        res, header = self.res, self.res.header
        n_tiles, uid = header.tiling.n_tiles, header.uid_bytes
        res.size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            pos = _find(f, self._pos, res.size)
            if pos < 0 and not final:  # no marker yet: look again from a little before the end next time
                self._pos = max(self._pos, res.size - 3)
                return res
            if self._first:
                self._first = False
                if pos > self._start:
                    res.problems.append(TileProblem(None, "malformed", f"{pos - self._start} unframed bytes after "
                                                    "the header", self._start))
            while pos >= 0:
                f.seek(pos)
                frame = f.read(_FRAME.size)
                if len(frame) < _FRAME.size:
                    if not final:
                        break
                    res.problems.append(TileProblem(None, "truncated", "file ends inside a record frame", pos))
                    pos = -1
                    break
                sync, blen, crc = _FRAME.unpack(frame)
                body_at = pos + _FRAME.size
                if blen <= MAX_RECORD_BYTES and body_at + blen > res.size and not final:
                    break  # the rest of this record has not arrived yet
                if blen > MAX_RECORD_BYTES or body_at + blen > res.size:
                    why = "exceeds the record size limit" if blen > MAX_RECORD_BYTES else "runs past the end of the file"
                    index = _peek_index(f, body_at, res.size, n_tiles, self._crcs)
                    reason = "truncated" if body_at + blen > res.size and blen <= MAX_RECORD_BYTES else "malformed"
                    res.problems.append(TileProblem(index, reason, f"record length {blen} {why}", pos))
                    pos = _find(f, pos + 4, res.size)
                    continue
                body = f.read(blen)
                if zlib.crc32(body) != crc:
                    index = _peek_index(f, body_at, res.size, n_tiles, self._crcs)
                    res.problems.append(TileProblem(index, "crc_mismatch", "record CRC32 mismatch (bit errors)", pos))
                    pos = _find(f, pos + 4, res.size)
                    continue
                if sync == SYNC_END:
                    if blen == _TRAILER.size:
                        t_uid, n_rec = _TRAILER.unpack(body)
                        if t_uid == uid:
                            res.trailer = True
                            res.notes.append(f"trailer: the satellite wrote {n_rec} records")
                    pos = _find(f, body_at + blen, res.size)
                    continue
                self._record(res, body, pos, body_at, blen, crc, n_tiles, uid)
                pos = _find(f, body_at + blen, res.size)
            if pos >= 0:
                self._pos = pos
            elif not final:
                self._pos = max(self._pos, res.size - 3)
        if final:
            self._finish(res, n_tiles)
        return res

    def _record(self, res: ScanResult, body: bytes, pos: int, body_at: int, blen: int, crc: int, n_tiles: int,
                uid: bytes) -> None:
        try:
            rec_uid, index = struct.unpack_from("<16sI", body)
        except struct.error:
            res.problems.append(TileProblem(None, "malformed", "record too short for its header", pos))
            return
        if rec_uid != uid:
            res.problems.append(TileProblem(index if index < n_tiles else None, "foreign",
                                            f"record of another pass (uid {rec_uid.hex()[:12]}...), ignored", pos))
        elif index >= n_tiles:
            res.problems.append(TileProblem(None, "malformed", f"tile index {index} outside 0..{n_tiles - 1}", pos))
        elif index in self._crcs:
            if self._crcs[index] == crc:
                res.notes.append(f"tile {index}: identical duplicate record at offset {pos} ignored")
            else:
                self._conflicts.add(index)
                res.problems.append(TileProblem(index, "conflict", "two different intact records for this tile", pos))
        else:
            self._crcs[index] = crc
            res.records[index] = (body_at, blen)

    def _finish(self, res: ScanResult, n_tiles: int) -> None:
        for index in self._conflicts:  # neither copy can be trusted
            res.records.pop(index, None)
        reported = {p.tile_index for p in res.problems}
        cut = any(p.reason == "truncated" for p in res.problems)
        for index in range(n_tiles):
            if index not in res.records and index not in reported:
                detail = "no record for this tile in the pass"
                res.problems.append(TileProblem(index, "missing", detail + (" (the file is truncated)" if cut else "")))
        if not res.trailer:
            res.notes.append("no end-of-pass trailer: the downlink may have been cut short")


def _peek_index(f: BinaryIO, body_at: int, size: int, n_tiles: int, have: dict[int, int]) -> int | None:
    """The tile index a damaged record claims, if plausible (in range, and no intact record has it yet)."""
    if body_at + 20 > size:
        return None
    f.seek(body_at + 16)
    (index,) = _U32.unpack(f.read(4))
    return index if index < n_tiles and index not in have else None
