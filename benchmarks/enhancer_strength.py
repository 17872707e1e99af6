"""Does a strength knob move the enhancer's perception-distortion trade-off past the temperature's? (issue 24)

The enhancer's output blended with the decoded image, ``decoded + a * (enhanced_T - decoded)`` (rounded to
uint8), over a grid of temperatures T and strengths a, on the selection subset only (the operating-point rule's
images; the reported part is not looked at). Per (T, a): the mean PSNR change and the change of the mean
LPIPS-Alex against the decoded image, as the evaluation tables give them. The question is whether, at a fixed
PSNR cost (the goal's 0.5 dB), some a < 1 at a higher T reaches a lower LPIPS-Alex than a = 1 at the best T.

    .venv/bin/python -m gsp.evaluation.subsets ../shared/data/rsscn7 -o runs/data     # the selection subset
    .venv/bin/python benchmarks/enhancer_strength.py l0008 --temperatures 0.5,0.75,1,1.5 --strengths 0.6,0.7,0.8,0.9,1
    .venv/bin/python benchmarks/enhancer_strength.py l0032 --temperatures 0.25,0.375,0.5,0.75 --strengths 0.8,0.9,1
    .venv/bin/python benchmarks/enhancer_strength.py l0130 --temperatures 0,0.25 --strengths 0.8,0.85,0.9,0.95,1

Writes benchmarks/results/enhancer-strength/RATE_POINT.csv (per image) and RATE_POINT.md (the means).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from gsp.evaluation.points import resolve_rate_points
from gsp.evaluation.running import CACHE, image_names, original_and_decoded
from gsp.evaluation.variants import parse_values

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "enhancer-strength"


def blend(decoded: np.ndarray, enhanced: np.ndarray, strength: float) -> np.ndarray:
    """uint8 ``decoded + strength * (enhanced - decoded)``, rounded and clipped."""
    d = decoded.astype(np.float64)
    return np.clip(np.round(d + strength * (enhanced.astype(np.float64) - d)), 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    from enhancer.inference import enhance_array
    from groundstation.metrics import psnr_db

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rate_point", help="a registry rate point (l0008, l0032, l0130)")
    ap.add_argument("--images", default="runs/data/valsel", help="the selection subset (default runs/data/valsel)")
    ap.add_argument("--temperatures", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--strengths", default="0.6,0.7,0.8,0.9,1")
    ap.add_argument("--seed", type=int, default=0, help="the enhancer's latent seed (the evaluation's: 0)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    temps = parse_values(args.temperatures, "--temperatures")
    strengths = parse_values(args.strengths, "--strengths", positive=True)
    point = resolve_rate_points([args.rate_point])[0]
    _, model, _, _ = CACHE.models(point)
    metric = CACHE.metric("perceptual-cached")
    rows = []
    for name, path in image_names(args.images, None):
        image, decoded, _ = original_and_decoded(point, str(path))
        p0, l0 = psnr_db(image, decoded), metric.distance(image, decoded)
        for t in temps:
            enhanced = enhance_array(model, decoded, seed=args.seed, temperature=t)
            for a in strengths:
                img = blend(decoded, enhanced, a)
                rows.append({"image": name, "temperature": t, "strength": a, "psnr_decoded": p0,
                             "psnr": psnr_db(image, img), f"{metric.name}_decoded": l0,
                             metric.name: metric.distance(image, img)})
        print(name, flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"{args.rate_point}.csv", index=False)
    g = df.groupby(["temperature", "strength"])
    summary = pd.DataFrame({"d_psnr_db": g.psnr.mean() - g.psnr_decoded.mean(),
                            f"d_{metric.name}_pct": 100 * (g[metric.name].mean() / g[f"{metric.name}_decoded"].mean()
                                                           - 1)}).reset_index()
    lines = [f"# Strength x temperature, {args.rate_point}, {df.image.nunique()} images of `{args.images}`", "",
             f"`benchmarks/enhancer_strength.py {args.rate_point} --temperatures {args.temperatures} --strengths "
             f"{args.strengths}`; enhancer `{point.enhancer}`, seed {args.seed}.", "",
             f"| T | strength | Δ PSNR dB | Δ {metric.name} % |", "|---|---|---|---|"]
    lines += [f"| {r.temperature:g} | {r.strength:g} | {r.d_psnr_db:+.3f} | {getattr(r, f'd_{metric.name}_pct'):+.1f} |"
              for r in summary.itertuples()]
    (out / f"{args.rate_point}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
