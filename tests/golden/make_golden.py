"""The golden passes and the checks that hold on every x86 CPU.

Two committed passes of the same scene and codec: ``golden.gsp`` (float32 entropy path, written before the mode
field existed: old passes must keep decoding as they did) and ``golden-int.gsp`` (the ``int`` mode, the default
for new passes), each with its ``expected*.json`` (symbol CRCs) and ``expected_pixels*.npz``.

What must be exact is exact: the integer latent symbols of every tile (their CRC32, the *symbol witness*) and the
product's bytes/valid mask. Pixels are float outputs of the synthesis transform, which different CPU kernels
(AVX-512, AVX2, SSE4.1) round differently: they are compared with the committed reference pixels
(``expected_pixels.npz``) within :data:`PIXEL_TOLERANCE`, measured across kernels (max 1 DN on 3e-5..4e-5 of the
values) with head-room, and far tighter than any real change of the codec (a 1 % change of the synthesis
weights moves thousands of values by several DN; tests/test_golden.py shows that both are caught).

    .venv/bin/python tests/golden/make_golden.py [--golden int]            # regenerate pass + references (only on purpose)
    .venv/bin/python tests/golden/make_golden.py [--golden int] --pixels   # keep the pass, refresh the reference pixels
    .venv/bin/python tests/golden/make_golden.py [--golden int|all] --check  # decode and check; exit 0 when it holds (JSON out)

Regenerate only when the committed codec changes on purpose: the point of the golden files is that a library
upgrade or a machine that decodes them differently fails CI, not a station.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Golden:
    entropy: str  # the pass's codec.entropy
    pass_file: Path
    expected: Path
    pixels: Path


#: The golden passes by entropy mode (``--golden``): the float32 one is the original, never regenerated as int.
GOLDENS = {
    "float32": Golden("float32", HERE / "golden.gsp", HERE / "expected.json", HERE / "expected_pixels.npz"),
    "int": Golden("int", HERE / "golden-int.gsp", HERE / "expected-int.json", HERE / "expected_pixels-int.npz"),
}
PASS, EXPECTED, PIXELS = (GOLDENS["float32"].pass_file, GOLDENS["float32"].expected, GOLDENS["float32"].pixels)
#: Allowed difference between a decode on any CPU and the committed reference pixels (valid pixels only).
PIXEL_TOLERANCE = {"max_abs_dn": 2, "max_fraction_differing": 0.001, "max_mean_abs_dn": 0.01}


def decode_symbols(codec=None, synthesis_device: str | None = None, golden: str = "float32"
                   ) -> tuple[dict[int, int], np.ndarray]:
    """Decode every record of a golden pass with ``codec`` (default: the registry's, sha256 checked) and
    return (witness of the decoded symbols per tile, decoded mosaic (3, H, W) uint8). No retry, no masking:
    this is the raw decoder, so a desync shows as a wrong symbol CRC."""
    from groundstation.codec import TileCodec, load_codec
    from groundstation.container import PassReader
    from groundstation.registry import resolve_model

    reader = PassReader(GOLDENS[golden].pass_file)
    header = reader.header
    if codec is None:
        _, ckpt, _, _ = resolve_model(header.codec.name, "codec")
        codec = load_codec(ckpt, header.codec.sha256)
    tc = TileCodec(codec, threads=1, entropy=header.codec.entropy, witness_kind=header.witness,
                   synthesis_device=synthesis_device, int_prior_sha256=header.codec.int_prior_sha256)
    mosaic = np.zeros((3, header.scene.height, header.scene.width), np.uint8)
    witnesses = {}
    for rec in reader:
        r0, r1, c0, c1 = header.tile_window(rec.tile_index)
        rgb, witnesses[rec.tile_index] = tc.decode(rec.strings, rec.z_hw, rec.y_hw, r1 - r0, c1 - c0)
        mosaic[:, r0:r1, c0:c1] = np.moveaxis(rgb, -1, 0)
    return witnesses, mosaic


def compare(witnesses: dict[int, int], decoded: np.ndarray, valid: np.ndarray | None = None,
            golden: str = "float32") -> list[str]:
    """Everything that differs from the committed golden results beyond what CPUs may differ by ([] = holds)."""
    expected = json.loads(GOLDENS[golden].expected.read_text())
    ref = np.load(GOLDENS[golden].pixels)
    problems = []
    want = {int(k): v for k, v in expected["symbol_crc32"].items()}
    for tile in sorted(set(want) | set(witnesses)):
        if witnesses.get(tile) != want.get(tile):
            problems.append(f"tile {tile}: decoded symbols CRC32 {witnesses.get(tile)} != expected {want.get(tile)} "
                            "(entropy decoder desynchronised, or the entropy model changed)")
    if decoded.shape != ref["decoded"].shape:
        return problems + [f"decoded shape {decoded.shape} != expected {ref['decoded'].shape}"]
    mask = ref["valid"].astype(bool)
    if valid is not None and not np.array_equal(valid.astype(bool), mask):
        problems.append(f"valid mask differs in {int((valid.astype(bool) != mask).sum())} pixels")
    diff = np.abs(decoded.astype(np.int16) - ref["decoded"].astype(np.int16))[:, mask]
    tol = PIXEL_TOLERANCE
    stats = pixel_stats(decoded, ref["decoded"], mask)
    if stats["max_abs_dn"] > tol["max_abs_dn"]:
        problems.append(f"pixels differ by up to {stats['max_abs_dn']} DN (tolerance {tol['max_abs_dn']})")
    if stats["fraction_differing"] > tol["max_fraction_differing"]:
        problems.append(f"{stats['fraction_differing']:.2e} of the values differ (tolerance {tol['max_fraction_differing']})")
    if stats["mean_abs_dn"] > tol["max_mean_abs_dn"]:
        problems.append(f"mean difference {stats['mean_abs_dn']:.4f} DN (tolerance {tol['max_mean_abs_dn']})")
    del diff
    return problems


def pixel_stats(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> dict:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))[:, mask]
    return {"max_abs_dn": int(diff.max(initial=0)), "fraction_differing": float((diff > 0).mean()),
            "mean_abs_dn": float(diff.mean()), "values": int(diff.size)}


def check(golden: str = "float32") -> dict:
    """The whole golden check as a station would run it: raw symbols + the production decoder's product."""
    from groundstation.decode import decode_pass
    from groundstation.product import open_product

    g = GOLDENS[golden]
    witnesses, raw = decode_symbols(golden=golden)
    with tempfile.TemporaryDirectory() as tmp:
        summary = decode_pass(g.pass_file, Path(tmp) / "g.zarr")
        ds = open_product(Path(tmp) / "g.zarr")
        decoded, valid = ds.decoded.values, ds.valid.values
    ref = np.load(g.pixels)
    problems = compare(witnesses, decoded, valid, golden)
    problems += [f"tile {d['tile']} lost: {d['reason']}" for d in summary.lost]
    return {"ok": not problems, "problems": problems, "golden": golden, "entropy": summary.entropy,
            "threads": torch.get_num_threads(),
            "pixels": pixel_stats(decoded, ref["decoded"], ref["valid"].astype(bool)),
            "raw_equals_product": bool(np.array_equal(raw[:, valid.astype(bool)], decoded[:, valid.astype(bool)]))}


def _write_pixels(golden: str) -> None:
    from groundstation.decode import decode_pass
    from groundstation.product import open_product

    g = GOLDENS[golden]
    with tempfile.TemporaryDirectory() as tmp:
        summary = decode_pass(g.pass_file, Path(tmp) / "g.zarr")
        assert not summary.lost, summary.lost
        ds = open_product(Path(tmp) / "g.zarr")
        np.savez_compressed(g.pixels, decoded=ds.decoded.values, valid=ds.valid.values)
        shape, valid_sha256 = list(ds.decoded.shape), hashlib.sha256(ds.valid.values.tobytes()).hexdigest()
    witnesses, _ = decode_symbols(golden=golden)
    expected = json.loads(g.expected.read_text())
    expected.update(valid_sha256=valid_sha256, shape=shape)
    expected["symbol_crc32"] = {str(k): v for k, v in sorted(witnesses.items())}
    expected["pixel_tolerance"] = PIXEL_TOLERANCE
    g.expected.write_text(json.dumps(expected, indent=2) + "\n")


def _regenerate(golden: str) -> None:
    if str(HERE.parent) not in sys.path:  # run as a script: tests/ holds the scene generator
        sys.path.append(str(HERE.parent))
    from synth import write_scene

    from groundstation.encode import encode_scene

    g = GOLDENS[golden]
    with tempfile.TemporaryDirectory() as tmp:
        scene = write_scene(Path(tmp) / "golden.tif", 150, 200, crs="EPSG:32631", nodata_box=(0, 20, 0, 30),
                            nodata=0, seed=7)
        g.pass_file.unlink(missing_ok=True)
        res = encode_scene(scene, g.pass_file, tile_size=128, pass_id="golden", acquired="2026-01-01T00:00:00+00:00",
                           entropy=g.entropy)
    g.expected.write_text(json.dumps({"codec": res.header.codec.name, "codec_sha256": res.header.codec.sha256,
                                      "entropy": res.header.codec.entropy,
                                      **({"int_prior_sha256": res.header.codec.int_prior_sha256}
                                         if res.header.codec.int_prior_sha256 else {}),
                                      "tiles": res.tiles, "bytes": res.bytes}, indent=2) + "\n")
    _write_pixels(golden)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--golden", choices=[*sorted(GOLDENS), "all"], default="float32",
                   help="which golden pass (its entropy mode; default: float32, the original); all: every one, "
                   "with --check only (one process: the suite's other-CPU checks)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pixels", action="store_true", help="keep the pass; refresh reference pixels and symbol CRCs")
    g.add_argument("--check", action="store_true", help="decode and compare; print JSON, exit 0 if it holds")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.check:
        results = [check(golden) for golden in (sorted(GOLDENS) if args.golden == "all" else [args.golden])]
        for res in results:
            print(json.dumps(res))
        return 0 if all(res["ok"] for res in results) else 1
    if args.golden == "all":
        p.error("--golden all: only with --check (regenerate one golden at a time, on purpose)")
    _write_pixels(args.golden) if args.pixels else _regenerate(args.golden)
    print(GOLDENS[args.golden].expected.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
