"""Perception-distortion sweep of the enhancer and of two trivial controls on a pairs folder (issue 16).

For every image of a ``gsp make-pairs`` folder (ground truth + real ELIC decode; the same decode as
``gsp evaluate``), computes PSNR, ST-LPIPS Alex (``stlpips_alex``, the evaluation's metric) and ST-LPIPS VGG
(``stlpips_vgg``, same package, same tiling) of:

* ``decoded``;
* ``enh:<label>:T=<t>``: each enhancer checkpoint at each temperature (the operating knob), seed 0 latent
  field as ``gsp evaluate`` (``enhancer.inference.enhance_array``);
* ``noise:<sigma>``: decoded + Gaussian noise of std sigma DN (seed fixed per image), clipped, rounded;
* ``usm:r<radius>:<percent>``: PIL unsharp mask of the decoded image (threshold 0).

The controls are swept in strength so that they can be compared with the enhancer *at the same PSNR cost*
(interpolated by ``report.py``). Rows are appended to ``--out`` (CSV) and a rerun skips rows already there.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results/evaluation-v3/sweep.py runs/pairs-l0032-valsel \
        --enhancer v3=weights/enhancer/demo-inn-l0032-v3.pt --temps 0,0.1,0.25,0.5 --out OUT.csv
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from enhancer.checkpoint import load_enhancer  # noqa: E402
from enhancer.inference import enhance_array  # noqa: E402
from groundstation.images import load_rgb  # noqa: E402
from groundstation.metrics import PerceptualMetric, psnr_db  # noqa: E402

COLUMNS = ["image", "variant", "psnr_db", "stlpips_alex", "stlpips_vgg", "rms_change_dn", "seconds"]


class _CachedRef(torch.nn.Module):
    """The ST-LPIPS forward (v0.1, non-spatial) with the reference side's features cached: the same numbers,
    about half the cost when one ground truth is compared with many variants."""

    def __init__(self, lp) -> None:
        super().__init__()
        self.lp = lp
        self.cache: dict = {}

    def forward(self, in0, in1):
        from stlpips_pytorch.stlpips import spatial_average
        from stlpips_pytorch import utils

        lp = self.lp
        key = (tuple(in0.shape), hash(in0.numpy().tobytes()))
        if key not in self.cache:
            if len(self.cache) > 64:
                self.cache.clear()
            self.cache[key] = [utils.normalize_tensor(o) for o in lp.net.forward(lp.scaling_layer(in0))]
        f0 = self.cache[key]
        outs1 = lp.net.forward(lp.scaling_layer(in1))
        val = 0
        for kk in range(lp.L):
            d = (f0[kk] - utils.normalize_tensor(outs1[kk])) ** 2
            val = val + spatial_average(lp.lins[kk](d), keepdim=True)
        return val


def _cached(m: PerceptualMetric) -> PerceptualMetric:
    assert m.model.version == "0.1" and m.model.lpips and not m.model.spatial
    m.model = _CachedRef(m.model).eval()
    return m


def stlpips_vgg() -> PerceptualMetric:
    """ST-LPIPS, VGG16 shift-tolerant variant (weights ship in stlpips-pytorch), the evaluation's tiling."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from stlpips_pytorch import stlpips

        model = stlpips.LPIPS(net="vgg", variant="shift_tolerant", verbose=False)
    m = PerceptualMetric("stlpips_alex", "ST-LPIPS VGG16 shift-tolerant", model, min_size=21)
    m.name = "stlpips_vgg"
    return m


def unsharp(img: np.ndarray, radius: float, percent: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).filter(ImageFilter.UnsharpMask(radius=radius, percent=percent,
                                                                          threshold=0)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pairs")
    p.add_argument("--enhancer", action="append", default=[], metavar="LABEL=PATH")
    p.add_argument("--temps", default="0,0.1,0.25,0.5")
    p.add_argument("--noise", default="1,2,3,4,6", help="noise std in DN (empty: none)")
    p.add_argument("--usm", default="1:50,1:100,1:150,1:250,1:400", help="radius:percent,... (empty: none)")
    p.add_argument("--metrics", default="alex,vgg")
    p.add_argument("--vgg-for", default="", help="comma-separated variant prefixes that get stlpips_vgg "
                   "(default: all; e.g. decoded,enh to save CPU on the controls)")
    p.add_argument("--limit", type=int)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    names = sorted(f.stem for f in (Path(a.pairs) / "decoded").glob("*.png"))
    # class-interleaved order (a0, b0, ..., g0, a1, ...): any prefix of the run is stratified by class
    by_class: dict[str, list[str]] = {}
    for n in names:
        by_class.setdefault(n.split("__")[0], []).append(n)
    names = [lst[i] for i in range(max(map(len, by_class.values()), default=0)) for lst in by_class.values()
             if i < len(lst)]
    if a.limit:
        names = names[: a.limit]
    temps = [float(t) for t in a.temps.split(",") if t]
    models = {}
    for spec in a.enhancer:
        label, path = spec.split("=", 1)
        models[label] = load_enhancer(path)[0].eval()
    metrics = {}
    if "alex" in a.metrics:
        metrics["stlpips_alex"] = _cached(PerceptualMetric.stlpips_alex())
    if "vgg" in a.metrics:
        metrics["stlpips_vgg"] = _cached(stlpips_vgg())
    out = Path(a.out)
    done = set()
    if out.is_file():
        with open(out) as f:
            done = {(r["image"], r["variant"]) for r in csv.DictReader(f)}
    new = not out.is_file()
    f = open(out, "a", newline="")
    w = csv.DictWriter(f, COLUMNS)
    if new:
        w.writeheader()
    for i, name in enumerate(names):
        gt = load_rgb(Path(a.pairs) / "gt" / f"{name}.png")
        dec = load_rgb(Path(a.pairs) / "decoded" / f"{name}.png")
        variants = [("decoded", lambda: dec)]
        for label, m in models.items():
            for t in temps:
                variants.append((f"enh:{label}:T={t:g}", lambda m=m, t=t: enhance_array(m, dec, seed=0, temperature=t)))
        seed = int.from_bytes(name.encode()[-4:], "little")
        for s in [float(v) for v in a.noise.split(",") if v]:
            variants.append((f"noise:{s:g}", lambda s=s: np.clip(
                dec + np.random.default_rng(seed).normal(0, s, dec.shape), 0, 255).round().astype(np.uint8)))
        for spec in [v for v in a.usm.split(",") if v]:
            r, pc = spec.split(":")
            variants.append((f"usm:r{r}:{pc}", lambda r=float(r), pc=int(pc): unsharp(dec, r, pc)))
        for label, make in variants:
            if (name, label) in done:
                continue
            t0 = time.perf_counter()
            img = make()
            row = {"image": name, "variant": label, "psnr_db": psnr_db(gt, img),
                   "rms_change_dn": float(np.sqrt(np.mean((img.astype(np.float64) - dec) ** 2)))}
            vgg_ok = not a.vgg_for or any(label.startswith(x) for x in a.vgg_for.split(","))
            for col in ("stlpips_alex", "stlpips_vgg"):
                use = col in metrics and (col != "stlpips_vgg" or vgg_ok)
                row[col] = metrics[col].distance(gt, img) if use else float("nan")
            row["seconds"] = time.perf_counter() - t0
            w.writerow(row)
        f.flush()
        print(f"{i + 1}/{len(names)} {name}", flush=True)
    f.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
