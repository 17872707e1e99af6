"""Small decoded products for the delivery tests (GDAL views, COG, STAC, footprints); imported as
``product_helpers`` (tests/ is on the path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TILE = 128  # 200x300 scenes: 2x3 codec tiles, edge tiles smaller
ACQUIRED = "2024-05-01T12:00:00+02:00"  # 10:00 UTC


def lose_tiles(passfile: Path, tiles, out: Path) -> Path:
    """A copy of ``passfile`` with one bit flipped in the records of ``tiles`` (each becomes crc_mismatch)."""
    from groundstation.container import PassReader

    data = bytearray(passfile.read_bytes())
    scan = PassReader(passfile).scan()
    for t in tiles:
        data[scan.records[t][0] + 60] ^= 0x04
    out.write_bytes(bytes(data))
    return out


def picture(path: Path, height: int = 200, width: int = 300) -> Path:
    """A PNG without georeferencing: it becomes a pixel-grid pass."""
    from PIL import Image

    from synth import smooth_image

    rgb = (np.moveaxis(smooth_image(height, width, 3, seed=3), 0, -1) * 255).round().astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def decoded_product(folder: Path, codec: Path, *, kind: str = "utm", lose=(), name: str = "p") -> dict:
    """Scene -> pass -> ``gsp decode`` product under ``folder``. ``kind``: 'utm' (EPSG:32618 with a nodata box),
    'geographic' (EPSG:4326), 'pixel' (a PNG, no CRS). ``lose``: tiles whose record is damaged."""
    from affine import Affine

    from groundstation.decode import decode_pass
    from groundstation.encode import encode_scene
    from synth import write_scene

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "pixel":
        scene = picture(folder / f"{name}.png")
    else:
        kw = {"utm": dict(crs="EPSG:32618", nodata=0, nodata_box=(0, 20, 0, 30)),
              "geographic": dict(crs="EPSG:4326", transform=Affine(0.0001, 0, -74.01, 0, -0.0001, 40.75))}[kind]
        scene = write_scene(folder / f"{name}.tif", 200, 300, **kw)
    passfile = folder / f"{name}.gsp"
    encode_scene(scene, passfile, codec=str(codec), tile_size=TILE, pass_id=f"{name}-{kind}", acquired=ACQUIRED)
    if lose:
        passfile = lose_tiles(passfile, lose, folder / f"{name}-damaged.gsp")
    product = folder / f"{name}.zarr"
    summary = decode_pass(passfile, product, codec=str(codec))
    return {"scene": scene, "pass": passfile, "product": product, "summary": summary}
