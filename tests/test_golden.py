"""Golden bitstreams: the committed pass decodes to the committed pixels, with 1 and with 2 threads.

A CompressAI/torch upgrade or a machine whose kernels round differently and desynchronise the entropy
decoder fails here instead of in a station. Regenerate (only on purpose): tests/golden/make_golden.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from golden.make_golden import EXPECTED, PASS, digest_product
from groundstation.decode import decode_pass
from groundstation.product import open_product
from groundstation.registry import load_registry


def test_golden_matches_the_committed_codec():
    expected = json.loads(EXPECTED.read_text())
    entry = load_registry().models[expected["codec"]]
    assert entry.sha256 == expected["codec_sha256"], "codec changed: regenerate with tests/golden/make_golden.py"
    assert PASS.stat().st_size < 64 * 1024


@pytest.mark.parametrize("process_threads", [1, 2])
def test_golden_pass_decodes_bit_exactly(tmp_path: Path, process_threads: int):
    """Default decode: the encoder's thread count from the header, whatever the worker process is set to."""
    expected = json.loads(EXPECTED.read_text())
    before = torch.get_num_threads()
    torch.set_num_threads(process_threads)
    try:
        summary = decode_pass(PASS, tmp_path / "g.zarr")
    finally:
        torch.set_num_threads(before)
    assert summary.lost == [] and summary.bytes == expected["bytes"]
    got = digest_product(tmp_path / "g.zarr")
    assert got == {k: expected[k] for k in got}


def test_golden_pass_with_two_decoder_threads_keeps_its_symbols(tmp_path: Path):
    """--threads 2 is faster; the witness still guarantees the symbols, pixels may round 1 DN differently."""
    reference = decode_pass(PASS, tmp_path / "ref.zarr")
    fast = decode_pass(PASS, tmp_path / "fast.zarr", threads=2)
    assert fast.lost == [] == reference.lost
    a = open_product(tmp_path / "ref.zarr").decoded.values.astype(int)
    b = open_product(tmp_path / "fast.zarr").decoded.values.astype(int)
    assert abs(a - b).max() <= 2
