"""Golden bitstreams: the committed passes decode to the committed symbols exactly and to the committed pixels
within the tolerance CPUs differ by, under this machine's kernels and under other CPUs' (AVX2, SSE4.1). Two
passes of one scene: ``golden.gsp`` in the float32 entropy mode (passes written before the mode existed must decode
as they did) and ``golden-int.gsp`` in the ``int`` mode, the default for new passes.

A CompressAI/torch upgrade, a changed codec or a machine whose kernels desynchronise the entropy decoder fails
here instead of at a station. Regenerate (only on purpose): tests/golden/make_golden.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from golden.make_golden import GOLDENS, PIXEL_TOLERANCE, PIXELS, compare, decode_symbols
from helpers import REPO
from groundstation.codec import load_codec
from groundstation.container import PassReader
from groundstation.decode import decode_pass
from groundstation.product import open_product
from groundstation.registry import load_registry, resolve_model



@pytest.fixture(scope="module")
def golden_codec():
    _, ckpt, _, _ = resolve_model(json.loads(GOLDENS["float32"].expected.read_text())["codec"], "codec")
    return ckpt


@pytest.mark.parametrize("golden", sorted(GOLDENS))
def test_golden_matches_the_committed_codec(golden):
    g = GOLDENS[golden]
    expected = json.loads(g.expected.read_text())
    entry = load_registry().models[expected["codec"]]
    assert entry.sha256 == expected["codec_sha256"], "codec changed: regenerate with tests/golden/make_golden.py"
    assert g.pass_file.stat().st_size < 64 * 1024 and g.pixels.stat().st_size < 128 * 1024
    header = PassReader(g.pass_file).header
    assert header.codec.entropy == g.entropy
    if g.entropy == "int":  # the integer prior the registry names is the one the pass was encoded with
        assert header.codec.int_prior_sha256 == entry.int_prior.sha256 == expected["int_prior_sha256"]
    # the committed symbol CRCs are the encoder's own witnesses, recorded in the pass
    witnesses = {rec.tile_index: rec.witness for rec in PassReader(g.pass_file)}
    assert {int(k): v for k, v in expected["symbol_crc32"].items()} == witnesses


@pytest.mark.parametrize("golden", sorted(GOLDENS))
@pytest.mark.parametrize("process_threads", [1, 2])
def test_golden_pass_decodes_to_its_symbols_and_pixels(tmp_path: Path, process_threads: int, golden: str):
    """Default decode: the encoder's thread count from the header, whatever the worker process is set to."""
    g = GOLDENS[golden]
    expected = json.loads(g.expected.read_text())
    before = torch.get_num_threads()
    torch.set_num_threads(process_threads)
    try:
        summary = decode_pass(g.pass_file, tmp_path / "g.zarr")
        witnesses, _ = decode_symbols(golden=golden)
    finally:
        torch.set_num_threads(before)
    assert summary.lost == [] and summary.retried == [] and summary.bytes == expected["bytes"]
    assert summary.entropy == g.entropy
    ds = open_product(tmp_path / "g.zarr")
    assert list(ds.decoded.shape) == expected["shape"]
    assert compare(witnesses, ds.decoded.values, ds.valid.values, golden) == []


def test_the_check_fails_on_a_desync(golden_codec, monkeypatch):
    """Perturbed CDF indexes on the decoder (what a CPU whose kernels round a scale differently does)."""
    from compressai.entropy_models import GaussianConditional

    orig = GaussianConditional.build_indexes
    monkeypatch.setattr(GaussianConditional, "build_indexes",
                        lambda self, scales: (orig(self, scales) + 3) % int(self._quantized_cdf.shape[0]))
    witnesses, decoded = decode_symbols(load_codec(golden_codec))
    problems = compare(witnesses, decoded)
    assert any("symbols CRC32" in p for p in problems)


def test_the_int_check_fails_on_a_desync(golden_codec, monkeypatch):
    """The int pass: perturbed scale indexes out of the integer prior (what a decoder computing another
    integer would do) change the decoded symbols, and the check says so."""
    from groundstation.intprior import IntLayer

    orig = IntLayer.params

    def shifted(self, acc):
        means, idx = orig(self, acc)
        return means, (idx + 3) % (self.thresholds.shape[1] + 1)  # 64 scale-table levels

    monkeypatch.setattr(IntLayer, "params", shifted)
    witnesses, decoded = decode_symbols(load_codec(golden_codec), golden="int")
    problems = compare(witnesses, decoded, golden="int")
    assert any("symbols CRC32" in p for p in problems)


@pytest.mark.parametrize("golden", sorted(GOLDENS))
def test_the_check_fails_on_a_codec_whose_weights_changed(golden_codec, golden):
    """A 1 % change of the synthesis weights keeps every symbol (g_s is not in the entropy path) and still
    fails the pixel comparison: the tolerance is far below what a real change of the model does."""
    codec = load_codec(golden_codec)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in codec.model.g_s.named_parameters():
            if name.endswith("weight"):
                p.mul_(1 + 0.01 * torch.randn(p.shape, generator=gen))
    witnesses, decoded = decode_symbols(codec, golden=golden)
    problems = compare(witnesses, decoded, golden=golden)
    assert problems and not any("symbols" in p for p in problems), problems


def test_the_tolerance_is_what_cpus_differ_by_and_no_more():
    ref = np.load(PIXELS)["decoded"]
    witnesses = {int(k): v for k, v in json.loads(GOLDENS["float32"].expected.read_text())["symbol_crc32"].items()}
    one_dn = ref.copy()
    one_dn.reshape(-1)[::2000] ^= 1  # 1 DN on 0.05 % of the values: what AVX2 vs AVX-512 looks like, x10
    assert compare(witnesses, one_dn) == []
    shifted = np.clip(ref.astype(int) + 3, 0, 255).astype(np.uint8)
    assert compare(witnesses, shifted) != []
    assert PIXEL_TOLERANCE["max_abs_dn"] <= 2


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["default", "AVX2", "SSE41"])
def test_golden_holds_under_other_cpus_kernels(isa: str):
    """Each ISA in its own process (ONEDNN_MAX_CPU_ISA makes this machine run another CPU's kernels), every golden
    pass (each entropy mode) checked in it."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa != "default":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    proc = subprocess.run([sys.executable, str(REPO / "tests/golden/make_golden.py"), "--check", "--golden", "all"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    results = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(results) == len(GOLDENS), f"no result (exit {proc.returncode}): {proc.stderr[-2000:]}"
    assert proc.returncode == 0, results
    assert sorted(res["entropy"] for res in results) == sorted(g.entropy for g in GOLDENS.values()), results
    for res in results:
        assert res["ok"], res
        assert res["pixels"]["max_abs_dn"] <= PIXEL_TOLERANCE["max_abs_dn"], res
