"""The perception-distortion sweep of ``gsp evaluate --sweep``, run and analysed: the enhancer's knob against
two trivial controls (what is swept: :mod:`.variants`).

The enhancer buys a lower perceptual distance with PSNR, and its operating point sets how much: the temperature of
its latent and its strength (the fraction of its change kept). Whether that trade is
worth anything is only visible against operations anyone could apply to the decoded image at the same PSNR cost.
For every rate point and image (the evaluation's own decode: real ELIC compress/decompress of the whole image, one
thread) :func:`sweep_folder` computes PSNR and the evaluation's perceptual distance (and, as chosen,
ST-LPIPS VGG beside it) of these variants of the decoded image:

* ``decoded``;
* ``enhanced:T=<t>`` (strength 1), ``enhanced:T=<t>:a=<a>``: the rate point's enhancer at each temperature and
  strength of the sweep, seed-``seed`` latent field as in the evaluation; the registry's operating point of the rate
  point is always swept;
* ``noise:<sigma>``: the decoded image plus Gaussian noise of std ``sigma`` DN (seeded by the image name), clipped and
  rounded;
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

**Control at equal PSNR cost**: a control's strengths, with strength 0 being the decoded image itself (cost 0), are
ordered, and its mean PSNR cost over the images is interpolated linearly in strength to the enhancer's mean cost
(:func:`matched_strength`, the first crossing); every image's values are then interpolated at that strength
(:func:`interpolate_at`), so the comparison with the enhancer stays paired image by image. A cost beyond the swept
strengths is reported, never extrapolated.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from groundstation.errors import ConfigError
from groundstation.fileio import atomic_path, write_text_atomic

from .plots import plot_perception_distortion
from .points import ResolvedPoint
from .report import sweep_markdown
from .running import CACHE, image_names, original_and_decoded, read_resumable_csv, run_jobs
from .stats import ci95
from .variants import CONTROLS, FAMILIES, RULE_MAX_COST_DB, SweepSpec, Variant, make_variant

__all__ = ["SWEEP_COLUMNS", "SWEEP_CSV", "SweepResult", "chosen_effects", "controls_at_cost", "interpolate_at",
           "check_sweep_only", "matched_strength", "rule_choice", "summarize_sweep", "sweep_folder", "sweep_image"]

log = logging.getLogger(__name__)

SWEEP_CSV = "perception_distortion.csv"
SWEEP_COLUMNS = ["rate_point", "image", "variant", "family", "strength", "height", "width", "psnr_db", "perceptual",
                 "perceptual_metric", "stlpips_vgg", "rms_change_dn", "seconds", "seed", "codec_sha256",
                 "enhancer_sha256", "enhancer_strength"]
#: Columns a sweep file of an older ``gsp evaluate`` may lack (its enhancer rows are at strength 1, kept).
_LATER_COLUMNS = ("enhancer_strength",)


def _metric_name() -> str:
    """The column name of the metric :meth:`PerceptualMetric.auto` builds (the primary), without loading it."""
    from groundstation.metrics import PRIMARY

    return PRIMARY


def check_sweep_only(tile_size: int, reference, option: str) -> None:
    """The sweep alone (``option``: how the caller names it) codes whole images and draws no rate-distortion
    table: a tiling or reference points with it are a ConfigError."""
    if tile_size or reference:
        raise ConfigError(f"{option}: the sweep codes whole images and has no rate-distortion table; leave out the "
                          f"tiling and the reference points, or {option}")


def sweep_image(point: ResolvedPoint, path: str, name: str, variants: Sequence[Variant], seed: int = 0,
                vgg_families: Sequence[str] = ()) -> list[dict]:
    """Decode one image at one rate point (real ELIC), then one row per variant: PSNR, perceptual distances."""
    from groundstation.metrics import psnr_db

    _, model, csha, esha = CACHE.models(point)
    image, decoded, _ = original_and_decoded(point, path)
    primary = CACHE.metric("perceptual-cached")
    vgg = CACHE.metric("stlpips_vgg") if any(v.family in vgg_families for v in variants) else None
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
            "enhancer_sha256": esha if v.family == "enhanced" else "",
            "enhancer_strength": v.enhancer_strength if v.family == "enhanced" else math.nan})
    return rows


def _sweep_job(args: tuple) -> list[dict]:
    return sweep_image(*args)


def _read_done(path: Path, points: list[ResolvedPoint], *, metric: str, seed: int,
               vgg_families: Sequence[str]) -> pd.DataFrame:
    """Rows already computed that still hold for these models, seed, backend and VGG choice; others are dropped."""
    from groundstation.metrics.backends import STLPIPS_VGG_MIN_SIZE

    df = read_resumable_csv(path, [c for c in SWEEP_COLUMNS if c not in _LATER_COLUMNS], "gsp evaluate --sweep",
                            dtype={"codec_sha256": str, "enhancer_sha256": str})
    if "enhancer_strength" not in df:  # written before the strength knob: the enhancer's whole change
        df = df.assign(enhancer_strength=np.where(df.family == "enhanced", 1.0, math.nan))
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
        big = np.minimum(df.height, df.width) >= STLPIPS_VGG_MIN_SIZE
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
    items = image_names(image_dir, limit)
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
        variants = spec.variants(p.temperature, p.strength)
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
            for rows in run_jobs(jobs, workers, _sweep_job):
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
    wanted = {(p.name, v.label) for p in points for v in spec.variants(p.temperature, p.strength)}
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
        {"rule": f"lowest mean {metric} among the operating points (temperature, strength) costing <= "
                 f"{spec.rule_max_cost_db:g} dB PSNR (else the cheapest)", "image_dir": str(image_dir), "images": len(items),
         "rate_points": rule.to_dict("records")}, indent=2) + "\n")
    plot_perception_distortion(summary, controls, points, metric, files["sweep_png"])
    return SweepResult(out=str(out), images=len(items), computed=computed, skipped=total - computed,
                       summary=summary, chosen=chosen, controls=controls, files=files, rule=rule)


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
    return Variant("enhanced", float(point.temperature), enhancer_strength=float(point.strength)).label


def _strength_of(row) -> float:
    """The enhancer strength of a sweep row (1 for rows of other families and rows written before the knob)."""
    value = row.get("enhancer_strength", math.nan)
    return 1.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


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
        labels = sorted(meta.index, key=lambda v: (fam_order.get(meta.loc[v, "family"], 9),
                                                   -_strength_of(meta.loc[v]), meta.loc[v, "strength"]))
        for v in labels:
            r = {"rate_point": p.name, "variant": v, "family": meta.loc[v, "family"],
                 "strength": float(meta.loc[v, "strength"]),
                 "enhancer_strength": _strength_of(meta.loc[v]) if meta.loc[v, "family"] == "enhanced" else math.nan,
                 "chosen": v == _chosen_label(p),
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
    """At each rate point's chosen operating point: decoded and enhanced means and the paired changes."""
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
    """The operating point (temperature, strength) the rule (:data:`RULE_MAX_COST_DB`) picks per rate point from a
    sweep's summary, beside the registry's: ``agrees`` says whether the registry records the rule's choice."""
    out = []
    for p in points:
        enh = summary[(summary.rate_point == p.name) & (summary.family == "enhanced")]
        enh = enh[(enh.images > 0) & enh.d_psnr_db.notna()]
        if enh.empty:
            continue
        cost = -enh.d_psnr_db
        ok = enh[cost <= max_cost_db]
        pick = ok.loc[ok.perceptual.idxmin()] if not ok.empty else enh.loc[cost.idxmin()]
        strength = _strength_of(pick)
        out.append({"rate_point": p.name, "temperature": float(pick.strength), "strength": strength,
                    "qualified": not ok.empty,
                    "cost_db": float(-pick.d_psnr_db), "d_perceptual_pct": float(pick.d_perceptual_pct),
                    "max_cost_db": float(max_cost_db), "registry_temperature": float(p.temperature),
                    "registry_strength": float(p.strength),
                    "agrees": math.isclose(float(pick.strength), float(p.temperature))
                    and math.isclose(strength, float(p.strength))})
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
             "temperature": float(point.temperature), "enhancer_strength": float(point.strength),
             "images": int(ok.sum()), "enhancer_d_psnr_db": -cost,
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
