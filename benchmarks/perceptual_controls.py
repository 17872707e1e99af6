"""Is the enhancer's perceptual gain more than sharpening? Controls on a pairs folder (from ``gsp make-pairs``).

For N images evenly spaced over the pairs (every class represented), compares against the ground truth:

* ``decoded``: the ELIC output;
* ``enhanced``: the enhancer's inverse at the given temperature;
* ``unsharp r1`` / ``unsharp r2``: PIL's unsharp mask on the decoded image (radius 1 and 2 px, 150 %, threshold 0),
  a classical sharpening that adds no information;
* ``decoded + noise``: decoded plus Gaussian noise with the same RMS as the enhancer's change to the image
  (per image), which adds high-frequency energy but no structure.

A perceptual metric that only rewards high-frequency energy would rank the controls close to the enhancer.

    .venv/bin/python benchmarks/perceptual_controls.py runs/pairs-l0032-val --enhancer demo-inn-l0032 --limit 28

Writes benchmarks/results/perceptual_controls_<enhancer>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFilter
from tqdm import tqdm

from enhancer.checkpoint import load_enhancer
from enhancer.inference import enhance_array
from groundstation.images import load_rgb
from groundstation.metrics import PerceptualMetric, psnr_db
from groundstation.registry import resolve_model

ROOT = Path(__file__).resolve().parent.parent


def _unsharp(img: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(img).filter(ImageFilter.UnsharpMask(radius=radius, percent=150, threshold=0)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pairs", help="pairs folder (gt/, decoded/, pairs.csv)")
    p.add_argument("--enhancer", required=True, help="registry name or checkpoint file")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--limit", type=int, default=28, help="images, evenly spaced over the sorted pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    name, path, sha, _ = resolve_model(args.enhancer, "enhancer")
    model, config, digest = load_enhancer(path, sha)
    pairs = pd.read_csv(Path(args.pairs) / "pairs.csv").sort_values("name").reset_index(drop=True)
    picks = np.linspace(0, len(pairs) - 1, min(args.limit, len(pairs))).round().astype(int)
    perceptual = PerceptualMetric.auto()
    rng = np.random.default_rng(args.seed)
    rows = []
    for rec in tqdm(pairs.iloc[picks].itertuples(), total=len(picks), desc="controls", unit="img"):
        gt = load_rgb(Path(args.pairs) / "gt" / f"{rec.name}.png")
        dec = load_rgb(Path(args.pairs) / "decoded" / f"{rec.name}.png")
        enh = enhance_array(model, dec, seed=args.seed, temperature=args.temperature)
        rms = float(np.sqrt(np.mean((enh.astype(np.float64) - dec) ** 2)))
        noisy = np.clip(dec + rng.normal(0, rms, dec.shape), 0, 255).round().astype(np.uint8)
        variants = {"decoded": dec, f"enhanced T={args.temperature:g}": enh, "unsharp r1": _unsharp(dec, 1),
                    "unsharp r2": _unsharp(dec, 2), "decoded + noise (enhancer's RMS change)": noisy}
        for label, img in variants.items():
            rows.append({"image": rec.name, "variant": label, "psnr_db": psnr_db(gt, img),
                         perceptual.name: perceptual.distance(gt, img),
                         "rms_change_dn": float(np.sqrt(np.mean((img.astype(np.float64) - dec) ** 2)))})
    df = pd.DataFrame(rows)
    base = df[df.variant == "decoded"].set_index("image")[perceptual.name]
    df["helped"] = df.apply(lambda r: r[perceptual.name] < base[r.image], axis=1)
    table = (df.groupby("variant", sort=False)
             .agg(psnr_db=("psnr_db", "mean"), perceptual=(perceptual.name, "mean"),
                  rms_change_dn=("rms_change_dn", "mean"), helped=("helped", "sum"))
             .reset_index())
    stem = ROOT / "benchmarks" / "results" / f"perceptual_controls_{name.removesuffix('.pt')}"
    lines = [f"Controls on `{args.pairs}` ({len(picks)} images evenly spaced), enhancer `{name}` (sha256 "
             f"{digest[:12]}); perceptual metric `{perceptual.name}` (lower is better)", "",
             f"| variant | PSNR dB | {perceptual.name} | RMS change vs decoded (DN) | images better than decoded |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.variant} | {r.psnr_db:.2f} | {r.perceptual:.4f} | {r.rms_change_dn:.2f} | {int(r.helped)}/"
              f"{len(picks)} |" for r in table.itertuples()]
    md = "\n".join(lines) + "\n"
    stem.with_suffix(".md").write_text(md)
    stem.with_suffix(".json").write_text(json.dumps({"enhancer": name, "sha256": digest, "pairs": args.pairs,
                                                     "images": len(picks), "perceptual": perceptual.name,
                                                     "table": table.to_dict("records")}, indent=2))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
