"""Tables from sweep.py CSVs: per variant the mean PSNR cost and the perceptual change vs decoded (paired 95%
intervals, images helped), and the controls interpolated at the enhancer's PSNR cost.

    .venv/bin/python benchmarks/results/evaluation-v3/report.py OUT.csv [--point enh:v3:T=0.1] [--json F]

Control at equal PSNR cost: for a control family (noise:<sigma>, usm:r1:<percent>) the strengths are sorted,
the family's mean PSNR cost is interpolated linearly in strength to the enhancer's mean PSNR cost, and every
image's metric is interpolated at that strength (so the comparison stays paired). A cost beyond the family's
sweep is reported as such (not extrapolated).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import pandas as pd

METRICS = ("stlpips_alex", "stlpips_vgg")


def ci(d: np.ndarray) -> tuple[float, float]:
    d = d[~np.isnan(d)]
    from scipy import stats
    h = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return float(d.mean()), float(h)


def wide(df: pd.DataFrame, col: str) -> pd.DataFrame:
    return df.pivot_table(index="image", columns="variant", values=col)


def effects(df: pd.DataFrame, variant: str) -> dict:
    out = {"variant": variant}
    p = wide(df, "psnr_db")
    out["n"] = int(p[variant].notna().sum())
    out["psnr_dec"] = float(p["decoded"].mean())
    out["psnr"] = float(p[variant].mean())
    out["dpsnr"], out["dpsnr_ci"] = ci((p[variant] - p["decoded"]).to_numpy())
    for m in METRICS:
        w = wide(df, m)
        if variant not in w or w[variant].isna().all():
            continue
        d = (w[variant] - w["decoded"]).to_numpy()
        out[f"{m}_dec"], out[m] = float(w["decoded"].mean()), float(w[variant].mean())
        out[f"d_{m}"], out[f"d_{m}_ci"] = ci(d)
        out[f"d_{m}_pct"] = 100 * out[f"d_{m}"] / out[f"{m}_dec"]
        out[f"helped_{m}"] = int((d < 0).sum())
    return out


def family(df: pd.DataFrame, prefix: str) -> list[tuple[float, str]]:
    vs = sorted({v for v in df.variant.unique() if v.startswith(prefix)})
    return sorted((float(v.rsplit(":", 1)[1]), v) for v in vs)


def control_at_cost(df: pd.DataFrame, prefix: str, cost: float) -> dict | None:
    """The control family interpolated at mean PSNR cost ``cost`` (dB, negative); per-image paired values."""
    p = wide(df, "psnr_db")
    # only strengths computed on every image of the comparison (an early run had extra ones on a few images)
    fam = [(s, v) for s, v in family(df, prefix) if p[v].notna().all()]
    if len(fam) < 1:
        return None
    costs = np.array([(p[v] - p["decoded"]).mean() for _, v in fam])  # decreasing with strength
    strengths = np.array([s for s, _ in fam])
    s0 = np.concatenate([[0.0], strengths])
    c0 = np.concatenate([[0.0], costs])
    if cost < c0.min():
        return {"family": prefix, "beyond_sweep": True, "max_cost": float(c0.min())}
    order = np.argsort(-c0)  # increasing |cost|
    s_star = float(np.interp(-cost, -c0[order], s0[order]))
    res = {"family": prefix, "strength": s_star, "beyond_sweep": False}
    cols = ["decoded"] + [v for _, v in fam]
    for m in ("psnr_db",) + METRICS:
        wm = wide(df, m)
        if any(c not in wm for c in cols):  # e.g. stlpips_vgg not computed for the controls
            continue
        w = wm[cols].to_numpy()
        per_img = np.array([np.interp(s_star, s0, row) for row in w])
        res[m] = per_img
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--point", action="append", default=[], help="variant(s) to compare with the controls")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    df = pd.read_csv(a.csv)
    variants = [v for v in df.variant.unique() if v != "decoded"]
    rows = [effects(df, v) for v in variants]
    t = pd.DataFrame(rows)
    cols = ["variant", "n", "dpsnr", "dpsnr_ci"] + [c for m in METRICS for c in (f"d_{m}_pct", f"d_{m}", f"d_{m}_ci",
                                                                                   f"helped_{m}") if c in t]
    pd.set_option("display.width", 250)
    print(t[cols].round(4).to_string(index=False))
    result = {"effects": rows, "controls": []}
    for point in a.point:
        e = effects(df, point)
        print(f"\n{point}: dPSNR {e['dpsnr']:.3f} dB")
        for prefix in ("noise:", "usm:r1:"):
            c = control_at_cost(df, prefix, e["dpsnr"])
            if c is None:
                continue
            if c["beyond_sweep"]:
                print(f"  {prefix} cannot reach that cost (max {c['max_cost']:.3f} dB)")
                result["controls"].append({"point": point, **c})
                continue
            rec = {"point": point, "family": prefix, "strength": c["strength"],
                   "dpsnr": float(np.mean(c["psnr_db"] - wide(df, "psnr_db")["decoded"].to_numpy()))}
            for m in METRICS:
                w = wide(df, m)
                if point not in w:
                    continue
                dec = w["decoded"].to_numpy()
                ctl = c[m]
                rec[f"d_{m}_pct"] = float(100 * (ctl - dec).mean() / dec.mean())
                diff = w[point].to_numpy() - ctl  # enhancer minus control, paired
                rec[f"enh_minus_ctl_{m}"], rec[f"enh_minus_ctl_{m}_ci"] = ci(diff)
                rec[f"enh_better_{m}"] = int((diff < 0).sum())
            result["controls"].append(rec)
            print("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
