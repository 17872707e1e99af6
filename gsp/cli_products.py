"""``gsp export``: deliver a product to tools other than xarray (loaded by :mod:`gsp.cli`).

* ``gsp export PRODUCT --cog OUT.tif [--array enhanced|decoded] [--no-overviews]``: a Cloud-Optimized GeoTIFF
  (:func:`groundstation.cog.export_cog`); with ``--stac`` also listed in the product's STAC Item (the COG must
  then lie inside the catalogue folder: the Item's hrefs never point outside it);
* ``gsp export PRODUCT --stac``: (re)write the product's STAC Item and register it in the station catalogue
  (:func:`groundstation.stac.write_item`), e.g. for products made before catalogues existed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from groundstation.errors import ConfigError

__all__ = ["COMMANDS", "export_product", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a product: Cloud-Optimized GeoTIFF, STAC Item",
        description="Export a complete product (PRODUCTS/<pass>/<version>.zarr or a `gsp decode` store). --cog "
        "writes one mosaic as a Cloud-Optimized GeoTIFF: RGB, the product's CRS and transform, 'valid' as its "
        "internal mask (not a nodata value), overviews, written atomically and checked with rio-cogeo's "
        "validator. --stac writes the product's STAC Item beside it (listing the COG, which must then lie in the "
        "catalogue folder) and registers it in the station catalogue "
        "(catalog.json in the products folder). GIS tools can also open the product itself: "
        "its GDAL view <version>.enhanced.vrt beside it (GDAL/QGIS, RGB with the mask).",
        epilog="example: gsp export products/p1/<version>.zarr --cog p1.tif --array enhanced")
    p.add_argument("product", metavar="PRODUCT", help="the product's .zarr folder")
    p.add_argument("--cog", metavar="OUT.tif", help="write a Cloud-Optimized GeoTIFF here")
    p.add_argument("--array", choices=["enhanced", "decoded"],
                   help="mosaic to export (default: enhanced, or decoded for a decoded-only product)")
    p.add_argument("--overviews", action=argparse.BooleanOptionalAction, default=True,
                   help="internal overviews, halving until one tile holds the image (default: on)")
    p.add_argument("--blocksize", type=int, default=512, help="COG tile size in pixels (default 512)")
    p.add_argument("--stac", action="store_true",
                   help="write the STAC Item beside the product and add it to the station catalogue")
    p.add_argument("--catalog", metavar="DIR",
                   help="folder of the station catalogue (default: the products folder, two levels above PRODUCT)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")


def export_product(product: str | Path, *, cog: str | Path | None = None, array: str | None = None,
                   overviews: bool = True, blocksize: int = 512, stac: bool = False,
                   catalog: str | Path | None = None) -> dict:
    """What ``gsp export`` and the ``export-product`` flow do: the COG of ``array`` (default: enhanced, or
    decoded for a decoded-only product) at ``cog`` and/or the product's STAC Item (``stac``); the Item
    changes only with ``stac`` (then the COG is listed in it, and must lie inside the catalogue). Returns what was
    written."""
    from groundstation.cog import export_cog
    from groundstation.product import arrays
    from groundstation.stac import cog_path, write_item

    if not cog and not stac:
        raise ConfigError("gsp export: nothing to do; give --cog OUT.tif and/or --stac")
    if blocksize < 64 or blocksize % 16:
        raise ConfigError(f"--blocksize {blocksize}: must be a multiple of 16, at least 64")
    product = Path(product)
    result: dict = {"product": str(product)}
    if cog:
        array = array or ("enhanced" if "enhanced" in arrays(product) else "decoded")
    if cog and stac:  # the Item's hrefs stay inside the catalogue, so that it can be moved and served whole
        root = (Path(catalog) if catalog is not None else product.parent.parent).resolve()
        if not Path(cog).resolve().is_relative_to(root):
            raise ConfigError(f"--cog {cog} lies outside the station catalogue {root}: its STAC Item would point "
                              f"outside it; write the COG under {root} (beside the product: "
                              f"{cog_path(product, array)}) or leave out --stac")
    if cog:
        result["cog"] = export_cog(product, cog, array=array, overviews=overviews, blocksize=blocksize).as_dict()
    if stac:
        cogs = {result["cog"]["array"]: Path(cog)} if cog else None
        result["stac_item"] = str(write_item(product, cogs=cogs, catalog_root=catalog))
    return result


def cmd_export(args) -> int:
    result = export_product(args.product, cog=args.cog, array=args.array, overviews=args.overviews,
                            blocksize=args.blocksize, stac=args.stac, catalog=args.catalog)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if "cog" in result:
        c = result["cog"]
        print(f"cog: {c['path']} ({c['array']}, {c['width']}x{c['height']} px, overviews {c['overviews'] or 'none'}, "
              f"{c['bytes']} bytes, {100 * c['valid_fraction']:.1f} % valid)")
    if "stac_item" in result:
        print(f"stac item: {result['stac_item']}")
    return 0


COMMANDS = {"export": cmd_export}
