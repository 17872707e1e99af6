"""Passes decode on any CPU: encode in one process, decode in another under other CPUs' kernels.

``ONEDNN_MAX_CPU_ISA`` makes this machine run the float32 kernels an AVX2-only or SSE4.1-only CPU would run.
A high-rate pass (the demo codec with its analysis output scaled up: many large symbols, many chances for a
scale to sit on a table boundary) is encoded with the float64 entropy path, and with its integer prior in the
default mode for new passes, ``int``; decoded under AVX2 and SSE4.1 (the int pass also with 1 and 4 threads) each
must lose no tile and need no retry, and with float64 synthesis its pixels must be bit-identical everywhere.
(How far float32 synthesis may differ between CPUs is the golden test's part: tests/unit/groundstation/test_golden.py.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synth import write_scene

pytestmark = pytest.mark.slow


def _gsp(args: list[str], isa: str | None, cwd: Path) -> dict | None:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    proc = subprocess.run([sys.executable, "-m", "gsp.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    return json.loads(proc.stdout) if "--json" in args else None


@pytest.fixture(scope="module")
def boosted(tmp_path_factory) -> tuple[Path, Path]:
    """(a high-rate copy of the demo codec, a 256x256 scene: 4 tiles of 128 px)."""
    import torch

    from groundstation.checkpoints import read_state_dict
    from groundstation.registry import resolve_model

    d = tmp_path_factory.mktemp("xcpu")
    _, ckpt, _, _ = resolve_model(None, "codec")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in read_state_dict(ckpt).tensors.items()}
    last = max(int(m[1]) for k in sd if (m := re.match(r"^g_a\.(\d+)\.weight$", k)))  # g_a's last conv
    for part in ("weight", "bias"):
        sd[f"g_a.{last}.{part}"] = sd[f"g_a.{last}.{part}"] * 8  # y x8: finer quantisation, high rate
    torch.save(sd, d / "boosted.pt")
    scene = write_scene(d / "scene.tif", 256, 256, crs="EPSG:32633", seed=5)
    return d / "boosted.pt", scene


def _decoded(path: Path) -> np.ndarray:
    from groundstation.product import open_product

    return open_product(path).decoded.values


def test_a_float64_pass_decodes_on_other_cpus_without_loss(boosted, tmp_path):
    """Encoded under AVX2 kernels (an AVX2-only CPU), decoded here, under AVX2 and under SSE4.1."""
    codec, scene = boosted
    _gsp(["encode", str(scene), "-o", str(tmp_path / "p.gsp"), "--codec", str(codec), "--tile-size", "128",
          "--entropy", "float64"], "AVX2", tmp_path)
    from groundstation.container import PassReader

    header = PassReader(tmp_path / "p.gsp").header
    assert header.codec.entropy == "float64"
    products = {}
    for isa in (None, "AVX2", "SSE41"):  # this CPU's pixels are the reference
        out = tmp_path / f"{isa}.zarr"
        res = _gsp(["decode", str(tmp_path / "p.gsp"), "-o", str(out), "--codec", str(codec), "--json",
                    "--synthesis", "float64"], isa, tmp_path)
        assert res["tiles_lost"] == 0 and res["retried"] == [] and res["entropy"] == "float64", (isa, res)
        assert res["bpp"] > 2.0  # a high-rate pass, or the test would prove little
        products[isa] = _decoded(out)
    for isa in ("AVX2", "SSE41"):
        assert np.array_equal(products[isa], products[None]), f"float64 pixels differ under {isa}"


@pytest.fixture(scope="module")
def boosted_int(boosted) -> tuple[Path, Path]:
    """The high-rate codec with its integer prior beside it (``boosted.int.pt``), calibrated on two images."""
    import torch

    from groundstation.codec import CODEC_ALIGN, _pad_to, _to_tensor, load_codec
    from groundstation.intprior import SIDECAR_SUFFIX, quantise
    from synth import smooth_image

    codec, scene = boosted
    loaded = load_codec(codec)
    with torch.inference_mode():
        latents = [loaded.model.g_a(_pad_to(_to_tensor((smooth_image(128, 128, seed=s).transpose(1, 2, 0) * 255)
                                                       .round().astype(np.uint8), "cpu"), CODEC_ALIGN))
                   for s in (1, 2)]
    torch.save(quantise(loaded.model, latents, loaded.sha256).state_dict(),
               codec.with_suffix("").with_suffix(SIDECAR_SUFFIX))
    return codec, scene


def test_an_int_pass_decodes_to_the_same_integers_on_other_cpus_and_thread_counts(boosted_int, tmp_path):
    """No tile lost, no retry (a retry means some decoded integer differed from the encoder's) and, with
    float64 synthesis, bit-identical pixels: under AVX2 and SSE4.1 kernels and with 1 and 4 threads. Encoded
    with no --entropy: int is the default for a codec with an integer prior beside it."""
    codec, scene = boosted_int
    _gsp(["encode", str(scene), "-o", str(tmp_path / "p.gsp"), "--codec", str(codec), "--tile-size", "128"],
         "AVX2", tmp_path)
    products = {}
    for isa, threads in ((None, 1), ("AVX2", 4), ("SSE41", 1)):  # encoded under AVX2 with the default threads
        out = tmp_path / f"{isa}-{threads}.zarr"
        res = _gsp(["decode", str(tmp_path / "p.gsp"), "-o", str(out), "--codec", str(codec), "--json",
                    "--threads", str(threads), "--synthesis", "float64"], isa, tmp_path)
        assert res["entropy"] == "int" and res["tiles_lost"] == 0 and res["retried"] == [], (isa, threads, res)
        assert res["bpp"] > 2.0
        products[isa, threads] = _decoded(out)
    ref = products[None, 1]
    assert all(np.array_equal(p, ref) for p in products.values())
