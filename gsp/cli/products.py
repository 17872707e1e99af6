"""``gsp export``: deliver a product to tools other than xarray (:func:`gsp.export.export_product`).

* ``gsp export PRODUCT --cog OUT.tif [--array enhanced|decoded] [--no-overviews]``: a Cloud-Optimized GeoTIFF
  (:func:`groundstation.cog.export_cog`); with ``--stac`` also listed in the product's STAC Item (the COG must
  then lie inside the catalogue folder: the Item's hrefs never point outside it);
* ``gsp export PRODUCT --stac``: (re)write the product's STAC Item and register it in the station catalogue
  (:func:`groundstation.stac.write_item`), e.g. for products made before catalogues existed.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["COMMANDS", "register"]


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


def cmd_export(args) -> int:
    from gsp.export import export_product

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
