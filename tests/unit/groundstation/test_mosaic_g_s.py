"""The g_s fine-tuned for synthesis over the latent mosaic: a registry sidecar of a codec, read through the
checkpoint reader and checked, used for synthesis windows only (tile-wise pixels, and those next to a lost tile,
keep the codec's own g_s), and named in the product version."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from groundstation import registry as registry_mod
from groundstation.codec import TileCodec, load_codec, load_mosaic_g_s, to_uint8_hwc
from groundstation.errors import CheckpointError
from groundstation.fileio import sha256_file
from groundstation.synthesis import TileGrid, synthesize_mosaic
from synth import smooth_image

TILE = 64


def _registry(codec, sidecar, sha):
    return registry_mod.Registry.model_validate({
        "default_codec": "tiny",
        "models": {"tiny": {"kind": "codec", "path": str(codec.path), "sha256": codec.sha256,
                            "architecture": "elic2022-chandelier", "arch": codec.arch.as_dict(),
                            **({"mosaic_synthesis": {"path": str(sidecar), "sha256": sha}} if sidecar else {})}}})


@pytest.fixture
def tuned(tmp_path, tiny_codec, monkeypatch):
    """(codec, sidecar sha256, the tuned g_s's state): the tiny codec's g_s perturbed, as a registry sidecar."""
    codec = load_codec(tiny_codec)
    gen = torch.Generator().manual_seed(0)
    state = {k: (v + 0.05 * v.abs().mean() * torch.randn(v.shape, generator=gen)).half()
             for k, v in codec.model.g_s.state_dict().items()}
    sidecar = tmp_path / "tiny.gs-mosaic.pt"
    torch.save(state, sidecar)
    sha = sha256_file(sidecar)
    reg = _registry(codec, sidecar, sha)
    monkeypatch.setattr(registry_mod, "load_registry", lambda *a, **k: reg)
    return codec, sha, state


def _latents(tc, rgb):
    grid = TileGrid.of_size(*rgb.shape[:2], TILE)
    latents = {}
    for i in range(grid.n_tiles):
        r0, r1, c0, c1 = grid.tile_window(i)
        enc = tc.encode(np.ascontiguousarray(rgb[r0:r1, c0:c1]))
        latents[i], _ = tc.decode_latent_checked(enc.strings, enc.z_hw, enc.y_hw, enc.witness, what=f"tile {i}")
    return grid, latents


def test_windows_use_the_tuned_g_s_and_tiles_keep_the_codec_s(tuned):
    codec, sha, state = tuned
    assert registry_mod.mosaic_g_s_sha256(codec.sha256) == sha
    plain, tc = TileCodec(codec, threads=1), TileCodec(codec, threads=1, mosaic_g_s=sha)
    rgb = (smooth_image(TILE, 3 * TILE, 3, seed=3) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    grid, latents = _latents(plain, rgb)

    reference = load_mosaic_g_s(codec, sha)
    y = latents[0]
    with torch.inference_mode():
        want = reference(y.float()).clamp(0, 1)
    assert torch.equal(tc.synthesize(y, mosaic=True), want)  # the sidecar's weights (float16 as stored)
    assert torch.equal(tc.synthesize(y), plain.synthesize(y))  # tile-wise: the codec's own g_s
    assert not torch.equal(tc.synthesize(y, mosaic=True), plain.synthesize(y, mosaic=True))
    assert torch.allclose(tc._float64("g_s", True)(y.double()).clamp(0, 1).float(), want, atol=1e-4)

    tuned_px = synthesize_mosaic(tc, grid, latents)
    assert not np.array_equal(tuned_px, synthesize_mosaic(plain, grid, latents))
    # tile 2 lost: tile 1 (within the halo of it) gets exactly its tile-wise pixels from the codec's g_s, tile 0
    # (out of reach) the tuned mosaic's
    del latents[2]
    out = synthesize_mosaic(tc, grid, latents)
    own = to_uint8_hwc(plain.synthesize(latents[1])[0]).transpose(2, 0, 1)
    assert np.array_equal(out[:, :, TILE: 2 * TILE], own)
    assert np.array_equal(out[:, :, :TILE], tuned_px[:, :, :TILE])
    assert not out[:, :, 2 * TILE:].any()


def test_a_sidecar_is_checked_before_it_is_used(tuned, tmp_path, monkeypatch):
    codec, sha, state = tuned
    with pytest.raises(CheckpointError, match="not in the registry"):
        load_mosaic_g_s(codec, "0" * 64)
    bad = {**state}
    bad.pop(next(iter(bad)))
    for name, content, match in (("missing.pt", bad, "not a g_s of this codec"),
                                 ("nan.pt", {k: v * float("nan") for k, v in state.items()}, "finite"),
                                 ("shape.pt", {k: v.flatten() for k, v in state.items()}, "needs")):
        path = tmp_path / name
        torch.save(content, path)
        digest = sha256_file(path)
        reg = _registry(codec, path, digest)
        monkeypatch.setattr(registry_mod, "load_registry", lambda *a, **k: reg)
        with pytest.raises(CheckpointError, match=match):
            load_mosaic_g_s(codec, digest)
    # the registry's sha256 is not the file's: refused by the checkpoint reader
    reg = _registry(codec, tmp_path / "missing.pt", sha)
    monkeypatch.setattr(registry_mod, "load_registry", lambda *a, **k: reg)
    with pytest.raises(CheckpointError, match="sha256"):
        load_mosaic_g_s(codec, sha)


def test_the_version_and_provenance_name_the_tuned_g_s(tuned):
    from flows.identity import ModelRef, mosaic_g_s, product_version
    from flows.options import ProcessOptions

    codec, sha, _ = tuned
    ref = ModelRef(name="tiny", path=str(codec.path), sha256=codec.sha256, info={})
    mosaic = ProcessOptions(decode_mode="mosaic", enhance=False)
    assert product_version(ref, None, mosaic) == f"tiny-{codec.sha256[:8]}-mosaic-gs{sha[:8]}__decoded-only"
    old = mosaic.model_copy(update={"mosaic_synthesis": "codec"})  # the mosaic products made before
    assert product_version(ref, None, old) == f"tiny-{codec.sha256[:8]}-mosaic__decoded-only"
    tile = ProcessOptions(decode_mode="tile", enhance=False)
    assert product_version(ref, None, tile) == f"tiny-{codec.sha256[:8]}__decoded-only"
    assert mosaic_g_s(codec.sha256, tile) is None and mosaic_g_s(codec.sha256, old) is None
    assert mosaic_g_s("f" * 64, mosaic) is None  # a codec the registry has no sidecar for: its own g_s


def test_evaluation_rows_and_pairs_name_the_tuned_g_s_in_their_tiling(tuned):
    """Rows of a tiled evaluation (and a pairs folder) made with the tuned g_s are never taken for the codec's."""
    from gsp.tiling import WHOLE, Tiling

    codec, sha, _ = tuned
    assert Tiling(64, "mosaic").label_for(codec.sha256) == f"64px mosaic g_s {sha[:8]}"
    assert Tiling(64, "tile").label_for(codec.sha256) == "64px tile"
    assert WHOLE.label_for(codec.sha256) == "whole" and Tiling(64, "mosaic").label_for("f" * 64) == "64px mosaic"
