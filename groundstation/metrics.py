"""Image-quality metrics and the tidy tables that record them.

Metrics (all on uint8 RGB, HWC or CHW):

* ``bpp``: compressed bits per pixel.
* ``psnr_db``: PSNR with a peak of 255, from the MSE over all pixels and channels (identical images: ``inf``).
* ``ms_ssim``: MS-SSIM of ``pytorch_msssim`` (data_range=255, 11-px Gaussian window, 5 scales). That library
  asserts ``min(H, W) > (win_size - 1) * 2**4 = 160``; smaller images get ``NaN`` and a reason instead.
* a learned perceptual distance, chosen once per run by :meth:`PerceptualMetric.auto`:

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

Tables: one :class:`TileMetrics` row per (pass, tile, product), built into a DataFrame by :func:`tiles_frame`,
aggregated per (pass, product, product version) by :func:`summarize_passes`, written with :func:`write_parquet`,
and appended to a station history Parquet file by :func:`append_history`. Column units are in the names
(``psnr_db``, ``decode_ms``, ``compressed_bytes``); ``mse`` is on the 0-255 scale, averaged over the 3 channels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .fileio import atomic_path
from .errors import CheckpointError, ConfigError, ProductError

# ------------------------------------------------------------------------------------------- basic metrics

MS_SSIM_WIN_SIZE = 11
MS_SSIM_LEVELS = 5
#: pytorch_msssim asserts ``min(H, W) > (win_size - 1) * 2 ** 4``: with its default 11-px window, 161 px.
MS_SSIM_MIN_SIDE = (MS_SSIM_WIN_SIZE - 1) * 2 ** (MS_SSIM_LEVELS - 1) + 1


def bpp(nbytes: int, height: int, width: int) -> float:
    """Bits per pixel of ``nbytes`` compressed bytes for a ``height`` x ``width`` image."""
    if height <= 0 or width <= 0:
        raise ValueError(f"bpp needs a positive image size, got {height}x{width}")
    if nbytes < 0:
        raise ValueError(f"bpp needs a non-negative byte count, got {nbytes}")
    return nbytes * 8.0 / (height * width)


def _as_hwc(img: np.ndarray, what: str = "image") -> np.ndarray:
    """(H, W, 3) view of a uint8 RGB image given as HWC or CHW. (3, H, 3) is read as HWC."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 RGB, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    if img.ndim == 3 and img.shape[0] == 3:
        return img.transpose(1, 2, 0)
    raise ValueError(f"{what}: expected an (H, W, 3) or (3, H, W) RGB image, got shape {img.shape}")


def _pair_hwc(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_hwc(a, "first image"), _as_hwc(b, "second image")
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape} (as HWC)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"empty image: {a.shape}")
    return a, b


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error on the 0-255 scale over all pixels and the 3 channels."""
    a, b = _pair_hwc(a, b)
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(d * d))


def psnr_from_mse(mse_value: float, peak: float = 255.0) -> float:
    """``10 log10(peak**2 / mse)``; ``inf`` for a zero MSE, ``NaN`` for a NaN MSE."""
    if math.isnan(mse_value):
        return math.nan
    if mse_value <= 0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse_value)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 RGB images (HWC or CHW), peak 255; identical images give ``inf``."""
    return psnr_from_mse(mse(a, b))


class MsSsim(NamedTuple):
    """MS-SSIM value, or ``NaN`` with the reason it could not be computed (``reason`` is None when computed)."""

    value: float
    reason: str | None = None


def ms_ssim(a: np.ndarray, b: np.ndarray, device: str | torch.device = "cpu") -> MsSsim:
    """MS-SSIM of two uint8 RGB images (HWC or CHW) with ``pytorch_msssim`` (data_range=255, 5 scales).

    Images whose smaller side is below :data:`MS_SSIM_MIN_SIDE` (161 px) cannot be downsampled 4 times
    under the 11-px window: they give ``MsSsim(nan, reason)`` instead of the library's AssertionError.
    """
    from pytorch_msssim import ms_ssim as _ms_ssim

    a, b = _pair_hwc(a, b)
    h, w = a.shape[:2]
    if min(h, w) < MS_SSIM_MIN_SIDE:
        return MsSsim(
            math.nan,
            f"ms_ssim: image {h}x{w} is too small for {MS_SSIM_LEVELS} scales "
            f"(pytorch_msssim needs both sides >= {MS_SSIM_MIN_SIDE} px with an {MS_SSIM_WIN_SIZE}-px window)",
        )
    x = _to_nchw_float(a, device)
    y = _to_nchw_float(b, device)
    with torch.inference_mode():
        value = _ms_ssim(x, y, data_range=255, size_average=True, win_size=MS_SSIM_WIN_SIZE)
    return MsSsim(float(value))


def _to_nchw_float(hwc: np.ndarray, device: str | torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)[None]
    return t.to(device=device, dtype=torch.float32)


# ------------------------------------------------------------------------------------- perceptual metric

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
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _sha_cache[key] = h.hexdigest()
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
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the operator's to fix
            raise CheckpointError(f"{path}: cannot read the AlexNet weights ({type(exc).__name__}: {exc})") from exc
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
        a, b = _pair_hwc(a, b)
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
    sd = torch.load(weights, map_location="cpu", weights_only=True)
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


# ------------------------------------------------------------------------------------------------- tables

PRODUCTS = ("decoded", "enhanced")


@dataclass(kw_only=True)
class TileMetrics:
    """One row of the per-tile table: one product of one tile of one pass.

    ``height`` x ``width`` are the tile's valid pixels (edge tiles are cropped to the scene); ``compressed_bytes``
    is the tile's share of the pass (the enhanced product comes from the same bitstream, so it has the same
    bytes). ``bpp`` is derived. Metrics the caller could not compute stay NaN; ``status`` is ``'ok'`` or a short
    failure word (``'decode_failed'``, ...), and only ``'ok'`` rows enter :func:`summarize_passes`. ``note``
    collects reasons (e.g. why MS-SSIM is NaN). Perceptual distances go in the column of the backend
    (``lpips_alex`` or ``stlpips_alex``); the other stays NaN.
    """

    pass_id: str
    tile_index: int
    product: str
    product_version: str = ""
    height: int
    width: int
    compressed_bytes: int
    bpp: float = field(init=False, default=math.nan)
    mse: float = math.nan
    psnr_db: float = math.nan
    ms_ssim: float = math.nan
    lpips_alex: float = math.nan
    stlpips_alex: float = math.nan
    decode_ms: float = math.nan
    enhance_ms: float = math.nan
    device: str = ""
    status: str = "ok"
    note: str = ""

    def __post_init__(self) -> None:
        if self.product not in PRODUCTS:
            raise ValueError(f"product must be one of {PRODUCTS}, got {self.product!r}")
        self.bpp = bpp(self.compressed_bytes, self.height, self.width)


def evaluate_tile(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    pass_id: str,
    tile_index: int,
    product: str,
    compressed_bytes: int,
    perceptual: PerceptualMetric | None = None,
    product_version: str = "",
    decode_ms: float = math.nan,
    enhance_ms: float = math.nan,
    device: str = "",
) -> TileMetrics:
    """All metrics of ``candidate`` against ``reference`` (uint8 RGB, HWC or CHW) as one :class:`TileMetrics`."""
    ref, cand = _pair_hwc(reference, candidate)
    notes = []
    m = mse(ref, cand)
    ms = ms_ssim(ref, cand)
    if ms.reason:
        notes.append(ms.reason)
    extra = {}
    if perceptual is not None:
        d = perceptual.distance(ref, cand)
        if math.isnan(d):
            h, w = ref.shape[:2]
            notes.append(f"{perceptual.name}: image {h}x{w} is below its {perceptual.min_size}-px minimum")
        extra[perceptual.name] = d
    return TileMetrics(
        pass_id=pass_id,
        tile_index=tile_index,
        product=product,
        product_version=product_version,
        height=ref.shape[0],
        width=ref.shape[1],
        compressed_bytes=compressed_bytes,
        mse=m,
        psnr_db=psnr_from_mse(m),
        ms_ssim=ms.value,
        decode_ms=decode_ms,
        enhance_ms=enhance_ms,
        device=device,
        note="; ".join(notes),
        **extra,
    )


_TILE_TYPES = {
    "pass_id": pa.string(), "tile_index": pa.int64(), "product": pa.string(), "product_version": pa.string(),
    "height": pa.int64(), "width": pa.int64(), "compressed_bytes": pa.int64(), "bpp": pa.float64(),
    "mse": pa.float64(), "psnr_db": pa.float64(), "ms_ssim": pa.float64(), "lpips_alex": pa.float64(),
    "stlpips_alex": pa.float64(), "decode_ms": pa.float64(), "enhance_ms": pa.float64(), "device": pa.string(),
    "status": pa.string(), "note": pa.string(),
}  # fmt: skip
TILE_SCHEMA = pa.schema([(f.name, _TILE_TYPES[f.name]) for f in dataclasses.fields(TileMetrics)])

PASS_SCHEMA = pa.schema(
    [
        ("pass_id", pa.string()),
        ("product", pa.string()),
        ("product_version", pa.string()),
        ("evaluated_at", pa.timestamp("us", tz="UTC")),
        ("status", pa.string()),  # 'ok': every tile ok; 'partial': some; 'failed': none
        ("n_tiles", pa.int64()),
        ("n_tiles_ok", pa.int64()),
        ("pixels", pa.int64()),  # valid pixels of the ok tiles
        ("compressed_bytes", pa.int64()),  # bytes of the ok tiles
        ("bpp", pa.float64()),
        ("mse", pa.float64()),
        ("psnr_db", pa.float64()),
        ("ms_ssim", pa.float64()),
        ("ms_ssim_coverage", pa.float64()),
        ("lpips_alex", pa.float64()),
        ("lpips_alex_coverage", pa.float64()),
        ("stlpips_alex", pa.float64()),
        ("stlpips_alex_coverage", pa.float64()),
        ("decode_ms_total", pa.float64()),
        ("enhance_ms_total", pa.float64()),
        ("device", pa.string()),
    ]
)
HISTORY_KEY = ("pass_id", "product", "product_version")


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()


def _table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    missing = [n for n in schema.names if n not in df.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}")
    extra = [c for c in df.columns if c not in schema.names]
    if extra:
        raise ValueError(f"table has unknown columns {extra}")
    return pa.Table.from_pandas(df[list(schema.names)], schema=schema, preserve_index=False)


def tiles_frame(rows: Iterable[TileMetrics]) -> pd.DataFrame:
    """Per-tile DataFrame (columns of :data:`TILE_SCHEMA`, in that order) from :class:`TileMetrics` rows."""
    records = [dataclasses.asdict(r) for r in rows]
    return _frame(pa.Table.from_pylist(records, schema=TILE_SCHEMA))


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(area-weighted mean over the non-NaN values, fraction of the weight they cover)."""
    ok = ~np.isnan(values)
    total = weights.sum()
    if not ok.any() or total <= 0:
        return math.nan, 0.0
    return float(np.average(values[ok], weights=weights[ok])), float(weights[ok].sum() / total)


def summarize_passes(tiles: pd.DataFrame, evaluated_at: _dt.datetime | None = None) -> pd.DataFrame:
    """One row per (pass_id, product, product_version) from a per-tile frame (columns of :data:`PASS_SCHEMA`).

    Only ``status == 'ok'`` tiles enter the quality and rate figures; ``n_tiles`` counts all of them.

    * ``bpp`` = 8 * total compressed bytes / total valid pixels (not the mean of per-tile bpp).
    * ``mse`` is the pixel-weighted mean of the per-tile MSEs, i.e. the MSE of the whole pass, and ``psnr_db``
      is computed from that pooled MSE - not the mean of per-tile PSNRs, which would overweight easy tiles
      (and be ``inf`` as soon as one tile is lossless).
    * ``ms_ssim`` and the perceptual columns are area-weighted means over the tiles that have a value;
      ``*_coverage`` is the fraction of the ok pixels those tiles hold (MS-SSIM is NaN on tiles under 161 px).
    * ``decode_ms_total`` / ``enhance_ms_total`` sum every tile's timing (NaN when none was recorded).
    """
    when = evaluated_at or _dt.datetime.now(_dt.timezone.utc)
    if when.tzinfo is None:
        raise ValueError("evaluated_at must be timezone-aware")
    rows = []
    if len(tiles):
        grouped = tiles.groupby(list(HISTORY_KEY), sort=True, dropna=False)
    else:
        grouped = []
    for (pass_id, product, version), g in grouped:
        ok = g[g["status"] == "ok"]
        pix = (ok["height"].to_numpy(np.int64) * ok["width"].to_numpy(np.int64)).astype(np.float64)
        n_pix = int(pix.sum())
        n_bytes = int(ok["compressed_bytes"].sum())
        pooled_mse, _ = _weighted_mean(ok["mse"].to_numpy(np.float64), pix)
        row = {
            "pass_id": pass_id,
            "product": product,
            "product_version": version,
            "evaluated_at": when,
            "status": "ok" if len(ok) == len(g) else ("partial" if len(ok) else "failed"),
            "n_tiles": len(g),
            "n_tiles_ok": len(ok),
            "pixels": n_pix,
            "compressed_bytes": n_bytes,
            "bpp": n_bytes * 8.0 / n_pix if n_pix else math.nan,
            "mse": pooled_mse,
            "psnr_db": psnr_from_mse(pooled_mse),
        }
        for col in ("ms_ssim", *PERCEPTUAL_COLUMNS):
            row[col], row[f"{col}_coverage"] = _weighted_mean(ok[col].to_numpy(np.float64), pix)
        for col in ("decode_ms", "enhance_ms"):
            v = g[col].to_numpy(np.float64)
            row[f"{col}_total"] = float(np.nansum(v)) if (~np.isnan(v)).any() else math.nan
        row["device"] = ",".join(sorted({d for d in g["device"].dropna() if d}))
        rows.append(row)
    return _frame(pa.Table.from_pylist(rows, schema=PASS_SCHEMA))


# ------------------------------------------------------------------------------------------------ parquet


def _write_table_atomic(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_parquet(
    df: pd.DataFrame, path: str | Path, schema: pa.Schema | None = None, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``df`` to ``path`` atomically (temp file + rename), conformed to ``schema`` when given
    (:data:`TILE_SCHEMA`, :data:`PASS_SCHEMA`); ``metadata`` goes into the file's key-value metadata
    (e.g. ``{'perceptual': metric.description}``)."""
    path = Path(path)
    table = _table(df, schema) if schema is not None else pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    _write_table_atomic(table, path)
    return path


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a file written by :func:`write_parquet` (same dtypes as the frames built here)."""
    return _frame(pq.read_table(path))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path.lock`` (POSIX), so concurrent appends do not lose rows."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def append_history(
    summary: pd.DataFrame, history_path: str | Path, *, on_duplicate: Literal["replace", "keep"] = "replace"
) -> pd.DataFrame:
    """Append per-pass summary rows to the station history Parquet file; returns the whole new history.

    Read + concatenate + atomic replace, under a lock file next to it. The schema is always
    :data:`PASS_SCHEMA`: an older file lacking some of its columns gets them as nulls, a file with columns
    it does not know is a ProductError (never silently dropped). Rows whose (pass_id, product,
    product_version) is being appended again are replaced (``on_duplicate='replace'``, so a retried task does
    not double-count) or kept beside the new ones (``'keep'``); all other rows are kept as they were.
    """
    if on_duplicate not in ("replace", "keep"):
        raise ValueError(f"on_duplicate must be 'replace' or 'keep', got {on_duplicate!r}")
    path = Path(history_path)
    new = _table(summary, PASS_SCHEMA)
    with _locked(path):
        if path.exists():
            try:
                old = pq.read_table(path)
            except Exception as exc:  # noqa: BLE001
                raise ProductError(f"{path}: station history is unreadable ({exc}); move it aside") from exc
            extra = [n for n in old.schema.names if n not in PASS_SCHEMA.names]
            if extra:
                raise ProductError(
                    f"{path}: station history has columns this version does not know ({', '.join(extra)}); "
                    f"append to a new history file or upgrade"
                )
            cols = []
            for f in PASS_SCHEMA:
                if f.name in old.schema.names:
                    try:
                        cols.append(old[f.name].cast(f.type))
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        raise ProductError(f"{path}: column {f.name} cannot be read as {f.type}: {exc}") from exc
                else:
                    cols.append(pa.nulls(old.num_rows, f.type))
            old = pa.Table.from_arrays(cols, schema=PASS_SCHEMA)
            if on_duplicate == "replace" and old.num_rows:
                new_keys = set(zip(*(new[k].to_pylist() for k in HISTORY_KEY)))
                keep = [key not in new_keys for key in zip(*(old[k].to_pylist() for k in HISTORY_KEY))]
                old = old.filter(pa.array(keep, pa.bool_()))
            combined = pa.concat_tables([old, new])
        else:
            combined = new
        _write_table_atomic(combined, path)
    return _frame(combined)
