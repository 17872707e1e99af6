"""Quantise registry codecs' prior networks for the ``int`` entropy mode (groundstation/intprior.py).

Post-training calibration: the float model codes the calibration images (RSSCN7 train, a fixed random choice),
the largest activation of every prior convolution sets its integer range; weights get one scale per output
channel. Writes ``NAME.int.pt`` (int8 weights) beside each codec's checkpoint ``NAME.pt`` (for the registry
codecs: ``weights/codec/``), proves its bounds, and writes the per-layer bounds and kernels to a results JSON.
The registry's ``int_prior`` entries (path, sha256) are what this prints; a codec outside the registry (a
checkpoint file, e.g. from ``gsp train-codec --export``) finds its sidecar beside it without one.

    PYTHONPATH=$PWD python benchmarks/int_prior_quantise.py ../shared/data/rsscn7/train \
        --codecs demo-elic-l0008 demo-elic-l0032 demo-elic-l0130 --images 32
    PYTHONPATH=$PWD python benchmarks/int_prior_quantise.py TRAIN_IMAGE_DIR --codecs runs/mine/codec.pt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from groundstation.codec import CODEC_ALIGN, _pad_to, _to_tensor, load_codec
    from groundstation.fileio import sha256_file
    from groundstation.images import list_images, load_rgb
    from groundstation.intprior import load_int_prior, quantise, sidecar_path
    from groundstation.registry import REPO_ROOT, resolve_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", help="calibration images (a folder of class folders)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--codecs", nargs="+", default=["demo-elic-l0008", "demo-elic-l0032", "demo-elic-l0130"],
                    help="registry names or checkpoint files")
    ap.add_argument("--out-dir", help="where the sidecars go (default: beside each checkpoint, where the station "
                    "looks for them)")
    ap.add_argument("--output", help="results JSON (default: benchmarks/results/int_prior_quantise.json for "
                    "registry codecs, else NAME.int.json beside the first sidecar)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    files = list_images(args.train)
    rng = np.random.default_rng(args.seed)
    pick = [files[i] for i in sorted(rng.choice(len(files), min(args.images, len(files)), replace=False))]
    first = None
    result = {"calibration": {"folder": str(args.train), "images": len(pick), "seed": args.seed}, "codecs": {}}
    for name in args.codecs:
        _, ckpt, sha, _ = resolve_model(name, "codec")
        loaded = load_codec(ckpt, sha)
        t0 = time.perf_counter()
        with torch.inference_mode():
            latents = [loaded.model.g_a(_pad_to(_to_tensor(load_rgb(f), "cpu"), CODEC_ALIGN)) for f in pick]
        prior = quantise(loaded.model, latents, loaded.sha256)
        out = Path(args.out_dir) / sidecar_path(ckpt).name if args.out_dir else sidecar_path(ckpt)
        torch.save(prior.state_dict(), out)
        rows = load_int_prior(out, codec_sha256=loaded.sha256).check_bounds()  # as a station reads it
        digest = sha256_file(out)
        first = first or out
        result["codecs"][name] = {"sidecar": _shown(out, REPO_ROOT), "sha256": digest,
                                  "bytes": out.stat().st_size, "seconds": round(time.perf_counter() - t0, 1),
                                  "layers": rows}
        print(f"{name}: {out} {out.stat().st_size} bytes sha256 {digest}; largest bound 2^"
              f"{max(r['log2_bound'] for r in rows)}, chunks {sum(r['chunks'] for r in rows)} over {len(rows)} "
              f"layers, kernels {sorted({r['kernel'] for r in rows})}")
    registry_only = all(resolve_model(n, "codec")[3] is not None for n in args.codecs)
    output = args.output or (REPO_ROOT / "benchmarks" / "results" / "int_prior_quantise.json" if registry_only
                             else first.with_name(first.name.removesuffix(".pt") + ".json"))
    write_result(output, result)
    return 0


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
