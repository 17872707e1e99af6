"""Plots people would rather look at than read: loss curves, quicklooks."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on stations or CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .fileio import save_figure_atomic  # noqa: E402


def plot_loss_curve(csv_path: str | Path, png_path: str | Path, title: str = "", smooth: int = 50) -> None:
    """Every numeric column but step/lr/elapsed in its own panel, raw and smoothed."""
    df = pd.read_csv(csv_path)
    if df.empty:
        return
    cols = [c for c in df.columns if c not in ("step", "lr", "elapsed_s")]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3), squeeze=False)
    for ax, col in zip(axes[0], cols):
        ax.plot(df["step"], df[col], alpha=0.3, lw=0.8)
        ax.plot(df["step"], df[col].rolling(smooth, min_periods=1).mean(), lw=1.5)
        ax.set_title(col)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure_atomic(fig, png_path, dpi=90)
    plt.close(fig)
