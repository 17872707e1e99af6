"""Delivering a product to tools other than xarray: its Cloud-Optimized GeoTIFF and its STAC Item.

Used by ``gsp export`` (:mod:`gsp.cli.products`) and the ``export-product`` flow (:mod:`gsp.jobs`).
"""

from __future__ import annotations

from pathlib import Path

from groundstation.errors import ConfigError

__all__ = ["export_product"]


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
