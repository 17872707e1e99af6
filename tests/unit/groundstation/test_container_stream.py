"""The record scanner on a file that grows (a downlink in progress) judges exactly as one scan of the finished file."""

from __future__ import annotations

import random
from dataclasses import asdict

import fuzz_container as fz  # benchmarks/ is on the path (pytest.ini_options pythonpath)
from helpers import make_pass

from groundstation.container import PassReader, RecordScanner, read_header


def _scan_growing(data: bytes, path, rng: random.Random) -> tuple[object, list[int]]:
    """Write ``data`` in random pieces, advancing the scanner after each; the records seen before the end."""
    header_len = None
    seen_early: list[int] = []
    scanner = None
    with open(path, "wb") as f:
        pos = 0
        while pos < len(data):
            step = rng.choice([1, 7, 64, 500, 4096, len(data)])
            f.write(data[pos: pos + step])
            f.flush()
            pos += step
            if scanner is None:
                try:
                    with open(path, "rb") as r:
                        header, header_len = read_header(r, str(path))
                except Exception:  # noqa: BLE001 - the header has not arrived yet
                    continue
                scanner = RecordScanner(path, header, header_len)
            before = set(scanner.records)
            res = scanner.advance(final=False)
            assert not any(p.reason in ("missing",) for p in res.problems)  # nothing declared missing early
            seen_early += sorted(set(res.records) - before)
    return scanner.advance(final=True), seen_early


def test_a_growing_file_scans_as_the_finished_file(tmp_path, tiny_codec):
    _, clean_path = make_pass(tmp_path, tiny_codec, "stream-pass", height=200, width=260)
    clean = clean_path.read_bytes()
    lay = fz.parse_layout(clean)
    foreign = [r.pack(bytes(range(16))) for r in PassReader(clean_path)]
    rng = random.Random(11)
    cases = [clean] + [fz.mutate_blind(clean, lay, rng, foreign).data for _ in range(40)] \
        + [fz.mutate_record_crc_fixed(clean, lay, rng).data for _ in range(10)]
    for i, data in enumerate(cases):
        whole = tmp_path / f"whole-{i}.gsp"
        whole.write_bytes(data)
        try:
            want = PassReader(whole).scan()
        except Exception:  # noqa: BLE001 - a mutation that broke the header: not a streaming case
            continue
        got, early = _scan_growing(data, tmp_path / f"grow-{i}.gsp", random.Random(i))
        assert got.records == want.records, i
        assert [asdict(p) for p in got.problems] == [asdict(p) for p in want.problems], i
        assert (got.notes, got.trailer, got.size) == (want.notes, want.trailer, want.size), i
        # every record was usable before the end except those a later duplicate made a conflict
        assert set(want.records) <= set(early), i
