"""``gsp evaluate``: the paper's evaluation and the perception-distortion sweep (:mod:`gsp.evaluation`)."""

from __future__ import annotations

import argparse

from ._common import Paragraphs, progress, tiling_options

__all__ = ["COMMANDS", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "evaluate", help="the paper's evaluation: ELIC then the enhancer at each rate point, tables and plots",
        description="For every rate point (codec + the enhancer trained behind it + its operating point, "
        "temperature and strength, from "
        "configs/models.yaml rate_points) and every image under IMAGE_DIR: real ELIC compress/decompress, "
        "enhancement, then bpp, PSNR, MS-SSIM and the perceptual distance of decoded and enhanced against the "
        "original. Writes OUT/evaluation.csv, OUT/evaluation.md, OUT/rd.png, OUT/rate_perception.png and "
        "OUT/per_image.csv (a rerun resumes from it).\n\n"
        "With --sweep, also the perception-distortion sweep: per rate point and image, the same decode is enhanced "
        "at every temperature of --temperatures and strength of --strengths (the operating knobs; the registry's "
        "operating point is always included) and altered by two trivial controls swept in strength, Gaussian "
        "noise (--noise) and an unsharp mask (--unsharp); each variant's PSNR and perceptual distance (and ST-LPIPS VGG, --sweep-vgg) go to "
        "OUT/perception_distortion.csv (one row per image and variant; a rerun computes only missing rows). "
        "OUT/perception_distortion.md gives, at the registry's operating point, the change in PSNR and perceptual "
        "distance (paired 95% intervals) and each control interpolated to the same PSNR cost; "
        "OUT/perception_distortion.png draws perceptual distance against PSNR per rate point: the enhancer's curve "
        "over temperature (one per strength), the controls' curves, the decoded point and the registry's point. "
        "--rule-max-cost applies the operating-point rule and writes its choice to OUT/operating_points.json.",
        formatter_class=Paragraphs,
        epilog="examples:\n  gsp evaluate ../shared/data/rsscn7/val -o runs/eval-val --workers 2 "
        "--reference configs/reference_points.csv\n"
        "  gsp evaluate runs/data/valsel -o runs/eval-valsel --rate-points l0130 --sweep-only --temperatures 0,0.5 "
        "--strengths 0.8,1 --rule-max-cost 0.45\n"
        "  gsp evaluate runs/data/valsel -o runs/eval-ablation --rate-points l0032 --enhancer runs/abl/enhancer.pt "
        "--sweep --noise none --unsharp none")
    ev.add_argument("images", metavar="IMAGE_DIR", help="folder of images (searched recursively)")
    ev.add_argument("-o", "--out", required=True, metavar="OUT_DIR", help="output folder")
    ev.add_argument("--rate-points", metavar="NAME,...",
                    help="comma-separated rate point names (default: every rate point in the registry)")
    ev.add_argument("--reference", metavar="CSV",
                    help="reference points to compare with (columns label, bpp, psnr_db [, ms_ssim, "
                    "perceptual_metric, perceptual, note]), e.g. configs/reference_points.csv")
    ev.add_argument("--limit", type=int, help="only N images, evenly spaced over the sorted list (every class "
                    "folder represented)")
    ev.add_argument("--temperature", type=float, help="use this temperature for every rate point instead of "
                    "the registry's (to evaluate another operating point)")
    ev.add_argument("--strength", type=float, help="use this strength (the fraction of the enhancer's change kept, "
                    "in (0, 1]) for every rate point instead of the registry's")
    ev.add_argument("--enhancer", metavar="NAME_OR_FILE",
                    help="evaluate this enhancer (a registry name or a checkpoint file, e.g. a training run's "
                    "export) instead of the registry's, at the one rate point --rate-points names")
    ev.add_argument("--workers", type=int, default=1, help="worker processes, 1 torch thread each (default 1)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the enhancer's latent field")
    tiling_options(ev, "adds the seam ratio of each product and of the original", "whole images, the paper's protocol")
    sw = ev.add_argument_group("perception-distortion sweep (--sweep)")
    sw.add_argument("--sweep", action="store_true",
                    help="also sweep the enhancer's temperature and the two controls and write "
                    "OUT/perception_distortion.{csv,md,png} (and _summary.csv)")
    for flag, metavar, text in (  # comma-separated value lists (gsp.evaluation.parse_values)
            ("--temperatures", "T,...", "enhancer temperatures to sweep, >= 0 (default 0,0.25,0.5,0.75,1), or none "
             "(the controls against the operating point alone); each rate point's registry temperature is always "
             "added and marked as the operating point"),
            ("--strengths", "A,...", "enhancer strengths to sweep at each temperature: the fraction of the "
             "enhancer's change kept, decoded + a (enhanced - decoded), in (0, 1] (default 1)"),
            ("--noise", "STD,...", "Gaussian-noise control: noise stds in DN (8-bit levels), > 0, or none "
             "(default 2,3,4,6)"),
            ("--unsharp", "PERCENT,...", "unsharp-mask control (PIL, threshold 0): amounts in whole percent, > 0, "
             "or none (default 50,100,150,250)")):
        sw.add_argument(flag, metavar=metavar, help=text)
    sw.add_argument("--unsharp-radius", type=float, metavar="PX", help="radius of the unsharp mask (default 1)")
    sw.add_argument("--rule-max-cost", type=float, metavar="DB",
                    help="the operating-point rule: among the swept operating points (temperature, strength) costing "
                    "at most DB of PSNR, the lowest perceptual distance (default 0.6); the choice per rate point goes "
                    "to operating_points.json and the report, beside the registry's")
    sw.add_argument("--sweep-only", action="store_true",
                    help="only the sweep (implies --sweep), without the evaluation table before it (no bpp, "
                    "MS-SSIM or secondary perceptual columns: the costly part): the operating point's paired "
                    "effects, the controls and the rule, for a large reported set or an ablation")
    sw.add_argument("--sweep-vgg", choices=["none", "enhanced", "all"],
                    help="which variants also get ST-LPIPS VGG beside the evaluation's metric: none, enhanced "
                    "(decoded and enhanced; the default) or all (the controls too; VGG is the costly part)")


def _sweep_spec(args):
    """The sweep's settings from the evaluate arguments (None without --sweep); ConfigError for bad values."""
    from groundstation.errors import ConfigError
    from gsp.evaluation import SweepSpec, check_sweep_only, parse_values

    # option -> (SweepSpec field, how its text is read); the numbers are checked by parse_values and SweepSpec
    fields = {"--temperatures": ("temperatures", lambda v: parse_values(v, "--temperatures", allow_none=True)),
              "--strengths": ("strengths", lambda v: parse_values(v, "--strengths", positive=True)),
              "--noise": ("noise", lambda v: parse_values(v, "--noise", positive=True, allow_none=True)),
              "--unsharp": ("unsharp", lambda v: parse_values(v, "--unsharp", positive=True, integer=True,
                                                              allow_none=True)),
              "--unsharp-radius": ("unsharp_radius", float), "--sweep-vgg": ("vgg", str),
              "--rule-max-cost": ("rule_max_cost_db", float)}
    given = {o: getattr(args, o[2:].replace("-", "_")) for o in fields}
    given = {o: v for o, v in given.items() if v is not None}
    if args.sweep_only:  # implies --sweep
        args.sweep = True
        check_sweep_only(args.tile_size, args.reference, "--sweep-only")
        if args.temperature is not None or args.strength is not None:
            raise ConfigError("--temperature / --strength set the operating point of the evaluation table, which "
                              "--sweep-only leaves out; sweep other points with --temperatures / --strengths")
    if not args.sweep:
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to the perception-distortion sweep: add --sweep")
        return None
    kw = {fields[o][0]: fields[o][1](v) for o, v in given.items() if o in fields}
    return SweepSpec(**kw)


def cmd_evaluate(args) -> int:
    from gsp.evaluation import Tiling, resolve_rate_points

    names = [n.strip() for n in args.rate_points.split(",") if n.strip()] if args.rate_points else None
    spec = _sweep_spec(args)  # bad sweep options fail before any work
    tiling = Tiling.of(args.tile_size, args.decode_mode)
    points = resolve_rate_points(names, temperature=args.temperature, enhancer=args.enhancer, strength=args.strength)
    files = {} if args.sweep_only else _evaluation(args, points, tiling)
    if spec is not None:
        from gsp.evaluation import sweep_folder

        # the sweep marks each rate point's registry operating point, also when --temperature/--strength replaced it
        replaced = args.temperature is not None or args.strength is not None
        chosen = resolve_rate_points(names, enhancer=args.enhancer) if replaced else points
        sw = sweep_folder(args.images, args.out, chosen, spec, limit=args.limit, workers=args.workers,
                          seed=args.seed, progress=progress())
        print(f"sweep: {sw.computed} rows computed, {sw.skipped} already done")
        for r in sw.chosen.to_dict("records"):
            print(f"  {r['rate_point']} at the registry's {r['variant'].removeprefix('enhanced:')}: PSNR "
                  f"{r['d_psnr_db']:+.2f} dB, "
                  f"{r['perceptual_metric']} {r['d_perceptual_pct']:+.1f}%")
        for r in sw.controls.to_dict("records"):
            if r["beyond_sweep"]:
                print(f"    {r['control_name']}: the sweep does not reach that PSNR cost "
                      f"(at most {r['max_cost_db']:.2f} dB)")
            else:
                print(f"    {r['control_name']} at the same PSNR cost (strength {r['strength']:.2f}): "
                      f"{r.get('control_d_perceptual_pct', float('nan')):+.1f}%")
        for r in sw.rule.to_dict("records"):
            verdict = ("as the registry records" if r["agrees"] else
                       f"the registry says T={r['registry_temperature']:g}, a={r['registry_strength']:g}")
            print(f"  rule (cost <= {r['max_cost_db']:g} dB, lowest perceptual): {r['rate_point']} T="
                  f"{r['temperature']:g}, a={r['strength']:g}"
                  f"{'' if r['qualified'] else ' (none qualified: the cheapest)'}, {verdict}")
        files.update(sw.files)
    print("\n".join(f"{k}: {v}" for k, v in files.items()))
    return 0


def _evaluation(args, points, tiling) -> dict[str, str]:
    """The evaluation table (each rate point, decoded and enhanced): prints its effects, returns its files."""
    from gsp.evaluation import evaluate_folder

    res = evaluate_folder(args.images, args.out, points, limit=args.limit, workers=args.workers, seed=args.seed,
                          reference=args.reference, progress=progress(), tiling=tiling)
    print(f"{res.images} images x {len(points)} rate points: {res.computed} evaluated, {res.skipped} already done"
          + (f" (coded in {tiling.tile_size} px tiles, decode mode {tiling.decode_mode})" if tiling.tile_size else ""))
    if tiling.tile_size:
        for r in res.summary.to_dict("records"):
            print(f"  {r['rate_point']} {r['product']}: seam ratio {r['seam_ratio']:.3f} (original "
                  f"{r['seam_ratio_source']:.3f})")
    for row in res.effects.to_dict("records"):
        print(f"  {row['rate_point']}: {res.summary.perceptual_metric.iloc[0]} {row['d_perceptual']:+.4f} "
              f"({row['perceptual_change_pct']:+.1f}%, better on {row['perceptual_helped']}/{row['images']} "
              f"images), PSNR {row['d_psnr_db']:+.2f} dB")
    return dict(res.files)


COMMANDS = {"evaluate": cmd_evaluate}
