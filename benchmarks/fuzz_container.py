"""Fuzz the pass-container path: mutated passes through ``decode_pass``, every outcome checked.

A small real pass (a 100x100 scene in EPSG:32618 with a nodata box, 2x2 codec tiles of 64 px, the edge tiles
smaller, the tiny random ELIC of the tests) is decoded once cleanly; then each case mutates it (seeded: case
``i`` of seed ``s`` is always the same mutation) and decodes the result with ``decode_pass``:

* blind damage, checksums left as they are: bit flips, truncations, byte ranges deleted / inserted /
  duplicated / overwritten, sync markers injected, huge length fields, records swapped, dropped, duplicated,
  moved, replaced by or mixed with records of another pass, the trailer cut;
* damage with the CRCs recomputed (a buggy encoder, a crafted file: valid checksums, wrong content): header JSON
  fields set out of range or to the wrong type, removed or added, the JSON made non-JSON; record fields
  (tile index, flags, witness, latent shapes, string count and lengths, mask length), ELIC string bytes, mask
  bytes, the trailer.

Each case must end as designed, else it counts as a failure:

* ``PassFormatError`` / ``CheckpointError`` (exit 2, no product written): only when the header was touched;
* a product in which every tile reported ok equals the clean decode pixel for pixel (``decoded`` and
  ``valid``), and every other tile is listed in the summary's ``lost`` with a reason and masked (valid == 0).

Failures: ``unhandled`` (any other exception), ``crash`` (the worker process died), ``hang`` (no answer within
``--timeout``), ``silent`` (a tile reported ok that differs from the clean decode, or a lost tile not masked),
``wrong_error`` (a header error for damage that did not touch the header), ``bookkeeping`` (tiles neither ok
nor listed, or listed twice, or output written next to a header error). Also counted (not failures):
``collateral`` tiles (lost although no byte of their record was touched) and the lost tiles by reason.

Cases run in ``--workers`` spawned processes (one CPU each, one torch thread, the codec loaded once per
worker); a worker that dies or hangs is counted, replaced, and the run goes on. Prints the counts and writes
benchmarks/results/fuzz_container.json.

    nice .venv/bin/python benchmarks/fuzz_container.py --cases 10000 --workers 2
    .venv/bin/python benchmarks/fuzz_container.py --cases 200 --workers 1      # quick
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from groundstation.container import (_BODY, _FRAME, _HEAD, _TRAILER, _U32, MAGIC, MAX_RECORD_BYTES,  # noqa: E402
                                     SYNC_END, SYNC_TILE, TileRecord)

FAILURES = ("unhandled", "crash", "hang", "silent", "wrong_error", "bookkeeping")
#: Of the ``silent`` cases, those where only the hyperprior (z) string changed and its CRC was recomputed: the
#: symbol witness covers the Gaussian-conditional (y) symbols only, so a z string that decodes to other z symbols
#: while every y symbol still decodes the same gives other pixels that no check sees (a crafted or buggy-encoder
#: record; bit errors are caught by the record CRC). Counted apart so the gap stays visible until the witness
#: covers the z symbols too.
KNOWN_GAP = "silent_hyperprior_only"
SCENE_HW = (100, 100)
TILE = 64


# ------------------------------------------------------------------------------------------------ the pass
@dataclass
class Layout:
    header_end: int
    header_json: dict
    version: int
    records: list[tuple[int, int, int, int]]  # (frame offset, body offset, body length, tile index)
    trailer: tuple[int, int] | None  # (frame offset, end)


def parse_layout(data: bytes) -> Layout:
    magic, version, jlen = _HEAD.unpack_from(data)
    assert magic == MAGIC
    header_json = json.loads(data[_HEAD.size : _HEAD.size + jlen])
    pos = _HEAD.size + jlen + 4
    header_end = pos
    records, trailer = [], None
    while pos < len(data):
        sync, blen, _ = _FRAME.unpack_from(data, pos)
        body_at = pos + _FRAME.size
        if sync == SYNC_TILE:
            (index,) = struct.unpack_from("<I", data, body_at + 16)
            records.append((pos, body_at, blen, index))
        else:
            assert sync == SYNC_END
            trailer = (pos, body_at + blen)
        pos = body_at + blen
    return Layout(header_end, header_json, version, records, trailer)


def pack_header_json(obj, version: int) -> bytes:
    blob = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    return _HEAD.pack(MAGIC, version, len(blob)) + blob + _U32.pack(zlib.crc32(blob))


def frame(body: bytes, sync: bytes = SYNC_TILE) -> bytes:
    return _FRAME.pack(sync, len(body), zlib.crc32(body)) + body


@dataclass
class Mutation:
    kind: str
    data: bytes
    header: bool = False  # the header's bytes (or its meaning) were touched: a header error is allowed
    tiles: set[int] = field(default_factory=set)  # tiles whose record bytes were touched (losing them is fair)
    detail: str = ""
    hyper_only: bool = False  # only the hyperprior (z) string changed, CRC recomputed: see KNOWN_GAP


# ------------------------------------------------------------------------------------------------ mutators
_WEIRD = [None, 0, -1, 1, 2, 3, 255, 256, 65536, 2**31, 2**31 - 1, -(2**31), 2**63, 10**30, 1e308, -1e308, 1e-320,
          0.5, -0.0, math.nan, math.inf, -math.inf, "", "x", "garbage", "\x00", "é" * 3, "9" * 50, [], [1], [1, 2, 3],
          {}, {"a": 1}, True, False]

# (path, value): targeted values for every field a consumer uses (valid ones included: they must decode)
_TARGETED = [
    ("encoder.threads", 1000000), ("encoder.threads", -1), ("encoder.threads", 0), ("encoder.threads", None),
    ("encoder.threads", 3), ("encoder.threads", 2**40), ("encoder.threads", "4"), ("encoder.threads", 2.5),
    ("scene.crs_wkt", "garbage"), ("scene.crs_wkt", ""), ("scene.crs_wkt", "EPSG:4326"), ("scene.crs_wkt", "PROJCS["),
    ("scene.crs_wkt", "GEOGCS[\"x\"]"), ("scene.crs_wkt", "+proj=longlat"), ("scene.crs_wkt", "\x00"),
    ("scene.transform", [0, 0, 0, 0, 0, 0]), ("scene.transform", [1, 2, 0, 2, 4, 0]),
    ("scene.transform", [math.nan, 0, 0, 0, 1, 0]), ("scene.transform", [math.inf, 0, 0, 0, -1, 0]),
    ("scene.transform", [1, 0, 0, 0, 1, 0]), ("scene.transform", [1e300, 0, 0, 0, -1e300, 0]),
    ("scene.transform", [1e-200, 0, 0, 0, -1e-200, 0]), ("scene.transform", [1, 0, 0, 0, 1]),
    ("scene.transform", [0.3, 0.1, 5e5, 0.1, -0.3, 4.1e6]), ("scene.transform", [1e308, 0, 1e308, 0, 1, 0]),
    ("scene.width", 0), ("scene.width", -5), ("scene.width", 2**30), ("scene.width", 120), ("scene.width", 90),
    ("scene.width", 128), ("scene.width", 129), ("scene.height", 65), ("scene.height", 1), ("scene.width", "100"),
    ("tiling.tile_size", 100), ("tiling.tile_size", 0), ("tiling.tile_size", 128), ("tiling.tile_size", 2**20),
    ("tiling.tiles_x", 0), ("tiling.tiles_x", 10**7), ("tiling.tiles_y", -1),
    ("bands.selection", []), ("bands.selection", [0, 1, 2]), ("bands.selection", [1, 2]), ("bands.selection", [1]),
    ("bands.selection", [1, 2, 3, 4]), ("bands.selection", [70000, 1, 1]), ("bands.selection", [5, 5, 5]),
    ("bands.in_min", []), ("bands.in_min", ["x", 0, 0]), ("bands.in_min", [math.nan, 0, 0]),
    ("bands.in_max", [0, 0, 0]), ("bands.scaling", "bogus"), ("bands.scaling", "linear"), ("bands.fill_value", 300),
    ("bands.fill_value", -1), ("bands.source_nodata", math.inf), ("bands.rule", "\x1b[2J"),
    ("codec.lmbda", -1), ("codec.lmbda", math.nan), ("codec.lmbda", 0), ("codec.lmbda", 0.01),
    ("codec.sha256", "cd" * 32), ("codec.sha256", "zz"), ("codec.name", "../../etc/passwd"),
    ("codec.name", "/tmp/x.pt"), ("codec.name", ".."), ("codec.arch", {"N": math.nan}), ("codec.arch", []),
    ("acquisition_time", "garbage"), ("acquisition_time", ""), ("acquisition_time", "2024-13-45T99:00:00"),
    ("acquisition_time", "2024-05-01"), ("created", "yesterday"), ("created", "2024-05-01T00:00:00Z"),
    ("pass_uid", "ab" * 16), ("pass_uid", "zz"), ("pass_id", ""), ("pass_id", "a\x00b"), ("pass_id", "x" * 500),
    ("pass_id", "../../../tmp/evil"), ("witness", "sha1-of-something"), ("witness", None), ("format_version", 2),
    ("scene.source_bands", 1), ("scene.source_bands", -3), ("scene.source", "x" * 5000),
]


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set(obj, path, value):
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def _del(obj, path):
    for p in path[:-1]:
        obj = obj[p]
    del obj[path[-1]]


def mutate_header(clean: bytes, lay: Layout, rng: random.Random) -> Mutation:
    h = json.loads(json.dumps(lay.header_json))
    rest = clean[lay.header_end :]
    op = rng.choice(["targeted"] * 4 + ["weird"] * 3 + ["delete", "extra", "bytes", "notjson"])
    if op == "targeted":
        path, value = rng.choice(_TARGETED)
        _set(h, tuple(path.split(".")), value)
        detail = f"{path}={value!r}"[:120]
    elif op == "weird":
        path = rng.choice([p for p in _paths(h) if p])
        value = rng.choice(_WEIRD)
        _set(h, path, value)
        detail = f"{'.'.join(map(str, path))}={value!r}"[:120]
    elif op == "delete":
        path = rng.choice([p for p in _paths(h) if p])
        _del(h, path)
        detail = f"del {'.'.join(map(str, path))}"
    elif op == "extra":
        path = rng.choice([p for p in _paths(h) if not p or isinstance(_get(h, p), dict)])
        _get(h, path)["surprise"] = rng.choice(_WEIRD)
        detail = f"extra field in {'.'.join(map(str, path)) or 'header'}"
    elif op == "bytes":  # bytes of the JSON changed, CRC recomputed (mostly not JSON, sometimes other values)
        blob = bytearray(json.dumps(h, separators=(",", ":")).encode())
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(blob))
            blob[i] = rng.choice([rng.randrange(256), ord(rng.choice('0123456789-.e"{}[],:'))])
        return Mutation("header_crc_fixed:bytes", pack_header_json(bytes(blob), lay.version) + rest, header=True,
                        detail="JSON bytes changed")
    else:
        blob = rng.choice([b"[]", b"null", b"1", b'"x"', b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe{}", b""])
        return Mutation("header_crc_fixed:notjson", pack_header_json(blob, lay.version) + rest, header=True,
                        detail=repr(blob[:12]))
    return Mutation(f"header_crc_fixed:{op}", pack_header_json(h, lay.version) + rest, header=True, detail=detail)


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def _unpack_body(body: bytes):
    uid, index, flags, witness, zh, zw, yh, yw, n = _BODY.unpack_from(body)
    return list(_BODY.unpack_from(body))


def mutate_record_crc_fixed(clean: bytes, lay: Layout, rng: random.Random) -> Mutation:
    """Change a record's content and recompute its CRC: the record is 'intact' but wrong."""
    fa, ba, blen, tile = rng.choice(lay.records)
    body = bytearray(clean[ba : ba + blen])
    fields = _unpack_body(body)  # uid, index, flags, witness, zh, zw, yh, yw, n
    n = fields[8]
    lengths = list(struct.unpack_from(f"<{n}I", body, _BODY.size))
    strings_at = _BODY.size + 4 * n
    touched = {tile}
    hyper_only = False
    op = rng.choice(["index", "flags", "witness", "shape", "nstrings", "lengths", "string_bytes", "string_bytes",
                     "string_cut", "mask_bytes", "mask_len", "uid", "tail"])
    n_tiles = len(lay.records)
    if op == "index":
        new = rng.choice([t for t in range(n_tiles) if t != tile] + [n_tiles, 2**32 - 1, rng.randrange(2**32)])
        fields[1] = new
        if new < n_tiles:
            touched.add(new)  # now two different intact records claim tile ``new``
        detail = f"tile {tile} index -> {new}"
    elif op == "flags":
        fields[2] ^= rng.choice([1, 2, 3, 4, 0x8000])
        detail = f"flags -> {fields[2]}"
    elif op == "witness":
        fields[3] = rng.randrange(2**32)
        detail = "witness changed"
    elif op == "shape":
        k = rng.randrange(4, 8)
        fields[k] = rng.choice([0, 1, fields[k] + 1, max(0, fields[k] - 1), 65535])
        detail = f"latent dim {k} -> {fields[k]}"
    elif op == "nstrings":
        fields[8] = rng.choice([0, 1, n - 1, n + 1, 64, 65, 255])
        detail = f"n_strings -> {fields[8]}"
    elif op == "lengths":
        i, j = rng.sample(range(n), 2)
        d = rng.randint(1, 3)
        if lengths[j] >= d:
            lengths[i] += d
            lengths[j] -= d
        else:
            lengths[i] = rng.choice([2**32 - 1, lengths[i] + 10**6])
        struct.pack_into(f"<{n}I", body, _BODY.size, *lengths)
        detail = f"string lengths {i},{j} changed"
    elif op in ("string_bytes", "string_cut"):
        nonempty = [k for k in range(n) if lengths[k]]
        k = rng.choice(nonempty)
        hyper_only = k == n - 1
        at = strings_at + sum(lengths[:k])
        if op == "string_bytes":
            for _ in range(rng.randint(1, 3)):
                body[at + rng.randrange(lengths[k])] ^= 1 << rng.randrange(8)
            detail = f"string {k} bytes changed"
        else:
            cut = rng.randint(1, lengths[k])
            del body[at + lengths[k] - cut : at + lengths[k]]
            lengths[k] -= cut
            struct.pack_into(f"<{n}I", body, _BODY.size, *lengths)
            detail = f"string {k} cut by {cut} bytes"
    elif op in ("mask_bytes", "mask_len"):
        mask_at = strings_at + sum(lengths)
        if fields[2] & 2 and mask_at + 4 < len(body):
            (mlen,) = _U32.unpack_from(body, mask_at)
            if op == "mask_bytes":
                i = mask_at + 4 + rng.randrange(mlen)
                body[i] ^= 1 << rng.randrange(8)
                detail = "mask bytes changed"
            else:
                struct.pack_into("<I", body, mask_at, rng.choice([0, mlen - 1, mlen + 1, 2**32 - 1]))
                detail = "mask length changed"
        else:  # no mask on this tile: add a bogus one
            fields[2] |= 2
            body += _U32.pack(4) + b"\x78\x9c\x00\x00"
            detail = "bogus mask added"
    elif op == "uid":
        fields[0] = bytes(rng.randrange(256) for _ in range(16))
        detail = "record uid changed (another pass)"
    else:  # trailing bytes
        body += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        detail = "trailing bytes"
    _BODY.pack_into(body, 0, *fields)
    out = clean[:fa] + frame(bytes(body)) + clean[ba + blen :]
    return Mutation(f"record_crc_fixed:{op}", out, tiles=touched, detail=detail, hyper_only=hyper_only)


def _touched(lay: Layout, lo: int, hi: int) -> tuple[bool, set[int]]:
    """(header touched, tiles whose record bytes intersect [lo, hi))."""
    tiles = {t for fa, ba, blen, t in lay.records if lo < ba + blen and hi > fa}
    return lo < lay.header_end, tiles


def mutate_blind(clean: bytes, lay: Layout, rng: random.Random, foreign: list[bytes]) -> Mutation:
    """Damage without fixing checksums, and record-level reordering."""
    size = len(clean)
    recs = lay.records
    op = rng.choice(["bitflip"] * 4 + ["truncate", "delete", "insert", "duplicate", "overwrite", "zero", "sync",
                                       "huge_len", "swap", "drop", "dup_record", "conflict", "move_after_trailer",
                                       "foreign_replace", "foreign_extra", "no_trailer", "trailer_crc_fixed"])
    data = bytearray(clean)
    if op == "bitflip":
        # mostly inside the records, sometimes anywhere (the header included)
        lo = 0 if rng.random() < 0.2 else lay.header_end
        spots = sorted(rng.randrange(lo, size) for _ in range(rng.choice([1, 1, 1, 2, 3, 8])))
        for i in spots:
            data[i] ^= 1 << rng.randrange(8)
        header = any(i < lay.header_end for i in spots)
        tiles = set().union(*(_touched(lay, i, i + 1)[1] for i in spots))
        return Mutation("blind:bitflip", bytes(data), header, tiles, f"{len(spots)} bits")
    if op == "truncate":
        cut = rng.randrange(0, size) if rng.random() < 0.15 else rng.randrange(lay.header_end, size)
        header, tiles = _touched(lay, cut, size)
        return Mutation("blind:truncate", clean[:cut], header, tiles, f"cut at {cut} of {size}")
    if op in ("delete", "duplicate", "overwrite", "zero"):
        lo = rng.randrange(lay.header_end if rng.random() < 0.85 else 0, size)
        hi = min(size, lo + rng.choice([1, 2, 3, 4, 7, 12, 50, 300, 2000]))
        if op == "delete":
            out = clean[:lo] + clean[hi:]
        elif op == "duplicate":
            out = clean[:hi] + clean[lo:hi] + clean[hi:]
            hi = hi + 1 if hi == lo else hi
        elif op == "overwrite":
            out = clean[:lo] + bytes(rng.randrange(256) for _ in range(hi - lo)) + clean[hi:]
        else:
            out = clean[:lo] + bytes(hi - lo) + clean[hi:]
        header, tiles = _touched(lay, lo, hi if op != "duplicate" else hi + 1)
        return Mutation(f"blind:{op}", out, header, tiles, f"bytes {lo}:{hi}")
    if op in ("insert", "sync"):
        at = rng.randrange(lay.header_end if rng.random() < 0.9 else 0, size + 1)
        if op == "insert":
            blob = bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 4, 17, 500])))
        else:  # a sync marker (and maybe a plausible frame) where none belongs
            blob = rng.choice([SYNC_TILE, SYNC_END]) + rng.choice([b"", _U32.pack(rng.choice([0, 12, 40, 5000])),
                                                                   bytes(rng.randrange(256) for _ in range(8))])
        header, tiles = _touched(lay, at, at)  # inserting strictly inside a record damages it
        tiles = {t for fa, ba, blen, t in recs if fa < at < ba + blen}
        return Mutation(f"blind:{op}", clean[:at] + blob + clean[at:], at < lay.header_end, tiles, f"{len(blob)} at {at}")
    if op == "huge_len":
        fa, ba, blen, tile = rng.choice(recs)
        new = rng.choice([2**32 - 1, MAX_RECORD_BYTES + 1, size, blen + 1, max(0, blen - 1), 0])
        struct.pack_into("<I", data, fa + 4, new)
        return Mutation("blind:huge_len", bytes(data), False, {tile}, f"tile {tile} length {blen} -> {new}")
    blobs = [clean[fa : ba + blen] for fa, ba, blen, _ in recs]
    tail = clean[lay.trailer[0] :] if lay.trailer else b""
    head = clean[: lay.header_end]
    tiles_of = [t for *_, t in recs]
    if op == "swap":
        i, j = rng.sample(range(len(blobs)), 2)
        blobs[i], blobs[j] = blobs[j], blobs[i]
        return Mutation("blind:swap", head + b"".join(blobs) + tail, detail=f"records {i},{j} swapped")
    if op == "drop":
        i = rng.randrange(len(blobs))
        del blobs[i]
        return Mutation("blind:drop", head + b"".join(blobs) + tail, tiles={tiles_of[i]}, detail=f"record {i} dropped")
    if op == "dup_record":
        i = rng.randrange(len(blobs))
        blobs.insert(rng.randrange(len(blobs) + 1), blobs[i])
        return Mutation("blind:dup_record", head + b"".join(blobs) + tail, detail=f"record {i} twice")
    if op == "conflict":  # a second, different, intact record for a tile (e.g. re-encoded on board)
        i = rng.randrange(len(blobs))
        fa, ba, blen, tile = recs[i]
        body = bytearray(clean[ba : ba + blen])
        body[-1] ^= 0x01
        blobs.append(frame(bytes(body)))
        return Mutation("blind:conflict", head + b"".join(blobs) + tail, tiles={tile}, detail=f"tile {tile} twice, differing")
    if op == "move_after_trailer":
        i = rng.randrange(len(blobs))
        b = blobs.pop(i)
        return Mutation("blind:move_after_trailer", head + b"".join(blobs) + tail + b, detail=f"record {i} after the trailer")
    if op == "foreign_replace":
        i = rng.randrange(len(blobs))
        blobs[i] = foreign[i]
        return Mutation("blind:foreign_replace", head + b"".join(blobs) + tail, tiles={tiles_of[i]},
                        detail=f"record {i} from another pass")
    if op == "foreign_extra":
        i = rng.randrange(len(blobs))
        blobs.insert(rng.randrange(len(blobs) + 1), foreign[i])
        return Mutation("blind:foreign_extra", head + b"".join(blobs) + tail, detail=f"foreign record {i} added")
    if op == "no_trailer":
        return Mutation("blind:no_trailer", head + b"".join(blobs), detail="trailer dropped")
    # trailer_crc_fixed: the trailer claims another count or pass
    uid, n = _TRAILER.unpack_from(clean, lay.trailer[0] + _FRAME.size)
    if rng.random() < 0.5:
        n = rng.choice([0, n + 1, 2**32 - 1])
    else:
        uid = bytes(16)
    return Mutation("record_crc_fixed:trailer", head + b"".join(blobs) + frame(_TRAILER.pack(uid, n), SYNC_END),
                    detail="trailer content changed")


def make_mutation(ctx: "FuzzContext", case: int) -> Mutation:
    rng = random.Random(ctx.seed * 1_000_003 + case)
    r = rng.random()
    if r < 0.30:
        return mutate_header(ctx.clean, ctx.layout, rng)
    if r < 0.55:
        return mutate_record_crc_fixed(ctx.clean, ctx.layout, rng)
    m = mutate_blind(ctx.clean, ctx.layout, rng, ctx.foreign)
    if rng.random() < 0.1:  # a second, independent bit-flip damage on top of an in-place one (same offsets)
        extra = mutate_blind(ctx.clean, ctx.layout, rng, ctx.foreign)
        in_place = ("blind:bitflip", "blind:overwrite", "blind:zero", "blind:huge_len")
        if extra.kind == "blind:bitflip" and m.kind in in_place and len(m.data) == len(ctx.clean):
            merged = bytes(a ^ b ^ c for a, b, c in zip(m.data, extra.data, ctx.clean))
            return Mutation(m.kind + "+bitflip", merged, m.header or extra.header, m.tiles | extra.tiles,
                            f"{m.detail}; {extra.detail}")
    return m


# ------------------------------------------------------------------------------------------------ the oracle
@dataclass
class FuzzContext:
    work: Path
    ckpt: Path
    clean: bytes
    layout: Layout
    foreign: list[bytes]
    decoded: object  # np (3, H, W) of the clean decode
    valid: object  # np (H, W)
    seed: int = 0


def build_context(work: Path, seed: int = 0, ckpt: Path | None = None, entropy: str | None = None) -> FuzzContext:
    """Encode the small pass (once per folder), decode it cleanly, and keep what the oracle needs. ``entropy``
    ``int``: the codec's integer prior is quantised beside it first (``tiny.int.pt``)."""
    from groundstation.container import PassReader
    from groundstation.decode import decode_pass
    from groundstation.encode import encode_scene
    from synth import tiny_codec_checkpoint, write_scene

    work.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt or work / "tiny.pt"
    if not ckpt.exists():
        tiny_codec_checkpoint(ckpt)
    if entropy == "int" and not ckpt.with_suffix("").with_suffix(".int.pt").exists():
        _quantise_beside(ckpt)
    pass_path = work / "clean.gsp"
    if not pass_path.exists():
        scene = write_scene(work / "scene.tif", *SCENE_HW, crs="EPSG:32618", seed=3, nodata=0, nodata_box=(0, 20, 0, 30))
        encode_scene(scene, pass_path, codec=str(ckpt), tile_size=TILE, pass_id="fuzz-pass", threads=1,
                     **({"entropy": entropy} if entropy else {}))
    clean = pass_path.read_bytes()
    lay = parse_layout(clean)
    other = bytes(range(16))
    foreign = [r.pack(other) for r in PassReader(pass_path)]
    out = work / "clean.zarr"
    shutil.rmtree(out, ignore_errors=True)
    with cached_codec():
        summary = decode_pass(pass_path, out, codec=str(ckpt), threads=1)
    assert not summary.lost, summary.lost
    decoded, valid = read_product(out)
    return FuzzContext(work, ckpt, clean, lay, foreign, decoded, valid, seed)


def read_product(path: Path):
    import zarr

    g = zarr.open_group(str(path), mode="r")
    return g["decoded"][:], g["valid"][:]


@contextlib.contextmanager
def one_cpu():
    """Run on one CPU: a header's thread hint then clamps to 1, so every decode is the one-thread decode the
    oracle compares with (more threads may round the synthesis differently; the witness covers symbols only)."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def cached_codec():
    """Load each checkpoint once (keyed by path and expected sha256) in this process while decoding."""
    import groundstation.decode as dec

    real = dec.load_codec
    cache: dict = {}

    def load(path, expected=None, **kw):
        key = (str(path), expected)
        if key not in cache:
            cache[key] = real(path, expected, **kw)  # a CheckpointError is raised (and not cached)
        return cache[key]

    dec.load_codec = load
    try:
        yield
    finally:
        dec.load_codec = real


def run_case(ctx: FuzzContext, case: int) -> dict:
    """Mutate, decode, judge. Returns {"case", "kind", "outcome", "problems": [...], "lost": {reason: n}, ...}."""
    import numpy as np

    from groundstation.container import PassReader
    from groundstation.decode import decode_pass
    from groundstation.errors import GSPError

    m = make_mutation(ctx, case)
    path = ctx.work / f"case-{os.getpid()}.gsp"
    out = ctx.work / f"case-{os.getpid()}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    path.write_bytes(m.data)
    res = {"case": case, "kind": m.kind, "detail": m.detail, "outcome": "decoded", "problems": [], "lost": {},
           "collateral": 0}
    try:
        summary = decode_pass(path, out, codec=str(ctx.ckpt), threads=None)
    except GSPError as exc:
        res["outcome"] = "header_error"
        res["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        if exc.exit_code != 2:
            res["problems"].append("bookkeeping")
        if not m.header:
            res["problems"].append("wrong_error")
        if out.exists():
            res["problems"].append("bookkeeping")
        return res
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzz counts
        res["outcome"] = "unhandled"
        res["error"] = "".join(traceback.format_exception_only(type(exc), exc))[-500:]
        res["problems"].append("unhandled")
        return res
    header = PassReader(path).header
    decoded, valid = read_product(out)
    n = header.tiling.n_tiles
    lost = {}
    for d in summary.lost:
        if d["tile"] in lost or not 0 <= d["tile"] < n or not d.get("reason"):
            res["problems"].append("bookkeeping")
        lost[d["tile"]] = d["reason"]
    res["lost"] = dict(Counter(lost.values()))
    if summary.tiles_ok + len(lost) != n:
        res["problems"].append("bookkeeping")
    silent = []
    for t in range(n):
        r0, r1, c0, c1 = header.tile_window(t)
        if t in lost:
            if valid[r0:r1, c0:c1].any():
                silent.append(f"tile {t} lost ({lost[t]}) but not masked")
            if not m.header and t not in m.tiles:
                res["collateral"] += 1
            continue
        # an ok tile must be the clean decode of that tile. A CRC-valid header may still claim a scene size that
        # differs from the encoder's within the codec's 64-px padding (the records carry latent sizes only): then
        # the overlap with the real scene must match, and the rest (the encoder's padding) is counted apart.
        cr0, cc0 = (t // 2) * TILE, (t % 2) * TILE
        cr1, cc1 = min(cr0 + TILE, SCENE_HW[0]), min(cc0 + TILE, SCENE_HW[1])
        if t >= 4 or (r0, c0) != (cr0, cc0):
            silent.append(f"tile {t} ok but outside the clean tile grid")
            continue
        h, w = min(r1, cr1) - r0, min(c1, cc1) - c0
        if (r1, c1) != (cr1, cc1):
            res["resized_by_header"] = res.get("resized_by_header", 0) + 1
        same = (np.array_equal(decoded[:, r0 : r0 + h, c0 : c0 + w], ctx.decoded[:, r0 : r0 + h, c0 : c0 + w])
                and np.array_equal(valid[r0 : r0 + h, c0 : c0 + w], ctx.valid[r0 : r0 + h, c0 : c0 + w]))
        if not same:
            silent.append(f"tile {t} reported ok but differs from the clean decode")
    if silent:
        res["problems"].append("silent")
        res["silent"] = silent
        if m.hyper_only:
            res["problems"].append(KNOWN_GAP)
    shutil.rmtree(out, ignore_errors=True)
    return res


def _quantise_beside(ckpt: Path) -> None:
    import torch

    from groundstation.codec import CODEC_ALIGN, _pad_to, _to_tensor, load_codec
    from groundstation.intprior import SIDECAR_SUFFIX, quantise
    from synth import smooth_image

    loaded = load_codec(ckpt)
    with torch.inference_mode():
        latents = [loaded.model.g_a(_pad_to(_to_tensor((smooth_image(128, 128, seed=s).transpose(1, 2, 0) * 255)
                                                       .round().astype("uint8"), "cpu"), CODEC_ALIGN))
                   for s in (1, 2)]
    torch.save(quantise(loaded.model, latents, loaded.sha256).state_dict(),
               ckpt.with_suffix("").with_suffix(SIDECAR_SUFFIX))


# ------------------------------------------------------------------------------------------------ the runner
def _worker(conn, work: str, ckpt: str, seed: int, cpu: int | None, inject: dict[int, str]) -> None:
    import logging
    import signal

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    wdir = Path(work) / f"w{os.getpid()}"
    wdir.mkdir(parents=True, exist_ok=True)
    for name in ("clean.gsp", "tiny.pt", "tiny.int.pt"):
        if (Path(work) / name).exists() and not (wdir / name).exists():
            shutil.copy(Path(work) / name, wdir / name)
    with cached_codec():
        ctx = build_context(wdir, seed, Path(ckpt))
        conn.send("ready")
        while True:
            case = conn.recv()
            if case is None:
                break
            if inject.get(case) == "crash":  # self-test of the watchdog: die as a broken native library would
                os.kill(os.getpid(), signal.SIGSEGV)
            if inject.get(case) == "hang":
                time.sleep(10**6)
            conn.send(run_case(ctx, case))
    shutil.rmtree(wdir, ignore_errors=True)


class _Slot:
    def __init__(self, mp, work, ckpt, seed, cpu, inject):
        self.args = (work, ckpt, seed, cpu, inject)
        self.mp = mp
        self.start()

    def start(self):
        self.parent, child = self.mp.Pipe()
        self.proc = self.mp.Process(target=_worker, args=(child, *self.args), daemon=True)
        self.proc.start()
        child.close()
        if not self.parent.poll(300) or self.parent.recv() != "ready":
            raise RuntimeError("fuzz worker did not start")
        self.case, self.since = None, 0.0

    def restart(self):
        with contextlib.suppress(Exception):
            self.proc.kill()
        self.proc.join(10)
        self.start()


def run(cases: int, workers: int, seed: int, timeout: float, start: int = 0, progress: bool = True,
        inject: dict[int, str] | None = None, entropy: str | None = None) -> dict:
    """Run cases ``start..start+cases-1``; ``inject`` ({case: "crash" | "hang"}) tests the watchdog itself."""
    import multiprocessing as mp_mod
    from multiprocessing.connection import wait

    mp = mp_mod.get_context("spawn")
    work = Path(tempfile.mkdtemp(prefix="gsp-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    with cached_codec():
        build_context(work, seed, entropy=entropy)  # the pass, the checkpoint, a clean decode that loses nothing
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None]
    slots = [_Slot(mp, str(work), str(work / "tiny.pt"), seed, cpus[i % len(cpus)], inject or {})
             for i in range(workers)]
    setup_s = time.perf_counter() - t0
    todo = list(range(start, start + cases))[::-1]
    counts: Counter = Counter()
    kinds: Counter = Counter()
    lost_by_reason: Counter = Counter()
    outcomes: Counter = Counter()
    examples: dict[str, list] = {}
    done = 0
    t1 = time.perf_counter()

    def record(res: dict) -> None:
        nonlocal done
        done += 1
        outcomes[res["outcome"]] += 1
        kinds[res["kind"].split(":")[0]] += 1
        lost_by_reason.update(res.get("lost", {}))
        counts["collateral_tiles"] += res.get("collateral", 0)
        counts["resized_by_header"] += res.get("resized_by_header", 0)
        if res.get("collateral") and len(examples.setdefault("collateral", [])) < 5:
            examples["collateral"].append(res)
        for p in set(res["problems"]):
            counts[p] += 1
            examples.setdefault(p, []).append(res) if len(examples.get(p, [])) < 5 else None
        if progress and done % 250 == 0:
            rate = done / (time.perf_counter() - t1)
            print(f"  {done}/{cases} cases, {rate:.1f}/s, failures so far "
                  f"{ {k: counts[k] for k in FAILURES if counts[k]} }", flush=True)

    try:
        for s in slots:
            if todo:
                s.case, s.since = todo.pop(), time.perf_counter()
                s.parent.send(s.case)
        while any(s.case is not None for s in slots):
            busy = [s for s in slots if s.case is not None]
            ready = wait([s.parent for s in busy] + [s.proc.sentinel for s in busy], timeout=1.0)
            now = time.perf_counter()
            for s in busy:
                res = None
                if s.parent in ready:
                    try:
                        res = s.parent.recv()
                    except (EOFError, OSError):
                        res = None
                if res is None and (s.parent in ready or s.proc.sentinel in ready or not s.proc.is_alive()):
                    s.proc.join(5)
                    res = {"case": s.case, "kind": make_kind(work, seed, s.case), "outcome": "crash",
                           "problems": ["crash"], "error": f"worker exit code {s.proc.exitcode}"}
                    s.restart()
                elif res is None and now - s.since > timeout:
                    res = {"case": s.case, "kind": make_kind(work, seed, s.case), "outcome": "hang",
                           "problems": ["hang"], "error": f"no answer in {timeout:.0f} s"}
                    s.restart()
                if res is None:
                    continue
                record(res)
                s.case = None
                if todo:
                    s.case, s.since = todo.pop(), time.perf_counter()
                    s.parent.send(s.case)
        for s in slots:
            with contextlib.suppress(Exception):
                s.parent.send(None)
            s.proc.join(10)
            if s.proc.is_alive():
                s.proc.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run_s = time.perf_counter() - t1
    return {
        "cases": done, "seed": seed, "first_case": start, "workers": workers, "timeout_s": timeout,
        "failures": {k: counts[k] for k in FAILURES},
        "failed_cases": sum(counts[k] for k in FAILURES),
        "silent_of_which_hyperprior_only": counts[KNOWN_GAP],
        "outcomes": dict(outcomes), "mutation_families": dict(kinds),
        "tiles_lost_by_reason": dict(lost_by_reason.most_common()),
        "collateral_tiles": counts["collateral_tiles"],
        "tiles_resized_by_header": counts["resized_by_header"],
        "setup_s": round(setup_s, 1), "run_s": round(run_s, 1), "cases_per_s": round(done / run_s, 2) if run_s else None,
        "examples": examples,
    }


_KIND_CTX: dict = {}


def make_kind(work: Path, seed: int, case: int) -> str:
    """The mutation family of a case (for crash / hang rows), recomputed in the parent."""
    key = (str(work), seed)
    if key not in _KIND_CTX:
        clean = (work / "clean.gsp").read_bytes()
        _KIND_CTX[key] = FuzzContext(work, work / "tiny.pt", clean, parse_layout(clean), [b""] * 8, None, None, seed)
    with contextlib.suppress(Exception):
        return make_mutation(_KIND_CTX[key], case).kind
    return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--start", type=int, default=0, help="first case number (cases are seeded by number)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds a case may take before it counts as a hang")
    ap.add_argument("--inject", default="", help="self-test of the watchdog: e.g. 3:crash,5:hang")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/fuzz_container.json)")
    ap.add_argument("--entropy", default=None, choices=["float32", "float64", "int"],
                    help="entropy mode of the fuzzed pass (default: the default for new passes: the tiny codec has no "
                    "integer prior, so float64)")
    args = ap.parse_args(argv)
    from _results import RESULTS, write_result

    t0 = time.perf_counter()
    inject = {int(k): v for k, v in (x.split(":") for x in args.inject.split(",") if x)}
    result = run(args.cases, args.workers, args.seed, args.timeout, args.start, inject=inject, entropy=args.entropy)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["command"] = " ".join(["benchmarks/fuzz_container.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n{result['cases']} cases (seed {args.seed}) in {result['wall_s']} s with {args.workers} worker(s)")
    for k in FAILURES:
        print(f"  {k:12s} {result['failures'][k]}")
    print(f"  (silent with only the hyperprior string changed, CRC recomputed: {result['silent_of_which_hyperprior_only']})")
    print(f"  outcomes      {result['outcomes']}")
    print(f"  families      {result['mutation_families']}")
    print(f"  tiles lost    {result['tiles_lost_by_reason']}")
    print(f"  collateral    {result['collateral_tiles']} tiles lost whose record bytes were untouched")
    for k, rows in result["examples"].items():
        if k in FAILURES:
            for r in rows[:3]:
                print(f"  e.g. {k}: case {r['case']} {r['kind']} {r.get('detail', '')}: {r.get('error') or r.get('silent')}")
    write_result(args.out or RESULTS / "fuzz_container.json", result)
    return 1 if result["failed_cases"] else 0


if __name__ == "__main__":
    sys.exit(main())
