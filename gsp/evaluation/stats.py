"""The evaluation's statistics: means over images and paired differences with ONE interval method, the 95 %
Student-t interval of the mean paired difference (:func:`ci95`), used by every table of ``gsp evaluate`` and its
sweep."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .points import ResolvedPoint

__all__ = ["ci95", "paired_effects", "summarize"]


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


#: The perceptual metrics the evaluation computes beside its primary one (LPIPS-Alex, column ``perceptual``), each
#: in its own column named after the metric (names of ``groundstation.metrics.PERCEPTUAL_COLUMNS``).
SECONDARY_PERCEPTUAL = ("lpips_vgg", "stlpips_alex")


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
                     **{c: g[c].mean() if c in g else math.nan for c in SECONDARY_PERCEPTUAL},
                     "temperature": g.temperature.iloc[0] if product == "enhanced" else math.nan,
                     "strength": (g.strength.iloc[0] if "strength" in g else 1.0) if product == "enhanced"
                     else math.nan,
                     "enhance_s_per_mp": g.enhance_s.sum() / mp if product == "enhanced" and mp else math.nan,
                     **{c: g[c].mean() if c in g else math.nan for c in ("seam_ratio", "seam_ratio_source")}})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["_o"] = df.rate_point.map(order)
    df["_p"] = (df["product"] == "enhanced").astype(int)
    return df.sort_values(["_o", "_p"]).drop(columns=["_o", "_p"]).reset_index(drop=True)


def paired_effects(per_image: pd.DataFrame) -> pd.DataFrame:
    """Enhanced minus decoded per image, per rate point: mean, 95% interval (:func:`ci95`), images helped."""
    rows = []
    for point, g in per_image.groupby("rate_point", sort=False):
        if set(g["product"]) != {"decoded", "enhanced"}:
            continue
        wide = {m: g.pivot(index="image", columns="product", values=m)
                for m in ("psnr_db", "ms_ssim", "perceptual", *SECONDARY_PERCEPTUAL) if m in g}
        row = {"rate_point": point, "images": len(wide["psnr_db"])}
        for metric in ("psnr_db", "ms_ssim", "perceptual"):
            row[f"d_{metric}"], row[f"d_{metric}_ci95"] = ci95(wide[metric]["enhanced"] - wide[metric]["decoded"])
        dec, enh = wide["perceptual"]["decoded"], wide["perceptual"]["enhanced"]
        row["perceptual_change_pct"] = 100 * (enh.mean() - dec.mean()) / dec.mean() if dec.mean() else math.nan
        row["perceptual_helped"] = int((enh < dec).sum())
        for m in SECONDARY_PERCEPTUAL:
            if m not in wide:
                row[f"{m}_change_pct"] = math.nan
                continue
            dec, enh = wide[m]["decoded"], wide[m]["enhanced"]
            row[f"{m}_change_pct"] = 100 * (enh.mean() - dec.mean()) / dec.mean() if dec.mean() else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
