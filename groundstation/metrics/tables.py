"""Tables: one :class:`TileMetrics` row per (pass, tile, product), built into a DataFrame by :func:`tiles_frame`,
aggregated per (pass, product, product version) by :func:`summarize_passes`, written with :func:`write_parquet`,
and appended to a station history Parquet file by :func:`append_history`. Column units are in the names
(``psnr_db``, ``decode_ms``, ``compressed_bytes``); ``mse`` is on the 0-255 scale, averaged over the 3 channels.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from groundstation.errors import ProductError
from groundstation.fileio import atomic_path, file_lock
from groundstation.metrics.perceptual import PERCEPTUAL_COLUMNS, PerceptualMetric
from groundstation.metrics.pixel import bpp, ms_ssim, mse, pair_hwc, psnr_from_mse


PRODUCTS = ("decoded", "enhanced")
#: Footprint columns of the tile table, in its order.
TILE_BOUNDS_COLUMNS = ("crs_xmin", "crs_ymin", "crs_xmax", "crs_ymax", "lon_min", "lat_min", "lon_max", "lat_max")


@dataclass(kw_only=True)
class TileMetrics:
    """One row of the per-tile table: one product of one tile of one pass.

    ``height`` x ``width`` are the tile's valid pixels (edge tiles are cropped to the scene); ``compressed_bytes``
    is the tile's share of the pass (the enhanced product comes from the same bitstream, so it has the same
    bytes). ``bpp`` is derived. Metrics the caller could not compute stay NaN; ``status`` is ``'ok'`` or a short
    failure word (``'decode_failed'``, ...), and only ``'ok'`` rows enter :func:`summarize_passes`. ``note``
    collects reasons (e.g. why MS-SSIM is NaN). Each perceptual distance goes in the column of the metric that
    computed it (``lpips_alex``, the primary; ``lpips_vgg``; ``stlpips_alex``); one not computed stays NaN.
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
    lpips_vgg: float = math.nan
    stlpips_alex: float = math.nan
    decode_ms: float = math.nan
    enhance_ms: float = math.nan
    device: str = ""
    status: str = "ok"
    note: str = ""
    # where the tile lies (:func:`add_tile_bounds`, from groundstation.footprints.tile_bounds): bounds in the
    # product's CRS (pixel coordinates for a pixel-grid product) and in EPSG:4326 degrees (NaN for a pixel grid)
    crs_xmin: float = math.nan
    crs_ymin: float = math.nan
    crs_xmax: float = math.nan
    crs_ymax: float = math.nan
    lon_min: float = math.nan
    lat_min: float = math.nan
    lon_max: float = math.nan
    lat_max: float = math.nan

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
    perceptual: PerceptualMetric | Sequence[PerceptualMetric] = (),
    product_version: str = "",
    decode_ms: float = math.nan,
    enhance_ms: float = math.nan,
    device: str = "",
) -> TileMetrics:
    """All metrics of ``candidate`` against ``reference`` (uint8 RGB, HWC or CHW) as one :class:`TileMetrics`;
    ``perceptual``: the perceptual metrics to compute (one or several), each into its own column."""
    ref, cand = pair_hwc(reference, candidate)
    notes = []
    m = mse(ref, cand)
    ms = ms_ssim(ref, cand)
    if ms.reason:
        notes.append(ms.reason)
    extra = {}
    for metric in [perceptual] if isinstance(perceptual, PerceptualMetric) else perceptual:
        d = metric.distance(ref, cand)
        if math.isnan(d):
            h, w = ref.shape[:2]
            notes.append(f"{metric.name}: image {h}x{w} is below its {metric.min_size}-px minimum")
        extra[metric.name] = d
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
    "mse": pa.float64(), "psnr_db": pa.float64(), "ms_ssim": pa.float64(),
    **{name: pa.float64() for name in PERCEPTUAL_COLUMNS}, "decode_ms": pa.float64(), "enhance_ms": pa.float64(), "device": pa.string(),
    "status": pa.string(), "note": pa.string(),
    **{name: pa.float64() for name in TILE_BOUNDS_COLUMNS},
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
        *((f"{name}{suffix}", pa.float64()) for name in PERCEPTUAL_COLUMNS for suffix in ("", "_coverage")),
        ("decode_ms_total", pa.float64()),
        ("enhance_ms_total", pa.float64()),
        ("device", pa.string()),
        # timeliness of the run that made the product (null where not recorded)
        ("acquired_at", pa.timestamp("us", tz="UTC")),
        ("last_byte_at", pa.timestamp("us", tz="UTC")),  # the pass file's last change
        ("first_tile_decoded_at", pa.timestamp("us", tz="UTC")),
        ("complete_at", pa.timestamp("us", tz="UTC")),
        ("latency_s", pa.float64()),  # last byte -> product complete
        # seams: step across codec-tile boundaries / step inside tiles (groundstation.metrics.seams), of this
        # product and of the reference scene on the same grid (null without a reference)
        ("seam_ratio", pa.float64()),
        ("seam_ratio_source", pa.float64()),
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


def add_tile_bounds(tiles: pd.DataFrame, bounds: dict[int, dict[str, float]]) -> pd.DataFrame:
    """``tiles`` with the footprint columns (:data:`TILE_BOUNDS_COLUMNS`) filled from ``bounds`` (tile index ->
    column -> value, as :func:`groundstation.footprints.tile_bounds` returns); tiles not in ``bounds`` keep NaN."""
    out = tiles.copy()
    idx = out["tile_index"].to_numpy()
    for col in TILE_BOUNDS_COLUMNS:
        out[col] = np.array([bounds.get(int(t), {}).get(col, math.nan) for t in idx], np.float64)
    return out


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
    with file_lock(path):
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
