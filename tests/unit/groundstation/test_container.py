"""The pass container's framing: every kind of damage costs only the affected tiles, with a named reason."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest

from groundstation.container import (FORMAT_VERSION, MAGIC, PassHeader, PassReader, PassWriter, TileRecord,
                                     pack_header, pack_mask, read_header, unpack_mask)
from groundstation.errors import PassFormatError

SHA = "ab" * 32


def make_header(**over) -> PassHeader:
    base = dict(
        format_version=FORMAT_VERSION, pass_id="p1", pass_uid="0123456789abcdef0123456789abcdef",
        acquisition_time="2026-11-21T10:00:00+00:00", created="2026-11-21T10:05:00+00:00",
        scene=dict(width=300, height=200, crs_wkt="EPSG:4326", transform=(0.1, 0, 10, 0, -0.1, 50)),
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
