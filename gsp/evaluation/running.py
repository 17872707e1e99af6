"""Running the paper's evaluation on an image folder: ELIC at each rate point, then the enhancer, against the originals.

``gsp evaluate IMAGE_DIR -o OUT [--rate-points NAME,...]`` runs :func:`evaluate_folder`. For every rate point
(a codec, the enhancer trained behind it and its temperature; ``configs/models.yaml`` ``rate_points``) and
every image: real ELIC compress and decompress (whole image, padded to 64, 1 thread), the enhancer's inverse at
the rate point's temperature, then PSNR, MS-SSIM and the perceptual distances of both against the original:
LPIPS-Alex, the paper's metric and the primary one (column ``perceptual``, named in ``perceptual_metric``), and
beside it LPIPS-VGG and ST-LPIPS-Alex (columns ``lpips_vgg``, ``stlpips_alex``).
The enhancer adds no bits, so decoded and enhanced share the bpp.

With ``--tile-size PX`` (:class:`Tiling`) every image is coded as the satellite codes a scene, each PX codec
tile on its own, and decoded as the station decodes a pass (``--decode-mode``: the station's, by default the
seamless ``mosaic``; ``tile`` for the tile-wise decoding): bpp, PSNR and the perceptual distances are then
those of the station's products, and the per-image rows also hold the seam ratio of each product and of the
original (:func:`groundstation.metrics.seams.seam_ratio`: mean step across tile boundaries over mean step
inside tiles; a seamless product is near the original's).

OUT receives

* ``per_image.csv``: one row per (rate point, image, product); appended as images finish, so an interrupted
  run resumes where it stopped (rows of another model file, by sha256, are recomputed);
* ``evaluation.csv``: one row per (rate point, product): means over images, the enhancer's seconds per
  megapixel;
* ``evaluation.md``: that table, the enhancer's effect per rate point (mean paired difference with a 95%
  interval, and on how many images it helped), the comparison with reference points if given;
* ``rd.png`` (bpp vs PSNR and MS-SSIM) and ``rate_perception.png`` (bpp vs perceptual distance);
* ``examples.png``: centre crops of one image per rate point, original | decoded | enhanced.

With ``--sweep`` (:mod:`gsp.evaluation.sweep`) the same decodes are also swept along the operating knob
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
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from groundstation.errors import ConfigError
from groundstation.fileio import atomic_path, write_text_atomic

from .plots import example_strip, plot_curves
from .points import ResolvedPoint
from .report import markdown_report, read_reference_points
from gsp.tiling import WHOLE, Tiling

from .stats import SECONDARY_PERCEPTUAL, paired_effects, summarize

__all__ = ["CACHE", "PER_IMAGE_COLUMNS", "PER_IMAGE_CSV", "WHOLE", "EvaluationResult", "Tiling",
           "codec_and_enhancer", "evaluate_folder", "evaluate_image", "image_names", "original_and_decoded",
           "read_resumable_csv", "run_jobs"]

log = logging.getLogger(__name__)

PER_IMAGE_CSV = "per_image.csv"
PER_IMAGE_COLUMNS = ["rate_point", "image", "product", "height", "width", "bytes", "bpp", "psnr_db", "ms_ssim",
                     "perceptual", "perceptual_metric", "enhance_s", "temperature", "codec_sha256",
                     "enhancer_sha256", "lpips_vgg", "stlpips_alex", "tiling", "seam_ratio", "seam_ratio_source",
                     "strength"]
#: Columns a per-image file of an older ``gsp evaluate`` may lack (its rows are whole-image ones at strength 1,
#: kept).
_LATER_COLUMNS = ("tiling", "seam_ratio", "seam_ratio_source", "strength")




class _ProcessCache:
    """What one process loads once and reuses: the models of one rate point at a time (a new point replaces the
    last, so memory stays flat) and the perceptual metrics by name. The only cache of the evaluation and the
    sweep; each worker process has its own."""

    def __init__(self) -> None:
        self._point_key: str | None = None
        self._point: tuple | None = None
        self._metrics: dict[str, object] = {}

    def models(self, point: ResolvedPoint) -> tuple:
        """(TileCodec, enhancer, codec sha256, enhancer sha256) of ``point``."""
        from enhancer.checkpoint import load_enhancer

        from groundstation.codec import TileCodec, load_codec
        from groundstation.registry import mosaic_g_s_sha256

        key = f"{point.codec_path}|{point.enhancer_path}"
        if key != self._point_key:
            self._point_key, self._point = None, None
            loaded = load_codec(point.codec_path, point.codec_sha256)
            model, _, esha = load_enhancer(point.enhancer_path, point.enhancer_sha256)
            tc = TileCodec(loaded, threads=1, mosaic_g_s=mosaic_g_s_sha256(loaded.sha256))  # used in mosaic mode
            self._point_key, self._point = key, (tc, model.eval(), loaded.sha256, esha)
        return self._point

    def metric(self, name: str):
        """A perceptual metric by name: ``perceptual`` (:meth:`PerceptualMetric.auto`, the evaluation's primary,
        LPIPS-Alex), ``perceptual-cached`` (the same, reference features cached: the sweep's), ``stlpips_vgg``
        (cached), or a name of :data:`SECONDARY_PERCEPTUAL`."""
        if name not in self._metrics:
            from groundstation.metrics import PerceptualMetric
            from groundstation.metrics.backends import cached_reference, stlpips_vgg

            builders = {"perceptual": PerceptualMetric.auto,
                        "perceptual-cached": lambda: cached_reference(PerceptualMetric.auto()),
                        "stlpips_vgg": lambda: cached_reference(stlpips_vgg()),
                        **{n: (lambda n=n: PerceptualMetric.auto(backend=n)) for n in SECONDARY_PERCEPTUAL}}
            self._metrics[name] = builders[name]()
        return self._metrics[name]


#: This process's models and metrics.
CACHE = _ProcessCache()


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def original_and_decoded(point: ResolvedPoint, path: str, tiling: Tiling = WHOLE):
    """(original, decoded, bytes) of one image at one rate point: real ELIC compress and decompress, of the
    whole image or tile by tile (``tiling``)."""
    from groundstation.images import load_rgb

    tc, *_ = CACHE.models(point)
    try:
        image = load_rgb(path).copy()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read as an RGB image ({exc})") from exc
    decoded, nbytes = tiling.roundtrip(tc, image, what=path)  # a persistent desync is a DesyncError (exit 2)
    return image, decoded, nbytes


def codec_and_enhancer(point: ResolvedPoint, path: str, seed: int, tiling: Tiling = WHOLE):
    """(original, decoded, enhanced, bytes, enhance seconds) of one image at one rate point."""
    from enhancer.inference import enhance_array

    _, model, *_ = CACHE.models(point)
    image, decoded, nbytes = original_and_decoded(point, path, tiling)
    t0 = time.perf_counter()
    enhanced = enhance_array(model, decoded, seed=seed, temperature=point.temperature, strength=point.strength)
    return image, decoded, enhanced, nbytes, time.perf_counter() - t0


def evaluate_image(point: ResolvedPoint, path: str, name: str, seed: int = 0, tiling: Tiling = WHOLE) -> list[dict]:
    """Compress, decompress and enhance one image at one rate point: two rows (decoded, enhanced)."""
    from groundstation.metrics import ms_ssim, psnr_db
    from groundstation.metrics.seams import seam_ratio

    _, _, csha, esha = CACHE.models(point)
    perceptual = CACHE.metric("perceptual")
    image, decoded, enhanced, nbytes, enhance_s = codec_and_enhancer(point, path, seed, tiling)
    h, w = image.shape[:2]

    def seams(img: np.ndarray) -> float:
        return seam_ratio(img, tiling.tile_size) if tiling.tile_size else math.nan

    base = {"rate_point": point.name, "image": name, "height": h, "width": w, "bytes": nbytes,
            "bpp": nbytes * 8 / (h * w), "perceptual_metric": perceptual.name,
            "temperature": point.temperature, "strength": point.strength, "codec_sha256": csha, "enhancer_sha256": esha,
            "tiling": tiling.label_for(csha), "seam_ratio_source": seams(image)}
    rows = []
    for product, img, secs in (("decoded", decoded, math.nan), ("enhanced", enhanced, enhance_s)):
        rows.append({**base, "product": product, "psnr_db": psnr_db(image, img), "ms_ssim": ms_ssim(image, img).value,
                     "perceptual": perceptual.distance(image, img), "enhance_s": secs, "seam_ratio": seams(img),
                     **{m: CACHE.metric(m).distance(image, img) for m in SECONDARY_PERCEPTUAL}})
    return rows


def _job(args: tuple[ResolvedPoint, str, str, int, Tiling]) -> list[dict]:
    return evaluate_image(*args)


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


def _read_done(path: Path, points: list[ResolvedPoint], tiling: Tiling = WHOLE) -> pd.DataFrame:
    """Rows already computed with the same model files (sha256), operating point, perceptual metrics and tiling;
    others are dropped."""
    from groundstation.metrics import PRIMARY

    df = read_resumable_csv(path, [c for c in PER_IMAGE_COLUMNS if c not in (*SECONDARY_PERCEPTUAL, *_LATER_COLUMNS)],
                            "gsp evaluate")
    if "tiling" not in df:  # written before tiled coding existed: whole images
        df = df.assign(tiling=WHOLE.label, seam_ratio=math.nan, seam_ratio_source=math.nan)
    if "strength" not in df:  # written before the strength knob: all of the enhancer's change
        df = df.assign(strength=1.0)
    if df.empty or any(c not in df for c in SECONDARY_PERCEPTUAL):
        if len(df):  # written before those columns existed: recompute all
            log.warning("%s: rows without %s; recomputing them", path, ", ".join(SECONDARY_PERCEPTUAL))
        return df.iloc[:0].reindex(columns=PER_IMAGE_COLUMNS)
    keep = np.zeros(len(df), dtype=bool)
    for p in points:
        same = (df.rate_point == p.name) & (df.temperature == p.temperature) & (df.strength == p.strength)
        same &= df.tiling == tiling.label_for(p.codec_sha256 or None)  # (and the g_s of a mosaic)
        if p.codec_sha256:
            same &= df.codec_sha256 == p.codec_sha256
        if p.enhancer_sha256:
            same &= df.enhancer_sha256 == p.enhancer_sha256
        keep |= same.to_numpy()
    keep &= (df.perceptual_metric == PRIMARY).to_numpy()  # rows of another primary metric are recomputed
    stale = (~keep) & df.rate_point.isin([p.name for p in points]).to_numpy()
    if stale.any():
        log.warning("%s: %d rows were computed with other model files, operating points, metrics or tiling; "
                    "recomputing them", path, int(stale.sum()))
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


def image_names(image_dir: str | Path, limit: int | None) -> list[tuple[str, Path]]:
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


def run_jobs(jobs: list[tuple], workers: int, fn: Callable[[tuple], list[dict]] = _job) -> Iterator[list[dict]]:
    """``fn(job)`` for every job, in order; in ``workers`` spawned processes (1 torch thread each) when > 1.
    ``fn`` must be a module-level function (it is pickled to the workers)."""
    if workers <= 1:
        for job in jobs:
            yield fn(job)
        return
    import multiprocessing as mp

    from flows.access import leave_sigint_to_the_runner

    leave_sigint_to_the_runner()  # in a served run (evaluate): Ctrl-C in gsp serve's terminal is gsp serve's
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker) as pool:
        yield from pool.map(fn, jobs)


def _examples(points: list[ResolvedPoint], path: str, seed: int,
              tiling: Tiling = WHOLE) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(label, original, decoded, enhanced) of one image at every rate point, for :func:`plots.example_strip`."""
    rows = []
    for point in points:
        image, decoded, enhanced, nbytes, _ = codec_and_enhancer(point, path, seed, tiling)
        h, w = image.shape[:2]
        rows.append((f"{point.name}: {nbytes * 8 / (h * w):.3f} bpp | original, decoded, enhanced "
                     f"{point.operating_label}", image, decoded, enhanced))
    return rows


def evaluate_folder(image_dir: str | Path, out: str | Path, points: list[ResolvedPoint], *,
                    limit: int | None = None, workers: int = 1, seed: int = 0,
                    reference: str | Path | None = None, progress: bool = False,
                    on_progress: Callable[[int, int], None] | None = None,
                    tiling: Tiling = WHOLE) -> EvaluationResult:
    """Evaluate every rate point on the images of ``image_dir``; write the tables and plots into ``out``.

    ``on_progress(done, total)`` is called before the first image and after each (``total``: the image
    evaluations this call computes, those already in ``per_image.csv`` left out)."""
    from tqdm import tqdm

    if workers < 1:
        raise ConfigError(f"--workers {workers}: give at least 1")
    ref = read_reference_points(reference) if reference else None
    items = image_names(image_dir, limit)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / PER_IMAGE_CSV
    done = _read_done(csv_path, points, tiling)
    _rewrite(csv_path, done)  # drop stale or half-written rows before appending
    have = set(zip(done.rate_point, done.image))
    jobs = [(p, str(path), name, seed, tiling) for p in points for name, path in items if (p.name, name) not in have]
    skipped = len(points) * len(items) - len(jobs)
    if skipped:
        log.info("resuming: %d of %d image evaluations already in %s", skipped, len(points) * len(items), csv_path)
    bar = tqdm(total=len(jobs), desc="evaluate", unit="img", disable=not progress)
    if on_progress is not None:
        on_progress(0, len(jobs))
    try:
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=PER_IMAGE_COLUMNS)
            for done_jobs, rows in enumerate(run_jobs(jobs, workers), 1):
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
                          & per_image.image.isin([n for n, _ in items])
                          & per_image.tiling.isin({tiling.label_for(p.codec_sha256 or None) for p in points})]
    summary = summarize(per_image, points)
    effects = paired_effects(per_image)
    files = {"per_image": str(csv_path), "csv": str(out / "evaluation.csv"), "markdown": str(out / "evaluation.md"),
             "rd_png": str(out / "rd.png"), "rate_perception_png": str(out / "rate_perception.png"),
             "examples_png": str(out / "examples.png")}
    with atomic_path(files["csv"]) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6g")
    metric = str(per_image.perceptual_metric.iloc[0]) if len(per_image) else "perceptual"
    write_text_atomic(files["markdown"], markdown_report(summary, effects, points, image_dir=str(image_dir),
                                                         images=len(items), metric=metric, reference=ref, files=files,
                                                         tile_size=tiling.tile_size,
                                                         decode_mode=tiling.decode_mode))
    plot_curves(summary, metric, files["rd_png"], files["rate_perception_png"], reference=ref)
    example_strip(_examples(points, str(items[len(items) // 2][1]), seed, tiling), files["examples_png"])
    return EvaluationResult(out=str(out), images=len(items), computed=len(jobs), skipped=skipped,
                            summary=summary, effects=effects, files=files)
