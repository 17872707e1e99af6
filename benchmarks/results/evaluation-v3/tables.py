"""Markdown tables of docs/evaluation.md (issue 16 section) from the sweep CSVs (see report.py for the maths).

    .venv/bin/python benchmarks/results/evaluation-v3/tables.py selection benchmarks/results/evaluation-v3/selection/valsel-l0032-v3.csv ...
    .venv/bin/python benchmarks/results/evaluation-v3/tables.py final l0032=T ... (reads valrep-<p>.csv here)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from report import control_at_cost, effects, wide, ci  # noqa: E402

HERE = Path(__file__).parent


def f(v, d=2, sign=True):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return f"{v:+.{d}f}" if sign else f"{v:.{d}f}"


def selection(paths):
    print("| rate point | variant | images | Δ PSNR dB (95%) | Δ ST-LPIPS Alex % | Δ Alex (95%) | helped (Alex) | Δ ST-LPIPS VGG % | helped (VGG) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in paths:
        df = pd.read_csv(p)
        rp = [t for t in Path(p).stem.split("-") if t.startswith("l0")][0]
        for v in [v for v in df.variant.unique() if v != "decoded"]:
            e = effects(df, v)
            n = e["n"]
            print(f"| {rp} | {v} | {n} | {f(e['dpsnr'])} ± {e['dpsnr_ci']:.2f} | {f(e.get('d_stlpips_alex_pct'), 1)} | "
                  f"{f(e.get('d_stlpips_alex'), 4)} ± {e.get('d_stlpips_alex_ci', np.nan):.4f} | {e.get('helped_stlpips_alex', '-')}/{n} | "
                  f"{f(e.get('d_stlpips_vgg_pct'), 1)} | {e.get('helped_stlpips_vgg', '-')}{'/' + str(n) if 'helped_stlpips_vgg' in e else ''} |")


def final(specs):
    out = {}
    rows1, rows2 = [], []
    for spec in specs:
        rp, variant = spec.split("=", 1)
        df = pd.read_csv(HERE / f"valrep-{rp}.csv")
        have = set(df[df.variant == variant].image)
        df = df[df.image.isin(have)]  # images with the enhancer's row (controls may be ahead)
        e = effects(df, variant)
        n = e["n"]
        rows1.append(f"| {rp} | {variant.split(':')[-1]} | {n} | {e['psnr_dec']:.2f} | {e['psnr']:.2f} | {f(e['dpsnr'])} ± {e['dpsnr_ci']:.2f} | "
                     f"{e['stlpips_alex_dec']:.4f} -> {e['stlpips_alex']:.4f} | **{f(e['d_stlpips_alex_pct'], 1)} %** ({f(e['d_stlpips_alex'], 4)} ± {e['d_stlpips_alex_ci']:.4f}) | "
                     f"{e['helped_stlpips_alex']}/{n} | {e['stlpips_vgg_dec']:.4f} -> {e['stlpips_vgg']:.4f} | {f(e['d_stlpips_vgg_pct'], 1)} % ({f(e['d_stlpips_vgg'], 4)} ± {e['d_stlpips_vgg_ci']:.4f}) | {e['helped_stlpips_vgg']}/{n} |")
        out[rp] = {"enhanced": e, "controls": []}
        for prefix, label in (("noise:", "Gaussian noise"), ("usm:r1:", "unsharp mask r1")):
            c = control_at_cost(df, prefix, e["dpsnr"])
            if c is None:
                continue
            if c["beyond_sweep"]:
                rows2.append(f"| {rp} | {label} | beyond sweep (max {c['max_cost']:.2f} dB) | | | | |")
                continue
            dec_a = wide(df, "stlpips_alex")["decoded"].to_numpy()
            enh_a = wide(df, "stlpips_alex")[variant].to_numpy()
            ctl_a = c["stlpips_alex"]
            dpsnr = float(np.mean(c["psnr_db"] - wide(df, "psnr_db")["decoded"].to_numpy()))
            pct = 100 * (ctl_a - dec_a).mean() / dec_a.mean()
            diff_m, diff_h = ci(enh_a - ctl_a)
            better = int((enh_a - ctl_a < 0).sum())
            unit = "DN std" if prefix == "noise:" else "% amount"
            rows2.append(f"| {rp} | {label} ({c['strength']:.2f} {unit}) | {f(dpsnr)} | {f(pct, 1)} % | {f(e['d_stlpips_alex_pct'], 1)} % | "
                         f"{f(diff_m, 4)} ± {diff_h:.4f} | {better}/{n} |")
            out[rp]["controls"].append({"family": prefix, "strength": c["strength"], "dpsnr": dpsnr, "d_alex_pct": pct,
                                        "enh_minus_ctl_alex": diff_m, "ci": diff_h, "enh_better": better, "n": n})
    print("| rate point | T | images | PSNR decoded | PSNR enhanced | Δ PSNR dB (95%) | ST-LPIPS Alex | Δ Alex % (Δ ± 95%) | helped | ST-LPIPS VGG | Δ VGG % (Δ ± 95%) | helped |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows1))
    print()
    print("| rate point | control at the enhancer's PSNR cost | Δ PSNR dB | control Δ Alex | enhancer Δ Alex | enhancer minus control, Alex (95%) | images where the enhancer is better |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows2))
    (HERE / "final.json").write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    {"selection": selection, "final": final}[sys.argv[1]](sys.argv[2:])
