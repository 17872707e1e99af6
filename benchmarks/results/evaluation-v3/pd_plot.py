"""Perception-distortion plot per rate point: mean PSNR cost vs relative ST-LPIPS Alex change, for the enhancer's
temperature sweep and the two controls' strength sweeps (selection subset, where all of them ran on the same 28
images), with the chosen point; and the chosen point with the controls on the reported part.

    .venv/bin/python benchmarks/results/evaluation-v3/pd_plot.py   -> pd_curves.png, pd_points.csv
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
T = dict(l.split() for l in (HERE / "chosen_T.txt").read_text().splitlines() if l.strip())


def points(csv: Path) -> pd.DataFrame:
    df = pd.read_csv(csv)
    p = df.pivot_table(index="image", columns="variant", values="psnr_db")
    a = df.pivot_table(index="image", columns="variant", values="stlpips_alex")
    full = [v for v in p.columns if p[v].notna().all() and a[v].notna().all()]
    rows = []
    for v in full:
        rows.append({"variant": v, "n": len(p), "dpsnr": (p[v] - p["decoded"]).mean(),
                     "d_alex_pct": 100 * (a[v] - a["decoded"]).mean() / a["decoded"].mean()})
    return pd.DataFrame(rows)


def main() -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    out = []
    for ax, rp in zip(axes, ("l0008", "l0032", "l0130")):
        for label, csv, mk in (("selection (28)", HERE / f"selection/valsel-{rp}-v3.csv", "-"),
                               ("reported", HERE / f"valrep-{rp}.csv", ":")):
            if not csv.is_file():
                continue
            d = points(csv)
            d["subset"], d["rate_point"] = label, rp
            out.append(d)
            for fam, color in (("enh:", "C0"), ("noise:", "C1"), ("usm:", "C2")):
                f = d[d.variant.str.startswith(fam)].sort_values("dpsnr", ascending=False)
                if f.empty:
                    continue
                x = [0.0] + list(-f.dpsnr)
                y = [0.0] + list(f.d_alex_pct)
                name = {"enh:": "enhancer v3 (T)", "noise:": "Gaussian noise", "usm:": "unsharp mask r1"}[fam]
                ax.plot(x, y, mk + "o", color=color, ms=4, label=f"{name}, {label}")
                if fam == "enh:" and label.startswith("selection"):
                    for _, r in f.iterrows():
                        ax.annotate(r.variant.split(":")[-1], (-r.dpsnr, r.d_alex_pct), fontsize=7)
            ch = d[d.variant == f"enh:v3:T={T[rp]}"]
            if not ch.empty:
                ax.plot(-ch.dpsnr, ch.d_alex_pct, "*", color="k" if label == "reported" else "C3", ms=13,
                        label=f"chosen T={T[rp]}, {label}")
        ax.axvline(0.8, color="grey", ls="--", lw=0.8)
        ax.axhline(-8, color="grey", ls="--", lw=0.8)
        ax.set_title(f"{rp}: goal = lower-left of the dashed lines")
        ax.set_xlabel("PSNR cost vs decoded (dB)")
        ax.set_ylabel("ST-LPIPS Alex change vs decoded (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "pd_curves.png", dpi=110)
    pd.concat(out).to_csv(HERE / "pd_points.csv", index=False)


if __name__ == "__main__":
    main()
