"""``gsp enhance`` and ``gsp models``: the INN-RSIC enhancer on one file, and model files.

* ``gsp enhance IMAGE_OR_GEOTIFF --enhancer E -o OUT``: enhance one file window by window (:func:`enhancer.files.enhance_file`);
* ``gsp models check FILE`` / ``gsp models list``: what a checkpoint is (:func:`gsp.models.inspect_checkpoint`), the registry.
"""

from __future__ import annotations

import argparse
import json

from ._common import progress

__all__ = ["COMMANDS", "register"]


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("enhance", help="enhance one decoded image or GeoTIFF with INN-RSIC",
                       description="Enhance a 3-band uint8 PNG/JPEG or GeoTIFF window by window (core + halo); a "
                       "GeoTIFF keeps its profile (CRS, transform, tiling, nodata) and is never read whole.")
    e.add_argument("image", metavar="IMAGE_OR_GEOTIFF")
    e.add_argument("-o", "--out", required=True, help="output file (PNG/TIFF; a GeoTIFF input gives a GeoTIFF)")
    e.add_argument("--enhancer", help="registry name or checkpoint file (default: the registry's default enhancer)")
    e.add_argument("--temperature", type=float, help="scale of the latent z, 0 = deterministic mean (default: the "
                   "registry's operating point for the enhancer's rate point, 0 for an enhancer that is no rate "
                   "point's)")
    e.add_argument("--strength", type=float, help="fraction of the enhancer's change kept, in (0, 1]: decoded + "
                   "strength x (enhanced - decoded) (default: the registry's operating point, else 1)")
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


def cmd_enhance(args) -> int:
    from enhancer.checkpoint import load_enhancer
    from enhancer.files import check_enhance_args, enhance_file

    names = ("--core", "--halo", "--temperature", "--strength")
    check_enhance_args(args.core, args.halo, 0.0 if args.temperature is None else args.temperature,
                       1.0 if args.strength is None else args.strength, names=names)
    from groundstation.registry import load_registry, resolve_model

    _set_threads(args.threads)
    name, path, expected, _ = resolve_model(args.enhancer, "enhancer")
    model, config, digest = load_enhancer(path, expected, device=args.device)
    point = load_registry().operating_point(digest, args.temperature, args.strength)
    res = enhance_file(args.image, args.out, model, seed=args.seed, temperature=point.temperature,
                       strength=point.strength, core=args.core, halo=args.halo, batch_size=args.batch_size,
                       device=args.device, progress=progress(),
                       provenance={"enhancer": name, "enhancer_sha256": digest})
    print(f"{res['out']}: {res['width']}x{res['height']} enhanced with {name} (sha256 {digest[:16]}...), seed "
          f"{args.seed}, {point.describe()}; {res['windows']} windows in {res['seconds']:.1f} s"
          + (", CRS and transform kept" if res["georeferenced"] else ""))
    return 0


def cmd_models(args) -> int:
    if args.models_command == "check":
        from gsp.models import inspect_checkpoint

        info = inspect_checkpoint(args.file)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_check(info)
        return 0
    return _list_models(args)


COMMANDS = {"enhance": cmd_enhance, "models": cmd_models}


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
    points = [{"rate_point": name, **p.model_dump()} for name, p in reg.rate_points.items()]
    if args.json:
        print(json.dumps({"default_codec": reg.default_codec, "default_enhancer": reg.default_enhancer,
                          "models": rows, "rate_points": points}, indent=2))
        return 0
    print(f"default codec: {reg.default_codec}; default enhancer: {reg.default_enhancer or 'none'}")
    for r in rows:
        arch = ", ".join(f"{k}={v}" for k, v in r["arch"].items())
        extra = f" lambda {r['lmbda']}" if r["lmbda"] is not None else ""
        extra += f" behind {r['codec']}" if r["codec"] else ""
        print(f"{'*' if r['default'] else ' '} {r['name']:<24} {r['kind']:<8} {r['architecture']} ({arch}){extra}; "
              f"sha256 {r['sha256'][:12]}... {r['path']}{'' if r['present'] else '  [MISSING]'}")
    if points:
        print("rate points (the operating point gsp process, the flows and gsp enhance use by default):")
    for p in points:
        print(f"  {p['rate_point']:<8} {p['codec']} + {p['enhancer']}: temperature {p['temperature']:g}, "
              f"strength {p['strength']:g}")
    return 0
