"""One loader for CompressAI and INN-RSIC authors' ELIC checkpoints; tables used as they are; no pickle."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch

from groundstation.codec import (AUTHORS_KEY_RULES, CodecArch, TileCodec, build_codec, inspect_codec, load_codec,
                                 rename_authors_keys)
from groundstation.errors import CheckpointError
from helpers import needs_shared
from synth import TINY_ARCH, smooth_image


def manifest_state_dict(filled: bool) -> dict[str, torch.Tensor]:
    """A random state dict with exactly the names and shapes of the authors' ELIC (the reference manifest)."""
    man = json.loads(needs_shared("reference", "elic_state_dict.json").read_text())
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for name, e in man["entries"].items():
        shape = e["shape"]
        if filled and name in man["buffer_shapes_after_update"]:
            shape = man["buffer_shapes_after_update"][name]
        if e["dtype"] == "int32":
            sd[name] = torch.randint(1, 100, shape, dtype=torch.int32, generator=gen)
        else:
            sd[name] = torch.randn(shape, generator=gen) * 0.01
    if filled:
        sd["gaussian_conditional.scale_table"] = torch.exp(torch.linspace(np.log(0.11), np.log(256), 64))
        # a real table: strictly positive lengths, offsets, cdfs that are plausible
    return sd


def to_authors_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of the renaming table (used to fake an authors' checkpoint from a CompressAI model)."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"latent_codec\.y\.latent_codec\.y(\d+)\.y\.gaussian_conditional\.(.*)", k)
        if m:
            if m[1] == "0":
                out[f"gaussian_conditional.{m[2]}"] = v
            continue
        k = re.sub(r"^latent_codec\.hyper\.entropy_bottleneck\.matrices\.(\d+)$", r"entropy_bottleneck._matrix\1", k)
        k = re.sub(r"^latent_codec\.hyper\.entropy_bottleneck\.biases\.(\d+)$", r"entropy_bottleneck._bias\1", k)
        k = re.sub(r"^latent_codec\.hyper\.entropy_bottleneck\.factors\.(\d+)$", r"entropy_bottleneck._factor\1", k)
        k = re.sub(r"^latent_codec\.hyper\.", "", k)
        k = re.sub(r"^latent_codec\.y\.channel_context\.y(\d+)\.", lambda m: f"cc_transforms.{int(m[1]) - 1}.", k)
        k = re.sub(r"^latent_codec\.y\.latent_codec\.y(\d+)\.context_prediction\.", r"context_prediction.\1.", k)
        k = re.sub(r"^latent_codec\.y\.latent_codec\.y(\d+)\.entropy_parameters\.", r"ParamAggregation.\1.", k)
        out[k] = v
    return out


@pytest.mark.slow
def test_authors_inference_checkpoint_loads_strictly_with_its_tables(tmp_path):
    sd = manifest_state_dict(filled=True)
    torch.save(sd, tmp_path / "elic_0.0004.pth.tar")
    loaded = load_codec(tmp_path / "elic_0.0004.pth.tar")
    assert loaded.source_format == "inn-rsic" and loaded.tables == "filled"
    assert loaded.arch == CodecArch(192, 320, (16, 16, 32, 64, 192))
    got = loaded.model.state_dict()
    # the shared table went into every group's Gaussian conditional, untouched (never recomputed)
    for k in range(5):
        assert torch.equal(got[f"latent_codec.y.latent_codec.y{k}.y.gaussian_conditional._quantized_cdf"],
                           sd["gaussian_conditional._quantized_cdf"])
    assert torch.equal(got["latent_codec.hyper.entropy_bottleneck._quantized_cdf"], sd["entropy_bottleneck._quantized_cdf"])
    assert torch.equal(got["latent_codec.hyper.entropy_bottleneck.matrices.1"], sd["entropy_bottleneck._matrix1"])


@pytest.mark.slow
def test_authors_training_checkpoint_fills_empty_tables_once(tmp_path, caplog):
    sd = manifest_state_dict(filled=False)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "checkpoint.pth.tar")
    with caplog.at_level(logging.INFO):
        loaded = load_codec(tmp_path / "checkpoint.pth.tar")
    assert loaded.tables == "computed" and "entropy tables are empty" in caplog.text
    assert loaded.model.state_dict()["latent_codec.y.latent_codec.y4.y.gaussian_conditional._quantized_cdf"].numel() > 0


def test_authors_names_give_bit_identical_bitstreams(tmp_path, tiny_codec):
    """Renaming is the whole difference: the same weights under the authors' names code identically."""
    native = load_codec(tiny_codec)
    authors = to_authors_names(native.model.state_dict())
    assert not any(k.startswith("latent_codec") for k in authors)
    torch.save(authors, tmp_path / "authors.pth")
    renamed = load_codec(tmp_path / "authors.pth")
    assert renamed.source_format == "inn-rsic" and renamed.tables == "filled" and renamed.arch == TINY_ARCH
    img = (np.moveaxis(smooth_image(64, 128), 0, -1) * 255).astype(np.uint8)
    a, b = TileCodec(native).encode(img), TileCodec(renamed).encode(img)
    assert a.strings == b.strings and a.witness == b.witness


def test_compressai_wrapped_and_prefixed_checkpoints(tmp_path, tiny_codec):
    sd = torch.load(tiny_codec, weights_only=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1}, tmp_path / "wrapped.pt")
    loaded = load_codec(tmp_path / "wrapped.pt")
    assert loaded.source_format == "compressai" and loaded.tables == "filled"


def test_sha256_mismatch_and_shape_mismatch_are_clear_errors(tmp_path, tiny_codec):
    with pytest.raises(CheckpointError, match="does not match the expected"):
        load_codec(tiny_codec, expected_sha256="0" * 64)
    sd = torch.load(tiny_codec, weights_only=True)
    sd["g_s.1.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not match Elic2022Chandelier"):
        load_codec(tmp_path / "bad.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an ELIC"):
        load_codec(tmp_path / "other.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_codec(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_codec(tmp_path / "junk.pt")


def test_partially_filled_tables_are_refused(tmp_path, tiny_codec):
    sd = torch.load(tiny_codec, weights_only=True)
    sd["latent_codec.hyper.entropy_bottleneck._quantized_cdf"] = torch.zeros(0, dtype=torch.int32)
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="some entropy tables are filled"):
        load_codec(tmp_path / "partial.pt")


def test_inspecting_a_checkpoint_checks_what_loading_checks_without_building_it(tmp_path, tiny_codec):
    """The flow plans a run from :func:`inspect_codec` (the workers build the model): same identity as a load,
    the same refusals for a wrong file, and no CompressAI import (seconds a flow process need not pay)."""
    import subprocess
    import sys

    loaded = load_codec(tiny_codec)
    info = inspect_codec(tiny_codec, loaded.sha256)
    assert (info.arch, info.sha256, info.source_format, info.tables) == (loaded.arch, loaded.sha256, "compressai",
                                                                         "filled")
    torch.save(to_authors_names(loaded.model.state_dict()), tmp_path / "authors.pth")
    assert inspect_codec(tmp_path / "authors.pth").source_format == "inn-rsic"
    sd = torch.load(tiny_codec, weights_only=True)
    for k in [k for k in sd if k.endswith("._quantized_cdf")]:
        sd[k] = torch.zeros(0, dtype=torch.int32)
    torch.save(sd, tmp_path / "training.pt")
    assert inspect_codec(tmp_path / "training.pt").tables == "computed"
    sd["latent_codec.hyper.entropy_bottleneck._quantized_cdf"] = torch.ones(1, 3, dtype=torch.int32)
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="some entropy tables are filled"):
        inspect_codec(tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="does not match the expected"):
        inspect_codec(tiny_codec, "0" * 64)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an ELIC"):
        inspect_codec(tmp_path / "other.pt")
    code = ("import sys; from groundstation.codec import inspect_codec; "
            f"print(inspect_codec({str(tiny_codec)!r}).arch); assert 'compressai' not in sys.modules, 'imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_rename_rules_cover_every_manifest_key():
    man = json.loads(needs_shared("reference", "elic_state_dict.json").read_text())
    full = build_codec(CodecArch()).state_dict()
    mapped = rename_authors_keys({k: torch.zeros(0) for k in man["entries"]}, 5)
    assert set(mapped) == set(full)
    assert len(AUTHORS_KEY_RULES) >= 8
