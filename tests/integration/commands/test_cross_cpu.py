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


#: Several ``gsp`` commands in one process (each a ``gsp.cli.main`` call, its stdout kept): a process start and
#: CompressAI's import cost ~8 s each on a 2-core machine, and the kernels a process runs are fixed at its start.
_RUNNER = """
import contextlib, io, json, sys
from gsp.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    results.append({"argv": argv, "code": code, "stdout": buf.getvalue()})
print(json.dumps(results))
"""


def _start(commands: list[list[str]], isa: str | None, cwd: Path) -> subprocess.Popen:
    """``commands`` (gsp argument lists) run one after another in one process under ``isa``'s kernels (None:
    this CPU's own)."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    return subprocess.Popen([sys.executable, "-c", _RUNNER, json.dumps(commands)], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(proc: subprocess.Popen) -> list[dict | None]:
    """Each command's ``--json`` result (None for a command without ``--json``); every one exited 0 or 3."""
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    results = json.loads(out.strip().splitlines()[-1])
    for r in results:
        assert r["code"] in (0, 3), (r["argv"], err[-3000:])
    return [json.loads(r["stdout"]) if "--json" in r["argv"] else None for r in results]


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


#: Where each pass is decoded: (kernels, torch threads); None = this CPU's own kernels, the pixels' reference.
FLOAT64_DECODES = ((None, 1), ("AVX2", 2), ("SSE41", 1))
INT_DECODES = ((None, 1), ("AVX2", 4), ("SSE41", 1))


@pytest.fixture(scope="module")
def decoded_everywhere(boosted_int, tmp_path_factory) -> dict:
    """Both passes encoded under AVX2 kernels (an AVX2-only CPU) with the default threads in one process, then
    each decoded under every (kernels, threads) of its list: one process per kind of kernels, the three at the
    same time. Returns {pass: (header, {(isa, threads): (decode result, pixels)})}."""
    from groundstation.container import PassReader

    codec, scene = boosted_int
    d = tmp_path_factory.mktemp("xcpu-run")
    passes = {"float64": d / "p64.gsp", "int": d / "pint.gsp"}
    plan = {"float64": FLOAT64_DECODES, "int": INT_DECODES}

    def decode(kind: str, isa: str | None, threads: int) -> list[str]:
        return ["decode", str(passes[kind]), "-o", str(d / f"{kind}-{isa}-{threads}.zarr"), "--codec", str(codec),
                "--json", "--threads", str(threads), "--synthesis", "float64"]

    by_isa: dict[str | None, list[tuple[str, int]]] = {}
    for kind, decodes in plan.items():
        for isa, threads in decodes:
            by_isa.setdefault(isa, []).append((kind, threads))
    encode = [["encode", str(scene), "-o", str(passes["float64"]), "--codec", str(codec), "--tile-size", "128",
               "--entropy", "float64"],
              # no --entropy: int is the default for a codec with an integer prior beside it
              ["encode", str(scene), "-o", str(passes["int"]), "--codec", str(codec), "--tile-size", "128"]]
    _results(_start(encode, "AVX2", d))
    # decoded in other processes than the encoder's (nothing it computed can help), all kinds at once
    procs = {isa: _start([decode(k, isa, t) for k, t in jobs], isa, d) for isa, jobs in by_isa.items()}
    found = {(k, isa, t): r for isa, proc in procs.items() for (k, t), r in zip(by_isa[isa], _results(proc))}
    return {kind: (PassReader(passes[kind]).header,
                   {(isa, t): (found[kind, isa, t], _decoded(d / f"{kind}-{isa}-{t}.zarr")) for isa, t in plan[kind]})
            for kind in plan}


def test_a_float64_pass_decodes_on_other_cpus_without_loss(decoded_everywhere):
    """Encoded under AVX2 kernels, decoded here, under AVX2 and under SSE4.1: no tile lost, no retry, and with
    float64 synthesis bit-identical pixels."""
    header, decodes = decoded_everywhere["float64"]
    assert header.codec.entropy == "float64"
    for (isa, threads), (res, _) in decodes.items():
        assert res["tiles_lost"] == 0 and res["retried"] == [] and res["entropy"] == "float64", (isa, res)
        assert res["bpp"] > 2.0  # a high-rate pass, or the test would prove little
    ref = decodes[None, 1][1]
    for (isa, threads), (_, pixels) in decodes.items():
        assert np.array_equal(pixels, ref), f"float64 pixels differ under {isa}"


def test_an_int_pass_decodes_to_the_same_integers_on_other_cpus_and_thread_counts(decoded_everywhere):
    """No tile lost, no retry (a retry means some decoded integer differed from the encoder's) and, with
    float64 synthesis, bit-identical pixels: under AVX2 and SSE4.1 kernels and with 1 and 4 threads. Encoded
    with no --entropy: int is the default for a codec with an integer prior beside it."""
    header, decodes = decoded_everywhere["int"]
    assert header.codec.entropy == "int"
    for (isa, threads), (res, _) in decodes.items():
        assert res["entropy"] == "int" and res["tiles_lost"] == 0 and res["retried"] == [], (isa, threads, res)
        assert res["bpp"] > 2.0
    ref = decodes[None, 1][1]
    assert all(np.array_equal(p, ref) for _, p in decodes.values())
