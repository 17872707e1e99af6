"""``gsp`` commands for the INN-RSIC enhancer and model files (loaded by :mod:`groundstation.cli`).

* ``gsp make-pairs IMAGE_DIR... -o OUT --codec C``: ELIC training pairs (:func:`enhancer.pairs.make_pairs`);
* ``gsp train-enhancer PAIRS -o RUN``: train or resume (:func:`enhancer.train.train_enhancer`), ``--export``;
* ``gsp enhance IMAGE_OR_GEOTIFF --enhancer E -o OUT``: enhance one file window by window (:func:`enhance_file`);
* ``gsp models check FILE`` / ``gsp models list``: what a checkpoint is (:func:`inspect_checkpoint`), the registry.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from .errors import CheckpointError, ConfigError, SceneError
from .fileio import atomic_path, write_json_atomic

__all__ = ["COMMANDS", "enhance_file", "inspect_checkpoint", "register"]

log = logging.getLogger("gsp")

GEOTIFF_SUFFIXES = {".tif", ".tiff"}
_CONVERT_HINT = ("gsp enhance takes 3-band 8-bit RGB (the decoded product of gsp encode/decode); run gsp "
                 "encode/decode first, or convert, e.g. gdal_translate -ot Byte -scale -b 1 -b 2 -b 3 IN OUT.tif")


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
    t.add_argument("pairs", metavar="PAIRS_DIR")
    t.add_argument("-o", "--out", required=True, help="run directory (resumes if it holds last.pt)")
    t.add_argument("--preset", default="reference-code", choices=["reference-code", "paper"])
    t.add_argument("--config", default="reference", metavar="ARCH",
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
    t.add_argument("--perceptual", default="auto", choices=["auto", "vgg19", "stlpips-vgg", "none"],
                   help="L_per backbone: auto = VGG19 if its weights are provisioned (GSP_VGG19_WEIGHTS or the "
                   "torch hub cache), else the shift-tolerant VGG16 shipped with stlpips-pytorch")
    t.add_argument("--per-block", type=int, choices=[4, 5], help="VGG block of the L_per layer (5: conv5_x, 4: conv4_x)")
    t.add_argument("--transpose", action=argparse.BooleanOptionalAction, default=None,
                   help="random transpose augmentation besides the h/v flips")
    t.add_argument("--init", choices=["reference", "identity"],
                   help="initial values: the authors' (reference, the presets' default) or a start where the "
                        "inverse passes the decoded image through (identity; for short runs, see "
                        "INNRSIC.init_identity)")
    t.add_argument("--latent-gain", type=float,
                   help="identity start: how strongly z is scaled down into pixels (40: z ~ N(0,1) for a "
                        "~26 dB codec residual)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=1000)
    t.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
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
    from enhancer.pairs import make_pairs

    res = make_pairs(args.images, args.out, args.codec, limit=args.limit, progress=_progress(),
                     threads=args.threads)
    print(f"{res.out}: {res.count} pairs ({res.made} new, {res.skipped} already there), mean {res.mean_bpp:.4f} bpp, "
          f"{res.mean_psnr_db:.2f} dB PSNR; codec {res.codec} (sha256 {res.codec_sha256[:16]}...)")
    return 0


def cmd_train_enhancer(args) -> int:
    from enhancer.pairs import read_pairs
    from enhancer.train import export_enhancer, train_enhancer, training_config

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


# ------------------------------------------------------------------------------------------------ enhance

def _check_enhance_args(core: int, halo: int, temperature: float) -> None:
    if core < 2 or core % 2 or halo < 0 or halo % 2:
        raise ConfigError(f"--core {core} / --halo {halo}: both must be even (core >= 2, halo >= 0) so that windows "
                          "start on the Haar 2x2 grid")
    if temperature < 0:
        raise ConfigError(f"--temperature {temperature} must be >= 0")


def enhance_file(src: str | Path, dst: str | Path, model, *, seed: int = 0, temperature: float = 1.0,
                 core: int = 256, halo: int = 32, batch_size: int = 4, device: str = "cpu", progress: bool = False,
                 provenance: Mapping[str, str] | None = None) -> dict:
    """Enhance one 3-band uint8 image file (PNG/JPEG/...) or GeoTIFF into ``dst``; returns a summary dict.

    A GeoTIFF is read and written in windows (:func:`enhancer.inference.enhance_mosaic`), so it never has to
    fit in memory; the output has the input's profile (CRS, transform, tiling, compression, nodata), colour
    interpretation and tags, plus ``GSP_*`` provenance tags (a compressed *striped* input is written tiled
    256x256, the only change); pixels the input marks invalid (nodata, alpha,
    internal mask) are copied unchanged. The file is written beside ``dst`` and renamed over it when complete.
    """
    _check_enhance_args(core, halo, temperature)
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise SceneError(f"{src}: no such file")
    if src.resolve() == dst.resolve():
        raise ConfigError(f"-o {dst}: the output must not overwrite the input")
    dst.parent.mkdir(parents=True, exist_ok=True)
    kwargs = dict(core=core, halo=halo, seed=seed, temperature=temperature, batch_size=batch_size, device=device,
                  progress=progress)
    with atomic_path(dst) as tmp:
        if src.suffix.lower() in GEOTIFF_SUFFIXES:
            info = _enhance_geotiff(src, tmp, model, dict(provenance or {}, seed=str(seed),
                                                          temperature=str(temperature)), kwargs)
        else:
            info = _enhance_picture(src, tmp, dst.suffix, model, kwargs)
    return dict(info, out=str(dst))


def _enhance_picture(src: Path, tmp: Path, suffix: str, model, kwargs: dict) -> dict:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from enhancer.inference import enhance_mosaic

    try:
        with Image.open(src) as im:
            mode, fmt = im.mode, im.format
            image = np.asarray(im) if mode == "RGB" else None
    except (UnidentifiedImageError, OSError) as exc:
        raise SceneError(f"{src}: not a readable image ({exc}); {_CONVERT_HINT}") from exc
    if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise SceneError(f"{src}: {fmt} image in mode {mode!r}, not 3-band 8-bit RGB; {_CONVERT_HINT}")
    h, w = image.shape[:2]
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    out = np.empty_like(chw)

    def source(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return chw[:, y0:y1, x0:x1]

    def sink(y0: int, y1: int, x0: int, x1: int, block: np.ndarray) -> None:
        out[:, y0:y1, x0:x1] = block

    stats = enhance_mosaic(model, source, sink, (h, w), **kwargs)
    fmt_out = Image.registered_extensions().get(suffix.lower())
    if fmt_out is None:
        raise ConfigError(f"-o ...{suffix}: unknown image type; use .png (lossless) or .tif")
    if fmt_out == "JPEG":
        log.warning("writing the enhanced image as JPEG: lossy, it blurs the detail the enhancer adds; prefer PNG")
    Image.fromarray(np.ascontiguousarray(out.transpose(1, 2, 0))).save(tmp, format=fmt_out)
    return {"height": h, "width": w, "georeferenced": False, "windows": stats["windows"], "seconds": stats["seconds"]}


def _enhance_geotiff(src: Path, tmp: Path, model, tags: dict, kwargs: dict) -> dict:
    import numpy as np
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.windows import Window

    from enhancer.inference import enhance_mosaic

    try:
        ds = rasterio.open(src)
    except RasterioIOError as exc:
        raise SceneError(f"{src}: not a readable GeoTIFF ({exc})") from exc
    with ds:
        if ds.count != 3 or any(np.dtype(d) != np.uint8 for d in ds.dtypes):
            raise SceneError(f"{src}: {ds.count} band(s) of {', '.join(sorted(set(ds.dtypes)))}, not 3 bands of "
                             f"uint8; {_CONVERT_HINT}")
        h, w = ds.height, ds.width
        profile = ds.profile.copy()
        profile.update(driver="GTiff", count=3, dtype="uint8")
        profile.setdefault("BIGTIFF", "IF_SAFER")
        if profile.get("compress") and not profile.get("tiled"):
            # compressed strips would be rewritten by every core that touches them (the file grows): tile instead
            log.info("%s: compressed and striped; writing the output tiled 256x256 (same CRS, transform, "
                     "compression)", src)
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        has_mask = ds.nodata is not None or any(
            flag != [rasterio.enums.MaskFlags.all_valid] for flag in ds.mask_flag_enums)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.colorinterp = ds.colorinterp
            dst.update_tags(**ds.tags())
            dst.update_tags(**{f"GSP_{k.upper()}": v for k, v in tags.items()})

            def source(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
                return ds.read(window=Window(x0, y0, x1 - x0, y1 - y0))

            def sink(y0: int, y1: int, x0: int, x1: int, block: np.ndarray) -> None:
                win = Window(x0, y0, x1 - x0, y1 - y0)
                if has_mask:
                    invalid = ds.dataset_mask(window=win) == 0
                    if invalid.any():
                        block = block.copy()
                        block[:, invalid] = ds.read(window=win)[:, invalid]
                dst.write(block, window=win)

            stats = enhance_mosaic(model, source, sink, (h, w), **kwargs)
        return {"height": h, "width": w, "georeferenced": ds.crs is not None, "windows": stats["windows"],
                "seconds": stats["seconds"]}


# ------------------------------------------------------------------------------------------------- models

_WRAPPERS = ("state_dict", "network", "model")
_PREFIX = "module."


def _registry_names(digest: str) -> list[str]:
    from .registry import load_registry

    try:
        reg = load_registry()
    except ConfigError:
        return []
    return sorted(name for name, e in reg.models.items() if e.sha256 == digest)


def inspect_checkpoint(path: str | Path) -> dict:
    """Detect what a checkpoint file is, load it strictly, and describe it.

    ``kind``: ``codec`` or ``enhancer``; ``format``: ``compressai``, ``inn-rsic-elic`` (the authors' ELIC
    names) or ``inn-rsic-enhancer``; ``container``: a raw state dict or a training wrapper (its key and the
    other entries); ``module_prefix``: DataParallel's ``module.`` names. Raises CheckpointError (naming the
    first wrong keys) when the file does not load strictly.
    """
    import torch

    from .codec import detect_codec_format, load_codec, sha256_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    digest = sha256_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and runtime errors alike
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint with weights_only=True "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    container, extra = "raw state_dict", []
    if isinstance(obj, Mapping):
        for key in _WRAPPERS:
            if key in obj and isinstance(obj[key], Mapping):
                container = f"training wrapper ['{key}']"
                extra = sorted(str(k) for k in obj if k != key)
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: not a state dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {bad[:5]}; not a model checkpoint")
    prefixed = any(str(k).startswith(_PREFIX) for k in obj)
    sd = {(k[len(_PREFIX):] if k.startswith(_PREFIX) else k): v for k, v in obj.items()}
    info: dict = {"file": str(path), "sha256": digest, "bytes": path.stat().st_size, "container": container,
                  "wrapper_entries": extra, "module_prefix": prefixed, "entries": len(sd),
                  "dtypes": sorted({str(v.dtype).replace("torch.", "") for v in sd.values()})}
    if any(k.startswith(("operations_gaussian.", "guassianize.")) for k in sd):
        from enhancer.checkpoint import load_enhancer

        model, config, _ = load_enhancer(path)
        stored = sum(t.numel() for t in model.state_dict().values())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        info.update(kind="enhancer", format="inn-rsic-enhancer", architecture="inn-rsic",
                    arch={"blocks": config.blocks, "coupling_growth": config.coupling_growth,
                          "cgm_growth": config.cgm_growth, "receptive_radius_px": config.receptive_radius},
                    stored_values=stored, parameters=trainable)
    else:
        fmt = detect_codec_format(sd)  # raises, naming the first keys, for anything that is no ELIC
        loaded = load_codec(path)
        model = loaded.model
        info.update(kind="codec", format="compressai" if fmt == "compressai" else "inn-rsic-elic",
                    architecture="elic2022-chandelier", arch=loaded.arch.as_dict(),
                    parameters=sum(p.numel() for p in model.parameters()),
                    buffers=sum(b.numel() for b in model.buffers()),
                    entropy_tables=("filled in the file, used as stored" if loaded.tables == "filled" else
                                    "empty in the file (training checkpoint): computed with update(force=True) on "
                                    "load; bitstreams are consistent within this project only"))
    info["registry"] = _registry_names(digest)
    return info


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
    from .registry import DEFAULT_REGISTRY, load_registry

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
