"""A STAC Item per product and the station's STAC catalogue (pystac).

Layout in a products folder (``gsp process -o PRODUCTS``)::

    PRODUCTS/catalog.json                          the station's Catalog: one ``item`` link per product version
    PRODUCTS/<pass_id>/<version>.item.json         the Item of that product version
    PRODUCTS/<pass_id>/<version>.zarr              asset ``product``
    PRODUCTS/<pass_id>/<version>.<array>.vrt       asset ``<array>-gdal``: GDAL's view (RGB, mask = valid)
    PRODUCTS/<pass_id>/<version>.<array>.tif       asset ``<array>-cog`` (a COG: a run with ``cog``, ``gsp export``)
    PRODUCTS/<pass_id>/<version>.metrics.parquet   asset ``metrics``
    PRODUCTS/<pass_id>/<version>.report.md         asset ``report``
    PRODUCTS/<pass_id>/<version>.lost.geojson      asset ``lost-tiles`` (only when tiles were lost)

Every href is relative, so the folder can be moved or served as it is (a "self-contained" catalogue: no self
links). The Item's geometry is the valid footprint in EPSG:4326 (:func:`groundstation.footprints.valid_footprint`),
``datetime`` the acquisition time, the projection extension gives the product's CRS (``proj:code`` EPSG:n when
the CRS is an EPSG one, else ``proj:wkt2``), ``proj:shape`` and ``proj:transform``; codec, enhancer and their
sha256 are ``gsp:*`` properties. A pixel-grid product (no CRS) has a null geometry and bbox and
``proj:code: null``. Items and the catalogue are written atomically; the catalogue under a file lock, since
several runs may finish at once. Only assets whose files exist are listed.

Validation without network (:func:`validate_offline`): the STAC core JSON schemas (Item, Catalog, 1.1.0) ship
inside pystac and are checked with jsonschema; the projection extension's schema is not shipped (pystac would
fetch it), so its fields are checked through pystac's own ProjectionExtension model in the tests.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from .errors import ProductError
from .fileio import file_lock, write_json_atomic
from .footprints import Grid, geometry_bbox, valid_footprint
from .product import ARRAYS, arrays, gdal_view_path, zarr_format
from .quicklook import quicklook_path

CATALOG_NAME = "catalog.json"
CATALOG_ID = "gsp-station"
ITEM_SUFFIX = ".item.json"
LOST_SUFFIX = ".lost.geojson"

MEDIA_ZARR = "application/vnd+zarr"
MEDIA_PARQUET = "application/vnd.apache.parquet"
MEDIA_MARKDOWN = "text/markdown"
MEDIA_VRT = "application/xml"  # GDAL VRT: XML; no registered media type of its own


def version_of(product: str | Path) -> str:
    """The product version: the store's name without ``.zarr``."""
    name = Path(product).name
    return name[: -len(".zarr")] if name.endswith(".zarr") else name


def item_path(product: str | Path) -> Path:
    product = Path(product)
    return product.with_name(version_of(product) + ITEM_SUFFIX)


def lost_path(product: str | Path) -> Path:
    product = Path(product)
    return product.with_name(version_of(product) + LOST_SUFFIX)


def cog_path(product: str | Path, array: str) -> Path:
    """Where a product's COG of ``array`` lies by convention (beside the product): ``<version>.<array>.tif``."""
    product = Path(product)
    return product.with_name(f"{version_of(product)}.{array}.tif")


def _product_attrs(product: Path) -> dict:
    import zarr

    if zarr_format(product) is None:
        raise ProductError(f"{product}: no product there (no Zarr store); give the path of a <version>.zarr folder")
    return dict(zarr.open_group(str(product), mode="r").attrs)


def _crs_fields(crs_wkt: str) -> dict:
    """proj:code ('EPSG:n') when the CRS is exactly an EPSG one, else proj:wkt2."""
    from pyproj import CRS

    crs = CRS.from_wkt(crs_wkt)
    epsg = crs.to_epsg(min_confidence=100)
    if epsg is not None:
        return {"code": f"EPSG:{epsg}"}
    return {"wkt2": crs.to_wkt("WKT2_2019")}


def _provenance(attrs: dict, summary: dict | None) -> dict:
    """gsp:* properties: pass, models and their hashes, tiles, software."""
    p = attrs.get("gsp_pass", {})
    s = summary if summary is not None else attrs.get("gsp_summary")
    props = {"gsp:pass_id": p.get("pass_id"), "gsp:pass_uid": p.get("pass_uid"),
             "gsp:grid": attrs.get("gsp_grid", "crs"),
             "gsp:bands": p.get("bands", {}).get("selection"),
             "gsp:band_rule": p.get("bands", {}).get("rule")}
    if s:  # a flow product
        props.update({
            "gsp:codec": {"name": s["codec"]["name"], "sha256": s["codec"]["sha256"],
                          "lambda": p.get("codec", {}).get("lmbda"), "entropy": p.get("codec", {}).get("entropy")},
            # (a product made before the strength knob kept all of the enhancer's change: strength 1)
            "gsp:enhancer": ({**{k: s["enhancer"].get(k) for k in ("name", "sha256", "seed", "temperature", "halo")},
                              "strength": s["enhancer"].get("strength", 1.0)} if s.get("enhancer") else None),
            "gsp:tiles_total": s.get("tiles_total"), "gsp:tiles_lost": len(s.get("lost", [])),
            "gsp:lost_tiles": [d["tile"] for d in s.get("lost", [])],
            "gsp:bpp": s.get("bpp"), "gsp:software": s.get("software"), "gsp:flow_run_id": s.get("flow_run_id"),
            "gsp:timeliness": s.get("timeliness"),
        })
        if s.get("supplements"):  # tiles that came later, resent by the satellite (flows/supplement.py)
            props["gsp:supplements"] = [{k: e.get(k) for k in ("name", "sent", "applied", "tiles_ok")}
                                        for e in s["supplements"]]
    elif "gsp_decode" in attrs:  # a `gsp decode` product
        d = attrs["gsp_decode"]
        props.update({
            "gsp:codec": {"name": d.get("codec"), "sha256": d.get("codec_sha256"),
                          "lambda": p.get("codec", {}).get("lmbda"), "entropy": d.get("entropy")},
            "gsp:enhancer": None,
            "gsp:tiles_total": p.get("tiling", {}).get("tiles_x", 0) * p.get("tiling", {}).get("tiles_y", 0),
            "gsp:tiles_lost": len(d.get("tiles_lost", [])),
            "gsp:lost_tiles": [t["tile"] for t in d.get("tiles_lost", [])],
            "gsp:bpp": d.get("bpp"), "gsp:software": d.get("software"),
        })
    return props


def build_item(product: str | Path, *, summary: dict | None = None, cogs: dict[str, Path] | None = None):
    """The pystac Item of ``product`` (hrefs relative to the item's place beside the product).

    ``summary``: the flow's run summary (provenance) when the product is not finalized yet; otherwise the
    product's ``gsp_summary`` / ``gsp_decode`` attributes are used. ``cogs``: COG paths by array, in addition
    to those found beside the product by :func:`cog_path`.
    """
    import pystac
    import zarr
    from pystac.extensions.projection import ProjectionExtension

    product = Path(product)
    attrs = _product_attrs(product)
    if "gsp_pass" not in attrs:
        raise ProductError(f"{product}: the product records no pass header (gsp_pass); it was not written by gsp")
    grid = Grid.from_pass_dict(attrs["gsp_pass"])
    version = version_of(product)
    geometry = valid_footprint(zarr.open_group(str(product), mode="r"), grid)
    when = _dt.datetime.fromisoformat(attrs["gsp_pass"]["acquisition_time"])
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    props = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
             "gsp:version": version, **_provenance(attrs, summary)}
    item = pystac.Item(id=f"{_slug(attrs['gsp_pass']['pass_id'])}__{version}", geometry=geometry,
                       bbox=geometry_bbox(geometry), datetime=when.astimezone(_dt.timezone.utc), properties=props)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    if grid.georeferenced:
        crs = _crs_fields(grid.crs_wkt)
        proj.apply(code=crs.get("code"), wkt2=crs.get("wkt2"), shape=[grid.height, grid.width],
                   transform=list(grid.transform), bbox=list(grid.crs_bounds()))
    else:  # no CRS: proj:code null says so (projection extension v2)
        proj.apply(shape=[grid.height, grid.width])
        item.properties["proj:code"] = None

    here = product.parent
    have = arrays(product)
    item.add_asset("product", pystac.Asset(
        f"./{product.name}", title="Zarr product (decoded, enhanced, valid; CF, format "
        f"{zarr_format(product)})", media_type=MEDIA_ZARR, roles=["data"],
        extra_fields={"gsp:arrays": have}))
    for name in have:
        vrt = gdal_view_path(product, name)
        if vrt.is_file():
            item.add_asset(f"{name}-gdal", pystac.Asset(
                f"./{vrt.name}", title=f"GDAL/QGIS view of {name}: RGB, mask = valid",
                media_type=MEDIA_VRT, roles=["data"]))
    found = {a: cog_path(product, a) for a in ARRAYS}
    found.update(cogs or {})
    for name, path in found.items():
        if Path(path).is_file():
            item.add_asset(f"{name}-cog", pystac.Asset(
                _relative(Path(path), here), title=f"Cloud-Optimized GeoTIFF of {name} (RGB, internal mask)",
                media_type=pystac.MediaType.COG, roles=["visual", "data"] if name == "enhanced" else ["data"]))
    for key, path, media, title in (
            ("metrics", here / f"{version}.metrics.parquet", MEDIA_PARQUET, "metrics per tile and product"),
            ("report", here / f"{version}.report.md", MEDIA_MARKDOWN, "run report"),
            ("lost-tiles", lost_path(product), pystac.MediaType.GEOJSON, "lost tiles (ask for retransmission)")):
        if path.is_file():
            item.add_asset(key, pystac.Asset(f"./{path.name}", title=title, media_type=media, roles=["metadata"]))
    picture = quicklook_path(product)
    if picture.is_file():
        item.add_asset("quicklook", pystac.Asset(
            f"./{picture.name}", title="quicklook: coordinates, scale bar, tile grid, lost tiles",
            media_type=pystac.MediaType.PNG, roles=["thumbnail", "overview"]))
    return item


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _relative(path: Path, base: Path) -> str:
    import os

    try:
        rel = os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # another drive
        return str(path.resolve())
    return rel if rel.startswith("..") else f"./{rel}"


def write_item(product: str | Path, *, summary: dict | None = None, cogs: dict[str, Path] | None = None,
               catalog_root: str | Path | None = None) -> Path:
    """Write ``<version>.item.json`` beside ``product`` (atomically) and register it in the catalogue at
    ``catalog_root`` (default: the folder above the product's pass folder, the products folder)."""
    product = Path(product)
    root = Path(catalog_root) if catalog_root is not None else product.parent.parent
    item = build_item(product, summary=summary, cogs=cogs)
    path = item_path(product)
    cat = root / CATALOG_NAME
    rel_cat = _relative(cat, path.parent)
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    d["links"] = [{"rel": "root", "href": rel_cat, "type": "application/json", "title": "station catalogue"},
                  {"rel": "parent", "href": rel_cat, "type": "application/json", "title": "station catalogue"}]
    write_json_atomic(path, d)
    update_catalog(root, path, title=f"pass {item.properties.get('gsp:pass_id')}, product {version_of(product)}")
    return path


def update_catalog(root: str | Path, item: str | Path, *, title: str | None = None) -> Path:
    """Add (or refresh) the ``item`` link of the catalogue ``root/catalog.json``; creates the catalogue."""
    import pystac

    root = Path(root)
    cat_path = root / CATALOG_NAME
    href = _relative(Path(item), root)
    with file_lock(cat_path):
        if cat_path.exists():
            try:
                cat = pystac.Catalog.from_dict(json.loads(cat_path.read_text()))
            except Exception as exc:  # noqa: BLE001 - any unreadable catalogue is the operator's to move
                raise ProductError(f"{cat_path}: the station catalogue is unreadable ({exc}); move it aside, the "
                                   "next run starts a new one (`gsp export PRODUCT --stac` adds older products)") \
                    from exc
        else:
            cat = pystac.Catalog(id=CATALOG_ID, title="Ground-station products",
                                 description="Products of this ground station: one STAC Item per product version "
                                             "(pass, codec, enhancer and parameters).")
        links = [lk for lk in cat.links if not (lk.rel == "item" and lk.get_href(transform_href=False) == href)
                 and lk.rel not in ("self", "root")]
        links.append(pystac.Link("item", href, media_type="application/geo+json", title=title))
        items = sorted((lk for lk in links if lk.rel == "item"), key=lambda lk: lk.get_href(transform_href=False))
        cat.links = [pystac.Link("root", f"./{CATALOG_NAME}", media_type="application/json")] \
            + [lk for lk in links if lk.rel != "item"] + items
        write_json_atomic(cat_path, cat.to_dict(include_self_link=False, transform_hrefs=False))
    return cat_path


def validate_offline(obj: dict) -> None:
    """Validate a STAC Item or Catalog dict against the STAC core JSON schemas that ship inside pystac
    (no network). Extension schemas are not checked here (see the module docstring). Raises ValueError."""
    from jsonschema import Draft7Validator
    from pystac.validation.local_validator import get_local_schema_cache
    from referencing import Registry, Resource

    cache = get_local_schema_cache()
    version = obj.get("stac_version")
    kind = {"Feature": "item", "Catalog": "catalog", "Collection": "collection"}.get(obj.get("type"))
    uri = f"https://schemas.stacspec.org/v{version}/{kind}-spec/json-schema/{kind}.json"
    if kind is None or uri not in cache:
        raise ValueError(f"no local schema for STAC {obj.get('type')} {version} (pystac ships {sorted(cache)})")
    registry = Registry().with_resources([(k, Resource.from_contents(v)) for k, v in cache.items()])
    errors = sorted(Draft7Validator(cache[uri], registry=registry).iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        raise ValueError("; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:5]))
