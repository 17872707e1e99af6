"""The evaluation's markdown: the table per rate point and product with the enhancer's paired effect, the
reference points to compare with, and the perception-distortion sweep's report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from groundstation.errors import ConfigError

from .points import ResolvedPoint
from .stats import SECONDARY_PERCEPTUAL
from .variants import SweepSpec

__all__ = ["markdown_report", "read_reference_points", "sweep_markdown"]

REFERENCE_REQUIRED = ("label", "bpp", "psnr_db")


def read_reference_points(path: str | Path) -> pd.DataFrame:
    """Reference points to compare with: CSV with ``label, bpp, psnr_db`` (+ ``ms_ssim``, ``perceptual_metric``,
    ``perceptual``, ``note``); an empty ``bpp`` keeps a point in the table but off the plots."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--reference {path}: file not found")
    try:
        df = pd.read_csv(path, comment="#")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--reference {path}: not a CSV table ({exc})") from exc
    missing = [c for c in REFERENCE_REQUIRED if c not in df.columns]
    if missing:
        raise ConfigError(f"--reference {path}: needs columns {', '.join(REFERENCE_REQUIRED)} (missing "
                          f"{', '.join(missing)}); optional: ms_ssim, perceptual_metric, perceptual, note")
    for col in ("bpp", "psnr_db", "ms_ssim", "perceptual"):
        if col in df.columns and not pd.api.types.is_numeric_dtype(df[col]):
            raise ConfigError(f"--reference {path}: column {col} must be numeric")
    for col in ("ms_ssim", "perceptual_metric", "perceptual", "note"):
        if col not in df.columns:
            df[col] = math.nan if col in ("ms_ssim", "perceptual") else ""
    df["perceptual_metric"] = df["perceptual_metric"].fillna("")
    df["note"] = df["note"].fillna("")
    return df


def _fmt(v, digits: int = 4) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(v)
    return f"{v:.{digits}f}"


def _md_table(df: pd.DataFrame, columns: list[tuple[str, str, int]]) -> list[str]:
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in df.to_dict("records"):
        lines.append("| " + " | ".join(_fmt(row.get(c), d) for c, _, d in columns) + " |")
    return lines


def markdown_report(summary: pd.DataFrame, effects: pd.DataFrame, points: list[ResolvedPoint], *, image_dir: str,
                    images: int, metric: str, reference: pd.DataFrame | None, files: dict[str, str],
                    tile_size: int = 0, decode_mode: str = "") -> str:
    tiled = tile_size > 0
    coded = (f"Each image coded as the station codes a scene, {tile_size} px codec tiles each on its own, and "
             f"decoded as the station decodes a pass (decode mode `{decode_mode}`); seam ratio: mean step across "
             "tile boundaries / mean step inside tiles, the original's beside it." if tiled
             else "Each image coded whole (the paper's protocol).")
    lines = [f"# Evaluation on `{image_dir}` ({images} images)", "", coded, "",
             f"Perceptual distance: `{metric}` (the primary; lower is better), with "
             f"{', '.join(f'`{c}`' for c in SECONDARY_PERCEPTUAL)} beside it (not on its scale). Means over images; bpp from the real ELIC "
             "bitstreams (the enhancer adds no bits). Enhancer time: seconds per megapixel, 1 CPU thread per "
             "worker process.", "", "## Rate points", ""]
    for p in points:
        lines.append(f"- `{p.name}`: codec `{p.codec}` (lambda {p.lmbda}), enhancer `{p.enhancer}`, "
                     f"temperature {p.temperature:g}, strength {p.strength:g}")
    lines += ["", "## Table", ""]
    lines += _md_table(summary, [("rate_point", "rate point", 0), ("product", "product", 0), ("images", "images", 0),
                                 ("bpp", "bpp", 4), ("psnr_db", "PSNR dB", 2), ("ms_ssim", "MS-SSIM", 4),
                                 ("perceptual", metric, 4), *((c, c, 4) for c in SECONDARY_PERCEPTUAL),
                                 ("enhance_s_per_mp", "enhancer s/MP", 2),
                                 *((("seam_ratio", "seam ratio", 3), ("seam_ratio_source", "original's", 3))
                                   if tiled else ())])
    lines += ["", "## Enhanced minus decoded (paired over images, 95% Student-t interval)", ""]
    if not effects.empty:
        eff = effects.copy()
        for m, d in (("psnr_db", 2), ("ms_ssim", 4), ("perceptual", 4)):
            eff[f"{m}_txt"] = [f"{a:+.{d}f} ± {b:.{d}f}" if not math.isnan(b) else f"{a:+.{d}f}"
                               for a, b in zip(eff[f"d_{m}"], eff[f"d_{m}_ci95"])]
        eff["helped"] = [f"{h}/{n}" for h, n in zip(eff.perceptual_helped, eff.images)]
        lines += _md_table(eff, [("rate_point", "rate point", 0), ("perceptual_txt", f"Δ {metric}", 0),
                                 ("perceptual_change_pct", f"Δ {metric} %", 1), ("helped", "images helped", 0),
                                 ("psnr_db_txt", "Δ PSNR dB", 0), ("ms_ssim_txt", "Δ MS-SSIM", 0),
                                 *((f"{c}_change_pct", f"Δ {c} %", 1) for c in SECONDARY_PERCEPTUAL)])
    if reference is not None and len(reference):
        lines += ["", "## Reference points", ""]
        lines += _md_table(reference, [("label", "label", 0), ("bpp", "bpp", 4), ("psnr_db", "PSNR dB", 2),
                                       ("ms_ssim", "MS-SSIM", 4), ("perceptual_metric", "perceptual metric", 0),
                                       ("perceptual", "perceptual", 4), ("note", "note", 0)])
        other = sorted({m for m in reference.perceptual_metric if m and m != metric})
        if other:
            lines += ["", f"Reference perceptual values measured with {', '.join(other)} are not on the scale of "
                          f"`{metric}`: they are listed, not drawn on the perceptual plot."]
    lines += ["", "## Plots", "", f"![rate-distortion]({Path(files['rd_png']).name})",
              f"![rate-perception]({Path(files['rate_perception_png']).name})", "",
              "Centre crops of one image (the middle of the sorted list), 2x: original, decoded, enhanced.", "",
              f"![examples]({Path(files['examples_png']).name})", ""]
    return "\n".join(lines)


def _f(v, d: int = 2, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:+.{d}f}" if sign else f"{v:.{d}f}"


def _pm(mean, half, d: int) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    return f"{mean:+.{d}f} ± {half:.{d}f}" if not math.isnan(half) else f"{mean:+.{d}f}"


def _helped(v, n) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v)}/{n}"


def sweep_markdown(summary: pd.DataFrame, chosen: pd.DataFrame, controls: pd.DataFrame,
                   points: list[ResolvedPoint], spec: SweepSpec, *, image_dir: str, images: int, metric: str,
                   seed: int, rule: pd.DataFrame | None = None) -> str:
    vgg = spec.vgg != "none"
    lines = [f"# Perception-distortion sweep on `{image_dir}` ({images} images)", "",
             f"Perceptual distance `{metric}` (lower is better){' and ST-LPIPS VGG (`stlpips_vgg`)' if vgg else ''}; "
             "PSNR in dB. Means over images; changes are paired over images against the decoded image "
             "(mean ± half-width of the 95 % Student-t interval); *helped* counts the images whose distance fell. "
             f"Enhancer latent seed {seed}.", "",
             (f"Swept: temperatures {', '.join(f'{t:g}' for t in spec.temperatures)} at strength "
              f"{', '.join(f'{a:g}' for a in spec.strengths)} (plus each rate point's registry operating point); "
              if spec.temperatures else "Swept: each rate point's registry operating point alone; ") + f"Gaussian noise std {', '.join(f'{s:g}' for s in spec.noise) or 'none'} DN; "
             f"unsharp mask radius {spec.unsharp_radius:g}, amount {', '.join(f'{a:g}' for a in spec.unsharp) or 'none'} "
             f"%; ST-LPIPS VGG for {({'none': 'no variant', 'enhanced': 'decoded and enhanced', 'all': 'every variant'})[spec.vgg]}.",
             "", "## At the registry's operating point", ""]
    for p in points:
        lines.append(f"- `{p.name}`: codec `{p.codec}`, enhancer `{p.enhancer}`, temperature {p.temperature:g}, "
                     f"strength {p.strength:g} (configs/models.yaml)")
    lines.append("")
    head = ["rate point", "operating point", "images", "PSNR decoded", "PSNR enhanced", "Δ PSNR dB (95%)",
            f"{metric} decoded -> enhanced", f"Δ {metric} % (Δ ± 95%)", "helped"]
    if vgg:
        head += ["ST-LPIPS VGG decoded -> enhanced", "Δ VGG % (Δ ± 95%)", "helped (VGG)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in chosen.to_dict("records"):
        n = r["images"]
        cells = [r["rate_point"], r["variant"].removeprefix("enhanced:"), str(n), _f(r["psnr_db_decoded"]), _f(r["psnr_db"]),
                 _pm(r["d_psnr_db"], r["d_psnr_db_ci95"], 2),
                 f"{_f(r['perceptual_decoded'], 4)} -> {_f(r['perceptual'], 4)}",
                 f"**{_f(r['d_perceptual_pct'], 1, True)} %** ({_pm(r['d_perceptual'], r['d_perceptual_ci95'], 4)})",
                 _helped(r["perceptual_helped"], n)]
        if vgg:
            cells += [f"{_f(r['stlpips_vgg_decoded'], 4)} -> {_f(r['stlpips_vgg'], 4)}",
                      f"{_f(r['d_stlpips_vgg_pct'], 1, True)} % ({_pm(r['d_stlpips_vgg'], r['d_stlpips_vgg_ci95'], 4)})",
                      _helped(r["stlpips_vgg_helped"], n)]
        lines.append("| " + " | ".join(cells) + " |")

    lines += ["", "## The controls at the enhancer's PSNR cost", "",
              "Each control's strength is interpolated linearly so that its mean PSNR cost equals the enhancer's at "
              "the registry's point (strength 0 = the decoded image); every image's values are interpolated at that "
              "strength, so the comparison stays paired. *Enhancer minus control* below zero: the enhancer is "
              "better at the same PSNR cost.", ""]
    vgg_ctl = "enh_minus_control_stlpips_vgg" in controls
    head = ["rate point", "control at the enhancer's PSNR cost", "images", "Δ PSNR dB", f"control Δ {metric}",
            f"enhancer Δ {metric}", "enhancer minus control (95%)", "images where the enhancer is better"]
    if vgg_ctl:
        head += ["control Δ VGG", "enhancer Δ VGG", "enhancer minus control, VGG (95%)", "better (VGG)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in controls.to_dict("records"):
        what = r["control_name"] + (f" r{r['radius']:g}" if r["control"] == "unsharp" else "")
        n = r["images"]
        if r["beyond_sweep"]:
            lines.append(f"| {r['rate_point']} | {what}: not reached by the sweep (the enhancer costs "
                         f"{-r['enhancer_d_psnr_db']:.2f} dB, the strongest control {r['max_cost_db']:.2f} dB) | "
                         f"{n} |" + " |" * (len(head) - 3))
            continue
        unit = "DN std" if r["control"] == "noise" else "% amount"
        cells = [r["rate_point"], f"{what} ({r['strength']:.2f} {unit})", str(n), _f(r["d_psnr_db"], 2, True),
                 f"{_f(r.get('control_d_perceptual_pct'), 1, True)} %",
                 f"{_f(r.get('enhancer_d_perceptual_pct'), 1, True)} %",
                 _pm(r.get("enh_minus_control_perceptual", math.nan), r.get("enh_minus_control_perceptual_ci95", math.nan), 4),
                 _helped(r.get("enhancer_better_perceptual"), n)]
        if vgg_ctl:
            cells += [f"{_f(r.get('control_d_stlpips_vgg_pct'), 1, True)} %",
                      f"{_f(r.get('enhancer_d_stlpips_vgg_pct'), 1, True)} %",
                      _pm(r.get("enh_minus_control_stlpips_vgg", math.nan),
                          r.get("enh_minus_control_stlpips_vgg_ci95", math.nan), 4),
                      _helped(r.get("enhancer_better_stlpips_vgg"), n)]
        lines.append("| " + " | ".join(cells) + " |")

    if rule is not None and not rule.empty:
        lines += ["", "## The operating-point rule on these images", "",
                  f"Among the swept operating points (temperature T, strength a) whose mean PSNR cost is at most "
                  f"{spec.rule_max_cost_db:g} dB, the one with the lowest mean {metric}; if none qualifies, the "
                  "cheapest. Apply it on the selection subset only, and record its choice in configs/models.yaml; on "
                  "the reported part this table is for information (choosing there would flatter the result).", "",
                  "| rate point | rule's T | rule's a | qualified | Δ PSNR dB | " + f"Δ {metric} % | registry T | "
                  "registry a | agrees |",
                  "|" + "---|" * 9]
        for r in rule.to_dict("records"):
            lines.append(f"| {r['rate_point']} | {r['temperature']:g} | {r.get('strength', 1):g} | "
                         f"{'yes' if r['qualified'] else 'no'} | "
                         f"{-r['cost_db']:+.2f} | {_f(r['d_perceptual_pct'], 1, True)} | "
                         f"{r['registry_temperature']:g} | {r.get('registry_strength', 1):g} | "
                         f"{'yes' if r['agrees'] else '**no**'} |")

    lines += ["", "## Every variant of the sweep", "",
              "| rate point | variant | images | PSNR dB | Δ PSNR dB (95%) | " + f"{metric} | Δ {metric} % | "
              f"Δ {metric} (95%) | helped | Δ VGG % | helped (VGG) | RMS change vs decoded (DN) |",
              "|" + "---|" * 12]
    for r in summary.to_dict("records"):
        n = r["images"]
        star = " (registry)" if r["chosen"] else ""
        lines.append(f"| {r['rate_point']} | {r['variant']}{star} | {n} | {_f(r['psnr_db'])} | "
                     f"{_pm(r['d_psnr_db'], r['d_psnr_db_ci95'], 2) if r['variant'] != 'decoded' else '-'} | "
                     f"{_f(r['perceptual'], 4)} | {_f(r['d_perceptual_pct'], 1, True) if r['variant'] != 'decoded' else '-'} | "
                     f"{_pm(r['d_perceptual'], r['d_perceptual_ci95'], 4) if r['variant'] != 'decoded' else '-'} | "
                     f"{_helped(r['perceptual_helped'], n) if r['variant'] != 'decoded' else '-'} | "
                     f"{_f(r['d_stlpips_vgg_pct'], 1, True) if r['variant'] != 'decoded' else '-'} | "
                     f"{_helped(r['stlpips_vgg_helped'], n) if r['variant'] != 'decoded' else '-'} | "
                     f"{_f(r['rms_change_dn'], 2)} |")
    lines += ["", "![perception-distortion](perception_distortion.png)", "",
              "Per rate point: mean perceptual distance against mean PSNR; the enhancer over temperature (a curve "
              "per strength), the "
              "controls over strength (starting at the decoded point), the registry's point (star) and each control "
              "at its PSNR cost (x).", ""]
    return "\n".join(lines)
