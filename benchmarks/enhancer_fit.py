"""How far has an enhancer training run got? Decoded vs enhanced on a few pairs, T=0 and T=1.

Used during training (on *training* pairs, so that nothing is tuned on validation data) and for the start /
loss-weight ablation in docs/evaluation.md. Takes a run folder (its last.pt) or any enhancer checkpoint.

    .venv/bin/python benchmarks/enhancer_fit.py runs/enh-l0032-id runs/pairs-l0032-train --images 12

Images: every (pairs // images)-th pair in pairs.csv order, the top-left 256x256 of each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from enhancer.checkpoint import load_enhancer
from enhancer.inference import enhance_array
from groundstation.images import load_rgb
from groundstation.metrics import PerceptualMetric, psnr_db


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="training run folder (uses its last.pt) or an enhancer checkpoint file")
    p.add_argument("pairs", help="pairs folder from gsp make-pairs")
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--size", type=int, default=256, help="crop (top-left) side in pixels, even")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ckpt = Path(args.run) / "last.pt" if Path(args.run).is_dir() else Path(args.run)
    model, _, _ = load_enhancer(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    step = state.get("step", "?") if isinstance(state, dict) else "?"
    pairs = Path(args.pairs)
    table = pd.read_csv(pairs / "pairs.csv")
    table = table.iloc[:: max(1, len(table) // args.images)].head(args.images)
    metric = PerceptualMetric.auto()
    rows = []
    for rec in table.itertuples():
        gt = load_rgb(pairs / "gt" / f"{rec.name}.png")[: args.size, : args.size]
        dec = load_rgb(pairs / "decoded" / f"{rec.name}.png")[: args.size, : args.size]
        e0, e1 = enhance_array(model, dec, temperature=0), enhance_array(model, dec, temperature=1)
        rows.append([psnr_db(gt, dec), psnr_db(gt, e0), psnr_db(gt, e1),
                     metric.distance(gt, dec), metric.distance(gt, e0), metric.distance(gt, e1)])
    a = np.array(rows)
    print(f"{ckpt} (step {step}), {len(a)} pairs of {pairs}:\n"
          f"  PSNR   decoded {a[:, 0].mean():.2f} dB | T=0 {a[:, 1].mean():.2f} dB "
          f"(better on {int((a[:, 1] > a[:, 0]).sum())}) | T=1 {a[:, 2].mean():.2f} dB\n"
          f"  {metric.name} decoded {a[:, 3].mean():.4f} | T=0 {a[:, 4].mean():.4f} "
          f"(better on {int((a[:, 4] < a[:, 3]).sum())}) | T=1 {a[:, 5].mean():.4f} "
          f"(better on {int((a[:, 5] < a[:, 3]).sum())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
