"""The perception-distortion sweep of ``gsp evaluate --sweep``: the enhancer's knob against two trivial controls.

The enhancer buys a lower perceptual distance with PSNR, and its temperature sets how much. Whether that trade is
worth anything is only visible against operations anyone could apply to the decoded image at the same PSNR cost.
For every rate point and image (the evaluation's own decode: real ELIC compress/decompress of the whole image, one
thread) :func:`sweep_folder` computes PSNR and the evaluation's perceptual distance (and, as chosen,
ST-LPIPS VGG beside it) of these variants of the decoded image:

* ``decoded``;
* ``enhanced:T=<t>``: the rate point's enhancer at each temperature of the sweep, seed-``seed`` latent field as in
  the evaluation; the registry's temperature of the rate point (its chosen operating point) is always swept;
* ``noise:<sigma>``: the decoded image plus Gaussian noise of std ``sigma`` DN (seeded by the image name, as the
  round-3 sweep), clipped and rounded;
* ``unsharp:r<radius>:<percent>``: PIL's unsharp mask of the decoded image (threshold 0).

OUT receives

* ``perception_distortion.csv``: one row per (rate point, image, variant), appended as images finish; a rerun
  computes only the rows that are missing (rows of other model files, seed or perceptual backend, and rows that
  lack an ST-LPIPS VGG value now asked for, are recomputed);
* ``perception_distortion_summary.csv``: one row per (rate point, variant): means over images and the paired
  change against decoded;
* ``perception_distortion.md``: the chosen point's change (paired 95 % intervals, Student t), each control at the
  chosen point's PSNR cost, and every variant of the sweep;
* ``perception_distortion.png``: per rate point, mean perceptual distance against mean PSNR: the enhancer's curve
  over temperature, the controls' curves over strength, the decoded point, the registry's point (star) and each
  control at that point's PSNR cost (x).

**Control at equal PSNR cost** (the method of ``benchmarks/results/evaluation-v3/report.py``): a control's
strengths, with strength 0 being the decoded image itself (cost 0), are ordered, and its mean PSNR cost over the
images is interpolated linearly in strength to the enhancer's mean cost (:func:`matched_strength`, the first
crossing); every image's values are then interpolated at that strength (:func:`interpolate_at`), so the comparison
with the enhancer stays paired image by image. A cost beyond the swept strengths is reported, never extrapolated.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from groundstation.errors import ConfigError
from groundstation.fileio import atomic_path, save_figure_atomic, write_text_atomic

from gsp.evaluation import ResolvedPoint, _image_names, _models, _original_and_decoded, _run_jobs, read_resumable_csv

__all__ = [
    "DEFAULT_NOISE",
    "DEFAULT_TEMPERATURES",
    "DEFAULT_UNSHARP",
    "SWEEP_COLUMNS",
    "SweepResult",
    "SweepSpec",
    "Variant",
    "add_gaussian_noise",
    "controls_at_cost",
    "interpolate_at",
    "matched_strength",
    "parse_values",
    "sweep_folder",
    "unsharp_mask",
]

log = logging.getLogger(__name__)

DEFAULT_TEMPERATURES = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_NOISE = (2.0, 3.0, 4.0, 6.0)  # DN std
DEFAULT_UNSHARP = (50.0, 100.0, 150.0, 250.0)  # percent amount
DEFAULT_UNSHARP_RADIUS = 1.0
VGG_MODES = ("none", "enhanced", "all")
VGG_MIN_SIZE = 21

SWEEP_CSV = "perception_distortion.csv"
SWEEP_COLUMNS = ["rate_point", "image", "variant", "family", "strength", "height", "width", "psnr_db", "perceptual",
                 "perceptual_metric", "stlpips_vgg", "rms_change_dn", "seconds", "seed", "codec_sha256",
                 "enhancer_sha256"]
FAMILIES = ("decoded", "enhanced", "noise", "unsharp")
CONTROLS = {"noise": "Gaussian noise", "unsharp": "unsharp mask"}


# ------------------------------------------------------------------------------------- what is swept

@dataclass(frozen=True)
class Variant:
    """One variant of the decoded image: ``family`` (decoded, enhanced, noise, unsharp) at ``strength``
    (temperature, noise std in DN, unsharp amount in percent); ``radius`` for the unsharp mask."""

    family: str
    strength: float = 0.0
    radius: float = 0.0

    @property
    def label(self) -> str:
        if self.family == "decoded":
            return "decoded"
        if self.family == "enhanced":
            return f"enhanced:T={self.strength:g}"
        if self.family == "noise":
            return f"noise:{self.strength:g}"
        return f"unsharp:r{self.radius:g}:{self.strength:g}"


def parse_values(text: str, option: str, *, positive: bool = False, integer: bool = False,
                 allow_none: bool = False) -> tuple[float, ...]:
    """Comma-separated numbers of a command-line option, sorted and deduplicated; a ConfigError naming the option
    for anything else. ``allow_none``: ``none`` (or an empty text) means no value at all."""
    text = (text or "").strip()
    if allow_none and text.lower() in ("", "none"):
        return ()
    values = []
    for item in text.split(","):
        item = item.strip()
        try:
            v = float(item)
        except ValueError:
            raise ConfigError(f"{option} {text}: {item!r} is not a number; give comma-separated numbers like "
                              f"0,0.5,1{' (or none)' if allow_none else ''}") from None
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise ConfigError(f"{option} {text}: {item} is out of range; give finite values "
                              f"{'> 0' if positive else '>= 0'}")
        if integer and v != round(v):
            raise ConfigError(f"{option} {text}: {item} is not a whole number (PIL's unsharp amount is in whole "
                              "percent)")
        values.append(v)
    if not values:
        raise ConfigError(f"{option}: give at least one value")
    return tuple(sorted(set(values)))


#: The operating-point rule fixed before the reported numbers were looked at (benchmarks/results/evaluation-v3/
#: RULE.md): per rate point, among the temperatures whose mean PSNR cost is at most this many dB (0.2 dB of
#: margin below the goal's 0.8 dB), the one with the lowest mean perceptual distance; if none qualifies, the
#: temperature with the smallest cost. Run it on the selection subset; the registry records its choice.
RULE_MAX_COST_DB = 0.6


@dataclass(frozen=True)
class SweepSpec:
    """What the sweep covers: the enhancer's temperatures, the noise stds (DN), the unsharp amounts (percent) at
    ``unsharp_radius``, and which variants also get ST-LPIPS VGG (``none``; ``enhanced``: decoded and enhanced;
    ``all``)."""

    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    noise: tuple[float, ...] = DEFAULT_NOISE
    unsharp: tuple[float, ...] = DEFAULT_UNSHARP
    unsharp_radius: float = DEFAULT_UNSHARP_RADIUS
    vgg: str = "enhanced"
    rule_max_cost_db: float = RULE_MAX_COST_DB

    def __post_init__(self) -> None:
        if not self.temperatures:
            raise ConfigError("--temperatures: give at least one temperature")
        if any(not (math.isfinite(t) and t >= 0) for t in self.temperatures):
            raise ConfigError(f"--temperatures {self.temperatures}: give finite values >= 0")
        if any(not (math.isfinite(s) and s > 0) for s in self.noise):
            raise ConfigError(f"--noise {self.noise}: give finite noise stds > 0 (DN)")
        if any(not (math.isfinite(a) and a > 0 and a == round(a)) for a in self.unsharp):
            raise ConfigError(f"--unsharp {self.unsharp}: give whole percent amounts > 0")
        if not (math.isfinite(self.unsharp_radius) and self.unsharp_radius > 0):
            raise ConfigError(f"--unsharp-radius {self.unsharp_radius}: give a radius > 0 (pixels)")
        if not (math.isfinite(self.rule_max_cost_db) and self.rule_max_cost_db > 0):
            raise ConfigError(f"--rule-max-cost {self.rule_max_cost_db}: give a PSNR cost > 0 (dB)")
        if self.vgg not in VGG_MODES:
            raise ConfigError(f"--sweep-vgg {self.vgg}: choose one of {', '.join(VGG_MODES)}")

    @property
    def vgg_families(self) -> tuple[str, ...]:
        return {"none": (), "enhanced": ("decoded", "enhanced"), "all": FAMILIES}[self.vgg]

    def variants(self, chosen_temperature: float) -> list[Variant]:
        """Every variant for a rate point whose registry temperature is ``chosen_temperature`` (always swept)."""
        temps = sorted(set(self.temperatures) | {float(chosen_temperature)})
        return ([Variant("decoded")] + [Variant("enhanced", t) for t in temps]
                + [Variant("noise", s) for s in sorted(set(self.noise))]
                + [Variant("unsharp", a, self.unsharp_radius) for a in sorted(set(self.unsharp))])


def noise_seed(name: str) -> int:
    """The noise seed of an image: its name's last four bytes, little-endian (as the round-3 sweep)."""
    return int.from_bytes(name.encode()[-4:], "little")


def add_gaussian_noise(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """uint8 image plus Gaussian noise of std ``sigma`` DN, clipped to [0, 255] and rounded."""
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).round().astype(np.uint8)


def unsharp_mask(image: np.ndarray, radius: float, percent: float) -> np.ndarray:
    """PIL's unsharp mask (threshold 0) of a uint8 RGB image."""
    from PIL import Image, ImageFilter

    f = ImageFilter.UnsharpMask(radius=radius, percent=int(round(percent)), threshold=0)
    return np.asarray(Image.fromarray(image).filter(f))


# ----------------------------------------------------------------------------------------- metrics

class _CachedReference:
    """Wraps an (ST-)LPIPS v0.1 non-spatial model so the reference side's features are computed once per
    reference batch: the same numbers as the model's forward, at about half the cost when one original is
    compared with many variants (the reference is the first argument of :meth:`PerceptualMetric.distance`)."""

    def __init__(self, model, normalize, spatial_average) -> None:
        self.model = model
        self._normalize = normalize
        self._spatial_average = spatial_average
        self._cache: dict[tuple, list] = {}

    def __call__(self, in0, in1):
        lp = self.model
        key = (tuple(in0.shape), hashlib.blake2b(in0.numpy().tobytes(), digest_size=16).digest())
        if key not in self._cache:
            if len(self._cache) >= 16:
                self._cache.clear()
            self._cache[key] = [self._normalize(o) for o in lp.net.forward(lp.scaling_layer(in0))]
        feats0 = self._cache[key]
        outs1 = lp.net.forward(lp.scaling_layer(in1))
        val = 0
        for kk in range(lp.L):
            diff = (feats0[kk] - self._normalize(outs1[kk])) ** 2
            val = val + self._spatial_average(lp.lins[kk](diff), keepdim=True)
        return val


def cached_reference(metric):
    """``metric`` with its reference features cached when it is ST-LPIPS (v0.1, linear layers, not spatial);
    any other model is returned unchanged."""
    try:
        from stlpips_pytorch import stlpips, utils
    except ImportError:  # pragma: no cover - stlpips-pytorch is a dependency
        return metric
    model = metric.model
    if (isinstance(model, stlpips.LPIPS) and model.version == "0.1" and model.lpips and not model.spatial
            and metric.device.type == "cpu"):
        metric.model = _CachedReference(model, utils.normalize_tensor, stlpips.spatial_average)
    return metric


def stlpips_vgg(device: str = "cpu"):
    """ST-LPIPS, VGG16 shift-tolerant variant (all weights ship in stlpips-pytorch), the evaluation's tiling;
    the column ``stlpips_vgg``."""
    from groundstation.metrics import PerceptualMetric
    from groundstation.metrics.perceptual import _check_fully_loaded, _version

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from stlpips_pytorch import stlpips

        model = stlpips.LPIPS(net="vgg", variant="shift_tolerant", verbose=False)
    weights = Path(stlpips.__file__).parent / "weights" / "vST0.0" / "vgg_shift_tolerant.pth"
    _check_fully_loaded(model, weights)
    metric = PerceptualMetric("stlpips_alex", "", model, min_size=VGG_MIN_SIZE, device=device)
    metric.name = "stlpips_vgg"  # PerceptualMetric knows only the columns of the evaluation's own backends
    metric.description = (f"ST-LPIPS, VGG16 shift-tolerant, weights {weights} (stlpips-pytorch "
                          f"{_version('stlpips-pytorch')}); tiles <= 256x256 px, area-weighted mean; lower is better")
    return metric


_METRICS: dict[str, object] = {}


def _sweep_metrics(vgg: bool):
    """(the evaluation's perceptual metric, ST-LPIPS VGG or None), both with cached references; once per process."""
    from groundstation.metrics import PerceptualMetric

    if "primary" not in _METRICS:
        _METRICS["primary"] = cached_reference(PerceptualMetric.auto())
    if vgg and "vgg" not in _METRICS:
        _METRICS["vgg"] = cached_reference(stlpips_vgg())
    return _METRICS["primary"], (_METRICS["vgg"] if vgg else None)


def _metric_name() -> str:
    """The column name of the metric :meth:`PerceptualMetric.auto` builds (the primary), without loading it."""
    from groundstation.metrics import PRIMARY

    return PRIMARY


# ---------------------------------------------------------------------------------------- the work

def make_variant(variant: Variant, decoded: np.ndarray, *, name: str, model=None, seed: int = 0) -> np.ndarray:
    """The uint8 image of ``variant`` made from ``decoded`` (``model``: the enhancer, for ``enhanced``)."""
    if variant.family == "decoded":
        return decoded
    if variant.family == "enhanced":
        from enhancer.inference import enhance_array

        return enhance_array(model, decoded, seed=seed, temperature=variant.strength)
    if variant.family == "noise":
        return add_gaussian_noise(decoded, variant.strength, noise_seed(name))
    if variant.family == "unsharp":
        return unsharp_mask(decoded, variant.radius, variant.strength)
    raise ValueError(f"unknown variant family {variant.family!r}")


def sweep_image(point: ResolvedPoint, path: str, name: str, variants: Sequence[Variant], seed: int = 0,
                vgg_families: Sequence[str] = ()) -> list[dict]:
    """Decode one image at one rate point (real ELIC), then one row per variant: PSNR, perceptual distances."""
    from groundstation.metrics import psnr_db

    _, model, csha, esha, _ = _models(point)
    image, decoded, _ = _original_and_decoded(point, path)
    primary, vgg = _sweep_metrics(any(v.family in vgg_families for v in variants))
    h, w = image.shape[:2]
    rows = []
    for v in variants:
        t0 = time.perf_counter()
        img = make_variant(v, decoded, name=name, model=model, seed=seed)
        rows.append({
            "rate_point": point.name, "image": name, "variant": v.label, "family": v.family, "strength": v.strength,
            "height": h, "width": w, "psnr_db": psnr_db(image, img), "perceptual": primary.distance(image, img),
            "perceptual_metric": primary.name,
            "stlpips_vgg": vgg.distance(image, img) if vgg is not None and v.family in vgg_families else math.nan,
            "rms_change_dn": float(np.sqrt(np.mean((img.astype(np.float64) - decoded) ** 2))),
            "seconds": time.perf_counter() - t0, "seed": seed, "codec_sha256": csha,
            "enhancer_sha256": esha if v.family == "enhanced" else ""})
    return rows


def _sweep_job(args: tuple) -> list[dict]:
    return sweep_image(*args)


def _read_done(path: Path, points: list[ResolvedPoint], *, metric: str, seed: int,
               vgg_families: Sequence[str]) -> pd.DataFrame:
    """Rows already computed that still hold for these models, seed, backend and VGG choice; others are dropped."""
    df = read_resumable_csv(path, SWEEP_COLUMNS, "gsp evaluate --sweep",
                            dtype={"codec_sha256": str, "enhancer_sha256": str})
    if df.empty:
        return df
    df["enhancer_sha256"] = df["enhancer_sha256"].fillna("")
    stale = np.zeros(len(df), dtype=bool)
    for p in points:
        mine = df.rate_point == p.name
        bad = df.perceptual_metric != metric
        if p.codec_sha256:
            bad |= df.codec_sha256 != p.codec_sha256
        enh = df.family == "enhanced"
        if p.enhancer_sha256:
            bad |= enh & (df.enhancer_sha256 != p.enhancer_sha256)
        bad |= enh & (df.seed != seed)
        big = np.minimum(df.height, df.width) >= VGG_MIN_SIZE
        bad |= df.family.isin(list(vgg_families)) & df.stlpips_vgg.isna() & big
        stale |= (mine & bad).to_numpy()
    if stale.any():
        log.warning("%s: %d rows were computed with other model files, seed or metrics; recomputing them",
                    path, int(stale.sum()))
    return df[~stale].drop_duplicates(["rate_point", "image", "variant"], keep="last").reset_index(drop=True)


@dataclass(frozen=True)
class SweepResult:
    out: str
    images: int
    computed: int
    skipped: int
    summary: pd.DataFrame
    chosen: pd.DataFrame
    controls: pd.DataFrame
    files: dict[str, str]
    rule: pd.DataFrame = field(default_factory=pd.DataFrame)


def sweep_folder(image_dir: str | Path, out: str | Path, points: list[ResolvedPoint], spec: SweepSpec | None = None,
                 *, limit: int | None = None, workers: int = 1, seed: int = 0,
                 progress: bool = False, on_progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Sweep every rate point's enhancer temperature and the controls on the images of ``image_dir`` (the same
    images as :func:`gsp.evaluation.evaluate_folder` with the same ``limit``); write the files into ``out``.
    ``on_progress(done, total)``: rows computed so far of those this call computes (before the first, after
    each image).

    Each point's ``temperature`` is its chosen operating point (the registry's): always swept, and marked."""
    from tqdm import tqdm

    spec = spec or SweepSpec()
    if workers < 1:
        raise ConfigError(f"--workers {workers}: give at least 1")
    if not points:
        raise ConfigError("no rate points to sweep")
    items = _image_names(image_dir, limit)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / SWEEP_CSV
    vgg_families = spec.vgg_families
    done = _read_done(csv_path, points, metric=_metric_name(), seed=seed, vgg_families=vgg_families)
    with atomic_path(csv_path) as tmp:  # drop stale rows before appending
        done.to_csv(tmp, index=False, columns=SWEEP_COLUMNS)
    have = set(zip(done.rate_point, done.image, done.variant))
    jobs, total = [], 0
    for p in points:
        variants = spec.variants(p.temperature)
        total += len(variants) * len(items)
        for name, path in items:
            todo = tuple(v for v in variants if (p.name, name, v.label) not in have)
            if todo:
                jobs.append((p, str(path), name, todo, seed, vgg_families))
    computed = sum(len(j[3]) for j in jobs)
    if total - computed:
        log.info("resuming: %d of %d sweep rows already in %s", total - computed, total, csv_path)
    bar = tqdm(total=computed, desc="sweep", unit="variant", disable=not progress)
    done_rows = 0
    if on_progress is not None:
        on_progress(0, computed)
    try:
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=SWEEP_COLUMNS)
            for rows in _run_jobs(jobs, workers, _sweep_job):
                writer.writerows(rows)
                f.flush()
                os.fsync(f.fileno())
                bar.update(len(rows))
                done_rows += len(rows)
                if on_progress is not None:
                    on_progress(done_rows, computed)
                bar.set_postfix(point=rows[0]["rate_point"], image=rows[0]["image"][-20:])
    finally:
        bar.close()

    rows = pd.read_csv(csv_path, dtype={"codec_sha256": str, "enhancer_sha256": str})
    names = [n for n, _ in items]
    wanted = {(p.name, v.label) for p in points for v in spec.variants(p.temperature)}
    keep = [(rp, v) in wanted for rp, v in zip(rows.rate_point, rows.variant)]
    rows = rows[rows.image.isin(names) & np.asarray(keep, dtype=bool)]
    metric = str(rows.perceptual_metric.iloc[0]) if len(rows) else _metric_name()
    summary = summarize_sweep(rows, points)
    chosen = chosen_effects(rows, points)
    controls = pd.DataFrame([c for p in points for c in controls_at_cost(rows[rows.rate_point == p.name], p)])
    rule = rule_choice(summary, points, spec.rule_max_cost_db) if not summary.empty else pd.DataFrame()
    files = {"sweep_csv": str(csv_path), "sweep_summary": str(out / "perception_distortion_summary.csv"),
             "operating_points": str(out / "operating_points.json"),
             "sweep_markdown": str(out / "perception_distortion.md"),
             "sweep_png": str(out / "perception_distortion.png")}
    with atomic_path(files["sweep_summary"]) as tmp:
        summary.to_csv(tmp, index=False, float_format="%.6g")
    write_text_atomic(files["sweep_markdown"], sweep_markdown(summary, chosen, controls, points, spec,
                                                              image_dir=str(image_dir), images=len(items),
                                                              metric=metric, seed=seed, rule=rule))
    write_text_atomic(files["operating_points"], json.dumps(
        {"rule": f"lowest mean {metric} among temperatures costing <= {spec.rule_max_cost_db:g} dB PSNR "
                 "(else the cheapest)", "image_dir": str(image_dir), "images": len(items),
         "rate_points": rule.to_dict("records")}, indent=2) + "\n")
    plot_perception_distortion(summary, controls, points, metric, files["sweep_png"])
    return SweepResult(out=str(out), images=len(items), computed=computed, skipped=total - computed,
                       summary=summary, chosen=chosen, controls=controls, files=files, rule=rule)


# ---------------------------------------------------------------------------------------- the maths

def ci95(d) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t interval of paired differences (NaNs dropped)."""
    d = np.asarray(d, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return math.nan, math.nan
    if len(d) < 2:
        return float(d.mean()), math.nan
    from scipy import stats

    return float(d.mean()), float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))


def matched_strength(strengths: Sequence[float], costs: Sequence[float], target: float) -> float | None:
    """The strength at which a control's mean PSNR cost reaches ``target`` dB (positive = PSNR lost).

    ``strengths`` (> 0, any order) with their mean ``costs``; strength 0 is the decoded image, cost 0. Linear
    interpolation in strength between neighbouring strengths, at the first crossing from 0 upwards; None when no
    segment of the sweep reaches ``target`` (never extrapolated)."""
    if len(strengths) != len(costs):
        raise ValueError("one cost per strength")
    order = np.argsort(np.asarray(strengths, dtype=float))
    s = np.concatenate([[0.0], np.asarray(strengths, dtype=float)[order]])
    c = np.concatenate([[0.0], np.asarray(costs, dtype=float)[order]])
    if not (np.isfinite(c).all() and math.isfinite(target)):
        return None
    for i in range(len(s) - 1):
        lo, hi = c[i], c[i + 1]
        if min(lo, hi) <= target <= max(lo, hi):
            if hi == lo:
                return float(s[i])
            return float(s[i] + (target - lo) / (hi - lo) * (s[i + 1] - s[i]))
    if len(s) == 1 and target == 0:
        return 0.0
    return None


def interpolate_at(strength: float, strengths: Sequence[float], decoded: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Every image's value at ``strength``: linear in strength between the swept ones, with ``decoded`` (per image)
    at strength 0; ``values`` is images x strengths (columns in the order of ``strengths``)."""
    order = np.argsort(np.asarray(strengths, dtype=float))
    s = np.concatenate([[0.0], np.asarray(strengths, dtype=float)[order]])
    table = np.column_stack([np.asarray(decoded, dtype=float), np.asarray(values, dtype=float)[:, order]])
    return np.array([np.interp(strength, s, row) for row in table])


def _wide(df: pd.DataFrame, col: str) -> pd.DataFrame:
    return df.pivot_table(index="image", columns="variant", values=col, dropna=False)


def _chosen_label(point: ResolvedPoint) -> str:
    return Variant("enhanced", float(point.temperature)).label


def summarize_sweep(rows: pd.DataFrame, points: list[ResolvedPoint]) -> pd.DataFrame:
    """One row per (rate point, variant): image means, the paired change against decoded (95 % interval), images
    helped; ``chosen`` marks the registry's operating point."""
    out = []
    for p in points:
        g = rows[rows.rate_point == p.name]
        if g.empty or "decoded" not in set(g.variant):
            continue
        wide = {m: _wide(g, m) for m in ("psnr_db", "perceptual", "stlpips_vgg")}
        meta = g.drop_duplicates("variant").set_index("variant")
        fam_order = {f: i for i, f in enumerate(FAMILIES)}
        labels = sorted(meta.index, key=lambda v: (fam_order.get(meta.loc[v, "family"], 9), meta.loc[v, "strength"]))
        for v in labels:
            r = {"rate_point": p.name, "variant": v, "family": meta.loc[v, "family"],
                 "strength": float(meta.loc[v, "strength"]), "chosen": v == _chosen_label(p),
                 "images": int(wide["psnr_db"][v].notna().sum()), "perceptual_metric": meta.loc[v, "perceptual_metric"]}
            for m in ("psnr_db", "perceptual", "stlpips_vgg"):
                col, dec = wide[m][v], wide[m]["decoded"]
                r[m] = float(col.mean()) if col.notna().any() else math.nan
                r[f"d_{m}"], r[f"d_{m}_ci95"] = ci95((col - dec).to_numpy())
                if m != "psnr_db":
                    dmean = float(dec[col.notna()].mean()) if col.notna().any() else math.nan
                    r[f"d_{m}_pct"] = 100 * r[f"d_{m}"] / dmean if dmean else math.nan
                    r[f"{m}_helped"] = int(((col - dec) < 0).sum()) if col.notna().any() else math.nan
            r["rms_change_dn"] = float(g[g.variant == v].rms_change_dn.mean())
            out.append(r)
    return pd.DataFrame(out)


def chosen_effects(rows: pd.DataFrame, points: list[ResolvedPoint]) -> pd.DataFrame:
    """At each rate point's chosen temperature: decoded and enhanced means and the paired changes."""
    summary = summarize_sweep(rows, points)
    if summary.empty:
        return summary
    dec = summary[summary.variant == "decoded"].set_index("rate_point")
    ch = summary[summary.chosen].copy()
    for m in ("psnr_db", "perceptual", "stlpips_vgg"):
        ch[f"{m}_decoded"] = ch.rate_point.map(dec[m])
    ch["temperature"] = ch.strength
    return ch.reset_index(drop=True)


def rule_choice(summary: pd.DataFrame, points: list[ResolvedPoint],
                max_cost_db: float = RULE_MAX_COST_DB) -> pd.DataFrame:
    """The operating point the rule (:data:`RULE_MAX_COST_DB`) picks per rate point from a sweep's summary, beside
    the registry's temperature: ``agrees`` says whether the registry records the rule's choice."""
    out = []
    for p in points:
        enh = summary[(summary.rate_point == p.name) & (summary.family == "enhanced")]
        enh = enh[(enh.images > 0) & enh.d_psnr_db.notna()]
        if enh.empty:
            continue
        cost = -enh.d_psnr_db
        ok = enh[cost <= max_cost_db]
        pick = ok.loc[ok.perceptual.idxmin()] if not ok.empty else enh.loc[cost.idxmin()]
        out.append({"rate_point": p.name, "temperature": float(pick.strength), "qualified": not ok.empty,
                    "cost_db": float(-pick.d_psnr_db), "d_perceptual_pct": float(pick.d_perceptual_pct),
                    "max_cost_db": float(max_cost_db), "registry_temperature": float(p.temperature),
                    "agrees": math.isclose(float(pick.strength), float(p.temperature))})
    return pd.DataFrame(out)


def controls_at_cost(rows: pd.DataFrame, point: ResolvedPoint) -> list[dict]:
    """Each control family of one rate point interpolated to the chosen point's mean PSNR cost, compared image by
    image with the enhancer there (on the images that have every variant needed)."""
    label = _chosen_label(point)
    psnr = _wide(rows, "psnr_db")
    if psnr.empty or "decoded" not in psnr or label not in psnr:
        return []
    out = []
    for family, name in CONTROLS.items():
        fam = rows[rows.family == family].drop_duplicates("variant").sort_values("strength")
        if fam.empty:
            continue
        labels, strengths = list(fam.variant), list(fam.strength.astype(float))
        cols = ["decoded", label] + labels
        ok = psnr[cols].notna().all(axis=1)
        p = psnr[ok]
        cost = float((p["decoded"] - p[label]).mean())
        costs = [float((p["decoded"] - p[v]).mean()) for v in labels]
        s_star = matched_strength(strengths, costs, cost)
        radius = float(fam.iloc[0]["variant"].split(":")[1][1:]) if family == "unsharp" else None
        r = {"rate_point": point.name, "control": family, "control_name": name, "radius": radius,
             "temperature": float(point.temperature), "images": int(ok.sum()), "enhancer_d_psnr_db": -cost,
             "max_cost_db": max(costs) if costs else math.nan,
             "strength": s_star, "beyond_sweep": s_star is None}
        if s_star is None:
            out.append(r)
            continue
        ctl_psnr = interpolate_at(s_star, strengths, p["decoded"].to_numpy(), p[labels].to_numpy())
        r["d_psnr_db"] = float(np.mean(ctl_psnr - p["decoded"].to_numpy()))
        for m in ("perceptual", "stlpips_vgg"):
            w = _wide(rows, m).loc[p.index]
            if any(c not in w for c in cols) or w[cols].isna().all().any():
                continue  # e.g. ST-LPIPS VGG not computed for the controls
            dec = w["decoded"].to_numpy()
            ctl = interpolate_at(s_star, strengths, dec, w[labels].to_numpy())
            enh = w[label].to_numpy()
            r[f"control_{m}"] = float(np.nanmean(ctl))
            r[f"enhancer_{m}"] = float(np.nanmean(enh))
            r[f"control_d_{m}_pct"] = 100 * float(np.nanmean(ctl - dec)) / float(np.nanmean(dec))
            r[f"enhancer_d_{m}_pct"] = 100 * float(np.nanmean(enh - dec)) / float(np.nanmean(dec))
            r[f"enh_minus_control_{m}"], r[f"enh_minus_control_{m}_ci95"] = ci95(enh - ctl)
            r[f"enhancer_better_{m}"] = int(((enh - ctl) < 0).sum())
        r["control_psnr_db"] = float(np.mean(ctl_psnr))
        out.append(r)
    return out


# ---------------------------------------------------------------------------------------- the report

def _f(v, d: int = 2, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:+.{d}f}" if sign else f"{v:.{d}f}"


def _pm(mean, half, d: int) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    return f"{mean:+.{d}f} ± {half:.{d}f}" if not math.isnan(half) else f"{mean:+.{d}f}"


def _helped(v, n) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v)}/{n}"


def sweep_markdown(summary: pd.DataFrame, chosen: pd.DataFrame, controls: pd.DataFrame,
                   points: list[ResolvedPoint], spec: SweepSpec, *, image_dir: str, images: int, metric: str,
                   seed: int, rule: pd.DataFrame | None = None) -> str:
    vgg = spec.vgg != "none"
    lines = [f"# Perception-distortion sweep on `{image_dir}` ({images} images)", "",
             f"Perceptual distance `{metric}` (lower is better){' and ST-LPIPS VGG (`stlpips_vgg`)' if vgg else ''}; "
             "PSNR in dB. Means over images; changes are paired over images against the decoded image "
             "(mean ± half-width of the 95 % Student-t interval); *helped* counts the images whose distance fell. "
             f"Enhancer latent seed {seed}.", "",
             f"Swept: temperatures {', '.join(f'{t:g}' for t in spec.temperatures)} (plus each rate point's "
             f"registry temperature); Gaussian noise std {', '.join(f'{s:g}' for s in spec.noise) or 'none'} DN; "
             f"unsharp mask radius {spec.unsharp_radius:g}, amount {', '.join(f'{a:g}' for a in spec.unsharp) or 'none'} "
             f"%; ST-LPIPS VGG for {({'none': 'no variant', 'enhanced': 'decoded and enhanced', 'all': 'every variant'})[spec.vgg]}.",
             "", "## At the registry's operating point", ""]
    for p in points:
        lines.append(f"- `{p.name}`: codec `{p.codec}`, enhancer `{p.enhancer}`, temperature {p.temperature:g} "
                     "(configs/models.yaml)")
    lines.append("")
    head = ["rate point", "T", "images", "PSNR decoded", "PSNR enhanced", "Δ PSNR dB (95%)",
            f"{metric} decoded -> enhanced", f"Δ {metric} % (Δ ± 95%)", "helped"]
    if vgg:
        head += ["ST-LPIPS VGG decoded -> enhanced", "Δ VGG % (Δ ± 95%)", "helped (VGG)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in chosen.to_dict("records"):
        n = r["images"]
        cells = [r["rate_point"], f"T={r['temperature']:g}", str(n), _f(r["psnr_db_decoded"]), _f(r["psnr_db"]),
                 _pm(r["d_psnr_db"], r["d_psnr_db_ci95"], 2),
                 f"{_f(r['perceptual_decoded'], 4)} -> {_f(r['perceptual'], 4)}",
                 f"**{_f(r['d_perceptual_pct'], 1, True)} %** ({_pm(r['d_perceptual'], r['d_perceptual_ci95'], 4)})",
                 _helped(r["perceptual_helped"], n)]
        if vgg:
            cells += [f"{_f(r['stlpips_vgg_decoded'], 4)} -> {_f(r['stlpips_vgg'], 4)}",
                      f"{_f(r['d_stlpips_vgg_pct'], 1, True)} % ({_pm(r['d_stlpips_vgg'], r['d_stlpips_vgg_ci95'], 4)})",
                      _helped(r["stlpips_vgg_helped"], n)]
        lines.append("| " + " | ".join(cells) + " |")

    lines += ["", "## The controls at the enhancer's PSNR cost", "",
              "Each control's strength is interpolated linearly so that its mean PSNR cost equals the enhancer's at "
              "the registry's point (strength 0 = the decoded image); every image's values are interpolated at that "
              "strength, so the comparison stays paired. *Enhancer minus control* below zero: the enhancer is "
              "better at the same PSNR cost.", ""]
    vgg_ctl = "enh_minus_control_stlpips_vgg" in controls
    head = ["rate point", "control at the enhancer's PSNR cost", "images", "Δ PSNR dB", f"control Δ {metric}",
            f"enhancer Δ {metric}", "enhancer minus control (95%)", "images where the enhancer is better"]
    if vgg_ctl:
        head += ["control Δ VGG", "enhancer Δ VGG", "enhancer minus control, VGG (95%)", "better (VGG)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in controls.to_dict("records"):
        what = r["control_name"] + (f" r{r['radius']:g}" if r["control"] == "unsharp" else "")
        n = r["images"]
        if r["beyond_sweep"]:
            lines.append(f"| {r['rate_point']} | {what}: not reached by the sweep (the enhancer costs "
                         f"{-r['enhancer_d_psnr_db']:.2f} dB, the strongest control {r['max_cost_db']:.2f} dB) | "
                         f"{n} |" + " |" * (len(head) - 3))
            continue
        unit = "DN std" if r["control"] == "noise" else "% amount"
        cells = [r["rate_point"], f"{what} ({r['strength']:.2f} {unit})", str(n), _f(r["d_psnr_db"], 2, True),
                 f"{_f(r.get('control_d_perceptual_pct'), 1, True)} %",
                 f"{_f(r.get('enhancer_d_perceptual_pct'), 1, True)} %",
                 _pm(r.get("enh_minus_control_perceptual", math.nan), r.get("enh_minus_control_perceptual_ci95", math.nan), 4),
                 _helped(r.get("enhancer_better_perceptual"), n)]
        if vgg_ctl:
            cells += [f"{_f(r.get('control_d_stlpips_vgg_pct'), 1, True)} %",
                      f"{_f(r.get('enhancer_d_stlpips_vgg_pct'), 1, True)} %",
                      _pm(r.get("enh_minus_control_stlpips_vgg", math.nan),
                          r.get("enh_minus_control_stlpips_vgg_ci95", math.nan), 4),
                      _helped(r.get("enhancer_better_stlpips_vgg"), n)]
        lines.append("| " + " | ".join(cells) + " |")

    if rule is not None and not rule.empty:
        lines += ["", "## The operating-point rule on these images", "",
                  f"Among the swept temperatures whose mean PSNR cost is at most {spec.rule_max_cost_db:g} dB, the "
                  f"one with the lowest mean {metric}; if none qualifies, the cheapest. Apply it on the selection "
                  "subset only, and record its choice in configs/models.yaml; on the reported part this table is "
                  "for information (choosing there would flatter the result).", "",
                  "| rate point | rule's T | qualified | Δ PSNR dB | " + f"Δ {metric} % | registry T | agrees |",
                  "|" + "---|" * 7]
        for r in rule.to_dict("records"):
            lines.append(f"| {r['rate_point']} | {r['temperature']:g} | {'yes' if r['qualified'] else 'no'} | "
                         f"{-r['cost_db']:+.2f} | {_f(r['d_perceptual_pct'], 1, True)} | "
                         f"{r['registry_temperature']:g} | {'yes' if r['agrees'] else '**no**'} |")

    lines += ["", "## Every variant of the sweep", "",
              "| rate point | variant | images | PSNR dB | Δ PSNR dB (95%) | " + f"{metric} | Δ {metric} % | "
              f"Δ {metric} (95%) | helped | Δ VGG % | helped (VGG) | RMS change vs decoded (DN) |",
              "|" + "---|" * 12]
    for r in summary.to_dict("records"):
        n = r["images"]
        star = " (registry)" if r["chosen"] else ""
        lines.append(f"| {r['rate_point']} | {r['variant']}{star} | {n} | {_f(r['psnr_db'])} | "
                     f"{_pm(r['d_psnr_db'], r['d_psnr_db_ci95'], 2) if r['variant'] != 'decoded' else '-'} | "
                     f"{_f(r['perceptual'], 4)} | {_f(r['d_perceptual_pct'], 1, True) if r['variant'] != 'decoded' else '-'} | "
                     f"{_pm(r['d_perceptual'], r['d_perceptual_ci95'], 4) if r['variant'] != 'decoded' else '-'} | "
                     f"{_helped(r['perceptual_helped'], n) if r['variant'] != 'decoded' else '-'} | "
                     f"{_f(r['d_stlpips_vgg_pct'], 1, True) if r['variant'] != 'decoded' else '-'} | "
                     f"{_helped(r['stlpips_vgg_helped'], n) if r['variant'] != 'decoded' else '-'} | "
                     f"{_f(r['rms_change_dn'], 2)} |")
    lines += ["", "![perception-distortion](perception_distortion.png)", "",
              "Per rate point: mean perceptual distance against mean PSNR; the enhancer over temperature, the "
              "controls over strength (starting at the decoded point), the registry's point (star) and each control "
              "at its PSNR cost (x).", ""]
    return "\n".join(lines)


def plot_perception_distortion(summary: pd.DataFrame, controls: pd.DataFrame, points: list[ResolvedPoint],
                               metric: str, png: str | Path) -> None:
    """Per rate point (columns), perceptual distance against PSNR; a second row for ST-LPIPS VGG if computed."""
    from groundstation.plots import plt

    metrics = [("perceptual", f"{metric} (lower is better)")]
    if not summary.empty and summary.loc[summary.family == "enhanced", "stlpips_vgg"].notna().any():
        metrics.append(("stlpips_vgg", "stlpips_vgg (lower is better)"))
    names = [p.name for p in points]
    fig, axes = plt.subplots(len(metrics), max(1, len(names)), figsize=(5 * max(1, len(names)), 4.2 * len(metrics)),
                             squeeze=False)
    style = {"enhanced": ("C0", "o", "enhancer (T)"), "noise": ("C1", "s", "Gaussian noise (std DN)"),
             "unsharp": ("C2", "^", "unsharp mask (amount %)")}
    for row, (m, ylabel) in enumerate(metrics):
        for col, point in enumerate(points):
            ax = axes[row][col]
            g = summary[summary.rate_point == point.name] if not summary.empty else summary
            dec = g[g.variant == "decoded"]
            if dec.empty:
                ax.set_title(f"{point.name}: no data")
                continue
            x0, y0 = float(dec.psnr_db.iloc[0]), float(dec[m].iloc[0])
            for family, (color, marker, label) in style.items():
                f = g[(g.family == family) & g[m].notna()].sort_values("strength")
                if f.empty:
                    continue
                xs, ys = list(f.psnr_db), list(f[m])
                if family != "enhanced":
                    xs, ys = [x0] + xs, [y0] + ys
                ax.plot(xs, ys, "-", marker=marker, color=color, ms=4, lw=1.2, label=label)
                for r in f.itertuples():
                    ax.annotate(f"{'T=' if family == 'enhanced' else ''}{r.strength:g}", (r.psnr_db, getattr(r, m)),
                                fontsize=6, xytext=(3, 2), textcoords="offset points", color=color)
            ax.plot([x0], [y0], "o", color="k", ms=7, label="decoded")
            ch = g[g.chosen & g[m].notna()]
            if not ch.empty:
                ax.plot(ch.psnr_db, ch[m], "*", color="C3", ms=15, zorder=5,
                        label=f"registry's point (T={point.temperature:g})")
            if not controls.empty:
                for r in controls[(controls.rate_point == point.name) & ~controls.beyond_sweep].to_dict("records"):
                    yv = r.get(f"control_{m}", math.nan)
                    if isinstance(yv, float) and not math.isnan(yv):
                        ax.plot([r["control_psnr_db"]], [yv], "x", color=style[r["control"]][0], ms=9, mew=2,
                                label=f"{r['control_name']} at the same PSNR cost")
            ax.set_title(f"{point.name}: {int(dec.images.iloc[0])} images")
            ax.set_xlabel("PSNR (dB), mean over images")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.suptitle("Perception-distortion: enhancer (T) vs controls", fontsize=10)
    fig.tight_layout()
    save_figure_atomic(fig, png, dpi=90)
    plt.close(fig)
