"""The evaluation's figures: rate-distortion and rate-perception curves, the example strip, and the
perception-distortion plane of the sweep. Matplotlib through :mod:`groundstation.plots` (headless)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from groundstation.fileio import atomic_path, save_figure_atomic

from .points import ResolvedPoint

__all__ = ["example_strip", "plot_curves", "plot_perception_distortion"]


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


def example_strip(examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], png: str | Path, *,
                  crop: int = 128) -> None:
    """One row per ``(label, original, decoded, enhanced)``: the centre crops side by side, 2x nearest."""
    from PIL import Image, ImageDraw

    rows = []
    for label, image, decoded, enhanced in examples:
        h, w = image.shape[:2]
        c = min(crop, h, w)
        y0, x0 = (h - c) // 2, (w - c) // 2
        tiles = [a[y0:y0 + c, x0:x0 + c] for a in (image, decoded, enhanced)]
        row = Image.fromarray(np.concatenate(tiles, axis=1)).resize((6 * c, 2 * c), Image.NEAREST)
        ImageDraw.Draw(row).text((4, 4), label, fill=(255, 255, 0))
        rows.append(np.asarray(row))
    with atomic_path(png) as tmp:
        Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG", optimize=True)


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
                # the enhancer: one curve over temperature per strength (a), the full-strength one in its colour
                curves = ([(a, c) for a, c in f.groupby(f.enhancer_strength.fillna(1.0), sort=True)][::-1]
                          if family == "enhanced" and "enhancer_strength" in f else [(1.0, f)])
                for k, (a, c) in enumerate(curves):
                    xs, ys = list(c.psnr_db), list(c[m])
                    if family != "enhanced":
                        xs, ys = [x0] + xs, [y0] + ys
                    col = color if k == 0 else f"C{4 + k % 6}"
                    ax.plot(xs, ys, "-", marker=marker, color=col, ms=4, lw=1.2,
                            label=label if a == 1 or family != "enhanced" else f"enhancer (T), strength {a:g}")
                    for r in c.itertuples():
                        ax.annotate(f"{'T=' if family == 'enhanced' else ''}{r.strength:g}",
                                    (r.psnr_db, getattr(r, m)), fontsize=6, xytext=(3, 2), textcoords="offset points",
                                    color=col)
            ax.plot([x0], [y0], "o", color="k", ms=7, label="decoded")
            ch = g[g.chosen & g[m].notna()]
            if not ch.empty:
                ax.plot(ch.psnr_db, ch[m], "*", color="C3", ms=15, zorder=5,
                        label=f"registry's point ({point.operating_label})")
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
