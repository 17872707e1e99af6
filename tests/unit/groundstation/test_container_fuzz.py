"""Fuzz of the pass-container path: a few hundred seeded mutations of a small real pass, each decoded and judged.

The mutator and the judge are ``benchmarks/fuzz_container.py`` (which runs 10,000 cases in watchdogged worker
processes); here they run in-process on a distinct seed. Every case must end in a product whose ok tiles equal
the clean decode pixel for pixel (``decoded`` and ``valid``) and whose other tiles are masked and listed with a
reason, or -- when the header was touched -- in a clear operator error (exit 2) with nothing written.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import fuzz_container as fz  # benchmarks/ is on the path (pytest.ini_options pythonpath)

from groundstation.container import _BODY, PassReader  # noqa: E402
from groundstation.errors import PassFormatError  # noqa: E402

SEED = 7  # the benchmark's 10,000 cases use seed 0: the suite covers other cases
N_CASES = 100


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, tiny_codec):
    # the tiny codec loaded once for the module (decode_pass would load it per case); one CPU, so that header
    # thread hints clamp to the one-thread decode the oracle compares with
    with fz.cached_codec(), fz.one_cpu():
        yield fz.build_context(tmp_path_factory.mktemp("fuzz"), seed=SEED, ckpt=tiny_codec)


def test_fuzzed_passes_end_as_designed(ctx):
    outcomes, families, lost, failed = Counter(), Counter(), Counter(), []
    collateral = 0
    for case in range(N_CASES):
        res = fz.run_case(ctx, case)
        outcomes[res["outcome"]] += 1
        families[res["kind"]] += 1
        lost.update(res["lost"])
        collateral += res["collateral"]
        problems = [p for p in res["problems"] if p in fz.FAILURES]
        if problems:  # a z-only change is no exception since the witness covers z (KNOWN_GAP counts 0)
            failed.append(res)
    assert not failed, "\n".join(json.dumps(r, default=str)[:600] for r in failed[:5])
    assert collateral == 0, "a damaged record cost a tile whose record bytes were intact"
    # the seeded cases reach every outcome and every way of losing a tile
    assert outcomes["header_error"] >= 10 and outcomes["decoded"] >= 50, outcomes
    assert {"crc_mismatch", "malformed", "missing", "desync", "foreign", "conflict", "truncated"} <= set(lost), lost
    assert sum(n for k, n in families.items() if k.startswith("record_crc_fixed")) >= 15, families


def _with_header(ctx, path: Path, field: str, value) -> Path:
    h = json.loads(json.dumps(ctx.layout.header_json))
    fz._set(h, tuple(field.split(".")), value)
    path.write_bytes(fz.pack_header_json(h, ctx.layout.version) + ctx.clean[ctx.layout.header_end :])
    return path


@pytest.mark.parametrize("threads", [1000000, -1, 0, 2**31 - 1])
def test_header_thread_count_is_a_hint(ctx, tmp_path, threads):
    """Found by fuzzing: 1,000,000 threads died in libgomp, -1 lost every tile."""
    from gsp.cli import main

    p = _with_header(ctx, tmp_path / "p.gsp", "encoder.threads", threads)
    out = tmp_path / "o.zarr"
    # tile by tile, as the fuzz's clean decode
    assert main(["decode", str(p), "-o", str(out), "--codec", str(ctx.ckpt), "--json", "--decode-mode", "tile"]) == 0
    decoded, valid = fz.read_product(out)
    assert np.array_equal(decoded, ctx.decoded) and np.array_equal(valid, ctx.valid)
    import zarr

    attrs = zarr.open_group(str(out), mode="r").attrs["gsp_decode"]
    assert attrs["threads"] == 1 and any("encoder.threads" in n for n in attrs["notes"])


@pytest.mark.parametrize("field,value", [("scene.crs_wkt", "garbage"), ("scene.transform", [0, 0, 0, 0, 0, 0]),
                                         ("bands.fill_value", 300), ("acquisition_time", "garbage")])
def test_bad_header_field_exits_2_naming_it_and_writes_nothing(ctx, tmp_path, capsys, field, value):
    from gsp.cli import main

    p = _with_header(ctx, tmp_path / "p.gsp", field, value)
    out = tmp_path / "o.zarr"
    assert main(["decode", str(p), "-o", str(out), "--codec", str(ctx.ckpt)]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(PassFormatError, match=field.replace(".", r"\.")):
        PassReader(p)


def test_crc_valid_change_of_the_hyperprior_string_is_caught(ctx, tmp_path):
    """A hyperprior (z) string changed with a recomputed record CRC: caught by the witness, which covers the z
    symbols as well as the y symbols (witness kind ``crc32-int32-decoded-z-and-y-symbols``)."""
    from groundstation.decode import decode_pass

    silent = []
    for fa, ba, blen, tile in ctx.layout.records:
        body = bytearray(ctx.clean[ba : ba + blen])
        n = _BODY.unpack_from(body)[-1]
        lengths = list(struct.unpack_from(f"<{n}I", body, _BODY.size))
        z_end = _BODY.size + 4 * n + sum(lengths)  # the z string is the last one
        for cut in (1, 2, 3, 4):
            if cut >= lengths[-1]:
                continue
            new = bytearray(body)
            del new[z_end - cut : z_end]
            lengths2 = lengths[:-1] + [lengths[-1] - cut]
            struct.pack_into(f"<{n}I", new, _BODY.size, *lengths2)
            data = ctx.clean[:fa] + fz.frame(bytes(new)) + ctx.clean[ba + blen :]
            p, out = tmp_path / f"t{tile}c{cut}.gsp", tmp_path / f"t{tile}c{cut}.zarr"
            p.write_bytes(data)
            s = decode_pass(p, out, codec=str(ctx.ckpt), threads=1)
            if tile not in {d["tile"] for d in s.lost}:
                decoded, valid = fz.read_product(out)
                if not np.array_equal(decoded, ctx.decoded):
                    silent.append((tile, cut))
            shutil.rmtree(out, ignore_errors=True)
    assert not silent, f"tiles reported ok with other pixels (tile, bytes cut from z): {silent}"


def test_watchdog_counts_crashes_and_hangs_and_goes_on(tmp_path):
    """The benchmark's runner: a worker that dies or hangs is one counted case, replaced, and the run continues."""
    res = fz.run(cases=3, workers=1, seed=SEED, timeout=6, progress=False, inject={0: "crash", 1: "hang"})
    assert res["cases"] == 3
    assert res["failures"]["crash"] == 1 and res["failures"]["hang"] == 1
    assert res["outcomes"].get("crash") == 1 and res["outcomes"].get("hang") == 1
    assert sum(res["outcomes"].values()) == 3  # the third case ran on a fresh worker
