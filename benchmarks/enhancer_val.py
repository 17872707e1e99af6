"""Decoded vs enhanced on a pairs folder (from ``gsp make-pairs``): PSNR, MS-SSIM and perceptual distance at the
same bpp (the enhancer adds no bits), for one or more temperatures.

    .venv/bin/python benchmarks/enhancer_val.py runs/pairs-l0032-val --enhancer demo-inn-l0032 --temperatures 0 0.5 1

Writes benchmarks/results/enhancer_val_<enhancer>.json and .md. Temperature is the only thing chosen on the
validation set; nothing else is tuned on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enhancer.checkpoint import load_enhancer  # noqa: E402
from enhancer.inference import enhance_array  # noqa: E402
from groundstation.images import load_rgb  # noqa: E402
from groundstation.metrics import PerceptualMetric, ms_ssim, psnr_db  # noqa: E402
from groundstation.registry import resolve_model  # noqa: E402


def markdown_table(df: pd.DataFrame) -> str:
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pairs", help="pairs folder (gt/, decoded/, pairs.csv)")
    p.add_argument("--enhancer", required=True, help="registry name or checkpoint file")
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="first N pairs only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="output stem (default benchmarks/results/enhancer_val_<name>)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    name, path, sha, _ = resolve_model(args.enhancer, "enhancer")
    model, config, digest = load_enhancer(path, sha)
    pairs = pd.read_csv(Path(args.pairs) / "pairs.csv")
    if args.limit:
        pairs = pairs.head(args.limit)
    perceptual = PerceptualMetric.auto()
    rows = []
    for rec in tqdm(pairs.itertuples(), total=len(pairs), desc="evaluate", unit="img"):
        gt = load_rgb(Path(args.pairs) / "gt" / f"{rec.name}.png")
        dec = load_rgb(Path(args.pairs) / "decoded" / f"{rec.name}.png")
        row = {"name": rec.name, "bpp": rec.bpp, "decoded_psnr_db": psnr_db(gt, dec),
               "decoded_ms_ssim": ms_ssim(gt, dec).value, f"decoded_{perceptual.name}": perceptual.distance(gt, dec)}
        for t in args.temperatures:
            t0 = time.perf_counter()
            enh = enhance_array(model, dec, seed=args.seed, temperature=t)
            row[f"enhance_ms_T{t:g}"] = (time.perf_counter() - t0) * 1e3
            row[f"enhanced_T{t:g}_psnr_db"] = psnr_db(gt, enh)
            row[f"enhanced_T{t:g}_ms_ssim"] = ms_ssim(gt, enh).value
            row[f"enhanced_T{t:g}_{perceptual.name}"] = perceptual.distance(gt, enh)
        rows.append(row)
    df = pd.DataFrame(rows)
    table = [{"product": "decoded (ELIC)", "bpp": df.bpp.mean(), "psnr_db": df.decoded_psnr_db.mean(),
              "ms_ssim": df.decoded_ms_ssim.mean(), perceptual.name: df[f"decoded_{perceptual.name}"].mean(),
              "enhance_ms_per_image": 0.0}]
    for t in args.temperatures:
        table.append({"product": f"enhanced T={t:g}", "bpp": df.bpp.mean(),
                      "psnr_db": df[f"enhanced_T{t:g}_psnr_db"].mean(), "ms_ssim": df[f"enhanced_T{t:g}_ms_ssim"].mean(),
                      perceptual.name: df[f"enhanced_T{t:g}_{perceptual.name}"].mean(),
                      "enhance_ms_per_image": df[f"enhance_ms_T{t:g}"].mean()})
    summary = pd.DataFrame(table)
    stem = Path(args.out or ROOT / "benchmarks" / "results" / f"enhancer_val_{name.removesuffix('.pt')}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    md = (f"Enhancer `{name}` (sha256 {digest[:12]}, {config}) on `{args.pairs}` ({len(df)} images), "
          f"seed {args.seed}; perceptual metric: {perceptual.description}\n\n" + markdown_table(summary))
    stem.with_suffix(".md").write_text(md + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"enhancer": name, "sha256": digest, "pairs": args.pairs,
                                                     "images": len(df), "perceptual": perceptual.name,
                                                     "summary": table}, indent=2))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
