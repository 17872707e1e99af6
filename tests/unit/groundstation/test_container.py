"""The pass container's framing: every kind of damage costs only the affected tiles, with a named reason."""

from __future__ import annotations

import io
import json
import math
import os
import zlib

import numpy as np
import pytest

from groundstation.container import (_HEAD, _U32, FORMAT_VERSION, MAGIC, PassHeader, PassReader, PassWriter,
                                     TileRecord, pack_header, pack_mask, read_header, unpack_mask)
from groundstation.errors import PassFormatError

SHA = "ab" * 32
WKT_4326 = ('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],'
            'AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",'
            '0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],'
            'AUTHORITY["EPSG","4326"]]')


def make_header(**over) -> PassHeader:
    base = dict(
        format_version=FORMAT_VERSION, pass_id="p1", pass_uid="0123456789abcdef0123456789abcdef",
        acquisition_time="2026-11-21T10:00:00+00:00", created="2026-11-21T10:05:00+00:00",
        scene=dict(width=300, height=200, crs_wkt=WKT_4326, transform=(0.1, 0, 10, 0, -0.1, 50)),
        tiling=dict(tile_size=128, tiles_x=3, tiles_y=2),
        codec=dict(name="c", architecture="elic2022-chandelier", arch={}, sha256=SHA),
        bands=dict(selection=[1, 2, 3], rule="r", scaling="identity", in_min=[0, 0, 0], in_max=[255] * 3, mask_source="none"),
        encoder=dict(software="t", version="0", torch="x", compressai="y", threads=1, device="cpu"),
    )
    base.update(over)
    return PassHeader.model_validate(base)


def record(i: int, payload: bytes = b"") -> TileRecord:
    strings = [bytes([i]) * (5 + k) + payload for k in range(11)]
    return TileRecord(tile_index=i, strings=strings, z_hw=(2, 2), y_hw=(8, 8), witness=1000 + i)


def write_pass(path, header=None, indices=range(6), extra: list[bytes] = ()):
    header = header or make_header()
    with PassWriter(path, header) as w:
        for i in indices:
            w.write(record(i))
    if extra:
        with open(path, "ab") as f:
            for blob in extra:
                f.write(blob)
    return header


def offsets(path):
    scan = PassReader(path).scan()
    return {i: off for i, (off, _) in scan.records.items()}


def test_header_round_trip_and_grid_validation():
    h = make_header()
    back, end = read_header(io.BytesIO(pack_header(h)))
    assert back == h and end == len(pack_header(h))
    assert h.tile_window(5) == (128, 200, 256, 300)  # edge tile is smaller
    with pytest.raises(ValueError, match="does not cover"):
        make_header(tiling=dict(tile_size=128, tiles_x=2, tiles_y=2))
    with pytest.raises(ValueError, match="multiple of 64"):
        make_header(tiling=dict(tile_size=100, tiles_x=3, tiles_y=2))


def test_clean_pass_reads_every_record(tmp_path):
    write_pass(tmp_path / "p")
    reader = PassReader(tmp_path / "p")
    scan = reader.scan()
    assert sorted(scan.records) == list(range(6)) and not scan.problems and scan.trailer
    assert [r.tile_index for r in reader] == list(range(6))
    assert reader.read(3).strings == record(3).strings
    assert not (tmp_path / "p.part").exists()


def test_writer_leaves_only_part_file_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with PassWriter(tmp_path / "p", make_header()) as w:
            w.write(record(0))
            raise RuntimeError("encoder crashed")
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.part").exists()


@pytest.mark.parametrize("cut,match", [(5, "truncated header"), (20, "truncated header")])
def test_truncated_header_is_a_clear_error(tmp_path, cut, match):
    write_pass(tmp_path / "p")
    data = (tmp_path / "p").read_bytes()
    (tmp_path / "q").write_bytes(data[:cut])
    with pytest.raises(PassFormatError, match=match):
        PassReader(tmp_path / "q")


def test_damaged_header_and_unknown_version(tmp_path):
    write_pass(tmp_path / "p")
    data = bytearray((tmp_path / "p").read_bytes())
    bad = bytearray(data)
    bad[30] ^= 0x01  # inside the JSON
    (tmp_path / "crc").write_bytes(bad)
    with pytest.raises(PassFormatError, match="header CRC mismatch"):
        PassReader(tmp_path / "crc")
    ver = bytearray(data)
    ver[8:10] = (99).to_bytes(2, "little")
    (tmp_path / "ver").write_bytes(ver)
    with pytest.raises(PassFormatError, match="version 99 is not supported"):
        PassReader(tmp_path / "ver")
    (tmp_path / "magic").write_bytes(b"GIF89a" + bytes(data[6:]))
    with pytest.raises(PassFormatError, match="not a pass container"):
        PassReader(tmp_path / "magic")
    huge = bytearray(data)
    huge[10:14] = (1 << 30).to_bytes(4, "little")
    (tmp_path / "huge").write_bytes(huge)
    with pytest.raises(PassFormatError, match="exceeds"):
        PassReader(tmp_path / "huge")


def test_flipped_bit_costs_one_tile(tmp_path):
    write_pass(tmp_path / "p")
    offs = offsets(tmp_path / "p")
    data = bytearray((tmp_path / "p").read_bytes())
    data[offs[2] + 40] ^= 0x10
    (tmp_path / "q").write_bytes(data)
    scan = PassReader(tmp_path / "q").scan()
    assert sorted(scan.records) == [0, 1, 3, 4, 5]
    lost = scan.lost_tiles()
    assert list(lost) == [2] and lost[2].reason == "crc_mismatch"


def test_flipped_bit_in_length_field_resyncs(tmp_path):
    write_pass(tmp_path / "p")
    offs = offsets(tmp_path / "p")
    data = bytearray((tmp_path / "p").read_bytes())
    data[offs[1] - 8 + 3] ^= 0x40  # high byte of tile 1's body length
    (tmp_path / "q").write_bytes(data)
    scan = PassReader(tmp_path / "q").scan()
    assert sorted(scan.records) == [0, 2, 3, 4, 5]
    assert 1 in scan.lost_tiles()


def test_truncated_file_loses_only_the_tail(tmp_path):
    write_pass(tmp_path / "p")
    offs = offsets(tmp_path / "p")
    data = (tmp_path / "p").read_bytes()
    (tmp_path / "q").write_bytes(data[: offs[5] + 30])
    scan = PassReader(tmp_path / "q").scan()
    assert sorted(scan.records) == [0, 1, 2, 3, 4]
    assert scan.lost_tiles()[5].reason == "truncated"
    assert not scan.trailer and any("trailer" in n for n in scan.notes)
    (tmp_path / "r").write_bytes(data[: offs[5] + 10])  # cut before the tile index: it is simply missing
    lost = PassReader(tmp_path / "r").scan().lost_tiles()
    assert list(lost) == [5] and "truncated" in lost[5].detail


def test_missing_duplicated_foreign_and_conflicting_records(tmp_path):
    other = make_header(pass_uid="f" * 32)
    foreign = record(4).pack(other.uid_bytes)
    dup = record(1).pack(make_header().uid_bytes)
    conflict = record(0, payload=b"x").pack(make_header().uid_bytes)
    write_pass(tmp_path / "p", indices=[0, 1, 2, 3, 5], extra=[foreign, dup, conflict])
    scan = PassReader(tmp_path / "p").scan()
    lost = scan.lost_tiles()
    assert lost[4].reason == "foreign"  # tile 4 only ever arrived from another pass
    assert lost[0].reason == "conflict"  # two different intact records: neither is trusted
    assert 1 in scan.records and any("identical duplicate" in n for n in scan.notes)
    assert sorted(scan.records) == [1, 2, 3, 5]


def test_record_unpack_rejects_inconsistent_lengths():
    body = record(0).pack(b"\0" * 16)[12:]
    assert TileRecord.unpack(body).strings == record(0).strings
    with pytest.raises(ValueError, match="run past"):
        TileRecord.unpack(body[:-3])
    with pytest.raises(ValueError, match="trailing"):
        TileRecord.unpack(body + b"xx")


def test_mask_round_trip_and_inflation_limit():
    valid = np.ones((37, 53), bool)
    assert pack_mask(valid) is None
    valid[3:9, 10:20] = False
    assert (unpack_mask(pack_mask(valid), 37, 53) == valid).all()
    bomb = zlib.compress(b"\xff" * (10 << 20))
    with pytest.raises(ValueError, match="inflates"):
        unpack_mask(bomb, 37, 53)


def test_magic_is_what_we_write():
    assert pack_header(make_header()).startswith(MAGIC)


# ------------------------------------------------------------------------------------------------ header fields
def raw_header(blob: bytes, version: int = FORMAT_VERSION) -> bytes:
    """A header frame around any bytes, with a valid CRC (what a buggy encoder or a crafted file can send)."""
    return _HEAD.pack(MAGIC, version, len(blob)) + blob + _U32.pack(zlib.crc32(blob))


def header_with(path: str, value) -> bytes:
    h = json.loads(make_header().model_dump_json())
    *parents, last = path.split(".")
    obj = h
    for p in parents:
        obj = obj[p]
    obj[last] = value
    return raw_header(json.dumps(h).encode())


@pytest.mark.parametrize("path,value", [
    ("encoder.threads", 1000000), ("encoder.threads", -1), ("encoder.threads", 0), ("encoder.threads", None),
    ("encoder.threads", 2**40),  # a hint: clamped where used, never rejected
    ("scene.crs_wkt", ""),  # pixel grid: no CRS
    ("scene.transform", [1, 0, 0, 0, 1, 0]), ("scene.transform", [0.3, 0.1, 5e5, 0.1, -0.3, 4.1e6]),
    ("bands.selection", [2]),  # one band, as grey (with one in_min / in_max)
    ("codec.lmbda", 0.0130), ("acquisition_time", "2024-05-01"), ("witness", None),
])
def test_valid_header_values_are_accepted(path, value):
    blob = header_with(path, value)
    if path == "bands.selection":
        h = json.loads(blob[_HEAD.size:-4])
        h["bands"].update(in_min=[0], in_max=[255])
        blob = raw_header(json.dumps(h).encode())
    header, _ = read_header(io.BytesIO(blob))
    read_back = json.loads(header.model_dump_json())
    for key in path.split("."):
        read_back = read_back[key]
    assert read_back == value  # accepted as written, not rejected nor rewritten


@pytest.mark.parametrize("path,value,named", [
    ("scene.crs_wkt", "garbage", "scene.crs_wkt"),
    ("scene.crs_wkt", "EPSG:4326", "scene.crs_wkt"),  # an authority code is not WKT
    ("scene.crs_wkt", 'PROJCS["x"', "scene.crs_wkt"),
    ("scene.transform", [0, 0, 0, 0, 0, 0], "scene.transform"),
    ("scene.transform", [1, 2, 0, 2, 4, 0], "scene.transform"),  # singular
    ("scene.transform", [math.nan, 0, 0, 0, 1, 0], "scene.transform.0"),
    ("scene.transform", [math.inf, 0, 0, 0, -1, 0], "scene.transform.0"),
    ("scene.transform", [1e300, 0, 0, 0, -1e300, 0], "scene.transform"),  # determinant overflows
    ("scene.transform", [1e308, 0, 1e308, 0, 1, 0], "transform"),  # a corner coordinate overflows
    ("scene.transform", [1, 0, 0, 0, 1], "scene.transform"),
    ("scene.width", 0, "scene.width"), ("scene.width", 2**30, "scene.width"),
    ("scene.width", 1000, "does not cover"), ("scene.source_bands", -1, "scene.source_bands"),
    ("tiling.tile_size", 100, "tiling.tile_size"), ("tiling.tiles_x", 0, "tiling.tiles_x"),
    ("bands.selection", [0, 1, 2], "bands.selection"), ("bands.selection", [1, 2], "bands.selection"),
    ("bands.selection", [1, 2, 3, 4], "bands.selection"), ("bands.selection", [], "bands.selection"),
    ("bands.selection", [70000, 1, 1], "bands.selection"),
    ("bands.in_min", [0, 0], "in_min"), ("bands.in_max", [0, 0, math.nan], "bands.in_max.2"),
    ("bands.fill_value", 300, "bands.fill_value"), ("bands.fill_value", -1, "bands.fill_value"),
    ("bands.scaling", "bogus", "bands.scaling"), ("bands.source_nodata", math.inf, "bands.source_nodata"),
    ("codec.lmbda", -1, "codec.lmbda"), ("codec.lmbda", 0, "codec.lmbda"), ("codec.lmbda", math.nan, "codec.lmbda"),
    ("codec.name", "../../etc/passwd", "codec.name"), ("codec.name", "..", "codec.name"),
    ("codec.arch", {"N": math.nan}, "codec.arch"), ("codec.sha256", "zz", "codec.sha256"),
    ("acquisition_time", "garbage", "acquisition_time"), ("acquisition_time", "2024-13-45T99:00", "acquisition_time"),
    ("created", "yesterday", "created"), ("pass_uid", "zz", "pass_uid"),
    ("pass_id", "", "pass_id"), ("pass_id", "a\x00b", "pass_id"), ("bands.rule", "\x1b[2J", "bands.rule"),
    ("witness", "sha1-of-something", "witness"), ("encoder.threads", 2.5, "encoder.threads"),
    ("encoder.threads", "many", "encoder.threads"), ("format_version", 2, "version 2"),
])
def test_bad_header_field_is_a_pass_format_error_naming_it(path, value, named):
    with pytest.raises(PassFormatError, match="invalid header field|version 2") as err:
        read_header(io.BytesIO(header_with(path, value)), "p.gsp")
    assert named in str(err.value) and "Traceback" not in str(err.value)


def test_linear_scaling_needs_increasing_ranges():
    h = json.loads(make_header().model_dump_json())
    h["bands"].update(scaling="linear", in_min=[10, 0, 0], in_max=[10, 255, 255])
    with pytest.raises(PassFormatError, match="in_max > in_min"):
        read_header(io.BytesIO(raw_header(json.dumps(h).encode())))
    h["bands"]["selection"] = [1, 2, 5]
    h["bands"]["in_max"] = [11, 255, 255]
    h["scene"]["source_bands"] = 3
    with pytest.raises(PassFormatError, match="scene.source_bands"):
        read_header(io.BytesIO(raw_header(json.dumps(h).encode())))


@pytest.mark.parametrize("blob,match", [
    (b"[" * 100_000, "not JSON"), (b'{"a":' * 50_000, "not JSON"), (b"\xff\xfe{}", "not JSON"), (b"", "not JSON"),
    (b"[]", "expected an object"), (b"null", "expected an object"), (b'{"surprise": 1}', "invalid header field"),
])
def test_header_that_is_not_a_json_object(blob, match):
    with pytest.raises(PassFormatError, match=match):
        read_header(io.BytesIO(raw_header(blob)))


def test_header_threads_are_a_clamped_hint_not_an_order():
    from groundstation.decode import MAX_PLAUSIBLE_THREADS, decode_threads

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def with_threads(n):
        return make_header(encoder=dict(software="t", version="0", torch="x", compressai="y", threads=n, device="cpu"))

    assert decode_threads(None, with_threads(1)) == (1, None)
    assert decode_threads(None, with_threads(None)) == (1, None)
    assert decode_threads(3, with_threads(1000000)) == (3, None)  # the station's setting is an order
    for bad in (1000000, MAX_PLAUSIBLE_THREADS + 1, -1, 0, -(2**31), 2**40):
        n, note = decode_threads(None, with_threads(bad))
        assert n == 1 and str(bad) in note
    n, note = decode_threads(None, with_threads(cpus + 1))
    assert n == cpus and "CPUs" in note


def test_damaged_mask_stream_is_a_value_error_not_a_zlib_error():
    valid = np.ones((37, 53), bool)
    valid[3:9, 10:20] = False
    blob = bytearray(pack_mask(valid))
    for i in range(2, len(blob)):  # every single-byte change is caught (zlib error, size or Adler-32)
        bad = bytearray(blob)
        bad[i] ^= 0x55
        try:
            got = unpack_mask(bytes(bad), 37, 53)
        except ValueError:
            continue
        assert (got == valid).all(), f"byte {i}: a damaged mask decoded to another mask"
    with pytest.raises(ValueError, match="stray bytes"):
        unpack_mask(bytes(blob) + b"x", 37, 53)
    with pytest.raises(ValueError):
        unpack_mask(bytes(blob[:-4]), 37, 53)  # Adler-32 cut off: incomplete
