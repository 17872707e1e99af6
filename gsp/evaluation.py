"""The paper's evaluation on an image folder: ELIC at each rate point, then the enhancer, against the originals.

``gsp evaluate IMAGE_DIR -o OUT [--rate-points NAME,...]`` runs :func:`evaluate_folder`. For every rate point
(a codec, the enhancer trained behind it and its temperature; ``configs/models.yaml`` ``rate_points``) and
every image: real ELIC compress and decompress (whole image, padded to 64, 1 thread), the enhancer's inverse at
the rate point's temperature, then PSNR, MS-SSIM and the perceptual distances of both against the original:
LPIPS-Alex, the paper's metric and the primary one (column ``perceptual``, named in ``perceptual_metric``), and
beside it LPIPS-VGG and ST-LPIPS-Alex (columns ``lpips_vgg``, ``stlpips_alex``).
The enhancer adds no bits, so decoded and enhanced share the bpp.

OUT receives

* ``per_image.csv``: one row per (rate point, image, product); appended as images finish, so an interrupted
  run resumes where it stopped (rows of another model file, by sha256, are recomputed);
* ``evaluation.csv``: one row per (rate point, product): means over images, the enhancer's seconds per
  megapixel;
* ``evaluation.md``: that table, the enhancer's effect per rate point (mean paired difference with a 95%
  interval, and on how many images it helped), the comparison with reference points if given;
* ``rd.png`` (bpp vs PSNR and MS-SSIM) and ``rate_perception.png`` (bpp vs perceptual distance);
* ``examples.png``: centre crops of one image per rate point, original | decoded | enhanced.

With ``--sweep`` (:mod:`gsp.perception_distortion`) the same decodes are also swept along the operating knob
(the enhancer's temperature) and two trivial controls (Gaussian noise, unsharp mask) in strength:
``perception_distortion.csv`` / ``.md`` / ``.png``.

Means are over images (each image weighs the same), as in the codec literature; PSNR is per image, then
averaged. Reference points come from a CSV (``label, bpp, psnr_db`` and optionally ``ms_ssim``,
``perceptual_metric``, ``perceptual``, ``note``): they are drawn on the perceptual plot only where their metric
is the one computed here, since LPIPS and ST-LPIPS values are not on one scale.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from groundstation.errors import ConfigError
from groundstation.fileio import atomic_path, save_figure_atomic, write_text_atomic

__all__ = [
    "PER_IMAGE_COLUMNS",
    "EvaluationResult",
    "ResolvedPoint",
    "evaluate_folder",
    "read_reference_points",
    "resolve_rate_points",
    "summarize",
]

log = logging.getLogger(__name__)

PER_IMAGE_CSV = "per_image.csv"
PER_IMAGE_COLUMNS = ["rate_point", "image", "product", "height", "width", "bytes", "bpp", "psnr_db", "ms_ssim",
                     "perceptual", "perceptual_metric", "enhance_s", "temperature", "codec_sha256",
                     "enhancer_sha256", "lpips_vgg", "stlpips_alex"]
#: The perceptual metrics computed beside the primary one, each in its own column.
SECONDARY_PERCEPTUAL = ("lpips_vgg", "stlpips_alex")
REFERENCE_REQUIRED = ("label", "bpp", "psnr_db")


@dataclass(frozen=True)
class ResolvedPoint:
    """A rate point with its files resolved and hashes checked."""

    name: str
    codec: str
    codec_path: str
    codec_sha256: str | None
    enhancer: str
    enhancer_path: str
    enhancer_sha256: str | None
    temperature: float
    lmbda: float | None


def resolve_rate_points(names: Iterable[str] | None = None, registry=None,
                        temperature: float | None = None) -> list[ResolvedPoint]:
    """The registry's rate points (all, or ``names`` in that order); a clear error for an unknown name.

    ``temperature`` replaces every point's own (to choose one on a validation set)."""
    if temperature is not None and not (temperature >= 0 and math.isfinite(temperature)):
        raise ConfigError(f"--temperature {temperature}: give a finite value >= 0")
    from groundstation.registry import load_registry, resolve_model

    registry = registry or load_registry()
    wanted = list(names) if names else list(registry.rate_points)
    if not wanted:
        raise ConfigError("the model registry defines no rate_points; add codec/enhancer pairs under "
                          "rate_points in configs/models.yaml")
    points = []
    for name in wanted:
        point = registry.rate_points.get(name)
        if point is None:
            raise ConfigError(f"--rate-points: no rate point named {name!r}; known: "
                              f"{', '.join(registry.rate_points) or 'none'} (configs/models.yaml)")
        _, cpath, csha, centry = resolve_model(point.codec, "codec", registry)
        _, epath, esha, _ = resolve_model(point.enhancer, "enhancer", registry)
        points.append(ResolvedPoint(name=name, codec=point.codec, codec_path=str(cpath), codec_sha256=csha,
                                    enhancer=point.enhancer, enhancer_path=str(epath), enhancer_sha256=esha,
                                    temperature=point.temperature if temperature is None else temperature,
                                    lmbda=centry.lmbda if centry else None))
    return points


# ------------------------------------------------------------------------------------------- the work

_CACHE: dict[str, object] = {}


def _models(point: ResolvedPoint):
    """(TileCodec, enhancer, codec sha, enhancer sha, primary perceptual metric), loaded once per process."""
    from enhancer.checkpoint import load_enhancer

    from groundstation.codec import TileCodec, load_codec
    from groundstation.metrics import PerceptualMetric

    key = f"{point.codec_path}|{point.enhancer_path}"
    if key not in _CACHE:
        loaded = load_codec(point.codec_path, point.codec_sha256)
        model, _, esha = load_enhancer(point.enhancer_path, point.enhancer_sha256)
        _CACHE.clear()  # one rate point at a time per process: keep memory flat
        _CACHE[key] = (TileCodec(loaded, threads=1), model.eval(), loaded.sha256, esha)
    if "perceptual" not in _CACHE:
        _CACHE["perceptual"] = PerceptualMetric.auto()
    return (*_CACHE[key], _CACHE["perceptual"])  # type: ignore[misc]


_SECONDARY: dict[str, object] = {}


def _secondary_metrics() -> list:
    """The metrics of :data:`SECONDARY_PERCEPTUAL`, loaded once per process."""
    from groundstation.metrics import PerceptualMetric

    for name in SECONDARY_PERCEPTUAL:
        if name not in _SECONDARY:
            _SECONDARY[name] = PerceptualMetric.auto(backend=name)
    return [_SECONDARY[name] for name in SECONDARY_PERCEPTUAL]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _original_and_decoded(point: ResolvedPoint, path: str):
    """(original, decoded, bytes) of one image at one rate point: real ELIC compress and decompress."""
    from groundstation.images import load_rgb

    tc, *_ = _models(point)
    try:
        image = load_rgb(path).copy()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read as an RGB image ({exc})") from exc
    decoded, enc, _ = tc.roundtrip(image, what=path)  # a persistent desync is a DesyncError (exit 2)
    return image, decoded, enc.nbytes


def _codec_and_enhancer(point: ResolvedPoint, path: str, seed: int):
    """(original, decoded, enhanced, bytes, enhance seconds) of one image at one rate point."""
    from enhancer.inference import enhance_array

    _, model, *_ = _models(point)
    image, decoded, nbytes = _original_and_decoded(point, path)
    t0 = time.perf_counter()
    enhanced = enhance_array(model, decoded, seed=seed, temperature=point.temperature)
    return image, decoded, enhanced, nbytes, time.perf_counter() - t0


def evaluate_image(point: ResolvedPoint, path: str, name: str, seed: int = 0) -> list[dict]:
    """Compress, decompress and enhance one image at one rate point: two rows (decoded, enhanced)."""
    from groundstation.metrics import ms_ssim, psnr_db

    _, _, csha, esha, perceptual = _models(point)
    image, decoded, enhanced, nbytes, enhance_s = _codec_and_enhancer(point, path, seed)
    h, w = image.shape[:2]
    base = {"rate_point": point.name, "image": name, "height": h, "width": w, "bytes": nbytes,
            "bpp": nbytes * 8 / (h * w), "perceptual_metric": perceptual.name,
            "temperature": point.temperature, "codec_sha256": csha, "enhancer_sha256": esha}
    rows = []
    for product, img, secs in (("decoded", decoded, math.nan), ("enhanced", enhanced, enhance_s)):
        rows.append({**base, "product": product, "psnr_db": psnr_db(image, img), "ms_ssim": ms_ssim(image, img).value,
                     "perceptual": perceptual.distance(image, img), "enhance_s": secs,
                     **{m.name: m.distance(image, img) for m in _secondary_metrics()}})
    return rows


def _job(args: tuple[ResolvedPoint, str, str, int]) -> list[dict]:
    return evaluate_image(*args)


# --------------------------------------------------------------------------------------- bookkeeping


def read_resumable_csv(path: Path, columns, writer: str, dtype: dict | None = None) -> pd.DataFrame:
    """The rows a resumable command (``writer``) wrote to ``path`` earlier (empty when there is none yet);
    ConfigError, saying what to do, for a file it cannot read or that another command wrote."""
    if not path.is_file():
        return pd.DataFrame(columns=list(columns))
    try:
        df = pd.read_csv(path, dtype=dtype)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); move it away to start afresh") from exc
    missing = set(columns) - set(df.columns)
    if missing:
        raise ConfigError(f"{path}: not written by {writer} (no {', '.join(sorted(missing))}); choose another -o")
    return df

def _read_done(path: Path, points: list[ResolvedPoint]) -> pd.DataFrame:
    """Rows already computed with the same model files (sha256), temperature and perceptual metrics; others
    are dropped."""
    from groundstation.metrics import PRIMARY

    df = read_resumable_csv(path, [c for c in PER_IMAGE_COLUMNS if c not in SECONDARY_PERCEPTUAL], "gsp evaluate")
    if df.empty or any(c not in df for c in SECONDARY_PERCEPTUAL):
        if len(df):  # written before those columns existed: recompute all
            log.warning("%s: rows without %s; recomputing them", path, ", ".join(SECONDARY_PERCEPTUAL))
        return df.iloc[:0].reindex(columns=PER_IMAGE_COLUMNS)
    keep = np.zeros(len(df), dtype=bool)
    for p in points:
        same = (df.rate_point == p.name) & (df.temperature == p.temperature)
        if p.codec_sha256:
            same &= df.codec_sha256 == p.codec_sha256
        if p.enhancer_sha256:
            same &= df.enhancer_sha256 == p.enhancer_sha256
        keep |= same.to_numpy()
    keep &= (df.perceptual_metric == PRIMARY).to_numpy()  # rows of another primary metric are recomputed
    stale = (~keep) & df.rate_point.isin([p.name for p in points]).to_numpy()
    if stale.any():
        log.warning("%s: %d rows were computed with other model files, temperatures or metrics; recomputing them",
                    path, int(stale.sum()))
    df = df[keep]
    complete = df.groupby(["rate_point", "image"]).product.transform("nunique") == 2  # both products present
    return df[complete].reset_index(drop=True)


def _rewrite(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, columns=PER_IMAGE_COLUMNS)


@dataclass(frozen=True)
class EvaluationResult:
    out: str
    images: int
    computed: int
    skipped: int
    summary: pd.DataFrame
    effects: pd.DataFrame
    files: dict[str, str]


def _image_names(image_dir: str | Path, limit: int | None) -> list[tuple[str, Path]]:
    from gsp.training.pairs import pair_names

    root = Path(image_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder of images")
    items = list(pair_names([root]).items())  # list_images raises a clear error for an empty folder
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit {limit}: give a positive number of images")
        if limit < len(items):  # evenly spaced over the sorted list, so every class folder is represented
            picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
            items = [items[i] for i in picks]
    return items


def _run_jobs(jobs: list[tuple], workers: int, fn: Callable[[tuple], list[dict]] = _job) -> Iterator[list[dict]]:
    """``fn(job)`` for every job, in order; in ``workers`` spawned processes (1 torch thread each) when > 1.
    ``fn`` must be a module-level function (it is pickled to the workers)."""
    if workers <= 1:
        for job in jobs:
            yield fn(job)
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker) as pool:
        yield from pool.map(fn, jobs)


def evaluate_folder(image_dir: str | Path, out: str | Path, points: list[ResolvedPoint], *,
                    limit: int | None = None, workers: int = 1, seed: int = 0,
                    reference: str | Path | None = None, progress: bool = False,
                    on_progress: Callable[[int, int], None] | None = None) -> EvaluationResult:
    """Evaluate every rate point on the images of ``image_dir``; write the tables and plots into ``out``.

    ``on_progress(done, total)`` is called before the first image and after each (``total``: the image
    evaluations this call computes, those already in ``per_image.csv`` left out)."""
    from tqdm import tqdm

    if workers < 1:
        raise ConfigError(f"--workers {workers}: give at least 1")
    ref = read_reference_points(reference) if reference else None
    items = _image_names(image_dir, limit)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / PER_IMAGE_CSV
    done = _read_done(csv_path, points)
    _rewrite(csv_path, done)  # drop stale or half-written rows before appending
    have = set(zip(done.rate_point, done.image))
    jobs = [(p, str(path), name, seed) for p in points for name, path in items if (p.name, name) not in have]
    skipped = len(points) * len(items) - len(jobs)
    if skipped:
        log.info("resuming: %d of %d image evaluations already in %s", skipped, len(points) * len(items), csv_path)
    bar = tqdm(total=len(jobs), desc="evaluate", unit="img", disable=not progress)
    if on_progress is not None:
        on_progress(0, len(jobs))
    try:
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=PER_IMAGE_COLUMNS)
            for done_jobs, rows in enumerate(_run_jobs(jobs, workers), 1):
                writer.writerows(rows)
                f.flush()
                os.fsync(f.fileno())
                if on_progress is not None:
                    on_progress(done_jobs, len(jobs))
                bar.update(1)
                bar.set_postfix(point=rows[0]["rate_point"], bpp=f"{rows[0]['bpp']:.3f}")
    finally:
        bar.close()
    per_image = pd.read_csv(csv_path)
    per_image = per_image[per_image.rate_point.isin([p.name for p in points])
                          & per_image.image.isin([n for n, _ in items])]
    summary = summarize(per_image, points)
    effects = paired_effects(per_image)
    files = {"per_image": str(csv_path), "csv": str(out / "evaluation.csv"), "markdown": str(out / "evaluation.md"),
             "rd_png": str(out / "rd.png"), "rate_perception_png": str(out / "rate_perception.png"),
             "examples_png": str(out / "examples.png")}
    with atomic_path(files["csv"]) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6g")
    metric = str(per_image.perceptual_metric.iloc[0]) if len(per_image) else "perceptual"
    write_text_atomic(files["markdown"], markdown_report(summary, effects, points, image_dir=str(image_dir), images=len(items), metric=metric,
                        reference=ref, files=files))
    plot_curves(summary, metric, files["rd_png"], files["rate_perception_png"], reference=ref)
    example_strip(points, str(items[len(items) // 2][1]), files["examples_png"], seed=seed)
    return EvaluationResult(out=str(out), images=len(items), computed=len(jobs), skipped=skipped,
                            summary=summary, effects=effects, files=files)


def example_strip(points: list[ResolvedPoint], path: str, png: str | Path, *, seed: int = 0,
                  crop: int = 128) -> None:
    """One row per rate point: the centre crop of one image as original | decoded | enhanced, 2x nearest."""
    from PIL import Image, ImageDraw

    rows = []
    for point in points:
        image, decoded, enhanced, nbytes, _ = _codec_and_enhancer(point, path, seed)
        h, w = image.shape[:2]
        c = min(crop, h, w)
        y0, x0 = (h - c) // 2, (w - c) // 2
        tiles = [a[y0:y0 + c, x0:x0 + c] for a in (image, decoded, enhanced)]
        row = Image.fromarray(np.concatenate(tiles, axis=1)).resize((6 * c, 2 * c), Image.NEAREST)
        ImageDraw.Draw(row).text((4, 4), f"{point.name}: {nbytes * 8 / (h * w):.3f} bpp | original, decoded, "
                                 f"enhanced T={point.temperature:g}", fill=(255, 255, 0))
        rows.append(np.asarray(row))
    with atomic_path(png) as tmp:
        Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG", optimize=True)


# ---------------------------------------------------------------------------------------- the tables

def summarize(per_image: pd.DataFrame, points: list[ResolvedPoint]) -> pd.DataFrame:
    """One row per (rate point, product): image means; enhancer seconds per megapixel on the enhanced row."""
    order = {p.name: i for i, p in enumerate(points)}
    lmbda = {p.name: p.lmbda for p in points}
    rows = []
    for (point, product), g in per_image.groupby(["rate_point", "product"], sort=False):
        mp = float((g.height * g.width).sum()) / 1e6
        rows.append({"rate_point": point, "lmbda": lmbda.get(point), "product": product, "images": len(g),
                     "bpp": g.bpp.mean(), "psnr_db": g.psnr_db.mean(), "ms_ssim": g.ms_ssim.mean(),
                     "perceptual": g.perceptual.mean(), "perceptual_metric": g.perceptual_metric.iloc[0],
                     **{c: g[c].mean() for c in SECONDARY_PERCEPTUAL},
                     "temperature": g.temperature.iloc[0] if product == "enhanced" else math.nan,
                     "enhance_s_per_mp": g.enhance_s.sum() / mp if product == "enhanced" and mp else math.nan})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["_o"] = df.rate_point.map(order)
    df["_p"] = (df["product"] == "enhanced").astype(int)
    return df.sort_values(["_o", "_p"]).drop(columns=["_o", "_p"]).reset_index(drop=True)


def paired_effects(per_image: pd.DataFrame) -> pd.DataFrame:
    """Enhanced minus decoded per image, per rate point: mean, 95% interval (normal approx.), images helped."""
    rows = []
    for point, g in per_image.groupby("rate_point", sort=False):
        if set(g["product"]) != {"decoded", "enhanced"}:
            continue
        wide = {m: g.pivot(index="image", columns="product", values=m)
                for m in ("psnr_db", "ms_ssim", "perceptual", *SECONDARY_PERCEPTUAL)}
        row = {"rate_point": point, "images": len(wide["psnr_db"])}
        for metric in ("psnr_db", "ms_ssim", "perceptual"):
            d = (wide[metric]["enhanced"] - wide[metric]["decoded"]).dropna()
            half = 1.96 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
            row[f"d_{metric}"] = d.mean() if len(d) else math.nan
            row[f"d_{metric}_ci95"] = half
        dec, enh = wide["perceptual"]["decoded"], wide["perceptual"]["enhanced"]
        row["perceptual_change_pct"] = 100 * (enh.mean() - dec.mean()) / dec.mean() if dec.mean() else math.nan
        row["perceptual_helped"] = int((enh < dec).sum())
        for m in SECONDARY_PERCEPTUAL:
            dec, enh = wide[m]["decoded"], wide[m]["enhanced"]
            row[f"{m}_change_pct"] = 100 * (enh.mean() - dec.mean()) / dec.mean() if dec.mean() else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def read_reference_points(path: str | Path) -> pd.DataFrame:
    """Reference points to compare with: CSV with ``label, bpp, psnr_db`` (+ ``ms_ssim``, ``perceptual_metric``,
    ``perceptual``, ``note``); an empty ``bpp`` keeps a point in the table but off the plots."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--reference {path}: file not found")
    try:
        df = pd.read_csv(path, comment="#")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--reference {path}: not a CSV table ({exc})") from exc
    missing = [c for c in REFERENCE_REQUIRED if c not in df.columns]
    if missing:
        raise ConfigError(f"--reference {path}: needs columns {', '.join(REFERENCE_REQUIRED)} (missing "
                          f"{', '.join(missing)}); optional: ms_ssim, perceptual_metric, perceptual, note")
    for col in ("bpp", "psnr_db", "ms_ssim", "perceptual"):
        if col in df.columns and not pd.api.types.is_numeric_dtype(df[col]):
            raise ConfigError(f"--reference {path}: column {col} must be numeric")
    for col in ("ms_ssim", "perceptual_metric", "perceptual", "note"):
        if col not in df.columns:
            df[col] = math.nan if col in ("ms_ssim", "perceptual") else ""
    df["perceptual_metric"] = df["perceptual_metric"].fillna("")
    df["note"] = df["note"].fillna("")
    return df


def _fmt(v, digits: int = 4) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(v)
    return f"{v:.{digits}f}"


def _md_table(df: pd.DataFrame, columns: list[tuple[str, str, int]]) -> list[str]:
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in df.to_dict("records"):
        lines.append("| " + " | ".join(_fmt(row.get(c), d) for c, _, d in columns) + " |")
    return lines


def markdown_report(summary: pd.DataFrame, effects: pd.DataFrame, points: list[ResolvedPoint], *, image_dir: str,
                    images: int, metric: str, reference: pd.DataFrame | None, files: dict[str, str]) -> str:
    lines = [f"# Evaluation on `{image_dir}` ({images} images)", "",
             f"Perceptual distance: `{metric}` (the primary; lower is better), with "
             f"{', '.join(f'`{c}`' for c in SECONDARY_PERCEPTUAL)} beside it (not on its scale). Means over images; bpp from the real ELIC "
             "bitstreams (the enhancer adds no bits). Enhancer time: seconds per megapixel, 1 CPU thread per "
             "worker process.", "", "## Rate points", ""]
    for p in points:
        lines.append(f"- `{p.name}`: codec `{p.codec}` (lambda {p.lmbda}), enhancer `{p.enhancer}`, "
                     f"temperature {p.temperature:g}")
    lines += ["", "## Table", ""]
    lines += _md_table(summary, [("rate_point", "rate point", 0), ("product", "product", 0), ("images", "images", 0),
                                 ("bpp", "bpp", 4), ("psnr_db", "PSNR dB", 2), ("ms_ssim", "MS-SSIM", 4),
                                 ("perceptual", metric, 4), *((c, c, 4) for c in SECONDARY_PERCEPTUAL),
                                 ("enhance_s_per_mp", "enhancer s/MP", 2)])
    lines += ["", "## Enhanced minus decoded (paired over images, 95% interval)", ""]
    if not effects.empty:
        eff = effects.copy()
        for m, d in (("psnr_db", 2), ("ms_ssim", 4), ("perceptual", 4)):
            eff[f"{m}_txt"] = [f"{a:+.{d}f} ± {b:.{d}f}" if not math.isnan(b) else f"{a:+.{d}f}"
                               for a, b in zip(eff[f"d_{m}"], eff[f"d_{m}_ci95"])]
        eff["helped"] = [f"{h}/{n}" for h, n in zip(eff.perceptual_helped, eff.images)]
        lines += _md_table(eff, [("rate_point", "rate point", 0), ("perceptual_txt", f"Δ {metric}", 0),
                                 ("perceptual_change_pct", f"Δ {metric} %", 1), ("helped", "images helped", 0),
                                 ("psnr_db_txt", "Δ PSNR dB", 0), ("ms_ssim_txt", "Δ MS-SSIM", 0),
                                 *((f"{c}_change_pct", f"Δ {c} %", 1) for c in SECONDARY_PERCEPTUAL)])
    if reference is not None and len(reference):
        lines += ["", "## Reference points", ""]
        lines += _md_table(reference, [("label", "label", 0), ("bpp", "bpp", 4), ("psnr_db", "PSNR dB", 2),
                                       ("ms_ssim", "MS-SSIM", 4), ("perceptual_metric", "perceptual metric", 0),
                                       ("perceptual", "perceptual", 4), ("note", "note", 0)])
        other = sorted({m for m in reference.perceptual_metric if m and m != metric})
        if other:
            lines += ["", f"Reference perceptual values measured with {', '.join(other)} are not on the scale of "
                          f"`{metric}`: they are listed, not drawn on the perceptual plot."]
    lines += ["", "## Plots", "", f"![rate-distortion]({Path(files['rd_png']).name})",
              f"![rate-perception]({Path(files['rate_perception_png']).name})", "",
              "Centre crops of one image (the middle of the sorted list), 2x: original, decoded, enhanced.", "",
              f"![examples]({Path(files['examples_png']).name})", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the plots

def plot_curves(summary: pd.DataFrame, metric: str, rd_png: str | Path, rp_png: str | Path, *,
                reference: pd.DataFrame | None = None) -> None:
    """``rd_png``: bpp vs PSNR and MS-SSIM; ``rp_png``: bpp vs the perceptual distance; decoded vs enhanced."""
    from groundstation.plots import plt

    style = {"decoded": dict(marker="o", ls="-", label="decoded (ELIC)"),
             "enhanced": dict(marker="s", ls="--", label="enhanced (INN-RSIC)")}

    def curves(ax, col: str) -> None:
        for product, g in summary.groupby("product"):
            g = g.sort_values("bpp")
            ax.plot(g.bpp, g[col], **style.get(product, dict(marker=".", label=product)))
        ax.set_xlabel("bpp")
        ax.grid(alpha=0.3)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    curves(axes[0], "psnr_db")
    axes[0].set_ylabel("PSNR (dB)")
    curves(axes[1], "ms_ssim")
    axes[1].set_ylabel("MS-SSIM")
    if reference is not None and len(reference):
        named: set[str] = set()
        for r in reference[reference.bpp.notna()].itertuples():
            axes[0].scatter([r.bpp], [r.psnr_db], marker="x", color="k")
            if r.label in named:
                continue
            named.add(r.label)
            axes[0].annotate(str(r.label), (r.bpp, r.psnr_db), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if not math.isnan(r.ms_ssim):
                axes[1].scatter([r.bpp], [r.ms_ssim], marker="x", color="k")
    axes[0].legend(fontsize=8)
    fig.suptitle("Rate-distortion")
    fig.tight_layout()
    save_figure_atomic(fig, rd_png, dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    curves(ax, "perceptual")
    ax.set_ylabel(f"{metric} (lower is better)")
    if reference is not None and len(reference):
        same = reference[(reference.perceptual_metric == metric) & reference.perceptual.notna()
                         & reference.bpp.notna()]
        for r in same.itertuples():
            ax.scatter([r.bpp], [r.perceptual], marker="x", color="k")
            ax.annotate(str(r.label), (r.bpp, r.perceptual), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.legend(fontsize=8)
    ax.set_title("Rate-perception")
    fig.tight_layout()
    save_figure_atomic(fig, rp_png, dpi=80)
    plt.close(fig)
