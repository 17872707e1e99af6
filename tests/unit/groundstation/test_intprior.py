"""The ``int`` entropy mode: integer prior networks, their proof of exactness, their sidecar and int passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synth import smooth_image, tiny_codec_checkpoint
from groundstation.codec import CODEC_ALIGN, TileCodec, _pad_to, _to_tensor, load_codec
from groundstation.container import CodecInfo, PassReader
from groundstation.errors import CheckpointError
from groundstation.intprior import (EXACT, SIDECAR_SUFFIX, IntEntropyCoder, IntPrior, _chunks, load_int_prior,
                                    quantise)


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return (smooth_image(h, w, seed=seed).transpose(1, 2, 0) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def int_codec(tmp_path_factory) -> Path:
    """A tiny random codec with its integer prior beside it (``tiny.int.pt``), calibrated on two images."""
    path = tiny_codec_checkpoint(tmp_path_factory.mktemp("intcodec") / "tiny.pt", seed=3)
    loaded = load_codec(path)
    with torch.inference_mode():
        latents = [loaded.model.g_a(_pad_to(_to_tensor(_rgb(128, 128, s), "cpu"), CODEC_ALIGN)) for s in (1, 2)]
    prior = quantise(loaded.model, latents, loaded.sha256)
    torch.save(prior.state_dict(), path.with_suffix("").with_suffix(SIDECAR_SUFFIX))
    return path


def _sidecar(codec: Path) -> Path:
    return codec.with_suffix("").with_suffix(SIDECAR_SUFFIX)


def test_int_tiles_roundtrip_with_one_witness_and_the_same_integers(int_codec):
    tc = TileCodec(load_codec(int_codec), entropy="int")
    assert tc.int_prior_sha256 and len(tc.int_prior_sha256) == 64
    rgb = _rgb(100, 140, 7)
    enc = tc.encode(rgb)
    decoded, retried = tc.decode_checked(enc.strings, enc.z_hw, enc.y_hw, enc.height, enc.width, enc.witness)
    assert decoded.shape == (100, 140, 3) and not retried
    # the decoder's latents are the encoder's, integer for integer (with 1 and 2 threads: nothing depends on it)
    coder = tc._int_coder()
    x = _pad_to(_to_tensor(rgb, "cpu"), CODEC_ALIGN)
    with torch.inference_mode():
        y = tc.codec.model.g_a(x)
        strings, z_hw, y_enc = coder.compress(y, lambda s: None)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y_dec = coder.decompress(strings, z_hw, torch.device("cpu"), lambda s: None)
            assert torch.equal(y_dec, y_enc)
    torch.set_num_threads(1)
    assert strings == enc.strings


def test_every_layer_is_proven_exact_and_chunks_respect_the_limit(int_codec):
    prior = load_int_prior(_sidecar(int_codec))
    rows = prior.check_bounds()
    assert rows and all(r["kernel"] in ("float32", "float64") for r in rows)
    for _, net in prior.nets():
        for layer in net.layers:
            w = layer.weight.to(torch.int64).abs().sum(dim=(2, 3)) * layer.in_max[None, :]
            limit = EXACT[layer.kernel]
            assert [a for a, _ in layer.chunks][0] == 0 and layer.chunks[-1][1] == w.shape[1]
            for a, b in layer.chunks:
                assert int(w[:, a:b].sum(dim=1).max()) < limit


def test_chunks_split_where_the_sum_would_reach_the_limit():
    terms = torch.tensor([[5, 5, 5, 5], [1, 9, 0, 9]], dtype=torch.int64)
    assert _chunks(terms, 11) == [(0, 2), (2, 4)]  # 5+5 and 1+9 reach 10; a third row would pass 11
    assert _chunks(terms, 10) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    with pytest.raises(CheckpointError, match="one product reaches 12"):
        _chunks(torch.tensor([[12]]), 11)


def test_a_prior_whose_sums_could_leave_the_exact_range_is_refused(int_codec, tmp_path):
    sd = torch.load(_sidecar(int_codec))
    sd["cc.1.1.weight"] = sd["cc.1.1.weight"].to(torch.int64) << 32  # |w| up to 2^39: sums past 2^53
    torch.save(sd, tmp_path / "bad.int.pt")
    with pytest.raises(CheckpointError, match=r"cc\.1\.1: a partial sum can reach .* not below 2\^53"):
        load_int_prior(tmp_path / "bad.int.pt")


def test_requantisation_that_could_overflow_int64_is_refused(int_codec, tmp_path):
    sd = torch.load(_sidecar(int_codec))
    sd["cc.1.1.mult"] = torch.full_like(sd["cc.1.1.mult"], (1 << 40) - 1)  # |acc| x mult past 2^62
    torch.save(sd, tmp_path / "bad.int.pt")
    with pytest.raises(CheckpointError, match=r"cc\.1\.1: requantisation could overflow int64"):
        load_int_prior(tmp_path / "bad.int.pt")


@pytest.mark.parametrize("change, message", [
    (lambda sd: sd.pop("pa.2.2.thresholds"), "not an integer prior"),
    (lambda sd: sd.__setitem__("cc.2.0.weight", sd["cc.2.0.weight"].float()), "4-d integer tensor"),
    (lambda sd: sd.__setitem__("cc.2.0.weight", sd["cc.2.0.weight"].long() << 40), r"\|w\| < 2\^40"),
    (lambda sd: sd.__setitem__("h_s.1.mult", -sd["h_s.1.mult"]), "mult must be"),
    (lambda sd: sd.__setitem__("pa.0.2.bias", sd["pa.0.2.bias"][:-1]), "bias must be int64"),
    (lambda sd: sd.__setitem__("cp.1.0.meta", torch.tensor([1, 9, 2, 2, 2, 2, -5, 5])), "meta .* out of range"),
    (lambda sd: sd.__setitem__("groups", torch.tensor([8, 8])), "do not sum to M"),
    (lambda sd: sd.__setitem__("pa.1.2.thresholds", sd["pa.1.2.thresholds"].flip(1)), "sorted"),
    (lambda sd: sd.__setitem__("z_offset", sd["z_offset"][:3]), "z_offset"),
    (lambda sd: sd.__setitem__("y_clip", sd["y_clip"] + 99999), "y_clip must be int64"),
])
def test_a_damaged_sidecar_is_a_clear_error(int_codec, tmp_path, change, message):
    sd = torch.load(_sidecar(int_codec))
    change(sd)
    torch.save(sd, tmp_path / "x.int.pt")
    with pytest.raises(CheckpointError, match=message):
        load_int_prior(tmp_path / "x.int.pt")


def test_a_sidecar_of_another_codec_is_refused(int_codec, tmp_path):
    with pytest.raises(CheckpointError, match="integer prior of codec .* not of the loaded codec"):
        load_int_prior(_sidecar(int_codec), codec_sha256="0" * 64)
    other = tiny_codec_checkpoint(tmp_path / "other.pt", seed=4)
    with pytest.raises(CheckpointError, match="no integer prior for this codec"):
        TileCodec(load_codec(other), entropy="int")


def test_header_int_prior_field_goes_with_int_only():
    base = dict(name="c", architecture="elic2022-chandelier", arch={}, sha256="a" * 64)
    with pytest.raises(ValueError, match="int_prior_sha256 is required with entropy 'int'"):
        CodecInfo(**base, entropy="int")
    with pytest.raises(ValueError, match="allowed only with it"):
        CodecInfo(**base, entropy="float64", int_prior_sha256="b" * 64)
    assert CodecInfo(**base, entropy="int", int_prior_sha256="b" * 64).int_prior_sha256 == "b" * 64


def test_an_int_pass_decodes_with_no_loss_and_float_headers_are_unchanged(int_codec, tmp_path):
    from groundstation.decode import decode_pass
    from groundstation.encode import encode_scene
    from synth import write_scene

    scene = write_scene(tmp_path / "s.tif", 150, 200, crs="EPSG:32633", seed=2)
    res = encode_scene(scene, tmp_path / "p.gsp", codec=str(int_codec), tile_size=128, entropy="int")
    header = PassReader(tmp_path / "p.gsp").header
    assert header.codec.entropy == "int"
    assert header.codec.int_prior_sha256 == load_int_prior(_sidecar(int_codec)).sha256
    summary = decode_pass(tmp_path / "p.gsp", tmp_path / "o.zarr", codec=str(int_codec))
    assert summary.lost == [] and summary.retried == [] and summary.entropy == "int" and res.tiles == 4
    encode_scene(scene, tmp_path / "f.gsp", codec=str(int_codec), tile_size=128, entropy="float64")
    raw = (tmp_path / "f.gsp").read_bytes()[:4096]
    assert b"int_prior" not in raw  # float passes: the header keys they always had


def test_a_pass_naming_another_integer_prior_is_not_decoded_with_this_one(int_codec, tmp_path):
    from groundstation.decode import decode_pass
    from groundstation.encode import encode_scene
    from synth import write_scene

    scene = write_scene(tmp_path / "s.tif", 64, 64, crs="EPSG:32633", seed=2)
    encode_scene(scene, tmp_path / "p.gsp", codec=str(int_codec), tile_size=64, entropy="int")
    from groundstation.container import pack_header

    blob = (tmp_path / "p.gsp").read_bytes()
    header = PassReader(tmp_path / "p.gsp").header
    old = pack_header(header)
    assert blob.startswith(old)  # the header is a prefix of the file: re-pack it naming another prior
    head = pack_header(header.model_copy(update={"codec": header.codec.model_copy(
        update={"int_prior_sha256": "0" * 64})}))
    (tmp_path / "q.gsp").write_bytes(head + blob[len(old):])
    with pytest.raises(CheckpointError, match="does not match the expected"):
        decode_pass(tmp_path / "q.gsp", tmp_path / "q.zarr", codec=str(int_codec))


@pytest.mark.cuda
def test_the_int_path_gives_the_same_integers_on_cuda(int_codec):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    loaded = load_codec(int_codec)
    coder = IntEntropyCoder(loaded.model, load_int_prior(_sidecar(int_codec)))
    x = _pad_to(_to_tensor(_rgb(256, 256, 9), "cpu"), CODEC_ALIGN)
    cpu_syms, gpu_syms = [], []
    with torch.inference_mode():
        y = loaded.model.g_a(x)
        strings, z_hw, y_cpu = coder.compress(y, cpu_syms.append)
        loaded.model.to("cuda")
        try:
            y_gpu = coder.decompress(strings, z_hw, torch.device("cuda"), gpu_syms.append)
            strings_gpu, _, _ = coder.compress(y.cuda(), lambda s: None)
        finally:
            loaded.model.to("cpu")
    assert torch.equal(y_gpu.cpu(), y_cpu)
    assert all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(cpu_syms, gpu_syms))
    assert strings_gpu == strings


# ------------------------------------------------------------------------------- the default for new passes
def test_new_passes_are_int_by_default_where_the_codec_has_an_integer_prior(int_codec, tmp_path):
    from groundstation.container import DEFAULT_ENTROPY
    from groundstation.decode import decode_pass
    from groundstation.encode import encode_scene
    from synth import write_scene

    assert DEFAULT_ENTROPY == "int"
    scene = write_scene(tmp_path / "s.tif", 64, 128, crs="EPSG:32633", seed=5)
    res = encode_scene(scene, tmp_path / "p.gsp", codec=str(int_codec), tile_size=64)  # no entropy given
    header = PassReader(tmp_path / "p.gsp").header
    assert res.header.codec.entropy == header.codec.entropy == "int"
    assert header.codec.int_prior_sha256 == load_int_prior(_sidecar(int_codec)).sha256
    summary = decode_pass(tmp_path / "p.gsp", tmp_path / "o.zarr", codec=str(int_codec))
    assert summary.lost == [] and summary.retried == [] and summary.entropy == "int"


def test_a_codec_without_integer_prior_gets_float64_with_a_note_saying_how_to_make_one(tmp_path, caplog):
    import logging

    from groundstation.decode import decode_pass
    from groundstation.encode import encode_scene
    from synth import write_scene

    bare = tiny_codec_checkpoint(tmp_path / "fresh.pt", seed=5)  # a codec just trained: no fresh.int.pt
    scene = write_scene(tmp_path / "s.tif", 64, 128, crs="EPSG:32633", seed=5)
    with caplog.at_level(logging.WARNING, logger="groundstation.encode"):
        encode_scene(scene, tmp_path / "p.gsp", codec=str(bare), tile_size=64)
    header = PassReader(tmp_path / "p.gsp").header
    assert header.codec.entropy == "float64" and header.codec.int_prior_sha256 is None
    notes = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(notes) == 1 and "\n" not in notes[0], notes
    assert "fresh.int.pt" in notes[0] and "entropy mode float64, not the default int" in notes[0]
    assert f"benchmarks/int_prior_quantise.py TRAIN_IMAGE_DIR --codecs {bare}" in notes[0]
    summary = decode_pass(tmp_path / "p.gsp", tmp_path / "o.zarr", codec=str(bare))
    assert summary.lost == [] and summary.entropy == "float64"
    # a mode chosen explicitly is never replaced: int without an integer prior is the error, float32 is float32
    caplog.clear()
    with pytest.raises(CheckpointError, match=r"no integer prior for this codec .*int_prior_quantise\.py "
                                              r"TRAIN_IMAGE_DIR --codecs .*fresh\.pt; or encode with --entropy"):
        encode_scene(scene, tmp_path / "q.gsp", codec=str(bare), tile_size=64, entropy="int")
    assert not (tmp_path / "q.gsp").exists() and not (tmp_path / "q.gsp.part").exists()
    encode_scene(scene, tmp_path / "f.gsp", codec=str(bare), tile_size=64, entropy="float32")
    assert PassReader(tmp_path / "f.gsp").header.codec.entropy == "float32"
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]  # no note when a mode was chosen


def test_a_damaged_sidecar_is_an_error_not_a_reason_to_fall_back(int_codec, tmp_path):
    import shutil

    from groundstation.encode import encode_scene
    from synth import write_scene

    codec = tmp_path / "copy.pt"
    shutil.copy(int_codec, codec)
    sd = torch.load(_sidecar(int_codec))
    sd.pop("pa.2.2.thresholds")
    torch.save(sd, _sidecar(codec))
    scene = write_scene(tmp_path / "s.tif", 64, 64, crs="EPSG:32633", seed=5)
    with pytest.raises(CheckpointError, match="not an integer prior"):
        encode_scene(scene, tmp_path / "p.gsp", codec=str(codec), tile_size=64)
    assert not (tmp_path / "p.gsp").exists()


def test_the_sidecar_is_found_beside_a_checkpoint_with_dots_in_its_name(int_codec, tmp_path):
    """``NAME.pt`` -> ``NAME.int.pt`` where the quantiser writes it, also for ``run.v2.pt`` (not ``run.int.pt``)."""
    import shutil

    from groundstation.intprior import has_int_prior, int_prior_for, sidecar_path

    assert sidecar_path(tmp_path / "run.v2.pt") == tmp_path / "run.v2.int.pt"
    codec = tmp_path / "run.v2.pt"
    shutil.copy(int_codec, codec)
    loaded = load_codec(codec)
    assert not has_int_prior(loaded)
    shutil.copy(_sidecar(int_codec), tmp_path / "run.v2.int.pt")
    assert has_int_prior(loaded) and int_prior_for(loaded).sha256 == load_int_prior(_sidecar(int_codec)).sha256


def test_every_registry_codec_has_an_integer_prior_so_its_new_passes_are_int():
    from groundstation.encode import choose_entropy
    from groundstation.registry import load_registry

    codecs = {n: e for n, e in load_registry().models.items() if e.kind == "codec"}
    assert len(codecs) >= 3
    for name, entry in codecs.items():
        loaded = load_codec(entry.resolved_path(), entry.sha256)
        assert choose_entropy(loaded, None, name) == "int", name
        assert TileCodec(loaded, entropy="int").int_prior_sha256 == entry.int_prior.sha256
