"""Magnitudes and gradient norms of the loss terms at the v2 start (to weight L_per against the pixel terms).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results/evaluation-v3/probe_balance.py runs/pairs-l0032-train245 weights/enhancer/demo-inn-l0032.pt
"""
import sys, torch, math
from enhancer.checkpoint import load_enhancer
from gsp.training.pairs import PairSet
from gsp.training.perceptual import build_perceptual
from gsp.training.enhancer import LossConfig, enhancer_losses, step_noise
torch.set_num_threads(1)
model = load_enhancer(sys.argv[2])[0].train()
data = PairSet(sys.argv[1])
params = [p for p in model.parameters() if p.requires_grad]
loss = LossConfig(w_dec=1, w_case=0.05, w_en=0.05, w_per=1)
for block in (5, 4):
    per = build_perceptual("stlpips-vgg", block=block)
    rows = []
    for step in range(3):
        x, xe = data.batch(1000 + step, 8, 96, seed=0, transpose=True)
        zp, noise = step_noise(0, step, tuple(x.shape), loss)
        res = enhancer_losses(model, x, xe, zp, noise, loss, per)
        g = {}
        for k in ("l_dec", "l_case", "l_en", "l_per"):
            model.zero_grad()
            res[k].backward(retain_graph=True)
            g[k] = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params if p.grad is not None))
        # decoded-vs-x perceptual for reference
        with torch.no_grad():
            pd = float(((per(xe) - per(x)) ** 2).sum())
        print(f"block {block} step {step}: " + ", ".join(f"{k} {float(res[k]):.4g} (|grad| {g[k]:.3g})" for k in g)
              + f", l_per(decoded) {pd:.4g}", flush=True)
