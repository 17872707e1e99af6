"""Magnitudes and gradient norms of the enhancer's four loss terms at a starting checkpoint, to weight L_per
against the pixel terms (docs/evaluation.md): three batches of 8 crops of 96 px, every term's value and the norm
of its gradient alone, and L_per of the decoded image for scale. L_per's backbone: ST-LPIPS VGG at blocks 5 and 4
(the default), or the LPIPS v0.1 VGG distance itself (``--backbone lpips-vgg``, the paper's L_per).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loss_balance.py runs/pairs-l0032-train245 \
        weights/enhancer/demo-inn-l0032.pt            -> benchmarks/results/loss_balance.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loss_balance.py runs/pairs-l0032-train245 \
        weights/enhancer/demo-inn-l0032.pt --backbone lpips-vgg --w-en 1 \
        --out benchmarks/results/loss_balance_lpips_vgg.json
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from enhancer.checkpoint import load_enhancer
from gsp.training.enhancer import LossConfig, enhancer_losses, step_noise
from gsp.training.pairs import PairSet
from gsp.training.perceptual import build_perceptual

from _results import RESULTS, write_result

TERMS = ("l_dec", "l_case", "l_en", "l_per")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pairs", help="pairs folder from gsp make-pairs (training pairs)")
    p.add_argument("enhancer", help="enhancer checkpoint to start from")
    p.add_argument("--backbone", choices=("stlpips-vgg", "lpips-vgg", "lpips-alex"), default="stlpips-vgg",
                   help="L_per's network (default stlpips-vgg, blocks 5 and 4)")
    p.add_argument("--w-en", type=float, default=0.05, help="weight of L_en in the total (0.05: v2; 1: v3)")
    p.add_argument("--out", default=str(RESULTS / "loss_balance.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = load_enhancer(args.enhancer)[0].train()
    data = PairSet(args.pairs)
    params = [q for q in model.parameters() if q.requires_grad]
    loss = LossConfig(w_dec=1, w_case=0.05, w_en=args.w_en, w_per=1)
    rows = []
    for block in ((5, 4) if args.backbone == "stlpips-vgg" else (None,)):
        per = build_perceptual(args.backbone, block=block or 5)
        for step in range(3):
            x, xe = data.batch(1000 + step, 8, 96, seed=0, transpose=True)
            zp, noise = step_noise(0, step, tuple(x.shape), loss)
            res = enhancer_losses(model, x, xe, zp, noise, loss, per)
            row = {"block": block, "step": step}
            for k in TERMS:
                model.zero_grad()
                res[k].backward(retain_graph=True)
                row[k] = float(res[k])
                row[f"{k}_grad_norm"] = math.sqrt(sum(float((q.grad ** 2).sum()) for q in params if q.grad is not None))
            with torch.no_grad():
                row["l_per_decoded"] = float(per.distance(xe, x).sum() if args.backbone.startswith("lpips-")
                                             else ((per(xe) - per(x)) ** 2).sum())
            print(f"block {block} step {step}: " + ", ".join(f"{k} {row[k]:.4g} (|grad| {row[k + '_grad_norm']:.3g})"
                                                             for k in TERMS)
                  + f", l_per(decoded) {row['l_per_decoded']:.4g}", flush=True)
            rows.append(row)
    write_result(args.out, {"pairs": args.pairs, "enhancer": args.enhancer, "backbone": args.backbone,
                            "w_en": args.w_en, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
