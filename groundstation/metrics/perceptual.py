"""The learned perceptual distance, chosen once per run by :meth:`PerceptualMetric.auto`, and where its
backbone weights are found (never downloaded).

  - ``lpips_alex``: the paper's LPIPS (Zhang et al., CVPR 2018), v0.1 linear layers with the ImageNet AlexNet
    trunk. The ``lpips`` package ships only the linear layers; its trunk is torchvision's
    ``alexnet-owt-7be5be79.pth``, which torchvision would download. This module never downloads: it uses the
    file only when it is already on disk, in the first of

      1. ``$GSP_LPIPS_BACKBONE_DIR/alexnet-owt-7be5be79.pth`` (when the variable is set, the file must be there:
         a :class:`ConfigError` otherwise);
      2. ``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``, i.e. ``$TORCH_HOME/hub/checkpoints/``
         (``TORCH_HOME`` defaults to ``$XDG_CACHE_HOME/torch``, i.e. ``~/.cache/torch``), where torchvision
         itself caches it.

    The file's SHA-256 must start with ``7be5be79`` (torchvision's naming convention); a different file is a
    :class:`CheckpointError`, not a silent fallback. To provision an offline station, copy that file from a
    machine that has it (``python -c "import torchvision; torchvision.models.alexnet(weights='DEFAULT')"``
    puts it in that machine's hub cache).
  - ``stlpips_alex``: otherwise, shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022), AlexNet variant
    ``shift_tolerant``, whose complete weights (trunk and linear layers) ship inside ``stlpips-pytorch``.
    Its values are on a different scale from LPIPS and must not be compared with ``lpips_alex``.

  The column that holds the distance is named after the backend, so tables never mix the two. Images larger
  than ``tile`` (256) pixels on a side are split into a grid of nearly equal, non-overlapping tiles of at most
  ``tile`` x ``tile`` pixels (every tile of a side longer than ``tile`` is more than ``tile / 2`` long) and the
  per-tile distances are averaged weighted by tile area; no resizing is ever done. LPIPS is itself a spatial
  mean of feature differences, so this differs from a whole-image evaluation only by the trunk's receptive
  field at tile borders, and bounds memory for any scene size. Images smaller than the trunk accepts
  (``min_size``: 31 px for LPIPS-Alex, 21 px for ST-LPIPS-Alex) get ``NaN``.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from groundstation.checkpoints import read_checkpoint
from groundstation.errors import CheckpointError, ConfigError
from groundstation.fileio import sha256_file
from groundstation.metrics.pixel import pair_hwc


PERCEPTUAL_COLUMNS: tuple[str, ...] = ("lpips_alex", "stlpips_alex")
"""Every perceptual column a table can have; exactly the one of the backend in use is filled."""

ALEXNET_FILENAME = "alexnet-owt-7be5be79.pth"
ALEXNET_SHA256_PREFIX = "7be5be79"
BACKBONE_DIR_ENV = "GSP_LPIPS_BACKBONE_DIR"

# torchvision's alexnet ``features`` indices of the convolutions, and the lpips trunk slice holding each
_ALEX_CONV_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}

_sha_cache: dict[tuple[str, int, int], str] = {}


def find_alexnet_backbone() -> Path | None:
    """The provisioned torchvision AlexNet file LPIPS needs, or None; never downloads (see module docstring).

    Raises ConfigError when ``$GSP_LPIPS_BACKBONE_DIR`` is set but does not hold the file.
    """
    env = os.environ.get(BACKBONE_DIR_ENV)
    if env:
        path = Path(env).expanduser() / ALEXNET_FILENAME
        if not path.is_file():
            raise ConfigError(
                f"{BACKBONE_DIR_ENV}={env} but {path} does not exist: copy torchvision's {ALEXNET_FILENAME} there, "
                f"or unset {BACKBONE_DIR_ENV} to use the bundled shift-tolerant LPIPS (column stlpips_alex)"
            )
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILENAME
    return path if path.is_file() else None


def _sha256(path: Path) -> str:
    """sha256 of a backbone file, computed once per process for an unchanged file."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        _sha_cache[key] = sha256_file(path)
    return _sha_cache[key]


def _balanced_edges(n: int, tile: int) -> list[int]:
    k = max(1, -(-n // tile))
    return [round(i * n / k) for i in range(k + 1)]


class PerceptualMetric:
    """A learned perceptual distance (lower is better) with a fixed backend; see the module docstring.

    Build it with :meth:`auto` (or :meth:`lpips_alex` / :meth:`stlpips_alex`), once per run.

    Attributes: ``name`` (the table column, ``'lpips_alex'`` or ``'stlpips_alex'``), ``description`` (text for
    reports, with the weight files used), ``min_size`` (smallest side the trunk accepts), ``tile``, ``device``.
    """

    def __init__(
        self,
        name: str,
        description: str,
        model: torch.nn.Module,
        min_size: int,
        device: str | torch.device = "cpu",
        tile: int = 256,
        batch: int = 8,
    ) -> None:
        if name not in PERCEPTUAL_COLUMNS:
            raise ValueError(f"unknown perceptual metric {name!r}; known: {', '.join(PERCEPTUAL_COLUMNS)}")
        if tile < min_size:
            raise ValueError(f"tile {tile} is smaller than the {min_size}-px minimum of {name}")
        self.name = name
        self.description = description
        self.min_size = min_size
        self.tile = tile
        self.batch = batch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def __repr__(self) -> str:
        return f"PerceptualMetric({self.name!r}, device={str(self.device)!r}, tile={self.tile})"

    # ---- construction
    @classmethod
    def auto(
        cls,
        device: str | torch.device = "cpu",
        *,
        backend: Literal["auto", "lpips_alex", "stlpips_alex"] = "auto",
        tile: int = 256,
        batch: int = 8,
    ) -> "PerceptualMetric":
        """LPIPS-Alex when its AlexNet trunk is provisioned on disk (:func:`find_alexnet_backbone`), else ST-LPIPS.

        ``backend`` forces one (``'lpips_alex'`` without the provisioned file is a ConfigError). Nothing is
        ever downloaded.
        """
        if backend == "stlpips_alex":
            return cls.stlpips_alex(device, tile=tile, batch=batch)
        path = find_alexnet_backbone()
        if path is not None:
            return cls.lpips_alex(path, device, tile=tile, batch=batch)
        if backend == "lpips_alex":
            raise ConfigError(
                f"LPIPS-Alex needs torchvision's {ALEXNET_FILENAME}, found neither in ${BACKBONE_DIR_ENV} nor in "
                f"{Path(torch.hub.get_dir()) / 'checkpoints'}; provision it there (no download is attempted)"
            )
        if backend != "auto":
            raise ValueError(f"unknown perceptual backend {backend!r}")
        return cls.stlpips_alex(device, tile=tile, batch=batch)

    @classmethod
    def lpips_alex(
        cls,
        backbone_path: str | Path,
        device: str | torch.device = "cpu",
        *,
        verify_sha256: bool = True,
        tile: int = 256,
        batch: int = 8,
    ) -> "PerceptualMetric":
        """The paper's LPIPS v0.1 (AlexNet), trunk from the local torchvision file ``backbone_path``."""
        import lpips

        path = Path(backbone_path)
        if verify_sha256:
            digest = _sha256(path)
            if not digest.startswith(ALEXNET_SHA256_PREFIX):
                raise CheckpointError(
                    f"{path}: SHA-256 {digest[:16]}... does not start with {ALEXNET_SHA256_PREFIX}, so it is not "
                    f"torchvision's {ALEXNET_FILENAME}; replace it with the genuine file or remove it"
                )
        sd, _ = read_checkpoint(path)
        if not isinstance(sd, dict):
            raise CheckpointError(f"{path}: expected a state dict, got {type(sd).__name__}")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation notes for pretrained=False
            # pnet_rand=True: torchvision builds an untrained AlexNet (no download); the trunk is loaded below.
            # The lpips package loads its bundled v0.1 linear layers (lpips/weights/v0.1/alex.pth) itself.
            model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
        trunk = {}
        for idx, slice_no in _ALEX_CONV_SLICES.items():
            for param in ("weight", "bias"):
                key = f"features.{idx}.{param}"
                if key not in sd:
                    raise CheckpointError(f"{path}: no {key}; not a torchvision AlexNet state dict")
                trunk[f"slice{slice_no}.{idx}.{param}"] = sd[key]
        try:
            model.net.load_state_dict(trunk, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: AlexNet weights do not fit the LPIPS trunk: {exc}") from exc
        lin_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
        description = (
            f"LPIPS v0.1, AlexNet (Zhang et al. 2018): linear layers {lin_file} (lpips {_version('lpips')}), "
            f"ImageNet trunk {path}; tiles <= {tile}x{tile} px, area-weighted mean; lower is better"
        )
        return cls("lpips_alex", description, model, min_size=31, device=device, tile=tile, batch=batch)

    @classmethod
    def stlpips_alex(cls, device: str | torch.device = "cpu", *, tile: int = 256, batch: int = 8) -> "PerceptualMetric":
        """Shift-tolerant LPIPS, AlexNet ``shift_tolerant`` variant; all weights ship in stlpips-pytorch."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from stlpips_pytorch import stlpips

            model = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False)
        weights = Path(stlpips.__file__).parent / "weights" / "vST0.0" / "alex_shift_tolerant.pth"
        _check_fully_loaded(model, weights)
        description = (
            f"ST-LPIPS, AlexNet shift-tolerant (Ghildyal & Liu, ECCV 2022), weights {weights} "
            f"(stlpips-pytorch {_version('stlpips-pytorch')}); used because torchvision's AlexNet for LPIPS is not "
            f"provisioned; not comparable with LPIPS values; tiles <= {tile}x{tile} px, area-weighted mean; "
            f"lower is better"
        )
        return cls("stlpips_alex", description, model, min_size=21, device=device, tile=tile, batch=batch)

    # ---- evaluation
    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Distance between two uint8 RGB images (HWC or CHW); ``NaN`` when a side is below ``min_size``."""
        a, b = pair_hwc(a, b)
        h, w = a.shape[:2]
        if min(h, w) < self.min_size:
            return math.nan
        ys, xs = _balanced_edges(h, self.tile), _balanced_edges(w, self.tile)
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for y0, y1 in zip(ys, ys[1:]):
            for x0, x1 in zip(xs, xs[1:]):
                groups.setdefault((y1 - y0, x1 - x0), []).append((y0, x0))
        total, area = 0.0, 0
        with torch.inference_mode():
            for (th, tw), corners in groups.items():
                for i in range(0, len(corners), self.batch):
                    chunk = corners[i : i + self.batch]
                    x = self._batch(a, chunk, th, tw)
                    y = self._batch(b, chunk, th, tw)
                    d = self.model(x, y).reshape(-1).double().sum().item()
                    total += d * th * tw
                    area += len(chunk) * th * tw
        return total / area

    def _batch(self, img: np.ndarray, corners: list[tuple[int, int]], th: int, tw: int) -> torch.Tensor:
        tiles = np.stack([img[y : y + th, x : x + tw] for y, x in corners])
        t = torch.from_numpy(tiles).permute(0, 3, 1, 2).to(self.device, torch.float32)
        return t / 127.5 - 1.0  # LPIPS inputs are in [-1, 1]


def _check_fully_loaded(model: torch.nn.Module, weights: Path) -> None:
    """stlpips loads with strict=False: make sure every parameter really came from the file."""
    sd, _ = read_checkpoint(weights)
    loaded = {id(t) for k, t in model.state_dict(keep_vars=True).items() if k in sd}
    missing = [n for n, p in model.named_parameters() if id(p) not in loaded]
    if missing:
        raise CheckpointError(f"{weights}: no weights for {', '.join(missing[:5])}; reinstall stlpips-pytorch")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"
